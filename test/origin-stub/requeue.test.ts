/**
 * Lost order notices (issue 17, origin-stub/requeue.ts): with the order stream on a redis-server of its
 * own, an origin killed between the stock step and the disk buffer's fsync leaves QUEUED orders whose
 * notice reached neither the stream nor any buffer. That state is made for real (the stock step on the
 * store's Redis, the stream's redis-server stopped so the XADD fails, nothing buffered, the store
 * dropped), then an origin is started on a live stream: each such order is created within
 * `requeue_after` plus a few sweeps, never before it, and an order created meanwhile by another path
 * (a direct call of another origin's buffer) is not created twice. `sale + locked + sold == stock`
 * is sampled throughout.
 */
import t, { type Test } from 'tap'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { openNoticeBuffer } from '../../origin-stub/buffer.js'
import { createMemoryOriginStore } from '../../origin-stub/memory-store.js'
import { createOrigin } from '../../origin-stub/origin.js'
import { createRedisOriginStore } from '../../origin-stub/redis-store.js'
import { createRequeue } from '../../origin-stub/requeue.js'
import type { OriginStore, QueueEntry, StockView } from '../../origin-stub/types.js'
import { startRedis } from '../helpers/redis.js'
import { needTools } from '../helpers/tools.js'
import { loadConfig, metricSum, originYaml, sleep, until } from './helpers.js'

const REF = { campaign: 'c1', product: 'p1' }
const REQUEUE_MS = 600

function tempDir (t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'fg-requeue-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  return dir
}

const invariantOk = (s: StockView | null): boolean => s !== null && s.sale + s.locked + s.sold === s.stock && s.sale >= 0 && s.locked >= 0 && s.sold >= 0

function watch (t: Test, store: OriginStore): () => { samples: number, bad: number } {
  let samples = 0
  let bad = 0
  const timer = setInterval(() => {
    store.stock(REF).then((s) => { samples++; if (!invariantOk(s)) bad++ }, () => {})
  }, 25)
  t.teardown(() => { clearInterval(timer) })
  return () => ({ samples, bad })
}

t.test('orders a crash left without a notice are created after requeue_after, once; one created meanwhile is not created again', async (t) => {
  if (!needTools(t, 'redis-server', 'redis-cli')) return
  const redis = await startRedis()
  const queue = await startRedis()
  const lostQueue = await startRedis()
  t.teardown(async () => { await redis.stop(); await queue.stop(); await lostQueue.stop() })
  const keyPrefix = 'rq:'
  const stock = [{ ...REF, stock: 5 }]

  // The crash: the stock step done, the stream refusing the notice, the process gone before its buffer.
  const crashed = createRedisOriginStore({ kind: 'redis', url: redis.url, queueUrl: lostQueue.url, keyPrefix, commandTimeoutMs: 300 })
  await crashed.init(stock)
  await lostQueue.stop()
  const lost: string[] = []
  for (const u of ['u1', 'u2']) {
    const r = await crashed.buy(REF, u, Date.now())
    t.match(r, { kind: 'queued', unsent: true }, 'the stock step done, the notice refused')
    if (r.kind === 'queued') lost.push(r.orderId)
  }
  await crashed.close()
  const [l1, l2] = lost as [string, string]
  const boughtAt = Date.now()

  // Another origin's store: an order whose notice is in the stream (not lost), the samples, and the
  // direct call racing the re-queue.
  const other = createRedisOriginStore({ kind: 'redis', url: redis.url, queueUrl: queue.url, keyPrefix })
  t.teardown(async () => { await other.close() })
  await other.init(stock)
  const inStream = await other.buy(REF, 'u3', Date.now())
  if (inStream.kind !== 'queued' || inStream.unsent === true) { t.fail('u3 queued in the stream'); return }
  const seen = watch(t, other)
  t.same(await other.stock(REF), { stock: 5, sale: 2, locked: 3, sold: 0 }, 'three units locked')

  // The order system holds l2 until the test has created it by the other path.
  let releaseL2: () => void = () => {}
  const l2Held = new Promise<void>((resolve) => { releaseL2 = resolve })
  let l2Reached = false
  const handed = new Map<string, number>()
  const orderWriter = async (e: QueueEntry): Promise<void> => {
    handed.set(e.orderId, (handed.get(e.orderId) ?? 0) + 1)
    if (e.orderId === l2) { l2Reached = true; await l2Held }
  }
  const dir = tempDir(t)
  const config = loadConfig(originYaml({
    store: redis.url,
    keyPrefix,
    products: [{ ...REF, quota: 5 }],
    orderRate: '1000/s',
    paymentTimeout: '1h',
    originExtra: `queue: { url: "${queue.url}" }, buffer: { path: "${dir}" }`
  }))
  const origin = createOrigin(config, { pollMs: 10, sweepIntervalMs: 50, requeueAfterMs: REQUEUE_MS, orderWriter, defaultMetrics: false })
  t.teardown(async () => { releaseL2(); await origin.close(100) })
  await origin.start()

  t.ok(await until(async () => (await other.order(inStream.orderId))?.status === 'CREATED', 5000), 'the order in the stream is created as usual')
  t.ok(await until(async () => (await other.order(l1))?.status === 'CREATED', REQUEUE_MS + 10_000), 'a lost notice: its order is created')
  const o1 = await other.order(l1)
  t.ok(o1 !== null && o1.createdAt !== null && o1.createdAt - boughtAt >= REQUEUE_MS - 50, `not before the bound (created ${(o1?.createdAt ?? 0) - boughtAt} ms after the buy)`)

  t.ok(await until(async () => l2Reached, 5000), 'the second lost notice reached the order system')
  const directAt = Date.now()
  t.equal(await other.createDirect(l2, directAt, 3_600_000), true, 'created meanwhile by another path')
  releaseL2()
  await sleep(REQUEUE_MS + 300) // the worker completes l2's entry, and a bound and a few sweeps pass
  t.match(await other.order(l2), { status: 'CREATED', createdAt: directAt }, 'created once, by the other path')
  t.equal(origin.created, 2, 'the worker created u3 and l1, not l2')
  const text = await origin.metrics.registry.metrics()
  t.equal(metricSum(text, 'flashgate_origin_orders_total', { status: 'created' }), 2)
  t.equal(metricSum(text, 'flashgate_origin_requeued_notices_total', { to: 'stream' }), 2, 'each lost notice sent again once; the one in the stream never')
  t.same([...handed].sort(), [[inStream.orderId, 1], [l1, 1], [l2, 1]].sort(), 'each order handed to the order system once')
  t.equal(await other.queueDepth(REF), 0, 'the stream is empty')
  t.same(await other.stock(REF), { stock: 5, sale: 2, locked: 3, sold: 0 }, 'no unit moved: re-queueing creates, it does not sell again')
  const w = seen()
  t.ok(w.samples > 10, `sampled (${w.samples})`)
  t.equal(w.bad, 0, 'sale + locked + sold == stock at every sample')
})

t.test('a lost notice the stream refuses goes to this origin\'s buffer; one already in the buffer is left there', async (t) => {
  const dir = tempDir(t)
  const { buffer } = await openNoticeBuffer(dir)
  t.teardown(async () => { await buffer.close() })
  const a = 'c1:p1:AAAAAAAAAAAAAAAAAAAAAA'
  const b = 'c1:p1:BBBBBBBBBBBBBBBBBBBBBB'
  await buffer.append(b, 1000)
  // A store whose stream refuses every notice (the queue's Redis went down after the scan).
  const store = createMemoryOriginStore()
  let calls = 0
  const requeued: string[] = []
  const refusing: OriginStore = Object.assign(Object.create(store) as OriginStore, {
    lostNotices: async () => (calls++ === 0 ? [a, b] : []),
    requeue: async (id: string) => { requeued.push(id); return 'unsent' as const }
  })
  const sent: Array<[string, string]> = []
  const requeue = createRequeue({ store: refusing, afterMs: 1000, clock: () => 5000, buffer: () => buffer, onRequeued: (id, to) => { sent.push([id, to]) } })
  t.equal(await requeue(REF), 1, 'one sent again')
  t.same(requeued, [a], 'the one in the buffer is not sent to the stream')
  t.same(sent, [[a, 'buffer']], 'the refused one goes to the buffer')
  t.same(buffer.peek(10).sort(), [a, b].sort(), 'both wait in the buffer (fsynced)')
})
