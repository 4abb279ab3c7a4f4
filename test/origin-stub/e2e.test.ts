/**
 * End to end through the gateway, quota == stock: no request the edge admitted is lost, and the origin
 * never sees more buys than the quota.
 */
import t from 'tap'
import { silentLog } from '../../gateway/log.js'
import { startGateway } from '../../gateway/main.js'
import { createOrigin } from '../../origin-stub/origin.js'
import { client, loadConfig, metricSum, originYaml, until } from './helpers.js'

const STOCK = 200
const USERS = 1500
const BUYS = 2000

t.test('quota == stock through the gateway', async (t) => {
  const origin = createOrigin(loadConfig(originYaml({
    store: 'memory', products: [{ campaign: 'c1', product: 'p1', quota: STOCK }], orderRate: '2000/s', paymentTimeout: '10m'
  })), { listen: { host: '127.0.0.1', port: 0 }, defaultMetrics: false })
  t.teardown(async () => { await origin.close(0) })
  const { url: originUrl } = await origin.start()

  const gwConfig = loadConfig(`
store: { kind: memory }
identity: { user: header x-user-id }
access_log: { enabled: false }
upstreams:
  purchase:
    targets: [{ url: "${originUrl}" }]
    timeout: 10s
campaigns:
  - id: c1
    starts_at: 2020-01-01T00:00:00Z
    ends_at: 2099-01-01T00:00:00Z
    products: [{ id: "p1", quota: ${STOCK} }]
routes:
  - name: buy
    match: { path: /buy/:campaign/:product, methods: [POST] }
    guards:
      - campaign_window: {}
      - dedupe: { ttl: 1h }
      - quota: {}
    upstream: purchase
  - name: site
    match: { path_prefix: / }
    upstream: purchase
    allow_bypass_of: [buy]
`)
  const gw = await startGateway({ config: gwConfig, listen: { host: '127.0.0.1', port: 0 }, admin: null, log: silentLog })
  t.teardown(async () => { await gw.close() })
  const http = client(t, 64)

  const results = await Promise.all(Array.from({ length: BUYS }, async (_, i) => {
    const user = `u${(i * 7919) % USERS}`
    const r = await http('POST', `${gw.url}/buy/c1/p1`, { 'x-user-id': user })
    return { user, ...r }
  }))
  const ok = results.filter((r) => r.status === 202)
  t.equal(ok.length, STOCK, 'exactly the quota bought through the edge')
  t.equal(new Set(ok.map((r) => r.user)).size, STOCK, 'no user twice')
  const rest = results.filter((r) => r.status !== 202)
  t.ok(rest.every((r) => r.status === 409 && ['SOLD_OUT', 'DUPLICATE'].includes(r.body.code)), 'the rest: 409 SOLD_OUT / DUPLICATE')

  const om = (await http('GET', `${originUrl}/metrics`)).body as string
  const seen = ['queued', 'sold_out', 'duplicate', 'bad_request', 'store_unavailable'].reduce((a, r) => a + metricSum(om, 'flashgate_origin_buys_total', { result: r }), 0)
  t.ok(seen <= STOCK, `the origin never sees more buys than the quota (${seen})`)
  t.equal(metricSum(om, 'flashgate_origin_buys_total', { result: 'queued' }), STOCK, 'every admitted buy became an order at the origin')
  const admitted = (await gw.metrics.quotaAdmitted.get()).values.reduce((a, v) => a + v.value, 0)
  t.equal(admitted, STOCK, 'edge admitted == quota')

  const created = await until(async () => {
    const st = await Promise.all(ok.map(async (r) => (await http('GET', `${gw.url}/orders/${String(r.body.order_id)}`, { 'x-user-id': r.user })).body.status))
    return st.every((s) => s === 'CREATED')
  }, 20_000, 200)
  t.ok(created, 'no admitted request lost: every order reaches CREATED (read through the gateway)')
  t.same((await http('GET', `${gw.url}/stock/c1/p1`)).body, { stock: STOCK, sale: 0, locked: STOCK, sold: 0 })
})
