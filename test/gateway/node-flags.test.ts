import t from 'tap'
import { spawnSync } from 'node:child_process'
import { NO_MEMORY_REDUCER_FLAG, SEMI_SPACE_FLAG, SHIPPED_FLAGS, hasMemoryReducerFlag, hasSemiSpaceFlag, missingFlags } from '../../gateway/node-flags.js'

t.test('the semi-space flag is found on the command line or in NODE_OPTIONS, and nowhere else', async (t) => {
  t.equal(hasSemiSpaceFlag([], ''), false, 'absent')
  t.equal(hasSemiSpaceFlag(['--enable-source-maps'], '--max-old-space-size=4096'), false, 'other flags only')
  t.equal(hasSemiSpaceFlag([SEMI_SPACE_FLAG], ''), true, 'on the command line')
  t.equal(hasSemiSpaceFlag(['--max-semi-space-size', '32'], ''), true, 'on the command line with a separate value')
  t.equal(hasSemiSpaceFlag([], '--inspect --max-semi-space-size=16'), true, 'in NODE_OPTIONS')
  t.equal(hasSemiSpaceFlag([], '--no-max-semi-space-size-x'), false, 'not a prefix of another word')
})

t.test('the memory reducer counts as decided when the command line says either way', async (t) => {
  t.equal(hasMemoryReducerFlag([]), false, 'absent')
  t.equal(hasMemoryReducerFlag([NO_MEMORY_REDUCER_FLAG]), true, 'off')
  t.equal(hasMemoryReducerFlag(['--memory-reducer']), true, 'explicitly on: the operator chose')
  t.equal(hasMemoryReducerFlag(['--no-memory_reducer']), true, 'V8 spelling with an underscore')
  t.equal(hasMemoryReducerFlag(['--memory-reducer-for-small-heaps']), false, 'another flag with the same prefix')
  t.same(missingFlags([], ''), [...SHIPPED_FLAGS], 'both missing, in the documented order')
  t.same(missingFlags([NO_MEMORY_REDUCER_FLAG], SEMI_SPACE_FLAG), [], 'none missing (semi-space from NODE_OPTIONS)')
  t.same(missingFlags([SEMI_SPACE_FLAG], ''), [NO_MEMORY_REDUCER_FLAG], 'only the reducer missing')
})

t.test('node accepts the shipped flags on its command line', async (t) => {
  // A flag node does not know makes it exit 9 ("bad option") before running anything.
  const r = spawnSync(process.execPath, [...SHIPPED_FLAGS, '-e', 'process.stdout.write("ok")'], { encoding: 'utf8' })
  t.equal(r.status, 0, r.stderr)
  t.equal(r.stdout, 'ok')
})

t.test('npm start passes the shipped flags', async (t) => {
  const { readFileSync } = await import('node:fs')
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { scripts: Record<string, string> }
  t.match(pkg.scripts.start, `node ${SHIPPED_FLAGS.join(' ')} bin/flashgate.js`, 'npm start')
})
