// The reload path loads the config on a worker thread and takes the result back by structured clone
// (conf/load-worker.ts): what arrives must be the very config the loader makes on the main thread —
// same values, Buffers as Buffers (secrets), Maps as Maps, frozen — or a reload would serve something
// other than what `validate` judged. Errors keep their FILE:LINE:COL.
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { isDeepStrictEqual } from 'node:util'
import { fileURLToPath } from 'node:url'
import { loadConfigFile } from '../../conf/load.js'
import { checkConfigOffThread, reviveConfig } from '../../conf/load-worker.js'

const CONF = fileURLToPath(new URL('../../conf/', import.meta.url))
const ENV = { FLASHGATE_LINK_KEY: 'an-example-link-key-of-32-bytes!', TURNSTILE_SECRET: 'example-secret' }

for (const name of ['example.yaml', 'demo.yaml']) {
  t.test(`conf/${name}: the worker's config equals the main thread's`, async (t) => {
    const file = join(CONF, name)
    const here = loadConfigFile(file, ENV)
    if (!here.ok) { t.fail(here.errors.join('\n')); return }
    const there = await checkConfigOffThread(file, ENV)
    t.equal(there.ok, true, there.errors.join('\n'))
    t.ok(there.config, 'the loaded config came back (no fallback to loading on the event loop)')
    if (there.config == null) return
    t.ok(isDeepStrictEqual(there.config, here.config), 'deep-equal, prototypes included (Buffers, Maps)')
    t.same(there.warnings, here.warnings)
    t.ok(Object.isFrozen(there.config) && Object.isFrozen(there.config.routes) && Object.isFrozen(there.config.routes[0]), 'frozen')
    const k = there.config.secrets.linkKeys[0]
    t.ok(k !== undefined && Buffer.isBuffer(k.key), 'a link key is a Buffer')
    t.throws(() => { (there.config!.upstreams as Map<string, unknown>).set('x', null) }, 'the upstreams Map is frozen')
  })
}

t.test('a broken file: the errors at FILE:LINE:COL, no config', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fg-lw-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const file = join(dir, 'bad.yaml')
  writeFileSync(file, 'upstreams:\n  u: { targets: [http://127.0.0.1:7001] }\nroutes:\n  - name: a\n    match: { path_prefix: / }\n    upstream: nope\n')
  const r = await checkConfigOffThread(file, {})
  t.equal(r.ok, false)
  t.equal(r.config, undefined)
  t.match(r.errors.join('\n'), new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:6:\\d+: `, 'm'))
})

t.test('reviveConfig: cloned Uint8Arrays become Buffers, nested in objects, arrays and Maps', async (t) => {
  const cloned = structuredClone({ a: [Buffer.from('xy')], m: new Map([['k', { b: Buffer.from('z') }]]), n: null, s: 's' })
  t.notOk(Buffer.isBuffer(cloned.a[0]), 'structuredClone makes a plain Uint8Array of a Buffer')
  const r = reviveConfig(cloned) as unknown as { a: Buffer[], m: Map<string, { b: Buffer }>, n: null, s: string }
  t.ok(Buffer.isBuffer(r.a[0]) && r.a[0].toString() === 'xy')
  t.ok(Buffer.isBuffer(r.m.get('k')?.b) && r.m.get('k')?.b.toString() === 'z')
  t.equal(r.n, null)
  t.ok(Object.isFrozen(r) && Object.isFrozen(r.a))
})
