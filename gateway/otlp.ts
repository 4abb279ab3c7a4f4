/**
 * Span export over OTLP/HTTP with the JSON encoding (https://opentelemetry.io/docs/specs/otlp/): spans
 * are queued (bounded: `tracing.max_queue`; past it new spans are dropped and counted), and POSTed in
 * batches of up to 512 to `<otlp>/v1/traces`, one POST in flight at a time, every second or as soon as
 * a batch is full. A request never waits for export and an export failure never fails a request: a
 * failed or refused batch (connection error, timeout, non-2xx) is counted and dropped, no retry.
 *
 * Per sampled request the cost is one small object pushed on an array; the JSON is built at flush.
 */
import { performance } from 'node:perf_hooks'
import { Pool, type Dispatcher } from 'undici'
import { Counter, type Registry } from 'prom-client'
import type { TracingConfig } from '../conf/types.js'

/** One finished server span. Times are `performance.now()` milliseconds. */
export interface SpanRecord {
  readonly traceId: string
  readonly spanId: string
  /** '' for a root span. */
  readonly parentSpanId: string
  readonly name: string
  readonly start: number
  readonly end: number
  readonly status: number
  readonly attributes: ReadonlyArray<readonly [string, string | number]>
}

export interface Tracer {
  /** Spans are recorded and exported (tracing.otlp is set). */
  readonly exporting: boolean
  /** Share of new traces recorded. */
  readonly sample: number
  record (span: SpanRecord): void
  /** Send what is queued now (tests, shutdown). */
  flush (): Promise<void>
  close (): Promise<void>
}

/** Tracing without export: the trace context is still propagated by the gateway. */
export const NO_TRACER: Tracer = { exporting: false, sample: 0, record () {}, async flush () {}, async close () {} }

const BATCH = 512
const FLUSH_MS = 1000
const TIMEOUT_MS = 5000

interface TraceMetrics { exported: Counter, dropped: Counter, failures: Counter }
const metricsByRegistry = new WeakMap<Registry, TraceMetrics>()

/** The exporter's counters, made once per registry (a reload makes a new exporter, not new metrics). */
function traceMetrics (registry: Registry): TraceMetrics {
  let m = metricsByRegistry.get(registry)
  if (m === undefined) {
    m = {
      exported: new Counter({ name: 'flashgate_trace_spans_exported_total', help: 'Spans accepted by the OTLP receiver.', registers: [registry] }),
      dropped: new Counter({ name: 'flashgate_trace_spans_dropped_total', help: 'Spans not exported: the queue was full, or their batch failed.', labelNames: ['reason'], registers: [registry] }),
      failures: new Counter({ name: 'flashgate_trace_export_failures_total', help: 'OTLP export POSTs that failed (connection error, timeout, non-2xx answer).', registers: [registry] })
    }
    metricsByRegistry.set(registry, m)
  }
  return m
}

/** Epoch nanoseconds, as the decimal string OTLP/JSON carries (past 2^53, so built from two parts). */
export function unixNano (perfMs: number): string {
  const t = performance.timeOrigin + perfMs
  const ms = Math.floor(t)
  const ns = Math.round((t - ms) * 1e6)
  return ns >= 1_000_000 ? String(ms + 1) + '000000' : String(ms) + String(ns).padStart(6, '0')
}

function attr (k: string, v: string | number): string {
  return '{"key":' + JSON.stringify(k) + ',"value":' + (typeof v === 'number' ? '{"intValue":"' + Math.trunc(v) + '"}' : '{"stringValue":' + JSON.stringify(v) + '}') + '}'
}

/** One OTLP/JSON `ExportTraceServiceRequest` body. */
function encodeSpans (spans: readonly SpanRecord[], serviceName: string, version: string): string {
  const parts: string[] = []
  for (const s of spans) {
    let a = ''
    for (let i = 0; i < s.attributes.length; i++) {
      const kv = s.attributes[i]!
      a += (i === 0 ? '' : ',') + attr(kv[0], kv[1])
    }
    parts.push('{"traceId":"' + s.traceId + '","spanId":"' + s.spanId + '"' +
      (s.parentSpanId === '' ? '' : ',"parentSpanId":"' + s.parentSpanId + '"') +
      ',"name":' + JSON.stringify(s.name) + ',"kind":2,"startTimeUnixNano":"' + unixNano(s.start) +
      '","endTimeUnixNano":"' + unixNano(s.end) + '","attributes":[' + a + ']' +
      ',"status":{"code":' + (s.status >= 500 ? 2 : 0) + '}}')
  }
  return '{"resourceSpans":[{"resource":{"attributes":[' + attr('service.name', serviceName) + ']},' +
    '"scopeSpans":[{"scope":{"name":"flashgate","version":' + JSON.stringify(version) + '},"spans":[' + parts.join(',') + ']}]}]}'
}

/** An exporter for `cfg` (NO_TRACER when `otlp` is not set). */
export function createTracer (cfg: TracingConfig | undefined, registry: Registry, opts: { version?: string, onError?: (err: unknown) => void } = {}): Tracer {
  if (cfg === undefined || cfg.otlp === null) return NO_TRACER
  const m = traceMetrics(registry)
  const url = new URL(cfg.otlp + '/v1/traces')
  const pool: Dispatcher = new Pool(url.origin, { connections: 1, connectTimeout: TIMEOUT_MS, headersTimeout: TIMEOUT_MS, bodyTimeout: TIMEOUT_MS })
  const path = url.pathname
  const version = opts.version ?? ''
  let queue: SpanRecord[] = []
  let sending: Promise<void> | null = null
  let closed = false
  const timer = setInterval(() => { void send() }, FLUSH_MS)
  timer.unref()

  async function post (batch: SpanRecord[]): Promise<void> {
    try {
      const r = await pool.request({ method: 'POST', path, headers: { 'content-type': 'application/json' }, body: encodeSpans(batch, cfg!.serviceName, version) })
      await r.body.dump()
      if (r.statusCode >= 200 && r.statusCode < 300) { m.exported.inc(batch.length); return }
      m.failures.inc()
      m.dropped.inc({ reason: 'export_failed' }, batch.length)
    } catch (err) {
      m.failures.inc()
      m.dropped.inc({ reason: 'export_failed' }, batch.length)
      opts.onError?.(err)
    }
  }

  /** Send batches until the queue is empty; at most one POST in flight. */
  function send (): Promise<void> {
    if (sending !== null) return sending
    if (queue.length === 0) return Promise.resolve()
    sending = (async () => {
      while (queue.length > 0) {
        const batch = queue.length <= BATCH ? queue : queue.slice(0, BATCH)
        queue = queue.length <= BATCH ? [] : queue.slice(BATCH)
        await post(batch)
      }
    })().finally(() => { sending = null })
    return sending
  }

  return {
    exporting: true,
    sample: cfg.sample,
    record (span) {
      if (closed) return
      if (queue.length >= cfg.maxQueue) { m.dropped.inc({ reason: 'queue_full' }); return }
      queue.push(span)
      if (queue.length >= BATCH && sending === null) void send()
    },
    async flush () {
      while (queue.length > 0 || sending !== null) await send()
    },
    async close () {
      if (closed) return
      clearInterval(timer)
      await this.flush()
      closed = true
      await pool.close()
    }
  }
}
