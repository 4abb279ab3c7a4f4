// Request ids and W3C trace context: the gateway is a span between the caller and the origin, and
// its spans reach an OTLP/HTTP receiver (a real HTTP server here) that decodes them.
import t from 'tap'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { yamlConfig } from '../helpers/config.js'
import { client, fetchText, startOrigin, startTestGateway } from '../helpers/gateway.js'
import { formatTraceparent, newRequestId, newSpanId, newTraceId, parseTraceparent, sampledByRatio, validRequestId } from '../../gateway/trace.js'
import { unixNano } from '../../gateway/otlp.js'

t.test('traceparent parsing follows W3C Trace Context', async (t) => {
  const tid = '4bf92f3577b34da6a3ce929d0e0e4736'
  const sid = '00f067aa0ba902b7'
  t.same(parseTraceparent(`00-${tid}-${sid}-01`), { traceId: tid, spanId: sid, flags: 1 })
  t.same(parseTraceparent(`00-${tid}-${sid}-00`), { traceId: tid, spanId: sid, flags: 0 })
  t.same(parseTraceparent(`01-${tid}-${sid}-01-future`), { traceId: tid, spanId: sid, flags: 1 }, 'a later version may carry more')
  const bad = [
    `00-${tid}-${sid}-01-extra`, // version 00 has exactly four fields
    `ff-${tid}-${sid}-01`, // version ff is invalid
    `00-${tid.toUpperCase()}-${sid}-01`, // upper-case hex
    `00-${'0'.repeat(32)}-${sid}-01`, // all-zero trace id
    `00-${tid}-${'0'.repeat(16)}-01`, // all-zero parent id
    `00-${tid}-${sid}-1`, `00-${tid.slice(1)}-${sid}-01`, `00_${tid}-${sid}-01`, `00-${tid}-${sid}-zz`, '', 'garbage'
  ]
  for (const b of bad) t.equal(parseTraceparent(b), null, `invalid: ${JSON.stringify(b)}`)
  t.equal(parseTraceparent([`00-${tid}-${sid}-01`, `00-${tid}-${sid}-01`]), null, 'sent twice: a new trace')
  t.equal(formatTraceparent(tid, sid, true), `00-${tid}-${sid}-01`)
  t.match(newTraceId(), /^[0-9a-f]{32}$/)
  t.match(newSpanId(), /^[0-9a-f]{16}$/)
  const ids = new Set(Array.from({ length: 2000 }, () => newSpanId()))
  t.equal(ids.size, 2000, 'span ids do not repeat (the pool refills)')
  const a = newRequestId()
  const b = newRequestId()
  t.match(a, /^[0-9a-f]{12}-[0-9a-z]+$/)
  t.not(a, b)
  t.ok(validRequestId('req-123_abc.def:ghi/jk+l='))
  t.notOk(validRequestId('has space'))
  t.notOk(validRequestId('x'.repeat(129)))
  t.notOk(validRequestId(''))
  t.equal(sampledByRatio('f'.repeat(32), 0.5), false)
  t.equal(sampledByRatio('0'.repeat(24) + '00000001', 0.01), true)
  t.equal(sampledByRatio(tid, 0), false)
  t.equal(sampledByRatio(tid, 1), true)
  // About the ratio asked for over many random ids.
  let n = 0
  for (let i = 0; i < 20_000; i++) if (sampledByRatio(newTraceId(), 0.1)) n++
  t.ok(n > 1500 && n < 2500, `~10 % sampled (${n} of 20000)`)
  const ns = unixNano(1.5)
  t.match(ns, /^\d{19}$/)
})

interface Received { path: string, contentType: string | undefined, body: any }

/** An OTLP/HTTP receiver: collects and JSON-decodes every POST; `status` is what it answers. */
async function receiver (t: { teardown: (fn: () => void) => void }, status = 200): Promise<{ url: string, got: Received[], server: Server }> {
  const got: Received[] = []
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      got.push({ path: req.url ?? '', contentType: req.headers['content-type'], body: JSON.parse(Buffer.concat(chunks).toString()) })
      res.writeHead(status, { 'content-type': 'application/json' })
      res.end('{}')
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.closeAllConnections(); server.close() })
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, got, server }
}

function spansOf (got: Received[]): any[] {
  return got.flatMap((g) => g.body.resourceSpans.flatMap((rs: any) => rs.scopeSpans.flatMap((ss: any) => ss.spans)))
}

function attrs (span: any): Record<string, string | number> {
  const out: Record<string, string | number> = {}
  for (const a of span.attributes) out[a.key] = a.value.stringValue ?? Number(a.value.intValue)
  return out
}

const ROUTES = `routes:
  - name: buy
    match: { path_prefix: /buy/ }
    upstream: origin
  - name: blocked
    match: { path: /blocked }
    guards:
      - deny: { ips: [127.0.0.1/32] }
    upstream: origin
`

function cfg (originUrl: string, tracing: string, extra = ''): string {
  return `listen: 127.0.0.1:0
access_log: { enabled: false }
${tracing}
${extra}
upstreams:
  origin:
    targets: [{ url: ${originUrl} }]
    retries: 0
${ROUTES}`
}

t.test('the gateway is a span: caller trace id, own parent id, exported over OTLP/HTTP JSON', async (t) => {
  const origin = await startOrigin(t)
  const otlp = await receiver(t)
  const gw = await startTestGateway(t, { config: yamlConfig(cfg(origin.url, `tracing: { otlp: "${otlp.url}/", sample: 1, service_name: edge-1 }`)), admin: null })
  const d = client(t)
  const tid = '4bf92f3577b34da6a3ce929d0e0e4736'
  const parent = '00f067aa0ba902b7'
  const wallBefore = Date.now()
  const a = await fetchText(d, gw.url + '/buy/x', { headers: { traceparent: `00-${tid}-${parent}-01`, tracestate: 'vendor=abc', 'user-agent': 'ua/1' } })
  t.equal(a.status, 200)
  const seen = origin.seen.at(-1)!
  const sent = parseTraceparent(seen.headers.traceparent as string)
  t.equal(sent?.traceId, tid, 'the caller\'s trace id goes upstream')
  t.not(sent?.spanId, parent, 'with the gateway\'s own span as parent')
  t.equal(sent?.flags, 1)
  t.equal(seen.headers.tracestate, 'vendor=abc', 'tracestate kept')
  t.equal(seen.headers['x-request-id'], a.headers['x-request-id'], 'the request id sent upstream is the one returned')

  // An invalid traceparent starts a new trace, and its tracestate is dropped.
  await fetchText(d, gw.url + '/buy/y', { headers: { traceparent: `00-${tid.toUpperCase()}-${parent}-01`, tracestate: 'vendor=abc' } })
  const seen2 = origin.seen.at(-1)!
  const sent2 = parseTraceparent(seen2.headers.traceparent as string)
  t.ok(sent2 !== null)
  t.not(sent2?.traceId, tid.toUpperCase().toLowerCase(), 'a new trace id')
  t.equal(seen2.headers.tracestate, undefined, 'tracestate without a valid traceparent is dropped')

  // A rejection is a span too.
  const r = await fetchText(d, gw.url + '/blocked')
  t.equal(r.status, 403)
  await gw.frontend.tracer.flush()
  const wallAfter = Date.now()
  t.ok(otlp.got.length >= 1)
  t.equal(otlp.got[0]?.path, '/v1/traces')
  t.equal(otlp.got[0]?.contentType, 'application/json')
  const resource = otlp.got[0]?.body.resourceSpans[0].resource.attributes
  t.same(resource, [{ key: 'service.name', value: { stringValue: 'edge-1' } }])
  const spans = spansOf(otlp.got)
  t.equal(spans.length, 3)
  const [s1, s2, s3] = spans
  t.equal(s1.traceId, tid)
  t.equal(s1.parentSpanId, parent, 'parent span id: the caller\'s')
  t.equal(s1.spanId, sent?.spanId, 'span id: the one the origin saw as parent')
  t.equal(s1.name, 'GET buy')
  t.equal(s1.kind, 2, 'SERVER')
  const start = Number(BigInt(s1.startTimeUnixNano) / 1_000_000n)
  const end = Number(BigInt(s1.endTimeUnixNano) / 1_000_000n)
  t.ok(start >= wallBefore - 50 && end <= wallAfter + 50 && start <= end, 'timestamps: epoch ns within the test')
  const a1 = attrs(s1)
  t.equal(a1['http.route'], 'buy')
  t.equal(a1['http.response.status_code'], 200)
  t.equal(a1['flashgate.outcome'], 'passed')
  t.equal(a1['flashgate.request_id'], a.headers['x-request-id'])
  t.equal(a1['flashgate.upstream.target'], origin.url)
  t.equal(a1['url.path'], '/buy/x')
  t.equal(s2.traceId, sent2?.traceId)
  t.equal(s2.parentSpanId, undefined, 'a new trace: a root span')
  t.equal(attrs(s3)['flashgate.outcome'], 'BLOCKED')
  t.equal(attrs(s3)['http.response.status_code'], 403)
  t.equal(s3.name, 'GET blocked')
})

t.test('sampling, no export, and a receiver that fails', async (t) => {
  const origin = await startOrigin(t)
  const otlp = await receiver(t)
  const d = client(t)
  // sample 0: nothing exported, but the trace context still goes upstream (unsampled).
  const gw0 = await startTestGateway(t, { config: yamlConfig(cfg(origin.url, `tracing: { otlp: "${otlp.url}", sample: 0 }`)), admin: null })
  for (let i = 0; i < 20; i++) t.equal((await fetchText(d, gw0.url + '/buy/' + i)).status, 200)
  await gw0.frontend.tracer.flush()
  t.equal(otlp.got.length, 0, 'sample 0 exports nothing')
  t.match(origin.seen.at(-1)?.headers.traceparent, /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/)
  // A client's sampled flag does not force recording (it is not a trusted proxy)...
  await fetchText(d, gw0.url + '/buy/z', { headers: { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' } })
  await gw0.frontend.tracer.flush()
  t.equal(otlp.got.length, 0, 'an untrusted sampled flag is not followed')
  // ...a trusted proxy's is.
  const gwT = await startTestGateway(t, { config: yamlConfig(cfg(origin.url, `tracing: { otlp: "${otlp.url}", sample: 0 }`, 'trusted_proxies: [127.0.0.1/32]')), admin: null })
  const tr = await fetchText(d, gwT.url + '/buy/t', { headers: { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', 'x-request-id': 'lb-42' } })
  t.equal(tr.headers['x-request-id'], 'lb-42', 'a trusted proxy\'s request id is kept')
  t.equal(origin.seen.at(-1)?.headers['x-request-id'], 'lb-42')
  await gwT.frontend.tracer.flush()
  t.equal(spansOf(otlp.got).length, 1, 'a trusted proxy\'s sampled flag is followed')
  // An untrusted client's request id is replaced.
  const un = await fetchText(d, gw0.url + '/buy/u', { headers: { 'x-request-id': 'forged' } })
  t.not(un.headers['x-request-id'], 'forged')
  t.not(origin.seen.at(-1)?.headers['x-request-id'], 'forged')

  // No tracing block: a caller's trace is continued (our own span id as parent, its flag as it came);
  // with none (or an invalid one) there is nothing to continue and nothing is made: no traceparent.
  const gwOff = await startTestGateway(t, { config: yamlConfig(cfg(origin.url, '')), admin: null })
  t.equal(gwOff.frontend.tracer.exporting, false)
  const off = await fetchText(d, gwOff.url + '/buy/off')
  t.equal(origin.seen.at(-1)?.headers.traceparent, undefined, 'tracing off, no caller trace: no traceparent made')
  t.match(origin.seen.at(-1)?.headers['x-request-id'], /^[0-9a-f]{12}-[0-9a-z]+$/, 'the request id is still made and sent')
  t.equal(origin.seen.at(-1)?.headers['x-request-id'], off.headers['x-request-id'])
  await fetchText(d, gwOff.url + '/buy/off2', { headers: { traceparent: 'not-a-traceparent' } })
  t.equal(origin.seen.at(-1)?.headers.traceparent, undefined, 'an invalid one is dropped, none made')
  await fetchText(d, gwOff.url + '/buy/off3', { headers: { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', tracestate: 'v=1' } })
  const cont = parseTraceparent(origin.seen.at(-1)?.headers.traceparent as string)
  t.equal(cont?.traceId, '4bf92f3577b34da6a3ce929d0e0e4736', 'a caller\'s trace is continued')
  t.not(cont?.spanId, '00f067aa0ba902b7', 'with the gateway\'s own span id')
  t.equal(cont?.flags, 1, 'the flag passed on as it came')
  t.equal(origin.seen.at(-1)?.headers.tracestate, 'v=1')

  // A receiver that refuses (500) and one that is gone: requests are answered, failures counted.
  const bad = await receiver(t, 500)
  const gwB = await startTestGateway(t, { config: yamlConfig(cfg(origin.url, `tracing: { otlp: "${bad.url}", sample: 1 }`)) })
  for (let i = 0; i < 5; i++) t.equal((await fetchText(d, gwB.url + '/buy/' + i)).status, 200)
  await gwB.frontend.tracer.flush()
  t.equal(spansOf(bad.got).length, 5, 'the receiver got them')
  const num = (text: string, re: RegExp): number => Number(re.exec(text)?.[1] ?? NaN)
  let m = await gwB.metrics.registry.metrics()
  const fails1 = num(m, /flashgate_trace_export_failures_total (\d+)/)
  t.ok(fails1 >= 1, `export failures counted (${fails1})`)
  t.equal(num(m, /flashgate_trace_spans_dropped_total\{reason="export_failed"\} (\d+)/), 5, 'their spans counted as dropped')
  bad.server.closeAllConnections()
  await new Promise<void>((resolve) => bad.server.close(() => { resolve() }))
  for (let i = 0; i < 3; i++) t.equal((await fetchText(d, gwB.url + '/buy/gone' + i)).status, 200, 'answered with the receiver gone')
  await gwB.frontend.tracer.flush()
  m = await gwB.metrics.registry.metrics()
  t.ok(num(m, /flashgate_trace_export_failures_total (\d+)/) > fails1, 'a refused connection is a failure')
  t.equal(num(m, /flashgate_trace_spans_dropped_total\{reason="export_failed"\} (\d+)/), 8)
})

t.test('the export queue is bounded', async (t) => {
  const origin = await startOrigin(t)
  // A receiver that never answers: the first batch hangs, the rest queue up to max_queue.
  const server = createServer(() => {})
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.closeAllConnections(); server.close() })
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const gw = await startTestGateway(t, { config: yamlConfig(cfg(origin.url, `tracing: { otlp: "${url}", sample: 1, max_queue: 10 }`)) })
  const d = client(t)
  for (let i = 0; i < 30; i++) t.equal((await fetchText(d, gw.url + '/buy/' + i)).status, 200)
  const m = await gw.metrics.registry.metrics()
  // At most max_queue spans wait, plus one batch (≤ max_queue) taken by the hanging POST when the
  // 1 s flush timer fired during the run: of 30 spans, 10 to 20 are dropped.
  const dropped = Number(/flashgate_trace_spans_dropped_total\{reason="queue_full"\} (\d+)/.exec(m)?.[1] ?? NaN)
  t.ok(dropped >= 10 && dropped <= 20, `spans past the bound dropped and counted (${dropped})`)
})

t.test('tracing config errors are FILE:LINE:COL', async (t) => {
  const { loadConfigText } = await import('../../conf/load.js')
  const bad = (y: string): string[] => { const r = loadConfigText(y, '/v/gw.yaml', {}); return r.ok ? [] : r.errors }
  t.match(bad('tracing: { otlp: ftp://x }\n'), [/gw\.yaml:1:\d+: otlp: expected an http/])
  t.match(bad('tracing: { otlp: "http://x?a=1" }\n'), [/gw\.yaml:1:\d+: otlp: /])
  t.match(bad('tracing: { sample: 2 }\n'), [/gw\.yaml:1:\d+: sample: 2 is out of range/])
  t.match(bad('tracing: { smaple: 0.1 }\n'), [/unknown key "smaple" in tracing \(did you mean "sample"\?\)/])
  const ok = loadConfigText('tracing: { otlp: "http://127.0.0.1:4318/", sample: 0.01 }\n', '/v/gw.yaml', {})
  t.ok(ok.ok)
  if (ok.ok) t.same(ok.config.tracing, { otlp: 'http://127.0.0.1:4318', sample: 0.01, serviceName: 'flashgate', maxQueue: 2048 })
})
