/**
 * The public listener: request target and Host checks, routing, the guard pipeline, the body-size
 * limit, edge endpoints, and handing the request to the upstreams. Everything a request needs is
 * prepared per config load in a `ServingState`; a reload swaps the one `state` reference, and a request
 * keeps the state it started with until it is settled.
 *
 * Per request on the pass path: one Ctx, one `done` closure for the proxy, a route walk with string
 * compares, and two metric updates with label objects built once. No regex, no URL objects, no Promise
 * unless a guard returns one.
 */
import { randomBytes } from 'node:crypto'
import { createWriteStream, unlink, type WriteStream } from 'node:fs'
import { createServer } from 'node:http'
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import type { Config } from '../../conf/types.js'
import type { AccessLog } from '../access-log.js'
import { compileCidrs, type CidrSet } from '../../conf/cidr.js'
import { Ctx, clientAddress, normalizeIp, parseHost, parseTargetInto, type Target } from './context.js'
import { StoreError } from '../../conf/errors.js'
import type { Log } from '../log.js'
import { CounterCell, HistogramCell, REQUEST_DURATION_BUCKETS, type Metrics } from '../metrics.js'
import { closeGuards, runPipeline, type CompiledRoute, type PipelineSink } from '../pipeline/build.js'
import { STATUS, rejection } from '../pipeline/reject.js'
import { rejectionHead, sendRejection, writeRejection } from './json.js'
import { compileRouter, type Router } from './router.js'
import { NO_TRACER, type Tracer } from '../otlp.js'
import { formatTraceparent, newRequestId, newSpanId, newTraceId, parseTraceparent, sampledByRatio, validRequestId } from '../trace.js'
import { StaticFiles } from './static.js'
import type { EdgeHandler, Guard, Outcome, Rejection, RequestContext } from '../pipeline/types.js'

/** What the gateway needs from the upstream side (gateway/upstream/index.ts implements it). */
export interface UpstreamForwarder {
  forward (ctx: RequestContext, upstream: string, done: (outcome: Outcome, target: string | null) => void): void
}

/** Rejections the gateway itself answers, built once. */
export const ANSWERS = {
  badRequest: rejection('BAD_REQUEST', 'malformed request'),
  badTarget: rejection('BAD_REQUEST', 'request target not acceptable'),
  badHost: rejection('BAD_REQUEST', 'missing or invalid Host'),
  hostMismatch: rejection('BAD_REQUEST', 'absolute-form target does not match Host'),
  notFound: rejection('NOT_FOUND', 'no route'),
  methodNotAllowed: rejection('METHOD_NOT_ALLOWED', 'method not allowed on this route'),
  tooLarge: rejection('PAYLOAD_TOO_LARGE', 'request body too large'),
  storeUnavailable: rejection('STORE_UNAVAILABLE', 'store unavailable'),
  internal: rejection('INTERNAL_ERROR', 'internal error'),
  bodySpoolFailed: rejection('INTERNAL_ERROR', 'request body could not be buffered'),
  upstreamUnavailable: rejection('UPSTREAM_UNAVAILABLE', 'upstream unavailable'),
  upstreamTimeout: rejection('UPSTREAM_TIMEOUT', 'upstream timeout'),
  overloaded: rejection('OVERLOADED', 'shutting down'),
  upstreamBusy: rejection('OVERLOADED', 'upstream busy: too many requests waiting for a connection'),
  requestTimeout: rejection('REQUEST_TIMEOUT', 'request body not received in time'),
  unsupportedVersion: rejection('UNSUPPORTED_VERSION', 'HTTP version not supported'),
  duplicateHost: rejection('BAD_REQUEST', 'more than one Host header'),
  tooManyHeaders: rejection('BAD_REQUEST', 'too many header fields', { override: { status: 431, body: null } })
} as const

/** Metric label objects for one route, built once per (route, outcome) and reused. */
type Labels = { readonly route: string, readonly outcome: string }

/**
 * One (route, outcome) series of the request counter and the duration histogram. Performance: the
 * cells are bound once per Metrics instance (a frontend's registry) and then updated with a few
 * property writes instead of prom-client's per-call label hashing and validation (≈1.7 µs a request
 * here for the two updates).
 */
class Series {
  readonly labels: Labels
  private metrics: Metrics | null = null
  private count: CounterCell | null = null
  private duration: HistogramCell | null = null
  constructor (route: string, outcome: string) { this.labels = { route, outcome } }
  record (metrics: Metrics, seconds: number): void {
    if (this.metrics !== metrics) {
      this.metrics = metrics
      this.count = new CounterCell(metrics.requests, this.labels)
      this.duration = new HistogramCell(metrics.requestDuration, this.labels, REQUEST_DURATION_BUCKETS)
    }
    ;(this.count as CounterCell).inc()
    ;(this.duration as HistogramCell).observe(seconds)
  }
}

class LabelCache {
  private readonly map = new Map<string, Series>()
  readonly passed: Series
  constructor (readonly route: string) { this.passed = new Series(route, 'passed') }
  get (outcome: string): Series {
    if (outcome === 'passed') return this.passed
    let l = this.map.get(outcome)
    if (l === undefined) this.map.set(outcome, l = new Series(this.route, outcome))
    return l
  }
}

/** Everything one config load prepared for serving. Swapped as one reference on reload. */
export interface ServingState {
  readonly config: Config
  readonly router: Router
  readonly routes: readonly CompiledRoute[]
  readonly labels: readonly LabelCache[]
  readonly trusted: CidrSet
  readonly guards: readonly Guard[]
  readonly edge: ReadonlyMap<string, EdgeHandler>
  /** Per route: the file server of a static route (gateway/http/static.ts), null for a proxied one. */
  readonly files: readonly (StaticFiles | null)[]
  /** Requests of this state not yet settled. */
  inflight: number
  retired: boolean
  /** Run when a retired state's last request settles (closes its guards). */
  onIdle: (() => void) | null
}

/** Build a serving state from a config and its already-built pipelines. */
export function createState (config: Config, routes: readonly CompiledRoute[], guards: readonly Guard[], edge: ReadonlyMap<string, EdgeHandler>, log: Log = () => {}): ServingState {
  return {
    config,
    router: compileRouter(config.routes),
    routes,
    labels: routes.map((r) => new LabelCache(r.name)),
    trusted: compileCidrs(config.trustedProxies),
    guards,
    edge,
    files: routes.map((r) => r.route.static === undefined ? null : new StaticFiles(r.route.static, log)),
    inflight: 0,
    retired: false,
    onIdle: null
  }
}

/**
 * The request target `route` splits each request into: one object for all requests (route reads it
 * before anything that could start another request), so none is made per request (issue 18).
 */
const TARGET: Target = { path: '', query: '', authority: null, rewritten: false }
/** What `reject` hands `settle` for a request without settlers (the one reader of an Outcome there). */
const UNREAD_OUTCOME: Outcome = Object.freeze({ kind: 'rejected', rejection: ANSWERS.internal })
const NONE = new LabelCache('_none')
const EDGE = new LabelCache('_flashgate')
const CLIENT_CLOSED = 499
/** Emitted on a request whose streamed body went over the limit while readBody reads it. */
const TOO_LARGE_EVENT = 'flashgate:too-large'
/** Spool file names: pid, a counter and a random part (opened with O_EXCL). */
let spoolSeq = 0

/**
 * The strict listener's in-place lane (gateway/http/raw-server.ts LaneRequest): a bodiless request
 * whose `req`/`res` are reused stand-ins that can only carry a rejection; anything else first upgrades
 * them to real objects.
 */
interface Lane { laneUpgrade (): [IncomingMessage, ServerResponse], spare: unknown }
function isLane (req: IncomingMessage): req is IncomingMessage & Lane {
  return (req as Partial<Lane>).laneUpgrade !== undefined
}

/** More than one Host field (node:http keeps the first in req.headers; the raw list has them all). */
function twoHosts (raw: readonly string[]): boolean {
  let seen = false
  for (let i = 0; i < raw.length; i += 2) {
    const n = raw[i] as string
    if (n.length === 4 && (n === 'Host' || n === 'host' || n.toLowerCase() === 'host')) {
      if (seen) return true
      seen = true
    }
  }
  return false
}

/**
 * The request id for `req`: a trusted proxy's `X-Request-Id` when it sent a plausible one, else a new
 * one (gateway/trace.ts).
 */
function requestIdOf (req: IncomingMessage, trusted: boolean): string {
  if (trusted) {
    const v = req.headers['x-request-id']
    if (typeof v === 'string' && validRequestId(v)) return v
  }
  return newRequestId()
}

/** Request body bytes as declared (Content-Length), 0 when none was declared. */
function declaredLength (req: IncomingMessage): number {
  const cl = req.headers['content-length']
  if (cl === undefined) return 0
  const n = Number(cl)
  return Number.isFinite(n) ? n : 0
}

/**
 * Start this request's span: the caller's trace id and our new span id (a new trace when the incoming
 * traceparent is missing or invalid). Sampled when exporting: a trusted proxy's flag, else the ratio.
 * With no export and no valid incoming traceparent there is nothing to continue and nothing to record:
 * no ids are drawn and no traceparent is sent (the plain proxy pays for none of it).
 */
function startSpan (ctx: Ctx, tracer: Tracer): void {
  const req = ctx.req
  const incoming = req.headers.traceparent
  if (incoming === undefined && !tracer.exporting) return
  const parent = parseTraceparent(incoming)
  if (parent === null && !tracer.exporting) return
  if (parent !== null) {
    ctx.traceId = parent.traceId
    ctx.parentSpanId = parent.spanId
    const ts = req.headers.tracestate
    ctx.tracestate = ts === undefined ? null : Array.isArray(ts) ? ts.join(',') : ts
  } else {
    ctx.traceId = newTraceId()
  }
  ctx.spanId = newSpanId()
  const flag = parent !== null && (parent.flags & 1) === 1
  ctx.traceSampled = tracer.exporting ? (parent !== null && ctx.peerTrusted ? flag : sampledByRatio(ctx.traceId, tracer.sample)) : flag
  ctx.traceparent = formatTraceparent(ctx.traceId, ctx.spanId, ctx.traceSampled)
}

/**
 * Give an edge endpoint's answer the request id (whatever way the handler writes its head: writeHead
 * with an array or an object, or setHeader and an implicit head) and count its body bytes.
 */
function tagEdgeResponse (res: ServerResponse, id: string, bytes: { n: number }): void {
  const writeHead = res.writeHead
  const write = res.write
  const end = res.end
  const count = (chunk: unknown): void => {
    if (typeof chunk === 'string') bytes.n += Buffer.byteLength(chunk)
    else if (chunk instanceof Uint8Array) bytes.n += chunk.length
  }
  res.writeHead = function (this: ServerResponse, status: number, a?: unknown, b?: unknown): ServerResponse {
    const hasText = typeof a === 'string'
    let headers = hasText ? b : a
    if (Array.isArray(headers)) headers = Array.isArray(headers[0]) ? [...headers, ['x-request-id', id]] : [...headers, 'x-request-id', id]
    else if (headers !== undefined && headers !== null) headers = { ...(headers as object), 'x-request-id': id }
    else if (!this.headersSent && !this.hasHeader('x-request-id')) this.setHeader('x-request-id', id)
    const wh = writeHead as (...args: unknown[]) => ServerResponse
    return hasText ? wh.call(this, status, a, headers) : wh.call(this, status, headers)
  } as ServerResponse['writeHead']
  res.write = function (this: ServerResponse, chunk: unknown, ...rest: unknown[]): boolean {
    count(chunk)
    return (write as (...args: unknown[]) => boolean).call(this, chunk, ...rest)
  } as ServerResponse['write']
  res.end = function (this: ServerResponse, chunk?: unknown, ...rest: unknown[]): ServerResponse {
    if (typeof chunk !== 'function') count(chunk)
    return (end as (...args: unknown[]) => ServerResponse).call(this, chunk, ...rest)
  } as ServerResponse['end']
}

function failureRejection (code: string): Rejection {
  switch (code) {
    case 'UPSTREAM_TIMEOUT': return ANSWERS.upstreamTimeout
    case 'OVERLOADED': return ANSWERS.upstreamBusy
    case 'BAD_REQUEST': return ANSWERS.badRequest
    default: return ANSWERS.upstreamUnavailable
  }
}

export interface FrontendOptions {
  readonly state: ServingState
  readonly upstreams: UpstreamForwarder
  readonly metrics: Metrics
  readonly accessLog: AccessLog
  readonly log: Log
  readonly clock: () => number
  /** Guard-close logging target. */
  readonly guardLog?: Log
  /** Span export (NO_TRACER: trace context is propagated, nothing is exported). */
  readonly tracer?: Tracer
}

/**
 * The request handler and the sink of the guard runner. One instance per process; `state` is the
 * reference a reload swaps.
 */
export class Frontend implements PipelineSink<Ctx> {
  state: ServingState
  draining = false
  private readonly upstreams: UpstreamForwarder
  private readonly metrics: Metrics
  private readonly accessLog: AccessLog
  private readonly log: Log
  private readonly clock: () => number
  /** Span export; swapped by reload when `tracing` changes. */
  tracer: Tracer
  /** Every request not yet settled, across states (drain waits on this). */
  inflight = 0
  private drainWaiters: Array<() => void> = []
  private readonly guardCells = new WeakMap<Guard, Map<string, CounterCell>>()

  constructor (opts: FrontendOptions) {
    this.state = opts.state
    this.upstreams = opts.upstreams
    this.metrics = opts.metrics
    this.accessLog = opts.accessLog
    this.log = opts.log
    this.clock = opts.clock
    this.tracer = opts.tracer ?? NO_TRACER
  }

  /** Swap in a new state; the old one closes its guards once its in-flight requests are settled. */
  swap (next: ServingState): void {
    const old = this.state
    this.state = next
    old.retired = true
    const close = (): void => { closeGuards(old.guards, { log: this.log }) }
    if (old.inflight === 0) close(); else old.onIdle = close
  }

  /** Resolves when no request is in flight (or at once). */
  idle (): Promise<void> {
    if (this.inflight === 0) return Promise.resolve()
    return new Promise((resolve) => { this.drainWaiters.push(resolve) })
  }

  /** The `request` listener. A bug must cost one request a 500, never the process. */
  readonly handle = (req: IncomingMessage, res: ServerResponse): void => {
    try {
      this.route(req, res)
    } catch (err) {
      this.log('error', 'request handler failed', { err, stack: err instanceof Error ? err.stack : undefined })
      if (!res.headersSent && !res.destroyed) writeRejection(res, ANSWERS.internal, null, true)
      else res.destroy()
    }
  }

  private route (req: IncomingMessage, res: ServerResponse): void {
    const start = performance.now()
    const state = this.state
    if (this.draining) res.shouldKeepAlive = false
    // RFC 9112: only HTTP/1.x here (HTTP/2.0 in an HTTP/1 request line, HTTP/0.9 or no version: 505);
    // a request on an HTTP/2 listener has its stream. One Host only (a second one: 400).
    if (req.httpVersionMajor !== 1 && (req as { stream?: unknown }).stream === undefined) { this.early(req, res, ANSWERS.unsupportedVersion, start, '/'); return }
    // node:http keeps the first 2000 entries of the raw list (1000 fields) and drops the rest silently: refuse instead.
    if (req.rawHeaders.length >= 2000) { this.early(req, res, ANSWERS.tooManyHeaders, start, '/'); return }
    if (twoHosts(req.rawHeaders)) { this.early(req, res, ANSWERS.duplicateHost, start, '/'); return }
    const method = req.method as string
    const target = TARGET
    if (!parseTargetInto(req.url as string, target)) { this.early(req, res, ANSWERS.badTarget, start, '/'); return }
    const path = target.path
    const query = target.query
    const hostHeader = req.headers.host
    let host: string | null = ''
    if (target.authority !== null) {
      // Absolute-form: the authority must be the Host we were sent (never act as a forward proxy),
      // and the request is forwarded in origin-form.
      host = parseHost(target.authority)
      if (host === null || hostHeader === undefined || parseHost(hostHeader) !== host) {
        this.early(req, res, ANSWERS.hostMismatch, start, path)
        return
      }
      req.url = query === '' ? path : path + '?' + query
    } else if (hostHeader !== undefined) {
      host = parseHost(hostHeader)
      if (host === null) { this.early(req, res, ANSWERS.badHost, start, path); return }
    } else if (req.httpVersionMajor === 2) {
      // node:http refuses an HTTP/1.1 request without Host; an h2 one without :authority is refused here.
      this.early(req, res, ANSWERS.badHost, start, path)
      return
    }
    // Forward what the guards judged: the normalised path (gateway/http/context.ts normalizePath).
    if (target.rewritten && target.authority === null) req.url = query === '' ? path : path + '?' + query
    if (path.charCodeAt(1) === 95 /* _ */ && path.startsWith('/_flashgate/')) {
      if (isLane(req)) [req, res] = req.laneUpgrade()
      this.edge(state, req, res, path, query, start)
      return
    }
    const m = state.router.match(host, path, method)
    if (typeof m === 'number') {
      if (m === -2) {
        const allow = state.router.allowed(host, path).join(', ')
        this.early(req, res, ANSWERS.methodNotAllowed, start, path, ['allow', allow])
      } else {
        this.early(req, res, ANSWERS.notFound, start, path)
      }
      return
    }
    const cr = state.routes[m.index] as CompiledRoute
    const peer = normalizeIp(req.socket.remoteAddress ?? '')
    let clientIp = peer
    let trusted = false
    if (state.trusted.size > 0 && state.trusted.has(peer)) {
      trusted = true
      clientIp = clientAddress(peer, req.headers['x-forwarded-for'], state.trusted)
    }
    // A lane request reuses the context its connection's last synchronously rejected request left.
    const lane = isLane(req) ? req : null
    const spare = lane !== null ? lane.spare as Ctx | null : null
    let ctx: Ctx
    if (spare !== null) {
      (lane as Lane).spare = null
      ctx = spare.renew(req, res, cr.route, method, path, query, host, clientIp, trusted, m.params, this.clock(), start)
    } else ctx = new Ctx(req, res, cr.route, method, path, query, host, clientIp, trusted, m.params, this.clock(), start)
    ctx.requestId = requestIdOf(req, trusted)
    ctx.routeIndex = m.index
    ctx.owner = state
    state.inflight++
    this.inflight++

    const cl = req.headers['content-length']
    if (cl !== undefined) {
      const length = Number(cl)
      ctx.bytesIn = length
      if (length > cr.maxBodySize) { this.reject(ctx, ANSWERS.tooLarge); return }
      if (length > 0) {
        ctx.bufferBody = true
        this.watchBodyTime(ctx, state.config.server.bodyTimeoutMs)
      }
    } else if (req.headers['transfer-encoding'] !== undefined || (req.httpVersionMajor === 2 && !(req as unknown as { stream: { endAfterHeaders: boolean } }).stream.endAfterHeaders)) {
      // A chunked body, or an HTTP/2 body (DATA frames, no Transfer-Encoding): counted as it arrives,
      // and read whole (memory, then a spool file) before the upstream is asked, as a sized one.
      ctx.bufferBody = true
      this.watchBody(ctx, cr.maxBodySize)
      this.watchBodyTime(ctx, state.config.server.bodyTimeoutMs)
    }
    if (cr.guards === null) this.pass(ctx)
    else runPipeline(ctx, cr, 0, this)
    // Rejected before this returned, still on the lane (never upgraded) and with no settler (a closure
    // that may have kept it): nothing holds this context any more, so the connection's next lane request
    // refills it instead of making one (issue 18). A guard that awaited, or a request that passed,
    // leaves it alone.
    if (lane !== null && ctx.settled && ctx.req === lane && ctx.settlers === null) lane.spare = ctx
  }

  /** Count a streamed (chunked) body as it arrives; past the limit, stop reading it and cut the request. */
  private watchBody (ctx: Ctx, limit: number): void {
    const req = ctx.req
    const push = req.push
    let seen = 0
    req.push = function (chunk: unknown, encoding?: BufferEncoding): boolean {
      if (chunk !== null && chunk !== undefined) {
        if (ctx.tooLarge) return false
        seen += (chunk as Buffer).length
        ctx.bytesIn = seen
        if (seen > limit) {
          ctx.tooLarge = true
          // Already forwarding: cut the exchange (the proxy reports the abort; we log a 413).
          if (ctx.done !== null && !ctx.settled) req.destroy()
          // Being read before forwarding (readBody): answer 413 now.
          else if (!ctx.settled) req.emit(TOO_LARGE_EVENT)
          return false
        }
      }
      return push.call(this, chunk, encoding)
    }
  }

  /**
   * nginx client_body_timeout: the body may pause at most `ms` between two reads (the socket's idle
   * timer, which any read resets; cleared when the body is complete). Past it: 408 REQUEST_TIMEOUT and
   * the connection is closed; a request already being forwarded is cut (the proxy sees the client leave).
   */
  private watchBodyTime (ctx: Ctx, ms: number): void {
    const req = ctx.req
    req.setTimeout(ms, () => { this.bodyTimeout(ctx) })
    // Once the answer is out, node:http has set the socket's keep-alive timer: leave that one alone.
    req.once('end', () => { if (!ctx.res.writableFinished) req.setTimeout(0) })
  }

  private bodyTimeout (ctx: Ctx): void {
    if (ctx.req.complete) return
    ctx.bodyTimedOut = true
    if (!ctx.settled && ctx.done === null) { this.reject(ctx, ANSWERS.requestTimeout); return }
    if (!ctx.res.headersSent && !ctx.settled) {
      // Forwarding: answer now; the response's close aborts the upstream exchange, which settles.
      ctx.outcome = 'REQUEST_TIMEOUT'
      writeRejection(ctx.res, ANSWERS.requestTimeout, null, true)
      return
    }
    ctx.req.socket?.destroy()
  }

  /**
   * Read the body whole before taking an upstream connection (nginx proxy_request_buffering), so a
   * client sending it slowly holds only its own socket, never one of the upstream pool's connections:
   * sized or chunked (or HTTP/2 DATA), up to `server.body_buffer_size` in memory, the rest of it (up
   * to the route's max_body_size) in a spool file under the temp directory, as nginx's
   * client_body_temp_path (mode 0600, created exclusively, unlinked when the exchange ends). Each read
   * is under `server.body_timeout`, the whole under `request_timeout`.
   */
  private readBody (ctx: Ctx): void {
    const req = ctx.req
    const memory = (ctx.owner as ServingState).config.server.bodyBufferSize
    let chunks: Buffer[] = []
    let size = 0
    let spool: WriteStream | null = null
    let spoolPath = ''
    const onSpoolError = (err: Error): void => {
      if (ctx.settled) return
      this.log('warn', 'request body spool failed', { path: spoolPath, err: err.message })
      this.reject(ctx, ANSWERS.bodySpoolFailed)
    }
    const onData = (c: Buffer): void => {
      size += c.length
      if (spool === null) {
        if (size <= memory) { chunks.push(c); return }
        spoolPath = join(tmpdir(), `flashgate-body-${process.pid}-${++spoolSeq}-${randomBytes(6).toString('hex')}`)
        const ws = spool = createWriteStream(spoolPath, { flags: 'wx', mode: 0o600 })
        ws.on('error', onSpoolError)
        const path = spoolPath
        ctx.res.once('close', () => { ws.destroy(); unlink(path, () => {}) })
        for (const b of chunks) ws.write(b)
        chunks = []
      }
      if (!spool.write(c)) {
        req.pause()
        spool.once('drain', () => { req.resume() })
      }
    }
    const onTooLarge = (): void => { this.reject(ctx, ANSWERS.tooLarge) }
    const onEnd = (): void => {
      ctx.res.off('close', onClose)
      req.off(TOO_LARGE_EVENT, onTooLarge)
      if (ctx.settled) return
      if (spool === null) {
        ctx.body = chunks.length === 1 ? chunks[0] as Buffer : Buffer.concat(chunks, size)
        this.pass(ctx)
        return
      }
      const path = spoolPath
      spool.end(() => {
        if (ctx.settled) return
        ctx.bodyFile = { path, length: size }
        this.pass(ctx)
      })
    }
    const onClose = (): void => {
      req.off('data', onData)
      req.off('end', onEnd)
      req.off(TOO_LARGE_EVENT, onTooLarge)
      if (ctx.settled) return
      ctx.outcome = ctx.bodyTimedOut ? 'REQUEST_TIMEOUT' : 'CLIENT_ABORTED'
      this.settle(ctx, { kind: 'failed', code: 'CLIENT_ABORTED' }, ctx.res.headersSent ? ctx.res.statusCode : CLIENT_CLOSED)
    }
    req.on('data', onData)
    req.once('end', onEnd)
    req.once(TOO_LARGE_EVENT, onTooLarge)
    ctx.res.once('close', onClose)
  }

  // ---- PipelineSink ---------------------------------------------------------------------------

  pass (ctx: Ctx): void {
    if (ctx.settled) return
    if (isLane(ctx.req)) [ctx.req, ctx.res] = ctx.req.laneUpgrade()
    if (ctx.tooLarge) { this.reject(ctx, ANSWERS.tooLarge); return }
    if (ctx.res.destroyed) { this.settle(ctx, { kind: 'failed', code: 'CLIENT_ABORTED' }, CLIENT_CLOSED); return }
    const files = (ctx.owner as ServingState).files[ctx.routeIndex]
    if (files !== null && files !== undefined) { this.serveFile(ctx, files); return }
    if (ctx.bufferBody && ctx.body === null && ctx.bodyFile === null && !ctx.req.readableEnded) { this.readBody(ctx); return }
    const done = ctx.done = (outcome: Outcome): void => { this.upstreamDone(ctx, outcome) }
    startSpan(ctx, this.tracer)
    const cr = (ctx.owner as ServingState).routes[ctx.routeIndex] as CompiledRoute
    try {
      this.upstreams.forward(ctx, cr.upstream as string, done)
    } catch (err) {
      this.log('error', 'forward failed', { route: cr.name, err })
      this.upstreamDone(ctx, { kind: 'failed', code: 'UPSTREAM_UNAVAILABLE' })
    }
  }

  /**
   * A static route whose guards passed: the file server answers. A file answer settles like an upstream
   * answer with that status (settlers see `{ kind: 'upstream', status }`), a 404/405 like a rejection.
   */
  private serveFile (ctx: Ctx, files: StaticFiles): void {
    files.serve(ctx, {
      reject: (r) => { this.reject(ctx, r) },
      done: (status, aborted) => {
        if (aborted) { ctx.outcome = 'CLIENT_ABORTED'; this.settle(ctx, { kind: 'failed', code: 'CLIENT_ABORTED' }, CLIENT_CLOSED) }
        else this.settle(ctx, { kind: 'upstream', status }, status)
      }
    })
  }

  reject (ctx: Ctx, r: Rejection, guard?: Guard): void {
    if (ctx.settled) return
    if (guard !== undefined) this.countGuard(ctx, guard, r.code)
    ctx.outcome = r.code
    // The rest of the body is not read: close the connection after the answer.
    const close = r === ANSWERS.tooLarge || r === ANSWERS.requestTimeout
    writeRejection(ctx.res, r, ctx.extraHeaders, close, ctx.requestId)
    ctx.bytesOut = r.body.length
    // Only settlers read the outcome: without any, none is made.
    this.settle(ctx, ctx.settlers === null ? UNREAD_OUTCOME : { kind: 'rejected', rejection: r }, ctx.res.headersSent ? r.status : CLIENT_CLOSED)
  }

  fail (ctx: Ctx, guard: Guard, err: unknown): void {
    if (ctx.settled) return
    if (err instanceof StoreError) {
      this.log('warn', 'store error in guard', { guard: guard.id, err })
      this.reject(ctx, ANSWERS.storeUnavailable, guard)
    } else {
      this.log('error', 'guard failed', { guard: guard.id, err, stack: err instanceof Error ? err.stack : undefined })
      this.reject(ctx, ANSWERS.internal, guard)
    }
  }

  /**
   * `flashgate_guard_rejections_total{route,guard,code}`: guard is the guard's place and kind in its
   * route (`2:rate_limit`, a fused pair `4:dedupe+5:quota`), so the label values are bounded by the
   * config. One CounterCell per (guard, code), found through a WeakMap keyed by the guard object (a
   * reload's new guards get new cells; the old ones go with their guards).
   */
  private countGuard (ctx: Ctx, guard: Guard, code: string): void {
    let cells = this.guardCells.get(guard)
    if (cells === undefined) this.guardCells.set(guard, cells = new Map())
    let c = cells.get(code)
    if (c === undefined) {
      const route = ctx.route.name
      cells.set(code, c = new CounterCell(this.metrics.guardRejections, { route, guard: guard.id.split(route + '#').join(''), code }))
    }
    c.inc()
  }

  shadow (ctx: Ctx, guard: Guard, r: Rejection): void {
    this.metrics.shadowRejections.inc({ route: ctx.route.name, guard: guard.id, code: r.code })
  }

  // ---- completion -----------------------------------------------------------------------------

  private upstreamDone (ctx: Ctx, outcome: Outcome): void {
    if (ctx.settled) return
    let status: number
    if (outcome.kind === 'failed') {
      if (ctx.tooLarge) {
        ctx.outcome = 'PAYLOAD_TOO_LARGE'
        writeRejection(ctx.res, ANSWERS.tooLarge, null, true, ctx.requestId)
        this.settle(ctx, { kind: 'rejected', rejection: ANSWERS.tooLarge }, 413)
        return
      }
      ctx.outcome = ctx.bodyTimedOut ? 'REQUEST_TIMEOUT' : outcome.code
      if (outcome.code !== 'CLIENT_ABORTED') {
        const r = failureRejection(outcome.code)
        if (!ctx.res.headersSent) ctx.bytesOut = r.body.length
        writeRejection(ctx.res, r, null, false, ctx.requestId)
      }
      status = ctx.res.headersSent ? ctx.res.statusCode : CLIENT_CLOSED
    } else {
      status = outcome.kind === 'upstream' ? outcome.status : ctx.res.statusCode
    }
    this.settle(ctx, outcome, status)
  }

  /** Run the settlers once, record metrics and the access log line, release the state. */
  private settle (ctx: Ctx, outcome: Outcome, status: number): void {
    if (ctx.settled) return
    ctx.settled = true
    const settlers = ctx.settlers
    if (settlers !== null) {
      for (let i = 0; i < settlers.length; i++) {
        try { (settlers[i] as (c: RequestContext, o: Outcome) => void)(ctx, outcome) } catch (err) {
          this.log('error', 'settler failed', { route: ctx.route.name, err })
        }
      }
    }
    const state = ctx.owner as ServingState
    const labels = (state.labels[ctx.routeIndex] as LabelCache).get(ctx.outcome)
    this.record(labels, ctx.req, ctx.path, status, ctx.start, ctx.clientIp, ctx.route.upstream, ctx.upstreamTarget, ctx.requestId, ctx)
    if (--state.inflight === 0 && state.onIdle !== null) { const f = state.onIdle; state.onIdle = null; f() }
    if (--this.inflight === 0 && this.drainWaiters.length > 0) {
      const w = this.drainWaiters
      this.drainWaiters = []
      for (const f of w) f()
    }
  }

  private record (series: Series, req: IncomingMessage, path: string, status: number, start: number, ip: string, upstream: string | null, target: string | null,
    requestId: string, ctx: Ctx | null, edgeBytes = 0): void {
    const end = performance.now()
    const seconds = (end - start) / 1000
    series.record(this.metrics, seconds)
    const tracer = this.tracer
    if (ctx !== null && tracer.exporting) {
      if (ctx.spanId === '') startSpan(ctx, tracer)
      if (ctx.traceSampled) this.recordSpan(ctx, series.labels.outcome, status, end)
    }
    if (this.accessLog.enabled) {
      const labels = series.labels
      const h = req.headers
      this.accessLog.log({
        time: Date.now(), route: labels.route, method: req.method as string, path, status, outcome: labels.outcome,
        upstream, target, durationMs: seconds * 1000, ip,
        requestId,
        host: h.host ?? null,
        userAgent: h['user-agent'] ?? null,
        bytesIn: ctx !== null ? ctx.bytesIn : declaredLength(req),
        bytesOut: ctx !== null ? ctx.bytesOut : edgeBytes,
        upstreamStatus: ctx !== null && ctx.upstreamStatus !== 0 ? ctx.upstreamStatus : null,
        upstreamMs: ctx !== null && ctx.upstreamMs >= 0 ? ctx.upstreamMs : null,
        traceId: ctx !== null && ctx.traceId !== '' ? ctx.traceId : null,
        protocol: req.httpVersion
      })
    }
  }

  /** Queue this request's server span for export. */
  private recordSpan (ctx: Ctx, outcome: string, status: number, end: number): void {
    const attributes: Array<readonly [string, string | number]> = [
      ['http.request.method', ctx.method],
      ['url.path', ctx.path],
      ['http.route', ctx.route.name],
      ['http.response.status_code', status],
      ['flashgate.outcome', outcome],
      ['flashgate.request_id', ctx.requestId],
      ['client.address', ctx.clientIp],
      ['server.address', ctx.host],
      ['network.protocol.version', ctx.req.httpVersion]
    ]
    if (ctx.upstreamTarget !== null) attributes.push(['flashgate.upstream', ctx.route.upstream ?? ''], ['flashgate.upstream.target', ctx.upstreamTarget])
    if (ctx.upstreamStatus !== 0) attributes.push(['flashgate.upstream.status_code', ctx.upstreamStatus])
    this.tracer.record({
      traceId: ctx.traceId, spanId: ctx.spanId, parentSpanId: ctx.parentSpanId,
      name: ctx.method + ' ' + ctx.route.name, start: ctx.start, end, status, attributes
    })
  }

  /** Answer before any route was chosen (400/404/405), under route `_none`. */
  private early (req: IncomingMessage, res: ServerResponse, r: Rejection, start: number, path: string, extra: string[] | null = null): void {
    const peer = normalizeIp(req.socket.remoteAddress ?? '')
    const state = this.state
    const id = requestIdOf(req, state.trusted.size > 0 && state.trusted.has(peer))
    writeRejection(res, r, extra, r.status === 400, id)
    this.record(NONE.get(r.code), req, path, r.status, start, peer, null, null, id, null, r.body.length)
  }

  private edge (state: ServingState, req: IncomingMessage, res: ServerResponse, path: string, query: string, start: number): void {
    const handler = state.edge.get(path) ?? (path.startsWith('/_flashgate/pending/') ? state.edge.get('/_flashgate/pending/') : undefined)
    if (handler === undefined) { this.early(req, res, ANSWERS.notFound, start, path); return }
    const peer = normalizeIp(req.socket.remoteAddress ?? '')
    const trusted = state.trusted.size > 0 && state.trusted.has(peer)
    const clientIp = trusted ? clientAddress(peer, req.headers['x-forwarded-for'], state.trusted) : peer
    const id = requestIdOf(req, trusted)
    const bytes = { n: 0 }
    tagEdgeResponse(res, id, bytes)
    let code: string | null = null
    const end = res.end
    // The outcome of an edge answer is the reject code of its JSON body (`{"code": "LINK_INVALID", ...}`):
    // every edge handler answers errors that way. Read from the body as it is ended (edge answers are one
    // small write), never trusted beyond the fixed set of codes.
    res.end = function (this: ServerResponse, ...args: unknown[]): ServerResponse {
      if (code === null && res.statusCode >= 400) code = edgeCode(args[0], res.statusCode)
      return (end as (...a: unknown[]) => ServerResponse).apply(this, args)
    } as ServerResponse['end']
    res.once('close', () => {
      const status = res.headersSent ? res.statusCode : CLIENT_CLOSED
      const outcome = status < 400 ? 'passed' : status === CLIENT_CLOSED ? 'CLIENT_ABORTED' : code ?? edgeCode(null, status)
      this.record(EDGE.get(outcome), req, path, status, start, clientIp, null, null, id, null, bytes.n)
    })
    const fail = (err: unknown): void => {
      this.log('error', 'edge handler failed', { path, err })
      sendRejection(res, ANSWERS.internal)
    }
    try {
      const r = handler(req, res, { clientIp, now: this.clock(), query: new URLSearchParams(query) })
      if (r !== undefined) r.then(undefined, fail)
    } catch (err) { fail(err) }
  }
}

const CODE_IN_BODY = /"code"\s*:\s*"([A-Z_]{1,40})"/

/**
 * The outcome label of an edge error answer: the `code` of its JSON body when it is one of the
 * contract's reject codes; else `HTTP_<status>` (bounded: a status is three digits).
 */
function edgeCode (chunk: unknown, status: number): string {
  if (typeof chunk === 'string' || Buffer.isBuffer(chunk)) {
    const text = typeof chunk === 'string' ? chunk.slice(0, 256) : chunk.toString('latin1', 0, 256)
    const m = CODE_IN_BODY.exec(text)
    if (m !== null && Object.hasOwn(STATUS, m[1] as string)) return m[1] as string
  }
  return `HTTP_${status}`
}

const RAW_400 = rawAnswer(ANSWERS.badRequest)
const RAW_408 = rawAnswer(rejection('REQUEST_TIMEOUT', 'request not received in time'))
const RAW_505 = rawAnswer(ANSWERS.unsupportedVersion)
const RAW_431 = rawAnswer({ ...rejection('BAD_REQUEST', 'request headers too large'), status: 431 })

function rawAnswer (r: Rejection): string {
  return rejectionHead(r) + 'connection: close\r\n\r\n' + r.body.toString()
}

/**
 * Create the public `node:http` server with the protection limits of `config.server`: header and
 * request timeouts (slowloris), header size, keep-alive timeout, a connection cap; malformed requests
 * and `CONNECT` get a JSON 4xx and the connection is closed.
 */
export function createPublicServer (config: Config, frontend: Frontend, metrics: Metrics, log: Log, existing?: Server): Server {
  const s = config.server
  // `existing`: a TLS or HTTP/2 server made by gateway/http/listeners.ts, given the same limits and handlers.
  const server = existing ?? createServer({
    maxHeaderSize: s.maxHeaderSize,
    headersTimeout: s.headersTimeoutMs,
    requestTimeout: s.requestTimeoutMs,
    keepAliveTimeout: s.keepAliveTimeoutMs,
    requireHostHeader: true,
    noDelay: true,
    // How often node:http checks headers_timeout and request_timeout (its default, 30 s, let a 10 s
    // headers_timeout fire after 17-25 s): they now fire within half a second of their value.
    connectionsCheckingInterval: 500
  }, frontend.handle)
  applyServerLimits(server, config)
  server.on('connection', (socket: Socket) => {
    metrics.connections.inc()
    socket.once('close', () => { metrics.connections.dec() })
  })
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    if (err.code === 'ECONNRESET' || !socket.writable || (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent === true) {
      socket.destroy()
      return
    }
    const raw = err.code === 'HPE_HEADER_OVERFLOW' ? RAW_431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? RAW_408 : err.code === 'HPE_INVALID_VERSION' ? RAW_505 : RAW_400
    socket.end(raw)
    log('debug', 'client error', { code: err.code })
  })
  server.on('connect', (_req: IncomingMessage, socket: Socket) => {
    // CONNECT (authority-form): flashgate is not a forward proxy. Over HTTP/2 the second argument is
    // the stream's response, not a socket.
    if ('writeHead' in socket) { writeRejection(socket as unknown as ServerResponse, ANSWERS.badRequest); return }
    if (socket.writable) socket.end(RAW_400); else socket.destroy()
  })
  return server
}

/** Limits that can change on reload without a new server. */
export function applyServerLimits (server: Server, config: Config): void {
  const s = config.server
  server.headersTimeout = s.headersTimeoutMs
  server.requestTimeout = s.requestTimeoutMs
  server.keepAliveTimeout = s.keepAliveTimeoutMs
  server.maxConnections = s.maxConnections
}

