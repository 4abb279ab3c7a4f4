/**
 * The pipeline's vocabulary: the request context guards read, the verdicts they answer, and what a
 * guard factory is given. Guards are compiled once per config load (see gateway/pipeline/build.ts) into an
 * array of small objects; a request walks that array once.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Registry } from 'prom-client'
import type { Config, GuardConfig, RouteConfig } from '../../conf/types.js'
import type { Store } from '../../limiter/store.js'
import type { Metrics } from '../metrics.js'
import type { QueryParams } from '../http/query.js'
import type { PendingSink } from '../pending.js'
import type { KeptState, OverloadSignal } from './state.js'

/** Reject codes of the contract (CONTRACT.md, "Answers the gateway gives itself"). */
export type RejectCode =
  | 'BAD_REQUEST' | 'UNAUTHENTICATED' | 'BLOCKED' | 'CAPTCHA_REQUIRED' | 'CAPTCHA_INVALID'
  | 'LINK_INVALID' | 'LINK_EXPIRED' | 'NOT_FOUND' | 'SOLD_OUT' | 'DUPLICATE' | 'NOT_STARTED' | 'ENDED'
  | 'RATE_LIMITED' | 'UPSTREAM_UNAVAILABLE' | 'UPSTREAM_TIMEOUT' | 'STORE_UNAVAILABLE' | 'OVERLOADED'
  | 'PAYLOAD_TOO_LARGE' | 'METHOD_NOT_ALLOWED' | 'INTERNAL_ERROR' | 'REQUEST_TIMEOUT' | 'UNSUPPORTED_VERSION'
  | 'QUEUE_REQUIRED'

/**
 * A rejection is a value, not an exception: expected rejections cost no stack trace. Guards build the
 * constant ones once at load (see gateway/pipeline/reject.ts `rejection()`), with the JSON body pre-encoded.
 */
export interface Rejection {
  readonly status: number
  readonly code: RejectCode | string
  /** Pre-encoded JSON body `{"code":..,"message":..}` (or the guard's `reject.body` override). */
  readonly body: Buffer
  /** Extra response headers (e.g. Retry-After, RateLimit-Policy), flat [name, value, name, value...]. */
  readonly headers: readonly string[] | null
}

/** `undefined` = pass. */
export type Verdict = Rejection | undefined

/** How a request ended, given to every settler a guard registered (see RequestContext.onSettle). */
export type Outcome =
  /** A later guard (or the body-size check) rejected it. */
  | { readonly kind: 'rejected'; readonly rejection: Rejection }
  /** The upstream answered with this status (2xx..5xx). */
  | { readonly kind: 'upstream'; readonly status: number }
  /**
   * No upstream answer: connect error, timeout, client abort before the answer. `sent`: the request was
   * handed to an upstream connection (onConnect), so its bytes may have reached the upstream and it may
   * have acted on them (a buy taken whose answer was lost); absent or false = it never left the gateway.
   */
  | { readonly kind: 'failed'; readonly code: string; readonly sent?: boolean }

export type Settler = (ctx: RequestContext, outcome: Outcome) => void

export interface RequestContext {
  readonly req: IncomingMessage
  readonly res: ServerResponse
  readonly route: RouteConfig
  /** Upper-case method. */
  readonly method: string
  /** Decoded-as-sent path, no query string, always starting with `/`. */
  readonly path: string
  /** Raw query string without `?` ('' when none). */
  readonly query: string
  /** Lower-cased Host without port. */
  readonly host: string
  /** Client address: the socket peer, or X-Forwarded-For's right-most untrusted hop when the peer is a trusted proxy. */
  readonly clientIp: string
  /**
   * Whether the socket peer is in trusted_proxies (computed with clientIp). The proxy then keeps the
   * incoming X-Forwarded-For chain and appends the peer; otherwise it replaces it with the peer.
   */
  readonly peerTrusted: boolean
  /**
   * The request body, when something on the request path had to read it whole (e.g. a captcha token in a
   * form field): the proxy sends these bytes instead of streaming `req`. Absent/null = stream `req`.
   */
  body?: Buffer | null
  /** A body read whole that was larger than server.body_buffer_size: spooled to this file (removed when the exchange ends). */
  bodyFile?: { readonly path: string, readonly length: number } | null
  /** Route `:param` values. */
  readonly params: Readonly<Record<string, string>>
  /** Epoch ms, read once when the request arrived; guards use this, never Date.now(). */
  readonly now: number
  /**
   * The user id from `identity.user`; `undefined` until first asked, `null` when the request has none.
   * Read it through deps.identity(ctx), which resolves and caches it here.
   */
  user: string | null | undefined
  /** The query's parameters (made on first use by queryOf in gateway/http/query.ts); null until first asked. */
  queryParams: QueryParams | null
  /**
   * Response headers a guard adds to whatever answer the request gets (e.g. Set-Cookie for clearance,
   * RateLimit headers on a pass). Flat [name, value, ...]; null until the first one.
   */
  extraHeaders: string[] | null
  /** Callbacks run once when the request's fate is known (quota give-back, dedupe release, limit uncommit). */
  settlers: Settler[] | null
  /** Guard-private scratch data keyed by guard (rarely needed). */
  locals: Record<string, unknown> | null
  /** The upstream target (`http://host:port`) the proxy sent the request to, for the access log; set by the proxy. */
  upstreamTarget?: string | null
  /** This request's X-Request-Id (set by the gateway before any guard runs; sent upstream and returned). */
  requestId?: string
  /** The `traceparent` / `tracestate` sent upstream (set by the gateway before proxying; null = none). */
  traceparent?: string | null
  tracestate?: string | null
  /** Set by the proxy for the access log: the upstream's status (0 = none), its time in ms, body bytes relayed. */
  upstreamStatus?: number
  upstreamMs?: number
  bytesOut?: number
}

/** What every guard factory receives. Everything is created once in the composition root. */
export interface GuardDeps {
  readonly config: Config
  readonly store: Store
  readonly metrics: Metrics
  readonly registry: Registry
  /** The clock (epoch ms). Tests pass a fake one. */
  readonly clock: () => number
  /** Resolve (and cache on ctx.user) the request's user id; null when none. */
  readonly identity: (ctx: RequestContext) => string | null
  /** This process's share of node-local limits: index in [0, count). */
  readonly worker: { readonly index: number; readonly count: number }
  /** State that survives a config reload, in typed slots each guard module declares (pipeline/state.ts). */
  readonly kept: KeptState
  /** Raised by the global rate limit while it rejects; the pow challenge hardens. */
  readonly overload: OverloadSignal
  readonly log: (level: 'debug' | 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void
  /** `store.on_error: journal`: where the quota writes a buy while the store is down (gateway/pending.ts); absent otherwise. */
  readonly pending?: PendingSink | null
}

export interface Guard {
  readonly kind: string
  /** `<route>#<index>:<kind>` for logs and metrics. */
  readonly id: string
  /** Pass (undefined) or a rejection. Synchronous when it can be: the runner awaits only thenables. */
  check(ctx: RequestContext): Verdict | Promise<Verdict>
  /** Release resources (timers, sockets) when a reload retires this guard. */
  close?(): void | Promise<void>
  /**
   * Combine with the guard right after it into one guard that does both (dedupe + quota: one store round
   * trip instead of two). Asked once per load for each pair of adjacent guards, neither in shadow mode;
   * null keeps them apart. The combined guard answers as the two in sequence would, except where its
   * documentation says otherwise.
   */
  fuseWith?(next: Guard): Guard | null
}

/**
 * A mark (dedupe's "this user tried") to be set in the same store call as a guard's own, by a guard that
 * supports it (`checkWithMark`, the quota): the mark is set only when that guard admits the request.
 */
export interface MarkSpec {
  readonly ttlMs: number
  /** The answer when the mark already stands. */
  readonly duplicate: Rejection
  /** The settler of a mark that was set (releases it when the attempt did not really happen). */
  release(key: string): Settler
  /** Delete a mark that was set for an attempt answered with a rejection after all (a late store answer). */
  unmark(key: string): void
  /**
   * The store call failed: the mark's own failure policy. A Rejection is the answer; undefined goes on to
   * the admitting guard's policy (the mark may have been kept node-locally).
   */
  onError(ctx: RequestContext, key: string, err: unknown): Verdict
}

/** A guard that can set a MarkSpec mark in its own store call. */
export interface MarkTaker extends Guard {
  checkWithMark(ctx: RequestContext, key: string, mark: MarkSpec): Verdict | Promise<Verdict>
}

export function isMarkTaker (g: Guard): g is MarkTaker {
  return typeof (g as Partial<MarkTaker>).checkWithMark === 'function'
}

export type GuardFactory<C extends GuardConfig = GuardConfig> = (cfg: C, route: RouteConfig, deps: GuardDeps) => Guard

/** Edge endpoints under /_flashgate/ served by a module (antibot registers link/challenge, gateway time). */
export type EdgeHandler = (req: IncomingMessage, res: ServerResponse, ctx: { readonly clientIp: string; readonly now: number; readonly query: URLSearchParams }) => void | Promise<void>
