/**
 * The edge↔origin ledger at every sample while a sale runs, not only at rest (issue 13, point 2), and
 * the admin reset refused on a store an origin shares (point 3).
 *
 * Gateway (in-process) and origin (in-process) on one real redis-server. While 600 buyers (16 at a time)
 * go through the gateway's dedupe + quota to the origin, and winners pay, a sampler reads the edge's
 * counter and the origin's stock hash in ONE Lua call (one instant of the store), and the client's own
 * count of buys in flight around it:
 *   0 <= edge admitted − (origin locked + sold) − released-not-yet-handed-back <= buys in flight
 * (edge admitted is the counter, i.e. net of the units given back). At rest: equality, and edge
 * remaining == origin sale.
 */
import t from 'tap'
import { Redis } from 'ioredis'
import { request } from 'undici'
import { startRedis } from '../helpers/redis.js'
import { client, fetchText, memoryAccessLog, startTestGateway } from '../helpers/gateway.js'
import { createOrigin } from '../../origin-stub/origin.js'
import { loadConfig } from './helpers.js'

const STOCK = 200
const BUYERS = 600
const CONCURRENCY = 16

const SNAPSHOT = `
local e = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local h = redis.call('HMGET', KEYS[2], 'locked', 'sold', 'released', 'sale')
return {e, tonumber(h[1]) or 0, tonumber(h[2]) or 0, tonumber(h[3]) or 0, tonumber(h[4]) or 0}`

t.test('edge admitted − given back == origin locked + sold + buys in flight, at every sample of a running sale; reset refused', async (t) => {
  const redis = await startRedis()
  t.teardown(async () => { await redis.stop() })
  const yaml = (upstream: string): string => `
store: { kind: redis, url: "${redis.url}", timeout: 2s }
identity: { user: header x-user-id }
upstreams:
  purchase: { targets: [{ url: "${upstream}" }], retries: 0 }
campaigns:
  - id: c1
    starts_at: 2020-01-01T00:00:00Z
    ends_at: 2099-01-01T00:00:00Z
    products: [{ id: p1, quota: ${STOCK} }]
origin: { listen: 127.0.0.1:0, order_rate: 2000/s, payment_timeout: 1h }
routes:
  - name: buy
    match: { path: /buy/:campaign/:product, methods: [POST] }
    guards:
      - dedupe: { ttl: 1h }
      - quota: {}
    upstream: purchase
  - name: pay
    match: { path_prefix: /orders/, methods: [POST] }
    upstream: purchase
`
  const origin = createOrigin(loadConfig(yaml('http://127.0.0.1:9')), { listen: { host: '127.0.0.1', port: 0 }, defaultMetrics: false, sweepIntervalMs: 100 })
  t.teardown(async () => { await origin.close(0) })
  const { url: originUrl } = await origin.start()
  const gw = await startTestGateway(t, { config: loadConfig(yaml(originUrl)), admin: { host: '127.0.0.1', port: 0 }, accessLog: memoryAccessLog() })
  await gw.store.ready?.()
  const http = client(t, { connections: CONCURRENCY + 4 })
  const probe = new Redis(redis.url, { lazyConnect: false, maxRetriesPerRequest: 1 })
  t.teardown(() => { probe.disconnect() })

  // The client's count of buys in flight: started and not answered.
  let inFlight = 0
  let started = 0
  let next = 0
  const codes = new Map<string, number>()
  const pays: Array<Promise<unknown>> = []
  const buyer = async (): Promise<void> => {
    while (next < BUYERS) {
      const user = `u${next++}`
      inFlight++
      started++
      const r = await fetchText(http, `${gw.url}/buy/c1/p1`, { method: 'POST', headers: { 'x-user-id': user } })
      inFlight--
      const code = r.status === 202 ? 'QUEUED' : String(r.json?.code ?? r.status)
      codes.set(code, (codes.get(code) ?? 0) + 1)
      // Every other winner pays at once (locked → sold at the origin; it may still be QUEUED there: 409, fine).
      if (r.status === 202 && next % 2 === 0) pays.push(request(`${gw.url}/orders/${encodeURIComponent(String(r.json.order_id))}/pay`, { method: 'POST', headers: { 'x-user-id': user }, dispatcher: http }).then(async (p) => await p.body.text()))
    }
  }

  const samples: Array<{ e: number, locked: number, sold: number, released: number, sale: number, bound: number }> = []
  let running = true
  const sampler = (async () => {
    while (running) {
      const f0 = inFlight
      const s0 = started
      const v = await probe.eval(SNAPSHOT, 2, 'fg:q:{c1:p1:0}', 'fg:stock:{c1:p1}') as number[]
      // In flight at the snapshot: those in flight before it, or started while it ran.
      const bound = f0 + (started - s0)
      samples.push({ e: v[0] ?? 0, locked: v[1] ?? 0, sold: v[2] ?? 0, released: v[3] ?? 0, sale: v[4] ?? 0, bound })
      await new Promise((resolve) => setImmediate(resolve))
    }
  })()
  await Promise.all(Array.from({ length: CONCURRENCY }, buyer))
  await Promise.all(pays)
  running = false
  await sampler

  t.equal(codes.get('QUEUED'), STOCK, `the stock sold (answers: ${JSON.stringify(Object.fromEntries(codes))})`)
  t.ok(samples.length > 20, `${samples.length} samples while the sale ran`)
  const during = samples.filter((s) => s.locked + s.sold > 0 && s.locked + s.sold < STOCK)
  t.ok(during.length > 5, `${during.length} of them mid-sale (some units held, some not)`)
  const bad = samples.filter((s) => {
    const d = s.e - (s.locked + s.sold) - s.released
    return d < 0 || d > s.bound
  })
  t.same(bad, [], '0 <= edge admitted − (origin locked + sold) − released <= buys in flight, at every sample')
  t.ok(samples.some((s) => s.sold > 0), 'payments moved units to sold while sampling')

  // At rest: equality.
  const rest = await probe.eval(SNAPSHOT, 2, 'fg:q:{c1:p1:0}', 'fg:stock:{c1:p1}') as number[]
  t.equal(rest[0], (rest[1] ?? 0) + (rest[2] ?? 0), 'at rest: edge admitted == origin locked + sold')
  const view = (await fetchText(http, `${gw.adminUrl as string}/admin/quota/c1/p1`)).json
  t.equal(view.remaining, rest[4], 'at rest: edge remaining == origin sale')

  // Reset: refused, nothing changed on either side.
  const reset = await fetchText(http, `${gw.adminUrl as string}/admin/quota/c1/p1/reset`, { method: 'POST' })
  t.equal(reset.status, 409, 'reset refused')
  t.match(reset.json, { code: 'RESET_BREAKS_LEDGER', message: /an origin keeps this product's orders on this store/, admitted: STOCK, remaining: 0 })
  const after = await probe.eval(SNAPSHOT, 2, 'fg:q:{c1:p1:0}', 'fg:stock:{c1:p1}') as number[]
  t.same(after, rest, 'edge counter and origin stock unchanged')
  const again = await fetchText(http, `${gw.url}/buy/c1/p1`, { method: 'POST', headers: { 'x-user-id': 'late' } })
  t.match(again.json, { code: 'SOLD_OUT' }, 'still sold out at the edge')
})
