/**
 * `store.on_error: journal` in the loader: a journal directory that cannot be written is refused at
 * FILE:LINE:COL (at start through the loader, and at reload — the old config keeps serving); the
 * journal needs its path; `store.journal` without the policy is an error; the quota accepts the
 * inherited journal policy (and other guards inherit `local`); a dedupe after a journaled quota is
 * refused at the dedupe.
 */
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { loadConfigText } from '../../conf/load.js'
import { tempDir } from '../helpers/config.js'
import { client, fetchText, startOrigin, startTestGateway } from '../helpers/gateway.js'

const yaml = (store: string, origin = 'http://127.0.0.1:9'): string => `listen: 127.0.0.1:0
admin: 127.0.0.1:0
access_log: { enabled: false }
store:
  kind: memory
${store}
identity: { user: header x-user-id }
upstreams:
  purchase: { targets: [{ url: ${origin} }] }
campaigns:
  - id: c1
    starts_at: 2020-01-01T00:00:00Z
    ends_at: 2099-01-02T00:00:00Z
    products: [{ id: p1, quota: 10 }]
routes:
  - name: buy
    match: { path: /buy/:campaign/:product, methods: [POST] }
    guards:
      - rate_limit: { name: per-ip, key: ip, rate: 5/s }
      - dedupe: { ttl: 1h }
      - quota: {}
    upstream: purchase
`

t.test('a writable directory loads (made if missing); the other guards inherit local', async (t) => {
  const { dir } = tempDir(t)
  const r = loadConfigText(yaml(`  on_error: journal\n  journal: { path: ${join(dir, 'a/b')}, max_entries: 5 }`), '/etc/fg.yaml', {})
  t.equal(r.ok, true, r.ok ? '' : r.errors.join('\n'))
  if (!r.ok) return
  t.same(r.config.store.journal, { path: join(dir, 'a/b'), maxEntries: 5 })
  t.equal(r.config.store.onError, 'local', 'what guards without a journal inherit')
})

t.test('a relative path is relative to the config file', async (t) => {
  const { dir } = tempDir(t)
  const r = loadConfigText(yaml('  on_error: journal\n  journal: { path: ./jr }'), join(dir, 'fg.yaml'), {})
  t.equal(r.ok, true)
  if (r.ok) t.same(r.config.store.journal, { path: join(dir, 'jr'), maxEntries: 100000 })
})

t.test('a directory that cannot be written: FILE:LINE:COL at the path', async (t) => {
  const { dir } = tempDir(t)
  const file = join(dir, 'not-a-dir')
  writeFileSync(file, 'x')
  const r = loadConfigText(yaml(`  on_error: journal\n  journal: { path: ${file}/sub }`), '/etc/fg.yaml', {})
  t.equal(r.ok, false)
  if (!r.ok) t.match(r.errors, [/^\/etc\/fg\.yaml:7:20: store\.journal\.path: .* cannot be written \(ENOTDIR\); the journal must be on a writable local disk$/])
})

t.test('journal without a path, or store.journal without the policy', async (t) => {
  const a = loadConfigText(yaml('  on_error: journal'), '/etc/fg.yaml', {})
  t.equal(a.ok, false)
  if (!a.ok) t.match(a.errors, [/^\/etc\/fg\.yaml:6:13: store\.on_error: journal needs store\.journal/])
  const b = loadConfigText(yaml('  on_error: journal\n  journal: { max_entries: 3 }'), '/etc/fg.yaml', {})
  t.equal(b.ok, false)
  if (!b.ok) t.match(b.errors, [/^\/etc\/fg\.yaml:7:\d+: store\.journal: path is required/])
  const c = loadConfigText(yaml('  journal: { path: /tmp/x }'), '/etc/fg.yaml', {})
  t.equal(c.ok, false)
  if (!c.ok) t.match(c.errors, [/^\/etc\/fg\.yaml:6:3: store\.journal is used only with store\.on_error: journal$/])
  const d = loadConfigText(yaml('  on_error: journal\n  journal: { path: /tmp/x, max_entries: 0 }'), '/etc/fg.yaml', {})
  t.equal(d.ok, false, 'max_entries below 1')
  const e = loadConfigText(yaml('  on_error: journal\n  journal: { path: /tmp/x, colour: red }'), '/etc/fg.yaml', {})
  t.equal(e.ok, false, 'unknown key')
  if (!e.ok) t.match(e.errors, [/unknown key "colour" in store\.journal/])
})

t.test('a guard\'s own on_error: journal is not a policy (journal is set at store.on_error)', async (t) => {
  const r = loadConfigText(yaml('').replace('- quota: {}', '- quota: { on_error: journal }'), '/etc/fg.yaml', {})
  t.equal(r.ok, false)
})

t.test('reload to an unwritable journal directory is refused with FILE:LINE:COL; the old config keeps serving', async (t) => {
  const origin = await startOrigin(t)
  const { dir, write } = tempDir(t)
  const good = yaml(`  on_error: journal\n  journal: { path: ${join(dir, 'j')} }`, origin.url)
  const file = write('fg.yaml', good)
  const gw = await startTestGateway(t, { configFile: file })
  const d = client(t)
  writeFileSync(join(dir, 'blocker'), 'x')
  write('fg.yaml', yaml(`  on_error: journal\n  journal: { path: ${join(dir, 'blocker')}/j }`, origin.url))
  const r = await fetchText(d, gw.adminUrl + '/admin/reload', { method: 'POST' })
  t.equal(r.status, 400)
  t.match(r.text, /fg\.yaml:7:20: store\.journal\.path: .* cannot be written \(ENOTDIR\)/)
  const buy = await fetchText(d, gw.url + '/buy/c1/p1', { method: 'POST', headers: { 'x-user-id': 'u1' } })
  t.equal(buy.status, 200, 'the old config keeps serving')
})

t.test('a dedupe after a journaled quota is refused at the dedupe (validate, serve and reload judge it alike)', async (t) => {
  const { dir } = tempDir(t)
  const store = `  on_error: journal\n  journal: { path: ${join(dir, 'j')} }`
  const after = yaml(store).replace('      - dedupe: { ttl: 1h }\n      - quota: {}\n', '      - quota: {}\n      - rate_limit: { name: per-user, key: user, rate: 5/s }\n      - dedupe: { ttl: 1h }\n')
  const r = loadConfigText(after, '/etc/fg.yaml', {})
  t.equal(r.ok, false)
  if (!r.ok) t.same(r.errors, ['/etc/fg.yaml:23:9: route "buy": dedupe after quota (at /etc/fg.yaml:21:9): a buy journaled while the store is down is answered 202 PENDING by the quota before this dedupe runs, so one user could get several units; put dedupe before quota when store.on_error is journal'])
  // The quota's own on_error means it does not journal: nothing to miss, the order is the author's.
  const own = loadConfigText(after.replace('- quota: {}', '- quota: { on_error: fail_closed }'), '/etc/fg.yaml', {})
  t.equal(own.ok, true, own.ok ? '' : own.errors.join('\n'))
  // Without the journal a dedupe after the quota is allowed (it runs after a live admission).
  const live = loadConfigText(yaml('').replace('      - dedupe: { ttl: 1h }\n      - quota: {}\n', '      - quota: {}\n      - dedupe: { ttl: 1h }\n'), '/etc/fg.yaml', {})
  t.equal(live.ok, true, live.ok ? '' : live.errors.join('\n'))
})
