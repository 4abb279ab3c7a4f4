/**
 * The order worker stopped during a sale (issue 17): two origin processes on one redis-server sell one
 * product; one is stopped (SIGSTOP: its worker may hold stream entries it has read and not completed)
 * while the buys go on through the other, which claims the stopped one's entries after `--claim-idle`;
 * then the stopped one continues (SIGCONT) and finishes what it held — already created by the other, so
 * it only acks. At every sample sale + locked + sold == stock; at the end every order answered 202 is
 * CREATED, and the two processes' created counters add up to exactly the orders (none made twice).
 */
import t from 'tap'
import { createRedisOriginStore } from '../../origin-stub/redis-store.js'
import { startRedis } from '../helpers/redis.js'
import { needTools } from '../helpers/tools.js'
import { client, configFile, metricSum, originYaml, sleep, spawnOrigin, until } from './helpers.js'

const REF = { campaign: 'c1', product: 'p1' }

t.test('a stopped order worker: its entries are claimed by the other origin, finished once, the invariant holds', async (t) => {
  if (!needTools(t, 'redis-server')) return
  const redis = await startRedis()
  t.teardown(async () => { await redis.stop() })
  const N = 300
  const file = configFile(t, originYaml({ store: redis.url, keyPrefix: 'stop:', products: [{ ...REF, quota: N }], orderRate: '100/s', paymentTimeout: '10m' }))
  const a = await spawnOrigin(t, file, ['--claim-idle', '1s'])
  const b = await spawnOrigin(t, file, ['--claim-idle', '1s'])
  t.teardown(() => { if (a.child.exitCode === null) a.child.kill('SIGCONT') })
  const http = client(t, 32)
  const reader = createRedisOriginStore({ kind: 'redis', url: redis.url, keyPrefix: 'stop:' })
  t.teardown(async () => { await reader.close() })
  await reader.init([])
  let samples = 0
  let bad = 0
  const timer = setInterval(() => {
    reader.stock(REF).then((s) => { samples++; if (s === null || s.sale + s.locked + s.sold !== s.stock || s.sale < 0) bad++ }, () => {})
  }, 50)
  t.teardown(() => { clearInterval(timer) })

  const owner = new Map<string, string>()
  const buy = async (url: string, user: string): Promise<void> => {
    const r = await http('POST', `${url}/buy/c1/p1`, { 'x-user-id': user })
    if (r.status === 202) owner.set(r.body.order_id as string, user)
  }
  await Promise.all(Array.from({ length: 100 }, async (_, i) => { await buy(i % 2 === 0 ? a.url : b.url, `first${i}`) }))
  await sleep(300) // both workers are taking entries (100/s each)
  a.child.kill('SIGSTOP')
  t.pass('origin A stopped mid-stream (SIGSTOP)')
  // The sale goes on through B (with N + 50 buyers: the last 50 sold out).
  await Promise.all(Array.from({ length: N - 100 + 50 }, async (_, i) => { await buy(b.url, `later${i}`) }))
  t.equal(owner.size, N, `${N} buys answered 202`)
  const pendingOfA = await until(async () => {
    const ids = [...owner.keys()]
    const st = await Promise.all(ids.map(async (id) => (await reader.order(id))?.status))
    return st.every((s) => s === 'CREATED')
  }, 30_000, 250)
  t.ok(pendingOfA, 'every order CREATED while A is still stopped (B claimed what A held)')
  a.child.kill('SIGCONT')
  await sleep(1500) // A finishes what it held: only acks
  const [ma, mb] = await Promise.all([http('GET', `${a.url}/metrics`), http('GET', `${b.url}/metrics`)])
  const ca = metricSum(ma.body as string, 'flashgate_origin_orders_total', { status: 'created' })
  const cb = metricSum(mb.body as string, 'flashgate_origin_orders_total', { status: 'created' })
  t.ok(ca > 0, `A created ${ca} before it was stopped`)
  t.equal(ca + cb, N, `A ${ca} + B ${cb} == ${N}: no order created twice`)
  t.same((await http('GET', `${b.url}/stock/c1/p1`)).body, { stock: N, sale: 0, locked: N, sold: 0 })
  t.equal(await reader.queueDepth(REF), 0, 'nothing left in the stream')
  t.ok(samples > 20, `invariant sampled ${samples} times`)
  t.equal(bad, 0, 'sale + locked + sold == stock at every sample')
  t.equal(await a.stop(), 0)
  t.equal(await b.stop(), 0)
})
