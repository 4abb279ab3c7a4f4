/**
 * The order path when the order system fails (issue 17): an in-process origin on memory and on a real
 * redis-server hands each order to an order system that is a real HTTP server on 127.0.0.1. While it
 * answers 503 every order is retried with back-off, then parked in the dead-letter stream; the admin
 * view lists them; once it answers 200 again a re-drive sends them back and they are created. The stock
 * invariant sale + locked + sold == stock is checked at every step, and no order is lost or made twice.
 */
import t, { type Test } from 'tap'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createOrigin } from '../../origin-stub/origin.js'
import { httpOrderWriter } from '../../origin-stub/dead-letter.js'
import type { StockView } from '../../origin-stub/types.js'
import { startRedis } from '../helpers/redis.js'
import { needTools } from '../helpers/tools.js'
import { loadConfig, originYaml } from './helpers.js'

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))
const REF = { campaign: 'c1', product: 'p1' }
const N = 8

/** The order system: answers `status()` to every POST, and keeps the order ids it took. */
async function orderSystem (t: Test): Promise<{ url: string, took: string[], calls: () => number, setStatus: (s: number) => void }> {
  let status = 503
  let calls = 0
  const took: string[] = []
  const srv = createServer((req: IncomingMessage, res: ServerResponse) => {
    let body = ''
    req.setEncoding('utf8')
    req.on('data', (d: string) => { body += d })
    req.on('end', () => {
      calls++
      if (status === 200) took.push((JSON.parse(body) as { order_id: string }).order_id)
      res.writeHead(status, { 'content-type': 'application/json' })
      res.end('{}')
    })
  })
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => { srv.closeAllConnections(); await new Promise<void>((resolve) => srv.close(() => resolve())) })
  return { url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}/orders`, took, calls: () => calls, setStatus: (s) => { status = s } }
}

async function json (url: string, method = 'GET'): Promise<{ status: number, body: Record<string, unknown> }> {
  const res = await fetch(url, { method, headers: { 'x-user-id': 'admin' } })
  return { status: res.status, body: await res.json() as Record<string, unknown> }
}

async function scenario (t: Test, store: string): Promise<void> {
  const sys = await orderSystem(t)
  const config = loadConfig(originYaml({ store, products: [{ ...REF, quota: 20 }], orderRate: '200/s', paymentTimeout: '60s' }))
  const origin = createOrigin(config, { orderWriter: httpOrderWriter(sys.url, 1000), maxOrderAttempts: 3, pollMs: 10, defaultMetrics: false })
  t.teardown(async () => { await origin.close(500) })
  const { url } = await origin.start()
  const check = async (msg: string): Promise<StockView> => {
    const s = await origin.store.stock(REF)
    t.ok(s !== null && s.sale + s.locked + s.sold === s.stock && s.sale >= 0 && s.locked >= 0, `${msg}: sale + locked + sold == stock ${JSON.stringify(s)}`)
    return s as StockView
  }
  const ids: string[] = []
  for (let i = 0; i < N; i++) {
    const res = await fetch(`${url}/buy/c1/p1`, { method: 'POST', headers: { 'x-user-id': `u${i}` } })
    const b = await res.json() as { order_id?: string }
    t.equal(res.status, 202, `buy ${i} queued`)
    if (typeof b.order_id === 'string') ids.push(b.order_id)
  }
  await check('after the buys')
  // The order system is down: 3 attempts each (with back-off), then parked.
  const deadline = Date.now() + 15_000
  while (Date.now() < deadline && await origin.store.deadLetterCount(REF) < N) {
    await check('while retrying')
    await sleep(100)
  }
  t.equal(await origin.store.deadLetterCount(REF), N, 'every order parked in the dead-letter stream')
  t.ok(sys.calls() >= N * 3, `each was tried 3 times (${sys.calls()} calls)`)
  t.equal(await origin.store.queueDepth(REF), 0, 'the queue holds nothing (nothing blocks it)')
  const s1 = await check('parked')
  t.equal(s1.locked, N, 'their units stay locked')
  const view = await json(`${url}/admin/dead-letters/c1/p1`)
  t.equal(view.status, 200)
  t.equal(view.body.count, N)
  const letters = view.body.letters as Array<{ order_id: string, reason: string, attempts: number }>
  t.same(letters.map((l) => l.order_id).sort(), [...ids].sort(), 'the admin view lists exactly the parked orders')
  t.match(letters[0], { reason: 'order system answered 503', attempts: 3 })
  for (const id of ids) t.equal((await origin.store.order(id))?.status, 'QUEUED', 'a parked order stays QUEUED')
  t.equal((await json(`${url}/admin/dead-letters/c1/p1/redrive`)).status, 405, 'redrive is a POST')
  t.equal((await json(`${url}/admin/dead-letters/c1/nope`)).status, 404, 'unknown product')

  sys.setStatus(200)
  const rd = await json(`${url}/admin/dead-letters/c1/p1/redrive`, 'POST')
  t.same(rd, { status: 200, body: { queued: N, left: 0 } }, 're-driven')
  const until = Date.now() + 10_000
  while (Date.now() < until && origin.created < N) { await check('re-driven, being created'); await sleep(50) }
  t.equal(origin.created, N, 'every order created after the re-drive')
  for (const id of ids) t.equal((await origin.store.order(id))?.status, 'CREATED')
  t.same([...sys.took].sort(), [...ids].sort(), 'the order system took each order exactly once')
  t.equal((await json(`${url}/admin/dead-letters/c1/p1/redrive`, 'POST')).body.queued, 0, 'a second re-drive finds nothing')
  const s2 = await check('done')
  t.equal(s2.locked, N)
}

t.test('memory store', async (t) => { await scenario(t, 'memory') })
t.test('redis store', async (t) => {
  if (!needTools(t, 'redis-server')) return
  const r = await startRedis()
  t.teardown(async () => { await r.stop() })
  await scenario(t, r.url)
})
