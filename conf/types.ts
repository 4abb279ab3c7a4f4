/**
 * The normalised, frozen configuration every other module receives.
 *
 * `conf/load.ts` turns YAML (snake_case keys, durations like `250ms`, rates like `600/m`) into these
 * shapes (camelCase, milliseconds, numbers) once, at load; nothing downstream reads raw YAML.
 * Every duration is in milliseconds, every size in bytes, every instant an epoch-ms number.
 */

export interface HostPort { readonly host: string; readonly port: number }

/** `25000/s` → { count: 25000, periodMs: 1000 }. */
export interface Rate { readonly count: number; readonly periodMs: number }

export type FailurePolicy = 'fail_closed' | 'fail_open' | 'local'

/** Where a guard reads a value from: `param NAME`, `header NAME`, `query NAME`, `cookie NAME`, or a literal. */
export type ValueSource =
  | { readonly from: 'param' | 'header' | 'query' | 'cookie' | 'form'; readonly name: string }
  | { readonly from: 'literal'; readonly value: string }

export interface StoreConfig {
  readonly kind: 'memory' | 'redis' | 'redis-cluster'
  /** redis: one URL. */
  readonly url: string | null
  /** redis-cluster: seed URLs. */
  readonly nodes: readonly string[]
  readonly onError: FailurePolicy
  /** Per-operation timeout; a slower answer counts as an error (default 50ms). */
  readonly timeoutMs: number
  /** Prefix of every key flashgate writes (default `fg:`). */
  readonly keyPrefix: string
  /** Circuit breaker: open after this many consecutive errors (default 5) ... */
  readonly breakerFailures: number
  /** ... for this long, then let one probe through (default 1000ms). */
  readonly breakerBackoffMs: number
  /** Memory store: bound on the number of keys (default 1,000,000). */
  readonly maxKeys: number
  /**
   * YAML `store.gateway_nodes` (default 1): how many gateway nodes (machines or containers, each with
   * `workers` processes) share this store. The `local` failure policy divides by it: a node falls back
   * to its share of a cluster-scope rate and of the quota left when the store was last seen.
   */
  readonly gatewayNodes?: number
  /**
   * YAML `store.on_error: journal` with `store.journal: { path, max_entries }` (null otherwise): the
   * quota (and a dedupe fused with it) write a buy that passed every other guard to this journal while
   * the store is down and answer 202 PENDING (gateway/pending.ts). `onError` is then `local`: what the
   * other guards inherit (their node-local fallback).
   */
  readonly journal?: JournalConfig | null
  /** YAML `store.sentinels`: kind redis behind Redis Sentinel (then `url` is unused); see conf/store-ha.ts. */
  readonly sentinels?: readonly HostPort[]
  /** YAML `store.name`: the master name the sentinels monitor. */
  readonly sentinelName?: string
  /** YAML `store.wait`: a quota admission counts only once this many replicas have it (limiter/replica-wait.ts). */
  readonly wait?: StoreWait
}

export interface JournalConfig {
  /** Absolute directory (checked writable at load); one file per worker in it. */
  readonly path: string
  /** Entries not yet replayed at most; one more is answered 503 STORE_UNAVAILABLE. */
  readonly maxEntries: number
}

/** `store.wait: { replicas, timeout }` — Redis WAIT after each admission. */
export interface StoreWait {
  readonly replicas: number
  /** The WAIT's own timeout (default half of store.timeout, always shorter than it). */
  readonly timeoutMs: number
}

export interface ServerLimits {
  /** node:http maxHeaderSize (default 16 KiB). */
  readonly maxHeaderSize: number
  /** Time to receive the whole header block (slowloris; default 10s). */
  readonly headersTimeoutMs: number
  /** Time to receive the whole request (default 30s). */
  readonly requestTimeoutMs: number
  readonly keepAliveTimeoutMs: number
  /** Cap on concurrent client connections per worker (default 10000). */
  readonly maxConnections: number
  /** Default request body cap for routes that do not set `max_body_size` (default 1 MiB); 413 above. */
  readonly maxBodySize: number
  /** SIGTERM: how long in-flight requests may take to finish (default 10s). */
  readonly drainTimeoutMs: number
  /** Longest pause between two reads of a request body (408 REQUEST_TIMEOUT; nginx client_body_timeout; default 10s). */
  readonly bodyTimeoutMs: number
  /**
   * Every body is read whole before an upstream connection is taken (nginx proxy_request_buffering), so
   * a slow body never holds a pool connection: up to this size in memory, the rest in a temp file
   * (nginx client_body_buffer_size; default 128 KiB).
   */
  readonly bodyBufferSize: number
  /**
   * The plain HTTP/1.1 listener's request parser: `node` (node:http) or `strict` (flashgate's own over
   * raw sockets, gateway/http/raw-server.ts: refuses everything node:http refuses, answers edge rejections
   * with pre-encoded bytes). TLS and HTTP/2 listeners always use node's stack. Default `node`.
   */
  readonly parser: 'node' | 'strict'
}

export interface AccessLogConfig {
  readonly enabled: boolean
  /** `stdout`, `stderr`, or a file path. */
  readonly path: string
}

export interface IdentityConfig {
  /** `header x-user-id` (trusted as given) or `cookie NAME` (a session token signed with secrets.session). */
  readonly user: { readonly from: 'header' | 'cookie'; readonly name: string } | null
}

export interface LinkKey { readonly kid: string; readonly key: Buffer }

export interface SecretsConfig {
  /** In file order; the first one signs, all verify. */
  readonly linkKeys: readonly LinkKey[]
  /** HMAC key for session cookies (identity.user: cookie NAME) and clearance cookies. */
  readonly session: Buffer | null
  /** HMAC key for proof-of-work challenges; falls back to `session`. */
  readonly pow: Buffer | null
}

export interface UpstreamTarget {
  /** Normalised origin, e.g. `http://127.0.0.1:7001` (no path). */
  readonly url: string
  readonly weight: number
}

export type BalanceConfig =
  | { readonly kind: 'round_robin' }
  | { readonly kind: 'least_conn' }
  | { readonly kind: 'hash'; readonly header: string }

export interface UpstreamConfig {
  readonly name: string
  readonly balance: BalanceConfig
  readonly targets: readonly UpstreamTarget[]
  /** nginx max_fails (default 1 as nginx; 0 disables passive health). */
  readonly maxFails: number
  /** nginx fail_timeout (default 10s). */
  readonly failTimeoutMs: number
  readonly connectTimeoutMs: number
  /** Time to response headers, and between body chunks (default 60s). */
  readonly timeoutMs: number
  /** Extra attempts on the next target, connect errors and idempotent methods only (default 1). */
  readonly retries: number
  /** Keep-alive connections per target (default 64). */
  readonly connections: number
  readonly keepAliveTimeoutMs: number
  /**
   * Requests that may wait per target when all its connections are busy (default 1024); one more is
   * answered 503 OVERLOADED. The wait counts against `timeout` (504 UPSTREAM_TIMEOUT).
   */
  readonly queue: number
  /**
   * The HTTP client to this upstream's targets: `undici` (default) or `raw`, flashgate's own HTTP/1.1
   * keep-alive client on node:net (gateway/upstream/raw-pool.ts; http:// targets only). Absent = undici.
   */
  readonly client?: 'undici' | 'raw'
}

export interface ProductConfig {
  readonly id: string
  readonly quota: number
  /** Split the quota into this many counters on different cluster slots (default 1). */
  readonly segments: number
}

/** `campaigns[].waiting_room`: a fair, stock-aware queue in front of the campaign's buy routes. */
export interface WaitingRoomConfig {
  /** Joining opens at startsAt - prequeueMs; who joined by startsAt is shuffled then (default 10m). */
  readonly prequeueMs: number
  /** New users let in per unit of time. */
  readonly admit: Rate
  /** How long an admitted user may buy (default 5m). */
  readonly passTtlMs: number
  /** Admit no more than remaining stock × overbook users holding unused passes (default 1). */
  readonly overbook: number
  /** How often clients are told to poll (YAML `poll`, default 1s); a user silent for 3 × this loses the place. */
  readonly pollMs: number
}

export interface CampaignConfig {
  readonly id: string
  readonly startsAt: number
  readonly endsAt: number
  /** Purchase links are issued from startsAt - linkRevealMs (default 60s). */
  readonly linkRevealMs: number
  /** Signed links expire this long after endsAt at the latest (default 60s). */
  readonly linkGraceMs: number
  /** Signed links live at most this long from issue (default: until endsAt + linkGraceMs). */
  readonly linkTtlMs: number | null
  readonly products: readonly ProductConfig[]
  /** The campaign's waiting room; absent (or null) = none. */
  readonly waitingRoom?: WaitingRoomConfig | null
}

/** A guard's answer override: `reject: { status: 418, body: {...} }`. */
export interface RejectOverride { readonly status: number | null; readonly body: unknown }

interface GuardCommon {
  /** Index of this guard in the route's list; with the route name it names the guard in metrics. */
  readonly index: number
  /** Count what would be rejected, reject nothing. */
  readonly shadow: boolean
  readonly reject: RejectOverride | null
}

export interface DenyGuardConfig extends GuardCommon {
  readonly kind: 'deny'
  /** IPv4/IPv6 addresses and CIDRs, literal in the config. */
  readonly ips: readonly string[]
  /** Files with one address or CIDR per line (`#` comments), read at load. */
  readonly ipFiles: readonly string[]
  /** The addresses and CIDRs of ipFiles, read and checked at load: the guard reads no file. */
  readonly fileIps: readonly string[]
  /** User ids listed literally. */
  readonly users: readonly string[]
  /** A store set of denied user ids that operators change at run time (SADD on Redis); null = none. */
  readonly usersSet: string | null
  readonly onError: FailurePolicy | null
  /** What the guard does while the store is failing: its own `on_error`, else store.on_error (resolved at load). */
  readonly policy: FailurePolicy
}

export type RateKeyPart =
  | { readonly kind: 'ip' | 'user' | 'route' }
  | { readonly kind: 'header'; readonly name: string }

export interface RateLimitGuardConfig extends GuardCommon {
  readonly kind: 'rate_limit'
  readonly name: string
  /** Empty = one global bucket. */
  readonly key: readonly RateKeyPart[]
  readonly rate: Rate
  /** Token bucket capacity / leaky bucket excess allowed (default: one period's worth? no: default = rate.count). */
  readonly burst: number
  readonly algorithm: 'token_bucket' | 'leaky_bucket'
  /** leaky_bucket: 'nodelay', or the number of excess requests served without delay (nginx `delay=N`); default 0 (all excess delayed). */
  readonly delay: number | 'nodelay'
  readonly scope: 'node' | 'cluster'
  /** Bound on distinct keys kept node-locally (LRU; default 100,000). */
  readonly maxKeys: number
  readonly onError: FailurePolicy | null
  /** What the guard does while the store is failing: its own `on_error`, else store.on_error (resolved at load). */
  readonly policy: FailurePolicy
}

export type CaptchaProvider = 'turnstile' | 'hcaptcha' | 'recaptcha' | 'pow'

export interface CaptchaGuardConfig extends GuardCommon {
  readonly kind: 'captcha'
  readonly provider: CaptchaProvider
  /** Provider secret (third-party providers); null for pow. */
  readonly secret: string | null
  /** Where the token is read: header (default `cf-turnstile-response` etc.), form field or query param. */
  readonly token: ValueSource
  /** siteverify endpoint; defaults to the provider's documented one. */
  readonly verifyUrl: string
  readonly timeoutMs: number
  /** recaptcha v3 */
  readonly minScore: number | null
  readonly action: string | null
  /** Expected hostname in the provider's answer; null = not checked. */
  readonly hostname: string | null
  /** A verified token is remembered as spent for this long (the provider's token lifetime; default 300s). */
  readonly tokenTtlMs: number
  /** Clearance cookie lifetime; null = no clearance cookie. */
  readonly clearanceMs: number | null
  readonly clearanceCookie: string
  readonly onError: FailurePolicy | null
  /** Spent tokens and clearances while the store is failing: its own `on_error`, else store.on_error (resolved at load). */
  readonly policy: FailurePolicy
  /** The provider's siteverify failing (timeout, 5xx, breaker open): its own `on_error`, else fail_closed (resolved at load). */
  readonly providerPolicy: FailurePolicy
  /** pow only */
  readonly difficulty: number
  readonly difficultyUnderLoad: number | null
  readonly challengeTtlMs: number
}

export interface SignedLinkGuardConfig extends GuardCommon {
  readonly kind: 'signed_link'
  readonly mode: 'hmac' | 'nginx_secure_link_md5'
  /** Consume a nonce in the link on the store, so each link works once. */
  readonly singleUse: boolean
  /** nginx_secure_link_md5: `secure_link` argument expression, e.g. `$arg_md5,$arg_expires`. */
  readonly secureLink: string
  /** nginx_secure_link_md5: the `secure_link_md5` expression, e.g. `"$secure_link_expires$uri$remote_addr secret"`. */
  readonly secureLinkMd5: string
  readonly campaign: ValueSource
  readonly product: ValueSource
  /** Single-use nonces while the store is failing: store.on_error (the guard has no on_error of its own; resolved at load). */
  readonly policy: FailurePolicy
}

export interface CampaignWindowGuardConfig extends GuardCommon {
  readonly kind: 'campaign_window'
  readonly campaign: ValueSource
}

export interface DedupeGuardConfig extends GuardCommon {
  readonly kind: 'dedupe'
  readonly ttlMs: number
  readonly campaign: ValueSource
  readonly product: ValueSource
  readonly onError: FailurePolicy | null
  /** What the guard does while the store is failing: its own `on_error`, else store.on_error (resolved at load). */
  readonly policy: FailurePolicy
}

export interface QuotaGuardConfig extends GuardCommon {
  readonly kind: 'quota'
  readonly campaign: ValueSource
  readonly product: ValueSource
  /** How long a node answers SOLD_OUT from its local latch without asking the store (default 1s). */
  readonly latchTtlMs: number
  readonly onError: FailurePolicy | null
  /**
   * While the store is failing: its own `on_error`, else store.on_error (resolved at load). Never
   * fail_open: the loader refuses it for a quota (it cannot bound the units sold).
   */
  readonly policy: 'fail_closed' | 'local'
  /** No own `on_error` and store.on_error is journal: a buy the store cannot judge is journaled, not judged by `policy`. */
  readonly journaled: boolean
  /** Units per product each process reserves in the store for `on_error: local` (default 10; limiter/quota-lease.ts). */
  readonly lease: number
}

export interface WaitingRoomGuardConfig extends GuardCommon {
  readonly kind: 'waiting_room'
  /** The campaign whose room's pass is required (default `param campaign`). */
  readonly campaign: ValueSource
  readonly onError: FailurePolicy | null
  /** What the guard does while the store is failing: its own `on_error`, else store.on_error (resolved at load). */
  readonly policy: FailurePolicy
}

export type GuardConfig =
  | DenyGuardConfig
  | RateLimitGuardConfig
  | CaptchaGuardConfig
  | SignedLinkGuardConfig
  | CampaignWindowGuardConfig
  | DedupeGuardConfig
  | QuotaGuardConfig
  | WaitingRoomGuardConfig

export type GuardKind = GuardConfig['kind']

export interface RouteMatch {
  /** Exact (`shop.example.com`) or wildcard (`*.example.com`), lower-cased; null = any host. */
  readonly host: string | null
  /** Exact path or a pattern with `:param` segments; null when pathPrefix is used. */
  readonly path: string | null
  readonly pathPrefix: string | null
  /** Upper-cased; null = any method. */
  readonly methods: readonly string[] | null
}

/** YAML route `static: DIR` or `static: { dir, cache_control, html_cache_control }`: files served from DIR. */
export interface StaticConfig {
  /** Absolute, symlink-free path of the directory (resolved at load, relative to the file naming it). */
  readonly dir: string
  /** Cache-Control of files other than HTML documents (default `public, max-age=60`). */
  readonly cacheControl: string
  /** Cache-Control of `.html` documents, index.html included (default `no-cache`: revalidate with the ETag). */
  readonly htmlCacheControl: string
}

export interface RouteConfig {
  readonly name: string
  readonly match: RouteMatch
  readonly guards: readonly GuardConfig[]
  /** The upstream requests are forwarded to; null for a static route. Exactly one of upstream and static is set. */
  readonly upstream: string | null
  /** Files served by the gateway itself; absent for a proxied route. */
  readonly static?: StaticConfig
  /** Request body cap (413 above); defaults to server.max_body_size. */
  readonly maxBodySize: number
  /** Guarded routes this route may walk around on purpose (`allow_bypass_of`, see conf/bypass.ts). */
  readonly allowBypassOf?: readonly string[]
}

export interface OriginConfig {
  readonly listen: HostPort
  /** Orders created per second by the order worker (the flow control toward the order system). */
  readonly orderRate: number
  readonly paymentTimeoutMs: number
  /** `origin.writer` (conf/origin-orders.ts): the order system and its retries; absent = defaults, no order system. */
  readonly writer?: OriginWriterConfig
  /** `origin.queue`: the order stream on a Redis of its own; absent = on the store's Redis. */
  readonly queue?: OriginQueueConfig
  /** `origin.buffer`: where order notices go while the stream cannot be written (needed with `queue`). */
  readonly buffer?: OriginBufferConfig
  /** `origin.requeue_after`: a QUEUED order whose notice reached no stream is sent again after this long (default 30 s, at least 1 s). */
  readonly requeueAfterMs: number
}

export interface OriginWriterConfig {
  /** The order system (POST per order); null = none, orders are created without a hand-over. */
  readonly url: string | null
  /** Failures of one order before it is parked in the dead-letter stream (default 5). */
  readonly attempts: number
  /** Back-off after a failed round, doubling up to maxBackoffMs (default 100 ms → 2 s). */
  readonly backoffMs: number
  readonly maxBackoffMs: number
  /** One hand-over's timeout (default 2 s). */
  readonly timeoutMs: number
}

export interface OriginQueueConfig { readonly url: string }

export interface OriginBufferConfig {
  /** Directory (absolute; proved writable at load) of the buffer file. */
  readonly path: string
  /** Notices sent on per second by the buffer's worker (default 50). */
  readonly rate: number
}

/** Where a YAML value came from, for errors found after load (e.g. by guard factories). */
export interface SourcePos { readonly file: string; readonly line: number; readonly col: number }

/** TLS of one public listener: PEM files (absolute paths), read again on every reload. */
export interface TlsConfig { readonly cert: string; readonly key: string }

/** One public listener. `listen: HOST:PORT` is one plain HTTP/1.1 listener. */
export interface ListenerConfig {
  readonly address: HostPort
  /** null = cleartext HTTP/1.1. */
  readonly tls: TlsConfig | null
  /** HTTP/2 over TLS (ALPN h2, with HTTP/1.1 for clients that do not offer h2); needs tls. */
  readonly http2: boolean
}

/** `tracing:`: W3C trace context is always propagated; spans are exported only when `otlp` is set. */
export interface TracingConfig {
  /** OTLP/HTTP base URL (spans are POSTed as JSON to URL/v1/traces); null = no export. */
  readonly otlp: string | null
  /** Share of new traces recorded and exported, 0..1 (a trusted proxy's sampled flag is followed). */
  readonly sample: number
  /** `service.name` resource attribute. */
  readonly serviceName: string
  /** Spans held for export at most; more are dropped and counted. */
  readonly maxQueue: number
}

export interface Config {
  /** Absolute path of the main file. */
  readonly file: string
  /** The first listener's address (what `listen: HOST:PORT` names). */
  readonly listen: HostPort
  /**
   * Every public listener, the first being `listen`. Always set by the loader; optional (as `tracing`)
   * so that configs built by hand (tests) stay valid: absent = one plain listener at `listen`.
   */
  readonly listeners?: readonly ListenerConfig[]
  readonly tracing?: TracingConfig
  readonly admin: HostPort | null
  readonly adminToken: string | null
  /** 'auto' resolved to the CPU count. */
  readonly workers: number
  readonly store: StoreConfig
  /** CIDRs as written (IPv4 or IPv6). */
  readonly trustedProxies: readonly string[]
  readonly identity: IdentityConfig
  readonly secrets: SecretsConfig
  readonly server: ServerLimits
  readonly accessLog: AccessLogConfig
  readonly upstreams: ReadonlyMap<string, UpstreamConfig>
  readonly campaigns: ReadonlyMap<string, CampaignConfig>
  readonly routes: readonly RouteConfig[]
  readonly origin: OriginConfig
}
