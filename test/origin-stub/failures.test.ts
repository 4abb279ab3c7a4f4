/**
 * Failures on Redis: a consumer dying mid-stream loses no order, a dead Redis answers 503 quickly and
 * loses nothing it had accepted, and the worker resumes from the pending entries when Redis returns.
 */
import t from 'tap'
import { createOrigin } from '../../origin-stub/origin.js'
import { createRedisOriginStore } from '../../origin-stub/redis-store.js'
import { startRedis } from '../helpers/redis.js'
import { client, configFile, loadConfig, originYaml, spawnOrigin, until } from './helpers.js'

const REF = { campaign: 'c1', product: 'p1' }

t.test('a consumer killed mid-stream loses no order', async (t) => {
  const redis = await startRedis()
  t.teardown(async () => { await redis.stop() })
  const N = 400
  const yaml = originYaml({ store: redis.url, keyPrefix: 'kill:', products: [{ ...REF, quota: N }], orderRate: '100/s', paymentTimeout: '10m' })
  const file = configFile(t, yaml)
  const a = await spawnOrigin(t, file, ['--claim-idle', '1s'])
  const b = await spawnOrigin(t, file, ['--claim-idle', '1s'])
  const http = client(t, 32)

  // A consumer that takes entries and dies before finishing them (crash between read and ack).
  const doomed = createRedisOriginStore({ kind: 'redis', url: redis.url, keyPrefix: 'kill:' })
  t.teardown(async () => { await doomed.close() })
  await doomed.init([{ ...REF, stock: N }])

  const ids: string[] = []
  // order id → its buyer (only the buyer may read an order)
  const owner = new Map<string, string>()
  // It reads while the first buys arrive (every 2 ms, unpaced: the origins' workers take 100/s each),
  // so it holds some of them whatever the machine's speed.
  const stolen: Awaited<ReturnType<typeof doomed.readNew>> = []
  let buying = true
  const thief = (async () => {
    while (buying) {
      stolen.push(...await doomed.readNew(REF, 'doomed', 1000))
      await new Promise((resolve) => setTimeout(resolve, 2))
    }
  })()
  const first = await Promise.all(Array.from({ length: 50 }, async (_, i) => await http('POST', `${a.url}/buy/c1/p1`, { 'x-user-id': `early${i}` })))
  buying = false
  await thief
  first.forEach((r, i) => { ids.push(r.body.order_id); owner.set(r.body.order_id, `early${i}`) })
  t.ok(stolen.length > 0, 'the doomed consumer holds entries it will never finish')
  await doomed.close()

  const rest = await Promise.all(Array.from({ length: N - 50 }, async (_, i) => await http('POST', `${i % 2 === 0 ? a.url : b.url}/buy/c1/p1`, { 'x-user-id': `u${i}` })))
  rest.forEach((r, i) => { ids.push(r.body.order_id); owner.set(r.body.order_id, `u${i}`) })
  t.equal(ids.filter((id) => typeof id === 'string').length, N, `${N} buys queued`)

  // Kill A (SIGKILL) while both work through the queue (100/s each: ~2 s for 400).
  await new Promise((resolve) => setTimeout(resolve, 700))
  await a.kill()
  t.pass('origin A killed mid-stream')

  const created = await until(async () => {
    const st = await Promise.all(ids.map(async (id) => (await http('GET', `${b.url}/orders/${id}`, { 'x-user-id': owner.get(id) ?? '' })).body.status))
    return st.every((s) => s === 'CREATED')
  }, 30_000, 250)
  t.ok(created, 'every order reaches CREATED (the survivor claimed the dead consumers\' entries)')
  for (const e of stolen) {
    const o = await http('GET', `${b.url}/orders/${e.orderId}`, { 'x-user-id': owner.get(e.orderId) ?? '' })
    if (o.body.status !== 'CREATED') t.fail(`stolen ${e.orderId} not created`)
  }
  t.same((await http('GET', `${b.url}/stock/c1/p1`)).body, { stock: N, sale: 0, locked: N, sold: 0 })
  const depth = await until(async () => /flashgate_origin_queue_depth\{[^}]*\} 0/.test((await http('GET', `${b.url}/metrics`)).body), 5000)
  t.ok(depth, 'queue depth back to 0: nothing left pending')
  t.equal(await b.stop(), 0)
})

t.test('redis down: 503 STORE_UNAVAILABLE quickly, nothing accepted is lost, the worker resumes', async (t) => {
  // AOF with fsync on every write: what Redis acknowledged survives its crash.
  const redis = await startRedis({ args: ['--appendonly', 'yes', '--appendfsync', 'always'] })
  t.teardown(async () => { await redis.stop() })
  const config = loadConfig(originYaml({ store: redis.url, keyPrefix: 'down:', products: [{ ...REF, quota: 200 }], orderRate: '20/s', paymentTimeout: '10m' }))
  const origin = createOrigin(config, { listen: { host: '127.0.0.1', port: 0 }, commandTimeoutMs: 500, defaultMetrics: false })
  t.teardown(async () => { await origin.close(0) })
  const { url } = await origin.start()
  const http = client(t, 16)

  const accepted: string[] = []
  const owner = new Map<string, string>()
  for (let i = 0; i < 60; i++) {
    const r = await http('POST', `${url}/buy/c1/p1`, { 'x-user-id': `a${i}` })
    t.equal(r.status, 202)
    accepted.push(r.body.order_id)
    owner.set(r.body.order_id, `a${i}`)
  }
  // 20 orders/s: most are still QUEUED when Redis dies.
  redis.kill()
  await new Promise((resolve) => setTimeout(resolve, 100))

  const started = Date.now()
  const during = await Promise.all(Array.from({ length: 20 }, async (_, i) => await http('POST', `${url}/buy/c1/p1`, { 'x-user-id': `d${i}` })))
  const took = Date.now() - started
  t.ok(during.every((r) => r.status === 503 && r.body.code === 'STORE_UNAVAILABLE'), 'buys answer 503 STORE_UNAVAILABLE')
  t.ok(took < 10_000, 'answered, not hung (bounded by the command timeout)')
  t.match(await http('GET', `${url}/stock/c1/p1`), { status: 503, body: { code: 'STORE_UNAVAILABLE' } })
  t.match(await http('GET', `${url}/readyz`), { status: 503, body: { store: 'down' } })
  t.match(await http('GET', `${url}/healthz`), { status: 200 }, 'healthz stays 200 (liveness)')

  await redis.restart()
  const back = await until(async () => (await http('GET', `${url}/readyz`)).status === 200, 15_000, 100)
  t.ok(back, 'ready again once Redis is back')

  const created = await until(async () => {
    const st = await Promise.all(accepted.map(async (id) => (await http('GET', `${url}/orders/${id}`, { 'x-user-id': owner.get(id) ?? '' })).body.status))
    return st.every((s) => s === 'CREATED')
  }, 20_000, 200)
  t.ok(created, 'every order accepted before the outage exists and reaches CREATED (worker resumed)')
  const retry = await http('POST', `${url}/buy/c1/p1`, { 'x-user-id': 'd0' })
  t.equal(retry.status, 202, 'a buy refused with 503 left no trace: the retry is a fresh order')
  t.same((await http('GET', `${url}/stock/c1/p1`)).body, { stock: 200, sale: 139, locked: 61, sold: 0 }, 'stock intact after the crash')
})
