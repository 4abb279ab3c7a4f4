/**
 * One ledger between the edge and the origin, with the gateway and origin-stub on one real
 * redis-server and no configuration linking them: units the origin releases (unpaid orders cancelled
 * after payment_timeout) return to the edge quota and clear its sold-out latch; the admin release
 * endpoint; PUT /admin/quota is followed by the origin's stock, or refused below what is admitted.
 * The invariant at rest: edge admitted == origin locked + sold, edge remaining == origin sale.
 */
import t from 'tap'
import type { Test } from 'tap'
import { startRedis } from '../helpers/redis.js'
import { client, fetchText, memoryAccessLog, startTestGateway } from '../helpers/gateway.js'
import { createOrigin } from '../../origin-stub/origin.js'
import { configFile, loadConfig, spawnOrigin, until } from './helpers.js'

const STOCK = 20
const PAY_TIMEOUT_MS = 1500

async function stack (t: Test, segments = 1): Promise<{ gw: string, admin: string, origin: string, http: ReturnType<typeof client> }> {
  const redis = await startRedis()
  t.teardown(async () => { await redis.stop() })
  const yaml = (upstream: string): string => `
store: { kind: redis, url: "${redis.url}", timeout: 2s }
identity: { user: header x-user-id }
upstreams:
  purchase:
    targets: [{ url: "${upstream}" }]
    retries: 0
campaigns:
  - id: c1
    starts_at: 2020-01-01T00:00:00Z
    ends_at: 2099-01-01T00:00:00Z
    products: [{ id: p1, quota: ${STOCK}, segments: ${segments} }]
origin: { listen: 127.0.0.1:0, order_rate: 1000/s, payment_timeout: ${PAY_TIMEOUT_MS}ms }
routes:
  - name: buy
    match: { path: /buy/:campaign/:product, methods: [POST] }
    guards:
      - dedupe: { ttl: 1h }
      - quota: { latch_ttl: 1h }   # only the release message can clear the sold-out latch here
    upstream: purchase
`
  const origin = createOrigin(loadConfig(yaml('http://127.0.0.1:9')), { listen: { host: '127.0.0.1', port: 0 }, defaultMetrics: false, sweepIntervalMs: 100 })
  t.teardown(async () => { await origin.close(0) })
  const { url: originUrl } = await origin.start()
  const gw = await startTestGateway(t, { config: loadConfig(yaml(originUrl)), admin: { host: '127.0.0.1', port: 0 }, accessLog: memoryAccessLog() })
  await gw.store.ready?.()
  return { gw: gw.url, admin: gw.adminUrl as string, origin: originUrl, http: client(t, { connections: 16 }) }
}

async function ledger (s: Awaited<ReturnType<typeof stack>>): Promise<{ edge: any, origin: any }> {
  const edge = (await fetchText(s.http, `${s.admin}/admin/quota/c1/p1`)).json
  const origin = (await fetchText(s.http, `${s.origin}/stock/c1/p1`)).json
  return { edge, origin }
}

function atRest (t: Test, l: { edge: any, origin: any }, what: string): void {
  t.equal(l.edge.admitted, l.origin.locked + l.origin.sold, `${what}: edge admitted == origin locked + sold`)
  t.equal(l.edge.remaining, l.origin.sale, `${what}: edge remaining == origin sale`)
}

const buyAll = async (s: Awaited<ReturnType<typeof stack>>, users: string[]): Promise<Map<string, number>> => {
  const codes = new Map<string, number>()
  const rs = await Promise.all(users.map(async (u) => await fetchText(s.http, `${s.gw}/buy/c1/p1`, { method: 'POST', headers: { 'x-user-id': u } })))
  for (const r of rs) {
    const k = r.status === 202 ? 'QUEUED' : String(r.json?.code ?? r.status)
    codes.set(k, (codes.get(k) ?? 0) + 1)
  }
  return codes
}

for (const segments of [1, 4]) {
  t.test(`the issue's case 2 (segments ${segments}): 20 unpaid orders released after payment_timeout are sold again to 20 of 40 late buyers`, async (t) => {
    const s = await stack(t, segments)
    const first = await buyAll(s, Array.from({ length: 40 }, (_, i) => `early${i}`))
    t.equal(first.get('QUEUED'), STOCK, '20 orders')
    t.same(Object.fromEntries(first), { QUEUED: STOCK, SOLD_OUT: 20 }, 'the other 20: SOLD_OUT')
    atRest(t, await ledger(s), 'after the first crowd')

    // Nobody pays: the origin cancels the 20 orders after payment_timeout and gives the units back.
    const back = await until(async () => (await ledger(s)).edge.remaining === STOCK, PAY_TIMEOUT_MS + 5000, 50)
    t.ok(back, 'the edge quota has the 20 released units back')
    const l = await ledger(s)
    t.same(l.origin, { stock: STOCK, sale: STOCK, locked: 0, sold: 0 }, 'origin: all 20 for sale again')
    atRest(t, l, 'after the cancellations')

    // The sold-out latch (1 h here) was cleared by the release message: 40 new buyers get 20 orders.
    const late = await buyAll(s, Array.from({ length: 40 }, (_, i) => `late${i}`))
    t.equal(late.get('QUEUED'), STOCK, '20 more orders: the released units resold')
    t.equal(late.get('SOLD_OUT'), 20)
    atRest(t, await ledger(s), 'after the late crowd')
  })
}

t.test('POST /admin/quota/:c/:p/release: 200 with the new view, 409 beyond admitted (nothing changed), 400 on a bad number', async (t) => {
  const s = await stack(t)
  const first = await buyAll(s, Array.from({ length: 25 }, (_, i) => `u${i}`))
  t.equal(first.get('QUEUED'), STOCK)
  const release = async (body: string): Promise<{ status: number, json: any }> => await fetchText(s.http, `${s.admin}/admin/quota/c1/p1/release`, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
  for (const bad of ['{"units": 0}', '{"units": -1}', '{"units": 1.5}', '{"units": "3"}', '{"units": 1e300}', '{}', 'nope', '', 'null']) {
    const r = await release(bad)
    t.match(r, { status: 400, json: { code: 'BAD_UNITS' } }, `400 BAD_UNITS for ${bad === '' ? 'an empty body' : bad}`)
  }
  const over = await release('{"units": 21}')
  t.match(over, { status: 409, json: { code: 'RELEASE_EXCEEDS_ADMITTED', quota: STOCK, admitted: STOCK, remaining: 0 } }, 'more than admitted: 409 with the view')
  t.same((await ledger(s)).edge, { quota: STOCK, admitted: STOCK, remaining: 0 }, 'nothing changed')
  t.match(await fetchText(s.http, `${s.admin}/admin/quota/c1/p1/release`), { status: 405 })
  t.match(await fetchText(s.http, `${s.admin}/admin/quota/c1/zz/release`, { method: 'POST', body: '{"units":1}' }), { status: 404 })

  const ok = await release('{"units": 3}')
  t.match(ok, { status: 200, json: { quota: STOCK, admitted: STOCK - 3, remaining: 3 } }, '200 with the new view')
  const again = await buyAll(s, ['v1', 'v2', 'v3', 'v4'])
  // The origin still holds all 20 (the release above was not the origin's): it refuses, and the edge
  // gives each refused unit back, so the edge never counts a unit the origin did not lock.
  t.equal(again.get('SOLD_OUT'), 4, 'the origin had nothing to sell: SOLD_OUT')
  t.same((await ledger(s)).edge, { quota: STOCK, admitted: STOCK - 3, remaining: 3 }, "the origin's refusals went back to the edge quota")
})

t.test('PUT /admin/quota: the origin follows a raise; below admitted is refused with 409', async (t) => {
  const s = await stack(t)
  await buyAll(s, Array.from({ length: 30 }, (_, i) => `u${i}`))
  const put = async (body: string): Promise<{ status: number, json: any }> => await fetchText(s.http, `${s.admin}/admin/quota/c1/p1`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body })
  t.match(await put('{"quota": 10}'), { status: 409, json: { code: 'QUOTA_BELOW_ADMITTED', admitted: STOCK } }, 'below admitted: 409')
  t.same((await ledger(s)).edge, { quota: STOCK, admitted: STOCK, remaining: 0 }, 'nothing changed')
  t.match(await put('{"quota": -5}'), { status: 400, json: { code: 'BAD_REQUEST' } })
  t.match(await put('{"quota": 30}'), { status: 200, json: { quota: 30, admitted: STOCK, remaining: 10 } })
  const followed = await until(async () => (await ledger(s)).origin.stock === 30, 5000, 50)
  t.ok(followed, "the origin's stock follows the edge's quota")
  atRest(t, await ledger(s), 'after the raise')
  const more = await buyAll(s, Array.from({ length: 15 }, (_, i) => `w${i}`))
  t.equal(more.get('QUEUED'), 10, 'the 10 new units sell')
  atRest(t, await ledger(s), 'after selling them')
})

t.test('an origin that does not share the store: flashgate origin --release-to gives the units back through the admin API', async (t) => {
  const yaml = (store: string, upstream: string, pay: string): string => `
store: { kind: ${store} }
identity: { user: header x-user-id }
upstreams:
  purchase: { targets: [{ url: "${upstream}" }], retries: 0 }
campaigns:
  - id: c1
    starts_at: 2020-01-01T00:00:00Z
    ends_at: 2099-01-01T00:00:00Z
    products: [{ id: p1, quota: 5 }]
origin: { listen: 127.0.0.1:0, order_rate: 1000/s, payment_timeout: ${pay} }
routes:
  - name: buy
    match: { path: /buy/:campaign/:product, methods: [POST] }
    guards: [{ dedupe: { ttl: 1h } }, { quota: { latch_ttl: 1h } }]
    upstream: purchase
  - name: orders
    match: { path_prefix: /orders }
    upstream: purchase
`
  // The gateway first (its admin URL is what the origin releases to), its upstream set by a reload.
  const gw = await startTestGateway(t, { config: loadConfig(yaml('memory', 'http://127.0.0.1:9', '1s')), admin: { host: '127.0.0.1', port: 0 }, accessLog: memoryAccessLog() })
  const file = configFile(t, yaml('memory', 'http://127.0.0.1:9', '1s'))
  const origin = await spawnOrigin(t, file, ['--release-to', gw.adminUrl as string])
  t.equal((await gw.reload(loadConfig(yaml('memory', origin.url, '1s')))).ok, true)
  const http = client(t, { connections: 8 })
  const s = { gw: gw.url, admin: gw.adminUrl as string, origin: origin.url, http }
  const first = await buyAll(s, Array.from({ length: 8 }, (_, i) => `a${i}`))
  t.same(Object.fromEntries(first), { QUEUED: 5, SOLD_OUT: 3 })
  let order: any = null
  for (let i = 0; i < 8 && order === null; i++) {
    const r = await fetchText(http, `${gw.url}/orders?campaign=c1&product=p1`, { headers: { 'x-user-id': `a${i}` } })
    if (r.status === 200) order = r.json
    else t.equal(r.status, 404, 'no order: 404')
  }
  t.ok(order !== null, 'a buyer finds their order through the edge (GET /orders?campaign=C&product=P)')
  const buyer = String(order?.user)
  // Nobody pays (paying within 1 s is not something a loaded test machine can promise).
  const back = await until(async () => (await ledger(s)).edge.remaining === 5, 10_000, 100)
  t.ok(back, 'the 5 unpaid units are back at the edge (POST .../release from the origin process)')
  atRest(t, await ledger(s), 'after the release')
  const late = await buyAll(s, Array.from({ length: 6 }, (_, i) => `b${i}`))
  t.same(Object.fromEntries(late), { QUEUED: 5, SOLD_OUT: 1 }, 'late buyers get the 5 released units')
  t.equal(await origin.stop(), 0)
})
