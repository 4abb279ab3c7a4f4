/**
 * A quota refuses the failure policy that cannot bound the units sold while the store is down
 * (fail_open; issue 13), at FILE:LINE:COL — its own on_error, or store.on_error it inherits; local
 * (bounded by leases, with `lease: N`) and fail_closed load.
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

t.test('own on_error fail_open: refused at the value, pointing at local (leases) and fail_closed', async (t) => {
  const r = loadConfigText(yaml('', '{ on_error: fail_open }'), '/etc/fg.yaml', {})
  t.equal(r.ok, false)
  if (r.ok) return
  t.equal(r.errors.length, 1)
  t.match(r.errors[0], /^\/etc\/fg\.yaml:15:28: quota: on_error fail_open cannot bound the units sold while the store is down \(it would oversell\); use quota: \{ on_error: local \} \(bounded by leases\) or \{ on_error: fail_closed \}$/)
})

t.test('inherited fail_open from store.on_error: refused at the quota guard, naming where it came from', async (t) => {
  const r = loadConfigText(yaml(', on_error: fail_open', '{}'), '/etc/fg.yaml', {})
  t.equal(r.ok, false)
  if (!r.ok) t.match(r.errors, [/^\/etc\/fg\.yaml:15:\d+: quota: on_error fail_open \(inherited from store\.on_error\) cannot bound/])
})

t.test('local (own or inherited) loads with a lease, default 10', async (t) => {
  const pick = (text: string): unknown => {
    const r = loadConfigText(text, '/etc/fg.yaml', {})
    if (!r.ok) { t.fail(r.errors.join('\n')); return null }
    return r.config.routes[0]?.guards[1]
  }
  t.match(pick(yaml('', '{ on_error: local }')), { kind: 'quota', onError: 'local', lease: 10 })
  t.match(pick(yaml('', '{ on_error: local, lease: 250 }')), { kind: 'quota', onError: 'local', lease: 250 })
  t.match(pick(yaml(', on_error: local', '{ lease: 3 }')), { kind: 'quota', onError: null, lease: 3 }, 'inherited local takes a lease too')
})

t.test('lease: a bad number, or a lease without local, is an error at the value', async (t) => {
  const err = (quota: string, store = ''): string[] => {
    const r = loadConfigText(yaml(store, quota), '/etc/fg.yaml', {})
    return r.ok ? [] : r.errors
  }
  t.match(err('{ on_error: local, lease: 0 }'), [/^\/etc\/fg\.yaml:15:\d+: lease: 0 is out of range/])
  t.match(err('{ on_error: local, lease: 2.5 }'), [/^\/etc\/fg\.yaml:15:\d+: lease: expected an integer/])
  t.match(err('{ on_error: local, lease: many }'), [/^\/etc\/fg\.yaml:15:\d+: lease: expected an integer/])
  t.match(err('{ lease: 5 }'), [/^\/etc\/fg\.yaml:15:\d+: lease: only with on_error: local \(this quota's on_error is fail_closed\)$/])
  t.match(err('{ on_error: fail_closed, lease: 5 }', ', on_error: local'), [/lease: only with on_error: local/], 'own fail_closed over an inherited local')
})

t.test('fail_closed (own or inherited) loads; local elsewhere stays allowed', async (t) => {
  t.equal(loadConfigText(yaml('', '{}'), '/etc/fg.yaml', {}).ok, true)
  t.equal(loadConfigText(yaml(', on_error: local', '{ on_error: fail_closed }'), '/etc/fg.yaml', {}).ok, true, 'store local, quota fail_closed')
})
