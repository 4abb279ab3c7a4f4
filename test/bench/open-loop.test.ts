/**
 * The open-loop generator (bench/load/open-loop.ts) against real HTTP servers on 127.0.0.1 port 0:
 * it sends at the rate asked whatever the server does, a stall is charged to every request due during
 * it (latency from the intended send time) while the time from writing a request hides it, and its
 * response reader handles split, chunked and back-to-back answers. Also the pure parts the bench's
 * report rests on: the server-side latency from two histogram scrapes, the generator's judgement, the
 * spike's step judgement and rate ladder. No speed is asserted beyond orders of magnitude.
 */
import t from 'tap'
import { createServer } from 'node:http'
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { ResponseReader, encodeRequest, runOpenLoop } from '../../bench/load/open-loop.js'
import { countersOf, parseProm } from '../../bench/prom.js'
import { serverLatency } from '../../bench/server-latency.js'
import { judge } from '../../bench/generator-health.js'
import { judgeStep, spikeRates } from '../../bench/spike.js'

async function listen (s: Server): Promise<string> {
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { s.closeAllConnections(); s.close() })
  return `http://127.0.0.1:${(s.address() as AddressInfo).port}`
}

t.test('sends every request due at the rate, and each gets its answer', async (t) => {
  let seen = 0
  const url = await listen(createServer((req, res) => { seen++; res.end(req.url === '/a' ? 'A' : 'B') }))
  const r = await runOpenLoop({ baseUrl: url, requests: [{ method: 'GET', path: '/a' }, { method: 'GET', path: '/b' }], rate: 200, seconds: 1, connections: 4 })
  t.equal(r.intended, 200, 'rate × seconds requests due')
  t.equal(r.sent, 200)
  t.equal(r.answered, 200)
  t.equal(r.lost, 0)
  t.equal(seen, 200, 'the server saw each one once')
  t.same(r.statuses, { 200: 200 })
  t.ok(r.latencyMs.p50 > 0 && r.latencyMs.p50 < 1000, `p50 ${r.latencyMs.p50} ms`)
})

t.test('a stall is charged to every request due during it (no coordinated omission)', async (t) => {
  // Every answer between 0.4 s and 1.0 s of the run waits until 1.0 s: a 600 ms stall.
  let t0 = 0
  const url = await listen(createServer((req, res) => {
    const now = Date.now()
    if (t0 === 0) t0 = now
    const el = now - t0
    if (el >= 400 && el < 1000) setTimeout(() => res.end('late'), 1000 - el)
    else res.end('ok')
  }))
  const r = await runOpenLoop({ baseUrl: url, requests: [{ method: 'GET', path: '/' }], rate: 200, seconds: 2, connections: 8 })
  t.equal(r.answered, r.intended, 'every request answered once the stall is over')
  // ~120 of 400 requests were due during the stall; the 40 due earliest in it waited 400–600 ms.
  t.ok(r.latencyMs.p90 >= 250, `from the intended send time, p90 shows the stall: ${r.latencyMs.p90} ms`)
  // Only the 8 requests on the wire (2 %) saw it from their write: a closed-loop view hides it.
  t.ok(r.serviceMs.p90 < r.latencyMs.p90 / 2, `from the write, p90 ${r.serviceMs.p90} ms is far lower`)
  t.ok(r.maxQueued >= 50, `requests due while every socket was busy waited in the queue (${r.maxQueued})`)
})

t.test('requests unanswered when the drain ends are lost, not hidden', async (t) => {
  const url = await listen(createServer((req, res) => { if (req.url !== '/never') res.end('ok') }))
  const r = await runOpenLoop({ baseUrl: url, requests: [{ method: 'GET', path: '/never' }], rate: 50, seconds: 1, connections: 2, drainMs: 200 })
  t.equal(r.intended, 50)
  t.equal(r.answered, 0)
  t.equal(r.lost, 50, 'due − answered: the 2 on the wire and the 48 still queued')
  t.equal(r.sent, 2, 'one in flight per connection')
})

t.test('the response reader: split heads, chunked bodies, back-to-back answers, garbage', async (t) => {
  const got: number[] = []
  const rd = new ResponseReader((s) => { got.push(s) })
  const a = Buffer.from('HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello')
  t.equal(rd.feed(a.subarray(0, 10)), null)
  t.equal(rd.feed(a.subarray(10, 40)), null)
  t.same(got, [], 'nothing before the body is complete')
  t.equal(rd.feed(a.subarray(40)), null)
  t.same(got, [200])
  t.equal(rd.feed(Buffer.from('HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nHTTP/1.1 429 Too Many\r\nContent-Length: 0\r\n\r\n')), null)
  t.same(got, [200, 409, 429], 'a chunked answer then an empty one in one read')
  t.match(new ResponseReader(() => {}).feed(Buffer.from('SSH-2.0-x\r\n\r\n')), /not an HTTP response/)
  t.match(new ResponseReader(() => {}).feed(Buffer.from('HTTP/1.1 200 OK\r\n\r\n')), /without Content-Length/)
  t.equal(encodeRequest('127.0.0.1:1', { method: 'POST', path: '/buy', headers: { 'x-user-id': 'u1' } }).toString(), 'POST /buy HTTP/1.1\r\nhost: 127.0.0.1:1\r\nx-user-id: u1\r\ncontent-length: 0\r\n\r\n')
})

t.test('server-side latency per outcome from two scrapes of the histogram', async (t) => {
  const text = (n: [number, number, number]): string => [
    `flashgate_request_duration_seconds_bucket{route="buy",outcome="SOLD_OUT",le="0.0005"} ${n[0]}`,
    `flashgate_request_duration_seconds_bucket{route="buy",outcome="SOLD_OUT",le="0.05"} ${n[1]}`,
    `flashgate_request_duration_seconds_bucket{route="buy",outcome="SOLD_OUT",le="+Inf"} ${n[2]}`,
    `flashgate_request_duration_seconds_bucket{route="site",outcome="passed",le="0.0005"} ${n[0]}`,
    `flashgate_request_duration_seconds_bucket{route="site",outcome="passed",le="0.05"} ${n[0]}`,
    `flashgate_request_duration_seconds_bucket{route="site",outcome="passed",le="+Inf"} ${n[2]}`
  ].join('\n')
  const a = countersOf(parseProm(text([10, 10, 10])))
  const b = countersOf(parseProm(text([90, 108, 110])))
  const buy = serverLatency(a, b, 'buy')
  t.same(Object.keys(buy ?? {}), ['SOLD_OUT'], 'only the route asked for')
  t.equal(buy?.SOLD_OUT?.count, 100, 'the difference of the scrapes')
  t.equal(buy?.SOLD_OUT?.within05msPct, 80)
  t.equal(buy?.SOLD_OUT?.within50msPct, 98)
  t.ok((buy?.SOLD_OUT?.p50 ?? 1) <= 0.5, 'p50 inside the first bucket')
  t.equal(buy?.SOLD_OUT?.p99, 50, 'p99 at the last finite bound when the tail is past it')
  const all = serverLatency(a, b)
  t.equal(all?.passed?.within50msPct, 80, 'every route when none is named')
  t.equal(serverLatency(null, b), null, 'no figure without both scrapes')
})

t.test('the generator and the spike steps are judged', async (t) => {
  t.same(judge('wrk', 95, null, false), { saturated: true, why: 'generator CPU 95 % of a core (≥ 90 %)' })
  t.equal(judge('wrk', 50, 500, false).saturated, false, 'an external generator\'s CPU is what counts')
  t.equal(judge('users', 50, 25, true).saturated, true, 'an in-process generator lagging is saturated')
  t.same(spikeRates(1000, 2, 8000), [1000, 2000, 4000, 8000])
  t.same(spikeRates(100, 1.25, 200), [100, 130, 160, 200])
  const lat = { p50: 1, p90: 2, p99: 10, p999: 20, max: 30, mean: 1 }
  const load = { rate: 100, seconds: 1, intended: 100, sent: 100, answered: 100, lost: 0, rps: 100, latencyMs: lat, serviceMs: lat, maxQueued: 0, statuses: { 409: 100 }, socketErrors: 0 }
  const ok = { generator: 'g', cpuPct: 10, lagP99Ms: 1, lagMaxMs: 2, loadCpuBusyPct: 20, saturated: false, why: null }
  t.equal(judgeStep(load, 409, 50, ok).held, true)
  t.match(judgeStep({ ...load, latencyMs: { ...lat, p99: 51 } }, 409, 50, ok).why, /p99 51\.0 ms > 50 ms/)
  t.match(judgeStep({ ...load, answered: 99, lost: 1 }, 409, 50, ok).why, /1 of 100 requests unanswered/)
  t.match(judgeStep({ ...load, statuses: { 409: 99, 500: 1 } }, 409, 50, ok).why, /1 answers other than 409/)
  const bad = judgeStep(load, 409, 50, { ...ok, saturated: true, why: 'x' })
  t.equal(bad.held, false)
  t.equal(bad.generator, true, 'a saturated generator makes the step the generator\'s, not the server\'s')
})
