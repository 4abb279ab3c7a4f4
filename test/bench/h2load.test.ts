// The spike's C generator (bench/load/h2load.ts): its arguments, its log reader, and one real bounded
// run against a node:http server on 127.0.0.1 at a fixed rate.
import t from 'tap'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { KEPT_UP, h2loadArgs, h2loadCannot, h2loadStagger, parseH2loadLog, runH2loadOpenLoop } from '../../bench/load/h2load.js'
import { needTools } from '../helpers/tools.js'

t.test('arguments: rate split over the clients, one URI per request, the shared headers', async (t) => {
  const a = h2loadArgs({ baseUrl: 'http://127.0.0.1:1', requests: [{ method: 'GET', path: '/a', headers: { 'x-user-id': 'u' } }, { method: 'GET', path: '/b', headers: { 'x-user-id': 'u' } }], rate: 1000, seconds: 3, connections: 16 }, '/tmp/x.tsv')
  // 3,000 requests; one client started every 1 ms: the 16 timers spread over the 16 ms between a client's sends.
  t.same(a, ['--h1', '-t', '1', '-c', '16', '--rps=62.500', '-n', '3000', '-r', '1', '--rate-period=1ms', '--log-file=/tmp/x.tsv', '-H', 'x-user-id: u', 'http://127.0.0.1:1/a', 'http://127.0.0.1:1/b'])
  // Fewer arrivals per second than clients: one client per arrival per second at most.
  t.match(h2loadArgs({ baseUrl: 'http://h', requests: [{ method: 'GET', path: '/' }], rate: 5, seconds: 1, connections: 64 }, 'f'), ['--h1', '-t', '1', '-c', '5', '--rps=1.000'])
  // Starts spread over one interval between a client's sends (clients ÷ rate), at 1 ms granularity.
  t.same(h2loadStagger(8000, 64), { perPeriod: 8, periodMs: 1, rampMs: 8 })
  t.same(h2loadStagger(200_000, 64), { perPeriod: 64, periodMs: 1, rampMs: 1 })
  t.same(h2loadStagger(250, 64), { perPeriod: 1, periodMs: 4, rampMs: 256 })
  t.equal(h2loadCannot({ baseUrl: 'http://h', requests: [{ method: 'POST', path: '/', body: 'x' }], rate: 1, seconds: 1, connections: 1 }), 'h2load here sends GETs without a body only')
  t.equal(h2loadCannot({ baseUrl: 'http://h', requests: [{ method: 'GET', path: '/', headers: { a: '1' } }, { method: 'GET', path: '/', headers: { a: '2' } }], rate: 1, seconds: 1, connections: 1 }), 'h2load sends one header set for all requests')
})

t.test('log: statuses, latencies, failures (status -1)', async (t) => {
  const p = parseH2loadLog('1700000000000000\t409\t1500\n1700000000000100\t409\t500\n1700000000000200\t-1\t0\n1700000000000300\t200\t100000\n')
  t.same(p.statuses, { 409: 2, 200: 1 })
  t.equal(p.answered, 3)
  t.equal(p.failed, 1)
  t.ok(Math.abs(p.latency.percentile(99) - 100000) / 100000 < 0.02, 'p99 is the 100 ms request')
  t.equal(p.inTime, 3, 'no window: every answer in time')
  // A 1 ms window from the first send: the 100 ms answer (ending 100.3 ms in) came too late.
  t.equal(parseH2loadLog('1700000000000000\t409\t1500\n1700000000000100\t409\t500\n1700000000000300\t200\t100000\n', 2000).inTime, 2)
})

t.test('arrivals are spread, not bursts of one request per client', async (t) => {
  if (!needTools(t, 'h2load')) return
  // A server that notes when each request arrives (ms): at 640/s over 64 clients, each client sends every
  // 100 ms. Started together, the 64 arrive within a millisecond or two of each other every 100 ms.
  const arrivals: number[] = []
  const server = createServer((_req, res) => { arrivals.push(performance.now()); res.writeHead(409, { 'content-length': '2' }); res.end('{}') })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  t.teardown(() => { server.closeAllConnections(); server.close() })
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const r = await runH2loadOpenLoop({ baseUrl: url, requests: [{ method: 'GET', path: '/x' }], rate: 640, seconds: 2, connections: 64 }, null)
  t.ok(r.answered >= 1280 * KEPT_UP, `answered ${r.answered} of 1280`)
  // The busiest 5 ms window: all 64 when they come in bursts (measured), about 3 when spread (8 measured).
  arrivals.sort((a, b) => a - b)
  let most = 0
  for (let i = 0, j = 0; i < arrivals.length; i++) {
    while (arrivals[i]! - arrivals[j]! > 5) j++
    most = Math.max(most, i - j + 1)
  }
  t.ok(most <= 20, `at most ${most} arrivals in any 5 ms (640/s spread evenly: ~3)`)
})

t.test('a real run holds the rate and counts every answer', async (t) => {
  if (!needTools(t, 'h2load')) return
  const server = createServer((_req, res) => { res.writeHead(409, { 'content-type': 'application/json', 'content-length': '2' }); res.end('{}') })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  t.teardown(() => { server.closeAllConnections(); server.close() })
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const r = await runH2loadOpenLoop({ baseUrl: url, requests: [{ method: 'GET', path: '/x' }], rate: 400, seconds: 2, connections: 8 }, null)
  t.equal(r.intended, 800)
  t.ok(r.answered >= 800 * KEPT_UP && r.answered <= 800, `answered ${r.answered} of 800 due`)
  t.ok((r.statuses['409'] ?? 0) >= r.answered, 'every answer counted by status')
  t.equal(r.answered + r.lost, r.intended, 'due = answered + lost')
  t.ok(r.latencyMs.p99 > 0 && r.latencyMs.p99 < 1000, `p99 ${r.latencyMs.p99} ms`)
})
