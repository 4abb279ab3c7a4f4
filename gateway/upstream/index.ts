/**
 * The upstream side of the gateway: one undici `Pool` per target (keep-alive), peer selection and passive
 * health from `./balancer.ts`, and one small handler object per request that streams the request body up
 * and the response body down with backpressure both ways.
 *
 * Choices (see also `./balancer.ts` and `./headers.ts`):
 * - Requests go through `pool.dispatch()` with undici's raw-header handler shape (`onConnect`,
 *   `onHeaders`, `onData`, `onComplete`, `onError`), the one undici's own `request()`/`stream()` use:
 *   the response headers arrive as raw Buffers and are filtered once, with no object built per response
 *   (the newer `onResponseStart` shape would parse them into an object first). No `stream.pipeline()`.
 * - Failures that count against a target (passive health): connect error, connect timeout, response
 *   timeout (headers or body), connection reset / premature close. An upstream's 5xx answer is an answer:
 *   it is passed to the client and is not a failure (nginx's default `proxy_next_upstream error timeout`).
 *   A client that leaves says nothing about the upstream and is not a failure either.
 * - Retries: at most `retries` more attempts, each on a target this request has not tried, only for
 *   idempotent methods (GET HEAD OPTIONS PUT DELETE TRACE), and only when nothing can have been consumed:
 *   the attempt failed while connecting (undici wrote no byte, so a streamed body was never read), or a
 *   request without a body lost its connection before any response byte (the keep-alive race nginx's
 *   `proxy_next_upstream error` covers). Never after a timeout, never once a body started streaming.
 * - Timeouts are undici's own (one shared coarse timer): `connectTimeout` → UPSTREAM_UNAVAILABLE,
 *   `headersTimeout`/`bodyTimeout` = the upstream's `timeout` → UPSTREAM_TIMEOUT. No timer per request here.
 * - Bounded wait for a connection: a target takes at most `connections` requests at once (undici's own
 *   queue would wait without bound); more wait here, FIFO, at most `queue` of them (one more is answered
 *   OVERLOADED at once). The wait counts against the upstream `timeout`: a request still waiting when it
 *   is over ends UPSTREAM_TIMEOUT, and one that gets a connection is given what is left of it as its
 *   headers timeout. One coarse 50 ms ticker per UpstreamSet, running only while something waits, expires
 *   them (so a wait ends within ~50 ms of its deadline).
 * - Trailers from the upstream are not forwarded (as nginx without `proxy_pass_trailers`); 1xx interim
 *   responses are swallowed (the client gets the final head once).
 */
import { open } from 'node:fs/promises'
import { performance } from 'node:perf_hooks'
import { Readable } from 'node:stream'
import { Pool } from 'undici'
import type { Dispatcher } from 'undici'
import type { UpstreamConfig } from '../../conf/types.js'
import { CounterCell, HistogramCell, UPSTREAM_DURATION_BUCKETS, type Metrics } from '../metrics.js'
import type { Outcome, RequestContext } from '../pipeline/types.js'
import {
  buildRing, hashKey, isUp, newPeer, pickHash, pickLeastConn, pickRoundRobin, recordFailure, recordSuccess
} from './balancer.js'
import type { HealthPolicy, PeerState, Ring } from './balancer.js'
import { headFlags, requestHeaders, responseHeaders, responseLines } from './headers.js'
import { RawPool, type RawDispatch, type RawHead } from './raw-pool.js'
import { RawResponse } from '../http/raw-server.js'

/** One target's connections: undici's Pool, or flashgate's own HTTP/1.1 client (`client: raw`). */
type TargetPool = Pool | RawPool

/**
 * Called exactly once per `forward()`, possibly synchronously, when the exchange is over:
 * - `{ kind: 'upstream', status }`: the upstream's answer was relayed completely (head and body);
 * - `{ kind: 'failed', code }`: it was not. If `ctx.res.headersSent` is false the caller answers itself
 *   (502 UPSTREAM_UNAVAILABLE, 504 UPSTREAM_TIMEOUT, 400 BAD_REQUEST when undici refused the request as
 *   built) unless the client is gone (CLIENT_ABORTED, or `ctx.res.destroyed`). If the head had already been
 *   sent, the client response has been destroyed and there is nothing left to write.
 * `target` is the URL of the last target tried (for the access log), null when none was picked; it is also
 * stored in `ctx.upstreamTarget` before `done` runs.
 */
export type ForwardDone = (outcome: Outcome, target: string | null) => void

export interface UpstreamStatus {
  readonly upstream: string
  readonly target: string
  /** False from the failure that reached max_fails until the next success (`flashgate_upstream_up`). */
  readonly up: boolean
  readonly fails: number
  /** Requests in flight on this target. */
  readonly active: number
}

export interface Upstreams {
  /**
   * Proxy `ctx.req` to the named upstream and stream the answer into `ctx.res`, with `ctx.extraHeaders`
   * added to the response head. See {@link ForwardDone} for how it ends. An unknown upstream name ends
   * at once with UPSTREAM_UNAVAILABLE.
   */
  forward(ctx: RequestContext, upstream: string, done: ForwardDone): void
  /**
   * Swap to a new config in one step. Targets that remain (same upstream name and URL) keep their Pool,
   * its keep-alive connections and their health state (a Pool is rebuilt only when its connection
   * options change: connections, connect_timeout, keepalive). Removed targets' Pools are closed
   * gracefully: requests in flight on them finish.
   */
  update(upstreams: ReadonlyMap<string, UpstreamConfig>): void
  /** Health snapshot for admin and tests, in config order. */
  status(): UpstreamStatus[]
  /** Close every Pool gracefully (in-flight requests finish first). */
  close(): Promise<void>
}

export interface UpstreamDeps {
  readonly metrics: Metrics
  /** Epoch ms; tests pass a fake clock to drive fail_timeout. */
  readonly clock: () => number
  readonly log?: (level: 'debug' | 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void
}

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE'])

/** One target of one upstream: its Pool, health state and cached metric children. */
class Target {
  readonly url: string
  readonly peer: PeerState
  pool: TargetPool
  poolKey: string
  /** Requests waiting for one of this target's connections (FIFO; settled ones are skipped). */
  readonly waiting: Exchange[] = []
  private readonly upstream: string
  private readonly metrics: Metrics
  private readonly counters = new Map<string, CounterCell>()
  /** `flashgate_upstream_duration_seconds` of this target (a cell: see CounterCell for why). */
  private readonly duration: HistogramCell

  constructor (upstream: string, url: string, peer: PeerState, cfg: UpstreamConfig, metrics: Metrics) {
    this.upstream = upstream
    this.url = url
    this.peer = peer
    this.metrics = metrics
    this.duration = new HistogramCell(metrics.upstreamDuration, { upstream, target: url }, UPSTREAM_DURATION_BUCKETS)
    this.poolKey = poolKey(cfg)
    this.pool = makePool(url, cfg)
  }

  /**
   * Count one attempt under `status` (an HTTP status or an error label). Performance: a CounterCell per
   * status (prom-client's `labels(...).inc()` hashes and validates the labels on every call).
   */
  count (status: string): void {
    let c = this.counters.get(status)
    if (c === undefined) {
      c = new CounterCell(this.metrics.upstreamRequests, { upstream: this.upstream, target: this.url, status })
      this.counters.set(status, c)
    }
    c.inc()
  }

  /** One attempt took `ms` to its response head (or to its failure). */
  observe (ms: number): void {
    this.duration.observe(ms / 1000)
  }

  setUp (up: boolean): void {
    this.metrics.upstreamUp.labels(this.upstream, this.url).set(up ? 1 : 0)
  }

  removeGauge (): void {
    this.metrics.upstreamUp.remove(this.upstream, this.url)
  }
}

function poolKey (cfg: UpstreamConfig): string {
  return `${cfg.connections}/${cfg.connectTimeoutMs}/${cfg.keepAliveTimeoutMs}/${cfg.client ?? 'undici'}`
}

function makePool (url: string, cfg: UpstreamConfig): TargetPool {
  if (cfg.client === 'raw') {
    return new RawPool(url, { connections: cfg.connections, connectTimeout: cfg.connectTimeoutMs, keepAliveTimeout: cfg.keepAliveTimeoutMs })
  }
  return new Pool(url, {
    connections: cfg.connections,
    pipelining: 1,
    connectTimeout: cfg.connectTimeoutMs,
    keepAliveTimeout: cfg.keepAliveTimeoutMs,
    headersTimeout: cfg.timeoutMs,
    bodyTimeout: cfg.timeoutMs
  })
}

function closePool (pool: TargetPool): void {
  pool.close().catch(() => {})
}

/** One upstream as configured at one moment; replaced (not mutated) by update(). */
class Group {
  readonly name: string
  readonly cfg: UpstreamConfig
  readonly health: HealthPolicy
  readonly targets: readonly Target[]
  readonly peers: readonly PeerState[]
  readonly ring: Ring | null
  /** Lower-cased header the hash balancer reads; null for round_robin / least_conn. */
  readonly hashHeader: string | null

  constructor (cfg: UpstreamConfig, targets: readonly Target[]) {
    this.name = cfg.name
    this.cfg = cfg
    this.health = { maxFails: cfg.maxFails, failTimeoutMs: cfg.failTimeoutMs }
    this.targets = targets
    this.peers = targets.map((t) => t.peer)
    if (cfg.balance.kind === 'hash') {
      this.hashHeader = cfg.balance.header.toLowerCase()
      this.ring = buildRing(cfg.targets.map((t) => ({ key: t.url, weight: t.weight })))
    } else {
      this.hashHeader = null
      this.ring = null
    }
  }

  pick (ctx: RequestContext, now: number, tried: readonly PeerState[] | null): Target | null {
    let p: PeerState | null
    const kind = this.cfg.balance.kind
    if (kind === 'round_robin') {
      p = pickRoundRobin(this.peers, this.health, now, tried)
    } else if (kind === 'least_conn') {
      p = pickLeastConn(this.peers, this.health, now, tried)
    } else {
      const v = ctx.req.headers[this.hashHeader!]
      const key = v === undefined ? '' : Array.isArray(v) ? v.join(', ') : v
      p = key === ''
        ? pickRoundRobin(this.peers, this.health, now, tried)
        : pickHash(this.peers, this.ring!, hashKey(key), this.health, now, tried)
    }
    return p === null ? null : this.targets[p.index]!
  }
}

class ClientAbortError extends Error {
  readonly code = 'FG_ERR_CLIENT_ABORTED'
  constructor () {
    super('client closed the connection')
    this.name = 'ClientAbortError'
  }
}

const CONNECT_PHASE_NOT_TARGET = new Set(['UND_ERR_CLOSED', 'UND_ERR_DESTROYED'])
const REFUSED_AS_BUILT = new Set(['UND_ERR_INVALID_ARG', 'UND_ERR_NOT_SUPPORTED'])
const TIMEOUTS = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT'])

function errCode (err: unknown): string {
  const c = (err as { code?: unknown } | null)?.code
  return typeof c === 'string' ? c : ''
}

/**
 * One proxied request: the undici handler for each of its attempts. Fields are reset per attempt where
 * they describe the attempt (connected, inFlight, abort).
 */
class Exchange implements Dispatcher.DispatchHandler {
  private readonly set: UpstreamSet
  private readonly group: Group
  private readonly ctx: RequestContext
  private readonly done: ForwardDone
  private readonly opts: Dispatcher.DispatchOptions & { headersTimeout: number }
  /** performance.now() when forward() was called: the upstream timeout counts from here while waiting. */
  private readonly began = performance.now()
  /** performance.now() past which a waiting request ends UPSTREAM_TIMEOUT. */
  deadline = 0
  private target: Target | null = null
  private tried: PeerState[] | null = null
  private attempts = 0
  /** undici's abort for the current attempt, once it is on a socket. */
  private abortFn: ((err?: Error) => void) | null = null
  /** The current attempt reached a socket: bytes may have been sent, no retry from here. */
  private connected = false
  /** Some attempt reached a socket: the upstream may have acted on the request (Outcome `sent`). */
  private reached = false
  /** The current attempt is counted in target.peer.active. */
  private inFlight = false
  private headWritten = false
  private status = 0
  private settled = false
  private clientGone = false
  private resumeFn: (() => void) | null = null
  /** performance.now() when the current attempt was dispatched; -1 once its duration is observed. */
  private sentAt = -1
  /** performance.now() at the first attempt; response body bytes relayed. */
  private t0 = 0
  private sent = 0

  constructor (set: UpstreamSet, group: Group, ctx: RequestContext, done: ForwardDone) {
    this.set = set
    this.group = group
    this.ctx = ctx
    this.done = done
    const req = ctx.req
    const te = req.headers['transfer-encoding']
    const cl = req.headers['content-length']
    // An HTTP/2 body has no Transfer-Encoding: the request has one unless its HEADERS ended the stream.
    const h2Body = req.httpVersionMajor === 2 && cl === undefined && !(req as unknown as { stream: { endAfterHeaders: boolean } }).stream.endAfterHeaders
    const file = ctx.bodyFile ?? null
    const body = ctx.body != null
      ? ctx.body
      : file !== null
        ? Readable.from(fileBody(file.path), { objectMode: false })
        : (te !== undefined || (cl !== undefined && cl !== '0') || h2Body) ? req : null
    this.opts = {
      path: requestPath(ctx),
      method: ctx.method,
      headers: requestHeaders(req, ctx.peerTrusted, ctx.clientIp, ctx),
      body,
      headersTimeout: group.cfg.timeoutMs,
      bodyTimeout: group.cfg.timeoutMs
    }
    if (ctx.body != null) replaceLength(this.opts.headers as string[], ctx.body.length)
    else if (file !== null) replaceLength(this.opts.headers as string[], file.length)
  }

  start (): void {
    const res = this.ctx.res
    if (res.destroyed || isClientFailure(this.ctx)) {
      this.settle({ kind: 'failed', code: 'CLIENT_ABORTED' })
      return
    }
    const target = this.group.pick(this.ctx, this.set.clock(), null)
    if (target === null) {
      this.settle({ kind: 'failed', code: 'UPSTREAM_UNAVAILABLE' }) // an upstream without targets
      return
    }
    res.on('close', this.onClientClose)
    this.t0 = performance.now()
    this.attempt(target)
  }

  private attempt (target: Target): void {
    this.target = target
    this.attempts++
    this.connected = false
    this.abortFn = null
    const cfg = this.group.cfg
    if (target.peer.active >= cfg.connections) {
      if (target.waiting.length >= cfg.queue) {
        target.count('overloaded')
        this.settle({ kind: 'failed', code: 'OVERLOADED' })
        return
      }
      this.deadline = this.began + cfg.timeoutMs
      target.waiting.push(this)
      this.set.waitingAdded(target)
      return
    }
    this.dispatch(target)
  }

  private dispatch (target: Target): void {
    this.inFlight = true
    target.peer.active++
    // What is left of the upstream timeout after waiting for a connection (the whole of it otherwise).
    const now = performance.now()
    const left = this.group.cfg.timeoutMs - Math.floor(now - this.began)
    this.opts.headersTimeout = Math.max(1, Math.min(this.group.cfg.timeoutMs, left))
    this.sentAt = now
    const pool = target.pool
    // The raw client takes the same options (path, method, flat headers, body Buffer/stream/null).
    if (pool instanceof RawPool) pool.dispatch(this.opts as unknown as RawDispatch, this)
    else pool.dispatch(this.opts, this)
  }

  /** Still waiting for a connection (not settled by a client abort or a timeout). */
  get waitingForConnection (): boolean { return !this.settled && !this.inFlight }

  /** A connection of `target` is free: take it (called by the target's queue). */
  resumeOn (target: Target): void { this.dispatch(target) }

  /** The wait outlived the upstream timeout. */
  expire (): void {
    if (this.settled) return
    this.target?.count('queue_timeout')
    this.settle({ kind: 'failed', code: 'UPSTREAM_TIMEOUT' })
  }

  private readonly onClientClose = (): void => {
    if (this.settled) return
    this.clientGone = true
    if (this.abortFn !== null) {
      // onError follows and settles.
      this.abortFn(new ClientAbortError())
    } else {
      // Still queued or connecting: answer now; onConnect aborts the attempt when it gets a socket.
      this.settle({ kind: 'failed', code: 'CLIENT_ABORTED' })
    }
  }

  private readonly onDrain = (): void => {
    if (this.resumeFn !== null && !this.clientGone) this.resumeFn()
  }

  private settle (outcome: Outcome): void {
    if (this.settled) return
    this.settled = true
    if (outcome.kind === 'failed' && this.reached) outcome = { kind: 'failed', code: outcome.code, sent: true }
    const url = this.target === null ? null : this.target.url
    const ctx = this.ctx
    ctx.upstreamTarget = url
    if (this.t0 !== 0) {
      ctx.upstreamMs = performance.now() - this.t0
      ctx.upstreamStatus = this.status
      ctx.bytesOut = this.sent
    }
    this.done(outcome, url)
  }

  /** Observe the current attempt's time once: at its response head, or at its failure before one. */
  private timeAttempt (target: Target): void {
    if (this.sentAt < 0) return
    target.observe(performance.now() - this.sentAt)
    this.sentAt = -1
  }

  private endAttempt (): void {
    if (this.inFlight) {
      this.inFlight = false
      const t = this.target!
      t.peer.active--
      if (t.waiting.length > 0) this.set.next(t, this.group.cfg.connections)
    }
  }

  // undici handler (raw-header shape)

  onConnect (abort: (err?: Error) => void): void {
    this.connected = true
    this.reached = true
    this.abortFn = abort
    if (this.clientGone) abort(new ClientAbortError())
  }

  onHeaders (statusCode: number, rawHeaders: Buffer[], resume: () => void, statusText: string): boolean {
    if (statusCode < 200) return true // 100/103 interim answers: the client gets the final head only
    this.timeAttempt(this.target!)
    if (this.clientGone) return false
    const res = this.ctx.res
    const headers = responseHeaders(rawHeaders, this.ctx.extraHeaders, this.ctx.requestId ?? null)
    try {
      // HTTP/2 has no reason phrase (node warns when given one).
      if (statusText !== '' && !('stream' in res)) res.writeHead(statusCode, statusText, headers)
      else res.writeHead(statusCode, headers)
    } catch (err) {
      // Header values node:http refuses to send: the upstream answered garbage.
      this.abortFn?.(err as Error)
      return false
    }
    return this.headSent(statusCode, resume)
  }

  /**
   * The raw client's head (gateway/upstream/raw-pool.ts): onto the raw listener's response its header
   * lines go as slices of the upstream's bytes (headers.ts responseLines), with no string pair per
   * field; anywhere else, or when those lines cannot be used, as onHeaders.
   */
  onHead (statusCode: number, head: RawHead, resume: () => void, statusText: string): boolean {
    if (statusCode < 200) return true
    const res: unknown = this.ctx.res
    const raw = res instanceof RawResponse ? res : null
    const lines = raw === null ? null : responseLines(head)
    if (raw === null || lines === null) return this.onHeaders(statusCode, head.rawHeaders(), resume, statusText)
    this.timeAttempt(this.target!)
    if (this.clientGone) return false
    try {
      if (!raw.writeHeadLines(statusCode, statusText, lines, headFlags.hasLength, headFlags.hasDate, this.ctx.extraHeaders, this.ctx.requestId ?? null)) {
        return this.onHeaders(statusCode, head.rawHeaders(), resume, statusText)
      }
    } catch (err) {
      this.abortFn?.(err as Error)
      return false
    }
    return this.headSent(statusCode, resume)
  }

  /** The client's head is written: count the answer, mark the target up, keep undici's resume. */
  private headSent (statusCode: number, resume: () => void): true {
    const target = this.target!
    this.headWritten = true
    this.status = statusCode
    target.count(String(statusCode))
    if (recordSuccess(target.peer, this.group.health)) {
      target.setUp(true)
      this.set.log('info', 'upstream target up', { upstream: this.group.name, target: target.url })
    }
    this.resumeFn = resume
    return true
  }

  onData (chunk: Buffer): boolean {
    if (this.clientGone) return false
    const res = this.ctx.res
    this.sent += chunk.length
    if (res.write(chunk)) return true
    // Slow client: undici stops reading the upstream socket until the client drains.
    res.once('drain', this.onDrain)
    return false
  }

  onComplete (_trailers: string[] | null): void {
    this.endAttempt()
    this.ctx.res.end()
    this.settle({ kind: 'upstream', status: this.status })
  }

  onError (err: Error): void {
    this.endAttempt()
    const target = this.target
    const res = this.ctx.res
    const code = errCode(err)
    if (this.clientGone || err instanceof ClientAbortError || isClientFailure(this.ctx)) {
      this.clientGone = true
      if (target !== null && !this.headWritten) target.count('aborted')
      if (this.headWritten) res.destroy()
      this.settle({ kind: 'failed', code: 'CLIENT_ABORTED' })
      return
    }
    if (target === null) return
    this.timeAttempt(target)
    if (!this.connected) {
      if (REFUSED_AS_BUILT.has(code)) {
        target.count('invalid_request')
        this.settle({ kind: 'failed', code: 'BAD_REQUEST' })
        return
      }
      target.count(code === 'UND_ERR_CONNECT_TIMEOUT' ? 'connect_timeout' : 'connect_error')
      if (!CONNECT_PHASE_NOT_TARGET.has(code)) this.fail(target, err)
      if (this.retry(target)) return
      this.settle({ kind: 'failed', code: 'UPSTREAM_UNAVAILABLE' })
      return
    }
    const timeout = TIMEOUTS.has(code)
    if (!timeout && !this.headWritten && this.opts.body == null) {
      // The connection broke before any answer (typically a keep-alive connection the upstream closed
      // as we reused it). Nothing but headers was sent, so an idempotent request can go elsewhere.
      target.count('error')
      this.fail(target, err)
      if (this.retry(target)) return
      this.settle({ kind: 'failed', code: 'UPSTREAM_UNAVAILABLE' })
      return
    }
    if (!this.headWritten) target.count(timeout ? 'timeout' : 'error')
    this.fail(target, err)
    if (this.headWritten) res.destroy()
    this.settle({ kind: 'failed', code: timeout ? 'UPSTREAM_TIMEOUT' : 'UPSTREAM_UNAVAILABLE' })
  }

  onUpgrade (): void {
    // Never asked for: Upgrade is stripped from requests.
  }

  /** Try the next untried target if the rules allow (idempotent, retries left). */
  private retry (target: Target): boolean {
    if (this.attempts > this.group.cfg.retries || !IDEMPOTENT.has(this.ctx.method)) return false
    ;(this.tried ??= []).push(target.peer)
    const next = this.group.pick(this.ctx, this.set.clock(), this.tried)
    if (next === null) return false
    this.set.metrics.upstreamRetries.labels(this.group.name).inc()
    this.attempt(next)
    return true
  }

  private fail (target: Target, err: Error): void {
    if (recordFailure(target.peer, this.group.health, this.set.clock())) {
      target.setUp(false)
      this.set.log('warn', 'upstream target down', {
        upstream: this.group.name, target: target.url, fails: target.peer.fails, error: errCode(err) || err.message
      })
    }
  }
}

/** The request body stream failed because the client went away mid-upload. */
function isClientFailure (ctx: RequestContext): boolean {
  const req = ctx.req
  // req.socket is typed non-null but node:http clears it on some error paths.
  const socket = req.socket as typeof req.socket | null
  return ctx.res.destroyed || (socket !== null && socket.destroyed) || (req.destroyed && !req.complete)
}

/** Origin-form target: `req.url` when it is one, else the normalised path and query (absolute-form). */
function requestPath (ctx: RequestContext): string {
  const url = ctx.req.url ?? ''
  if (url.charCodeAt(0) === 47 /* / */) return url
  return ctx.query === '' ? ctx.path : `${ctx.path}?${ctx.query}`
}

/**
 * A spooled request body (gateway/http/server.ts readBody), read from its file only when undici sends it
 * (Readable.from pulls lazily):
 * nothing is opened for a request that never gets a connection, and the file is closed however the
 * send ends (undici ends the iteration on an error or abort).
 */
async function * fileBody (path: string): AsyncGenerator<Buffer> {
  const fh = await open(path, 'r')
  try {
    for await (const chunk of fh.createReadStream({ autoClose: false })) yield chunk as Buffer
  } finally {
    await fh.close()
  }
}

/** A body supplied as bytes replaces the client's framing: one Content-Length matching it. */
function replaceLength (headers: string[], length: number): void {
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i]!.toLowerCase() === 'content-length') {
      headers.splice(i, 2)
      break
    }
  }
  headers.push('content-length', String(length))
}

class UpstreamSet implements Upstreams {
  readonly metrics: Metrics
  readonly clock: () => number
  private readonly logFn: UpstreamDeps['log']
  private groups = new Map<string, Group>()
  /** Targets with requests waiting for a connection, and the ticker that expires those waits. */
  private readonly queued = new Set<Target>()
  private ticker: NodeJS.Timeout | null = null

  constructor (cfg: ReadonlyMap<string, UpstreamConfig>, deps: UpstreamDeps) {
    this.metrics = deps.metrics
    this.clock = deps.clock
    this.logFn = deps.log
    this.update(cfg)
  }

  log (level: 'debug' | 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>): void {
    this.logFn?.(level, msg, fields)
  }

  /** A request started waiting on some target: make sure the ticker runs. */
  waitingAdded (t: Target): void {
    this.queued.add(t)
    if (this.ticker === null) {
      this.ticker = setInterval(this.tick, 50)
      this.ticker.unref()
    }
  }

  /** Hand free connections of `t` to its waiting requests, first come first served. */
  next (t: Target, connections: number): void {
    const q = t.waiting
    while (q.length > 0 && t.peer.active < connections) {
      const e = q.shift()!
      if (e.waitingForConnection) e.resumeOn(t)
    }
  }

  private readonly tick = (): void => {
    const now = performance.now()
    for (const t of this.queued) {
      const q = t.waiting
      // Expire the overdue and drop settled entries (client gone), keeping the order of the rest.
      let keep = 0
      for (let i = 0; i < q.length; i++) {
        const e = q[i]!
        if (!e.waitingForConnection) continue
        if (e.deadline <= now) { e.expire(); continue }
        q[keep++] = e
      }
      q.length = keep
      if (keep === 0) this.queued.delete(t)
    }
    if (this.queued.size === 0 && this.ticker !== null) { clearInterval(this.ticker); this.ticker = null }
  }

  forward (ctx: RequestContext, upstream: string, done: ForwardDone): void {
    const group = this.groups.get(upstream)
    if (group === undefined) {
      done({ kind: 'failed', code: 'UPSTREAM_UNAVAILABLE' }, null)
      return
    }
    new Exchange(this, group, ctx, done).start()
  }

  update (upstreams: ReadonlyMap<string, UpstreamConfig>): void {
    const old = new Map<string, Target>()
    for (const g of this.groups.values()) for (const t of g.targets) old.set(`${g.name}\n${t.url}`, t)
    const next = new Map<string, Group>()
    for (const [name, cfg] of upstreams) {
      const prev = this.groups.get(name)
      const sameWeights = prev !== undefined && prev.cfg.targets.length === cfg.targets.length &&
        prev.cfg.targets.every((t, i) => cfg.targets[i]!.url === t.url && cfg.targets[i]!.weight === t.weight)
      const targets = cfg.targets.map((tc, index) => {
        const key = `${name}\n${tc.url}`
        let t = old.get(key)
        if (t !== undefined) {
          old.delete(key)
          t.peer.index = index
          if (!sameWeights) {
            // New weights or a new set of peers: restart the round robin as nginx does on reload.
            t.peer.weight = tc.weight
            t.peer.effectiveWeight = tc.weight
            t.peer.currentWeight = 0
          }
          if (t.poolKey !== poolKey(cfg)) {
            closePool(t.pool)
            t.pool = makePool(tc.url, cfg)
            t.poolKey = poolKey(cfg)
          }
        } else {
          t = new Target(name, tc.url, newPeer(index, tc.weight), cfg, this.metrics)
        }
        t.setUp(isUp(t.peer, { maxFails: cfg.maxFails, failTimeoutMs: cfg.failTimeoutMs }))
        return t
      })
      next.set(name, new Group(cfg, targets))
    }
    this.groups = next
    for (const t of old.values()) {
      closePool(t.pool)
      t.removeGauge()
    }
  }

  status (): UpstreamStatus[] {
    const out: UpstreamStatus[] = []
    for (const g of this.groups.values()) {
      for (const t of g.targets) {
        out.push({ upstream: g.name, target: t.url, up: isUp(t.peer, g.health), fails: t.peer.fails, active: t.peer.active })
      }
    }
    return out
  }

  async close (): Promise<void> {
    if (this.ticker !== null) { clearInterval(this.ticker); this.ticker = null }
    for (const t of this.queued) for (const e of t.waiting.splice(0)) e.expire()
    this.queued.clear()
    const pools: TargetPool[] = []
    for (const g of this.groups.values()) for (const t of g.targets) pools.push(t.pool)
    this.groups = new Map()
    await Promise.all(pools.map(async (p) => await p.close()))
  }
}

/**
 * Build the upstream side from the normalised config. No I/O happens here: Pools connect lazily on the
 * first request. `deps.clock` is read for passive health (fail_timeout), never for anything else.
 */
export function createUpstreams (cfg: ReadonlyMap<string, UpstreamConfig>, deps: UpstreamDeps): Upstreams {
  return new UpstreamSet(cfg, deps)
}
