/**
 * The flash sale through the real CLI: 5,000 concurrent buys from 3,000 users for 500 units.
 * On Redis through TWO origin processes sharing one redis-server; on memory through one (two processes
 * cannot share memory). Then every order reaches CREATED, 300 are paid, 200 time out.
 */
import t from 'tap'
import type { Test } from 'tap'
import { startRedis } from '../helpers/redis.js'
import { client, configFile, metricSum, originYaml, spawnOrigin, until } from './helpers.js'

const STOCK = 500
const USERS = 3000
const BUYS = 5000
const PAY = 300
const PAY_TIMEOUT_MS = 10_000

async function sale (t: Test, store: 'memory' | string, processes: number): Promise<void> {
  const file = configFile(t, originYaml({
    store,
    keyPrefix: 'sale:',
    products: [{ campaign: 'nov11', product: '153', quota: STOCK }],
    orderRate: '1000/s',
    paymentTimeout: `${PAY_TIMEOUT_MS}ms`
  }))
  const origins = await Promise.all(Array.from({ length: processes }, async () => await spawnOrigin(t, file)))
  const urls = origins.map((o) => o.url)
  const http = client(t, 64)
  const stockUrl = `${urls[0]}/stock/nov11/153`

  // Invariant samples, taken while the buys run.
  // Its own connection, so samples are not queued behind the buys.
  const probe = client(t, 1)
  const samples: Array<{ stock: number, sale: number, locked: number, sold: number }> = []
  let sampling = true
  const sampler = (async () => {
    while (sampling) {
      const r = await probe('GET', stockUrl)
      if (r.status === 200) samples.push(r.body)
      await new Promise((resolve) => setTimeout(resolve, 5))
    }
  })()

  const order = Array.from({ length: BUYS }, (_, i) => i)
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    ;[order[i], order[j]] = [order[j] as number, order[i] as number]
  }
  const results = await Promise.all(order.map(async (i) => {
    const user = `u${i % USERS}`
    const r = await http('POST', `${urls[i % urls.length]}/buy/nov11/153`, { 'x-user-id': user })
    return { user, status: r.status, body: r.body }
  }))
  sampling = false
  await sampler

  const queued = results.filter((r) => r.status === 202)
  t.equal(queued.length, STOCK, 'exactly the stock is QUEUED')
  t.ok(queued.every((r) => r.body.status === 'QUEUED' && typeof r.body.order_id === 'string'), '202 bodies are {status: QUEUED, order_id}')
  t.equal(new Set(queued.map((r) => r.user)).size, STOCK, 'no user twice')
  t.equal(new Set(queued.map((r) => r.body.order_id)).size, STOCK, 'distinct order ids')
  const others = results.filter((r) => r.status !== 202)
  t.ok(others.every((r) => r.status === 409 && (r.body.code === 'SOLD_OUT' || r.body.code === 'DUPLICATE')), 'everything else is 409 SOLD_OUT or DUPLICATE')
  const winners = new Map(queued.map((r) => [r.user, r.body.order_id as string]))
  const dups = others.filter((r) => r.body.code === 'DUPLICATE')
  t.ok(dups.every((r) => winners.get(r.user) === r.body.order_id), 'a DUPLICATE carries the user\'s own order id')

  t.ok(samples.length > 5, `invariant sampled during the run`)
  const bad = samples.filter((s) => s.sale + s.locked + s.sold !== s.stock || s.sale < 0 || s.locked < 0 || s.sold < 0 || s.stock !== STOCK)
  t.same(bad, [], 'sale + locked + sold == stock, all >= 0, at every sample')
  t.same((await http('GET', stockUrl)).body, { stock: STOCK, sale: 0, locked: STOCK, sold: 0 }, 'all units locked at the end of the buys')

  // Every order reaches CREATED.
  const ids = [...winners.values()]
  const owner = new Map([...winners].map(([u, id]) => [id, u]))
  const as = (id: string): Record<string, string> => ({ 'x-user-id': owner.get(id) ?? '' })
  const allCreated = await until(async () => {
    const st = await Promise.all(ids.map(async (id, i) => (await http('GET', `${urls[i % urls.length]}/orders/${id}`, as(id))).body.status))
    return st.every((s) => s === 'CREATED')
  }, 20_000, 200)
  t.ok(allCreated, 'all 500 orders reach CREATED')
  const one = await http('GET', `${urls[0]}/orders/${ids[0] ?? ''}`, as(ids[0] ?? ''))
  t.match(one.body, { order_id: ids[0], status: 'CREATED', campaign: 'nov11', product: '153', user: String, queued_at: Number, created_at: Number, pay_by: Number, paid_at: null })

  // Pay 300 (through alternating processes), let 200 time out.
  const toPay = ids.slice(0, PAY)
  const paid = await Promise.all(toPay.map(async (id, i) => await http('POST', `${urls[i % urls.length]}/orders/${id}/pay`, as(id))))
  t.ok(paid.every((r) => r.status === 200 && r.body.status === 'PAID'), '300 payments answered 200 PAID')
  const again = await http('POST', `${urls[urls.length - 1]}/orders/${toPay[0] ?? ''}/pay`, as(toPay[0] ?? ''))
  t.match(again, { status: 200, body: { status: 'PAID' } }, 'paying twice is 200 again')
  t.same((await http('GET', stockUrl)).body, { stock: STOCK, sale: 0, locked: STOCK - PAY, sold: PAY })

  const released = await until(async () => (await http('GET', stockUrl)).body.locked === 0, PAY_TIMEOUT_MS + 10_000, 200)
  t.ok(released, 'unpaid orders were released')
  t.same((await http('GET', stockUrl)).body, { stock: STOCK, sale: STOCK - PAY, locked: 0, sold: PAY }, 'ends at sold 300, sale 200, locked 0')
  const late = ids[PAY] ?? ''
  t.match(await http('GET', `${urls[0]}/orders/${late}`, as(late)), { status: 200, body: { status: 'CANCELLED', cancelled_at: Number } })
  t.match(await http('POST', `${urls[0]}/orders/${late}/pay`, as(late)), { status: 409, body: { code: 'ORDER_CANCELLED' } }, 'paying a cancelled order is 409')

  // Exactly once across processes: the per-process counters add up.
  const texts = await Promise.all(urls.map(async (u) => (await http('GET', `${u}/metrics`)).body as string))
  const sum = (labels: Record<string, string>, name = 'flashgate_origin_orders_total'): number => texts.reduce((a, x) => a + metricSum(x, name, labels), 0)
  t.equal(sum({ status: 'created' }), STOCK, 'orders created once each, over all processes')
  t.equal(sum({ status: 'cancelled' }), STOCK - PAY, 'orders cancelled once each, over all processes')
  t.equal(sum({ status: 'paid' }), PAY)
  t.equal(sum({ result: 'queued' }, 'flashgate_origin_buys_total'), STOCK)
  t.equal(metricSum(texts[0] ?? '', 'flashgate_origin_queue_depth'), 0, 'queue drained')
  t.equal(metricSum(texts[0] ?? '', 'flashgate_origin_stock', { state: 'sold' }), PAY, 'stock gauge')

  for (const o of origins) t.equal(await o.stop(), 0, 'SIGTERM: clean exit 0')
}

t.test('memory: one origin process', async (t) => { await sale(t, 'memory', 1) })

t.test('redis: two origin processes on one redis-server', async (t) => {
  const redis = await startRedis()
  t.teardown(async () => { await redis.stop() })
  await sale(t, redis.url, 2)
})
