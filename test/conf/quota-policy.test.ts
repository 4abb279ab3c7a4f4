/**
 * A quota refuses the failure policies that cannot bound the units sold while the store is down
 * (local, fail_open; issue 13), at FILE:LINE:COL — its own on_error, or store.on_error it inherits —
 * and fail_closed loads.
 */
import t from 'tap'
import { loadConfigText } from '../../conf/load.js'

const yaml = (store: string, quota: string): string => `store: { kind: memory${store} }
identity: { user: header x-user-id }
upstreams:
  purchase: { targets: [{ url: http://127.0.0.1:9 }] }
campaigns:
  - id: c1
    starts_at: 2030-01-01T00:00:00Z
    ends_at: 2030-01-02T00:00:00Z
    products: [{ id: p1, quota: 10 }]
routes:
  - name: buy
    match: { path: /buy/:campaign/:product, methods: [POST] }
    guards:
      - rate_limit: { name: per-ip, key: ip, rate: 5/s }
      - quota: ${quota}
    upstream: purchase
`

t.test('own on_error local / fail_open: refused at the value', async (t) => {
  for (const p of ['local', 'fail_open']) {
    const r = loadConfigText(yaml('', `{ on_error: ${p} }`), '/etc/fg.yaml', {})
    t.equal(r.ok, false, `${p} refused`)
    if (r.ok) continue
    t.equal(r.errors.length, 1)
    t.match(r.errors[0], new RegExp(`^/etc/fg\\.yaml:15:28: quota: on_error ${p} cannot bound the units sold while the store is down \\(it would oversell\\); use quota: \\{ on_error: fail_closed \\}`))
  }
})

t.test('inherited from store.on_error: refused at the quota guard, naming where it came from', async (t) => {
  const r = loadConfigText(yaml(', on_error: local', '{}'), '/etc/fg.yaml', {})
  t.equal(r.ok, false)
  if (!r.ok) t.match(r.errors, [/^\/etc\/fg\.yaml:15:\d+: quota: on_error local \(inherited from store\.on_error\) cannot bound .* \(local stays available to rate_limit and dedupe\)$/])
})

t.test('fail_closed (own or inherited) loads; local elsewhere stays allowed', async (t) => {
  t.equal(loadConfigText(yaml('', '{}'), '/etc/fg.yaml', {}).ok, true)
  t.equal(loadConfigText(yaml(', on_error: local', '{ on_error: fail_closed }'), '/etc/fg.yaml', {}).ok, true, 'store local, quota fail_closed')
})
