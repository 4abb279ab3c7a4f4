/**
 * The order path when the order stream cannot be written (issue 17): the stream lives on a redis-server
 * of its own (`origin.queue`), which is SIGKILLed during the sale. Buys go on being recorded in the
 * stock step; their notices go to the disk buffer (fsynced before the 202) and are sent on by the
 * buffer's direct call (order system, then the order row) while the stream is still down. Then: an
 * origin SIGKILLed while its buffer holds notices, restarted, every notice becomes an order; and an
 * order system that fails the buffered notices into the dead-letter stream, re-driven. At every step
 * sale + locked + sold == stock, and each order is created (and taken by the order system) exactly once.
 */
import t, { type Test } from 'tap'
import { appendFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { BUFFER_FILE, openNoticeBuffer } from '../../origin-stub/buffer.js'
import { createOrigin } from '../../origin-stub/origin.js'
import { createRedisOriginStore } from '../../origin-stub/redis-store.js'
import type { OriginStore, StockView } from '../../origin-stub/types.js'
import { redisCli, startRedis } from '../helpers/redis.js'
import { needTools } from '../helpers/tools.js'
import { client, configFile, loadConfig, metricSum, originYaml, sleep, spawnOrigin, until } from './helpers.js'

const REF = { campaign: 'c1', product: 'p1' }

function tempDir (t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'fg-buffer-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  return dir
}

/** The order system: a real HTTP server answering `status` to each POST, counting what it took. */
async function orderSystem (t: Test): Promise<{ url: string, took: Map<string, number>, setStatus: (s: number) => void, calls: () => number }> {
  let status = 200
  let calls = 0
  const took = new Map<string, number>()
  const srv = createServer((req: IncomingMessage, res: ServerResponse) => {
    let body = ''
    req.setEncoding('utf8')
    req.on('data', (d: string) => { body += d })
    req.on('end', () => {
      calls++
      if (status === 200) {
        const id = (JSON.parse(body) as { order_id: string }).order_id
        took.set(id, (took.get(id) ?? 0) + 1)
      }
      res.writeHead(status, { 'content-type': 'application/json' })
      res.end('{}')
    })
  })
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => { srv.closeAllConnections(); await new Promise<void>((resolve) => srv.close(() => resolve())) })
  return { url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}/orders`, took, setStatus: (s) => { status = s }, calls: () => calls }
}

const invariantOk = (s: StockView | null): boolean => s !== null && s.sale + s.locked + s.sold === s.stock && s.sale >= 0 && s.locked >= 0 && s.sold >= 0

/** Sample the invariant every 50 ms from a store of its own; answers the samples and the violations. */
function watch (t: Test, store: OriginStore): () => { samples: number, bad: number } {
  let samples = 0
  let bad = 0
  const timer = setInterval(() => {
    store.stock(REF).then((s) => { samples++; if (!invariantOk(s)) bad++ }, () => {})
  }, 50)
  t.teardown(() => { clearInterval(timer) })
  return () => ({ samples, bad })
}

t.test('the buffer file: appended notices survive a reopen in order, deliveries are remembered, a torn tail is dropped', async (t) => {
  const dir = tempDir(t)
  const ids = ['c1:p1:AAAAAAAAAAAAAAAAAAAAA1', 'c1:p1:AAAAAAAAAAAAAAAAAAAAA2', 'c1:p1:AAAAAAAAAAAAAAAAAAAAA3']
  const a = await openNoticeBuffer(dir)
  t.equal(a.recovered, 0)
  await Promise.all(ids.map(async (id, i) => { await a.buffer.append(id, 1000 + i) }))
  // Once append resolved, the line is in the file (written and fsynced before the buyer hears).
  t.equal(readFileSync(join(dir, BUFFER_FILE), 'utf8').split('\n').filter((l) => l.includes('"n"')).length, 3)
  a.buffer.done(ids[1] as string)
  t.same(a.buffer.peek(10), [ids[0], ids[2]])
  await a.buffer.close()
  // A crash in the middle of a write: half a line at the end.
  appendFileSync(join(dir, BUFFER_FILE), '{"n":"c1:p1:AAAAAAAAAAAA')
  const b = await openNoticeBuffer(dir)
  t.equal(b.recovered, 2, 'the undelivered notices are pending again')
  t.equal(b.dropped, 1, 'the torn line is dropped')
  t.same(b.buffer.peek(10), [ids[0], ids[2]], 'in arrival order')
  t.same(readFileSync(join(dir, BUFFER_FILE), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { n: string }).n), [ids[0], ids[2]], 'rewritten with only what is pending')
  b.buffer.done(ids[0] as string)
  b.buffer.done(ids[2] as string)
  await b.buffer.close()
  const c = await openNoticeBuffer(dir)
  t.equal(c.recovered, 0, 'nothing pending after both were delivered')
  await c.buffer.close()
})

t.test('the stream SIGKILLed during a sale: buys recorded, notices buffered and sent on by direct call while it is down; nothing lost, nothing twice', async (t) => {
  if (!needTools(t, 'redis-server', 'redis-cli')) return
  const redis = await startRedis()
  const queue = await startRedis({ args: ['--appendonly', 'yes', '--appendfsync', 'always'] })
  t.teardown(async () => { await redis.stop(); await queue.stop() })
  const sys = await orderSystem(t)
  const dir = tempDir(t)
  const config = loadConfig(originYaml({
    store: redis.url,
    keyPrefix: 'buf:',
    products: [{ ...REF, quota: 40 }],
    orderRate: '200/s',
    paymentTimeout: '10m',
    originExtra: `queue: { url: "${queue.url}" }, buffer: { path: ${dir}, rate: 100/s }, writer: { url: "${sys.url}", attempts: 3, backoff: 20ms, max_backoff: 200ms, timeout: 1s }`
  }))
  const origin = createOrigin(config, { pollMs: 10, commandTimeoutMs: 300, defaultMetrics: false })
  t.teardown(async () => { await origin.close(500) })
  const { url } = await origin.start()
  const reader = createRedisOriginStore({ kind: 'redis', url: redis.url, keyPrefix: 'buf:' })
  t.teardown(async () => { await reader.close() })
  await reader.init([])
  const sampled = watch(t, reader)
  const http = client(t, 16)
  const owner = new Map<string, string>()
  const buy = async (user: string): Promise<number> => {
    const r = await http('POST', `${url}/buy/c1/p1`, { 'x-user-id': user })
    if (r.status === 202) owner.set(r.body.order_id as string, user)
    return r.status
  }

  for (let i = 0; i < 15; i++) t.equal(await buy(`before${i}`), 202)
  t.ok(await until(async () => origin.created === 15, 10_000), 'the first 15 created through the stream')
  queue.kill()
  t.pass('the order stream\'s redis-server SIGKILLed')
  const during = await Promise.all(Array.from({ length: 45 }, async (_, i) => await buy(`during${i}`)))
  t.equal(during.filter((s) => s === 202).length, 25, '25 more bought while the stream is down (202 each)')
  t.equal(during.filter((s) => s === 409).length, 20, 'the rest: SOLD_OUT')
  let m = await origin.metrics.registry.metrics()
  t.equal(metricSum(m, 'flashgate_origin_buffer_notices_total', { event: 'buffered' }), 25, 'their notices went to the disk buffer')
  t.same(await reader.stock(REF), { stock: 40, sale: 0, locked: 40, sold: 0 }, 'every unit taken in the stock step')

  t.ok(await until(async () => origin.buffered === 0, 15_000), 'the buffer drains while the stream is still down (direct call)')
  for (const [id, user] of owner) {
    const o = await http('GET', `${url}/orders/${id}`, { 'x-user-id': user })
    if (o.body.status !== 'CREATED') t.fail(`${id}: ${String(o.body.status)}`)
  }
  t.equal(owner.size, 40)
  m = await origin.metrics.registry.metrics()
  t.equal(metricSum(m, 'flashgate_origin_buffer_notices_total', { event: 'sent' }), 25)
  t.equal(metricSum(m, 'flashgate_origin_orders_total', { status: 'created' }), 40, '40 orders created in all: none twice')

  await queue.restart()
  await sleep(500)
  t.equal(metricSum(await origin.metrics.registry.metrics(), 'flashgate_origin_orders_total', { status: 'created' }), 40, 'the stream back: nothing created again')
  t.same([...sys.took.keys()].sort(), [...owner.keys()].sort(), 'the order system took every order')
  t.ok([...sys.took.values()].every((n) => n === 1), 'each exactly once')
  t.same(await reader.stock(REF), { stock: 40, sale: 0, locked: 40, sold: 0 })
  const { samples, bad } = sampled()
  t.ok(samples > 10, `invariant sampled ${samples} times`)
  t.equal(bad, 0, 'sale + locked + sold == stock at every sample')
})

t.test('an origin SIGKILLed while its buffer holds notices: restarted, every notice becomes an order', async (t) => {
  if (!needTools(t, 'redis-server', 'redis-cli')) return
  const redis = await startRedis({ args: ['--appendonly', 'yes', '--appendfsync', 'always'] })
  const queue = await startRedis()
  t.teardown(async () => { await redis.stop(); await queue.stop() })
  const dir = tempDir(t)
  const N = 30
  const file = configFile(t, originYaml({
    store: redis.url,
    keyPrefix: 'crash:',
    products: [{ ...REF, quota: N }],
    orderRate: '100/s',
    paymentTimeout: '10m',
    originExtra: `queue: { url: "${queue.url}" }, buffer: { path: ${dir}, rate: 4/s }, writer: { backoff: 20ms, max_backoff: 200ms }`
  }))
  const a = await spawnOrigin(t, file)
  const http = client(t, 16)
  queue.kill()
  const owner = new Map<string, string>()
  const answers = await Promise.all(Array.from({ length: N + 10 }, async (_, i) => {
    const r = await http('POST', `${a.url}/buy/c1/p1`, { 'x-user-id': `u${i}` })
    if (r.status === 202) owner.set(r.body.order_id as string, `u${i}`)
    return r.status
  }))
  t.equal(answers.filter((s) => s === 202).length, N, `${N} bought (202) with the stream down`)
  t.equal(answers.filter((s) => s === 409).length, 10, 'the rest sold out')
  const m = (await http('GET', `${a.url}/metrics`)).body as string
  const sentBefore = metricSum(m, 'flashgate_origin_buffer_notices_total', { event: 'sent' })
  t.equal(metricSum(m, 'flashgate_origin_buffer_notices_total', { event: 'buffered' }), N)
  t.ok(sentBefore < N - 5, `the buffer still holds notices (${N - sentBefore} of ${N}) at 4/s`)
  await a.kill()
  t.pass('origin SIGKILLed with notices in its buffer')

  const b = await spawnOrigin(t, file)
  const allCreated = async (): Promise<boolean> => {
    const st = await Promise.all([...owner].map(async ([id, user]) => (await http('GET', `${b.url}/orders/${id}`, { 'x-user-id': user })).body.status))
    return st.every((s) => s === 'CREATED')
  }
  t.ok(await until(allCreated, 30_000, 250), 'every order answered 202 is CREATED after the restart (the stream still down)')
  t.same((await http('GET', `${b.url}/stock/c1/p1`)).body, { stock: N, sale: 0, locked: N, sold: 0 }, 'sale + locked + sold == stock')
  const orders = await redisCli(redis.port, 'HVALS', 'crash:orders:{c1:p1}')
  const statuses = orders.trim().split('\n').map((l) => (JSON.parse(l) as { status: string }).status)
  t.equal(statuses.length, N, `${N} order rows, no more`)
  t.ok(statuses.every((s) => s === 'CREATED'))
  const m2 = (await http('GET', `${b.url}/metrics`)).body as string
  t.ok(await until(async () => metricSum((await http('GET', `${b.url}/metrics`)).body as string, 'flashgate_origin_buffer_notices_total', { event: 'sent' }) >= N - sentBefore, 5000), `the restarted origin sent the rest (${metricSum(m2, 'flashgate_origin_buffer_notices_total', { event: 'sent' })})`)
  t.equal(await b.stop(), 0, 'SIGTERM: exit 0')
  const left = await openNoticeBuffer(dir)
  t.equal(left.recovered, 0, 'nothing left in the buffer')
  await left.buffer.close()
})

t.test('the order system fails the buffered notices: they wait in the buffer while the dead-letter stream is down too, are parked once it is back, and a re-drive creates them', async (t) => {
  if (!needTools(t, 'redis-server', 'redis-cli')) return
  const redis = await startRedis()
  const queue = await startRedis({ args: ['--appendonly', 'yes', '--appendfsync', 'always'] })
  t.teardown(async () => { await redis.stop(); await queue.stop() })
  const sys = await orderSystem(t)
  sys.setStatus(503)
  const dir = tempDir(t)
  const N = 10
  const config = loadConfig(originYaml({
    store: redis.url,
    keyPrefix: 'dl:',
    products: [{ ...REF, quota: N }],
    orderRate: '200/s',
    paymentTimeout: '10m',
    originExtra: `queue: { url: "${queue.url}" }, buffer: { path: ${dir}, rate: 100/s }, writer: { url: "${sys.url}", attempts: 2, backoff: 20ms, max_backoff: 100ms, timeout: 1s }`
  }))
  const origin = createOrigin(config, { pollMs: 10, commandTimeoutMs: 300, defaultMetrics: false })
  t.teardown(async () => { await origin.close(500) })
  const { url } = await origin.start()
  const reader = createRedisOriginStore({ kind: 'redis', url: redis.url, keyPrefix: 'dl:' })
  t.teardown(async () => { await reader.close() })
  await reader.init([])
  const sampled = watch(t, reader)
  queue.kill()
  const ids: string[] = []
  for (let i = 0; i < N; i++) {
    const res = await fetch(`${url}/buy/c1/p1`, { method: 'POST', headers: { 'x-user-id': `u${i}` } })
    t.equal(res.status, 202)
    ids.push((await res.json() as { order_id: string }).order_id)
  }
  await sleep(1000)
  t.equal(origin.buffered, N, 'failed twice each, and the dead-letter stream is down: the notices stay in the buffer')
  // The oldest notice failed its 2 attempts and cannot be parked yet: the sender backs off on it (the
  // others wait behind it, in the buffer).
  t.ok(sys.calls() >= 2, `the order system was tried (${sys.calls()} calls)`)
  for (const id of ids) t.equal((await reader.order(id))?.status, 'QUEUED')

  await queue.restart()
  t.ok(await until(async () => origin.buffered === 0, 15_000), 'the stream back: the buffer drains')
  const dead = createRedisOriginStore({ kind: 'redis', url: redis.url, queueUrl: queue.url, keyPrefix: 'dl:' })
  t.teardown(async () => { await dead.close() })
  await dead.init([])
  t.equal(await dead.deadLetterCount(REF), N, 'every buffered notice parked in the dead-letter stream')
  t.same((await reader.stock(REF)), { stock: N, sale: 0, locked: N, sold: 0 }, 'parked orders keep their units locked')

  sys.setStatus(200)
  const rd = await fetch(`${url}/admin/dead-letters/c1/p1/redrive`, { method: 'POST' })
  t.same(await rd.json(), { queued: N, left: 0 }, 're-driven into the order stream')
  t.ok(await until(async () => origin.created === N, 10_000), 'and created by the worker')
  for (const id of ids) t.equal((await reader.order(id))?.status, 'CREATED')
  t.same([...sys.took.keys()].sort(), [...ids].sort(), 'the order system took every order')
  t.ok([...sys.took.values()].every((n) => n === 1), 'each exactly once')
  const { samples, bad } = sampled()
  t.ok(samples > 10, `invariant sampled ${samples} times`)
  t.equal(bad, 0, 'sale + locked + sold == stock at every sample')
})
