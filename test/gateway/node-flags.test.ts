import t from 'tap'
import { SEMI_SPACE_FLAG, hasSemiSpaceFlag } from '../../gateway/node-flags.js'

t.test('the semi-space flag is found on the command line or in NODE_OPTIONS, and nowhere else', async (t) => {
  t.equal(hasSemiSpaceFlag([], ''), false, 'absent')
  t.equal(hasSemiSpaceFlag(['--enable-source-maps'], '--max-old-space-size=4096'), false, 'other flags only')
  t.equal(hasSemiSpaceFlag([SEMI_SPACE_FLAG], ''), true, 'on the command line')
  t.equal(hasSemiSpaceFlag(['--max-semi-space-size', '32'], ''), true, 'on the command line with a separate value')
  t.equal(hasSemiSpaceFlag([], '--inspect --max-semi-space-size=16'), true, 'in NODE_OPTIONS')
  t.equal(hasSemiSpaceFlag([], '--no-max-semi-space-size-x'), false, 'not a prefix of another word')
})

t.test('npm start passes the shipped flag', async (t) => {
  const { readFileSync } = await import('node:fs')
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { scripts: Record<string, string> }
  t.match(pkg.scripts.start, `node ${SEMI_SPACE_FLAG} bin/flashgate.js`, 'npm start')
})
