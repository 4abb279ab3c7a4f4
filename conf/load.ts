/**
 * The configuration loader: YAML (snake_case, `250ms`, `600/m`, `16kb`, `${VAR}`) → the normalised,
 * deep-frozen `Config` of `conf/types.ts`, or every problem at once as `FILE:LINE:COL: message` lines.
 *
 * Synchronous on purpose: it runs at start and on reload, never on the request path.
 *
 * Order of routes: first match wins, so order matters. Routes are taken in the order the main file's
 * keys are written: if `include:` comes before `routes:`, the included routes come first, else after.
 * Within `include:`, patterns are taken in list order and each glob's matches in alphabetical order.
 *
 * Units (see `conf/parse.ts`): durations need a unit (`250ms 10s 5m 24h`; a bare number is refused as
 * ambiguous, except `0`); rates are `COUNT/PERIOD` (`25000/s 600/m 100/10s`); sizes are bytes or
 * `16kb 1mb` (powers of 1024). `origin.order_rate` takes a number (per second) or a rate.
 *
 * Environment (see `conf/tree.ts`): `${VAR}` (unset is an error at its position), `${VAR:-default}`
 * (unset or empty), `$${` for a literal `${`. No message ever contains a substituted value.
 *
 * Relative paths (`include:`, `ip_files`, `access_log.path`) are relative to the file that names them.
 * `include:` files may hold only `routes`, `upstreams` and `campaigns`; no nested includes.
 *
 * Problems are errors (the config is refused) or warnings (it loads): e.g. a secret shorter than 16 bytes,
 * a route that can never match, an include pattern that matches nothing.
 */
import { existsSync, readFileSync, realpathSync, statSync } from 'node:fs'
import { createSecureContext } from 'node:tls'
import { availableParallelism } from 'node:os'
import { dirname, isAbsolute, join, resolve } from 'node:path'
import { readJournal } from './journal.js'
import { ORIGIN_ORDER_KEYS, readOriginOrders } from './origin-orders.js'
import { ConfigError } from './errors.js'
import { findBypasses } from './bypass.js'
import { Checker, didYouMean, failed, MapView } from './check.js'
import { globSync, hasMagic } from './glob.js'
import { readStoreHa, STORE_HA_KEYS } from './store-ha.js'
import { parseSecureLinkTemplate } from './secure-link.js'
import { checkCidr, isLoopbackHost, parseDuration, parseHostPort, parseRate, parseSize, parseTimerDuration, quote } from './parse.js'
import { Diagnostics, fmtPos, parseYaml } from './tree.js'
import type { PMap, PNode, Pos, PScalar } from './tree.js'
import type {
  AccessLogConfig, ListenerConfig, TlsConfig, TracingConfig, BalanceConfig, CampaignConfig, CaptchaGuardConfig, CaptchaProvider, Config, FailurePolicy,
  GuardConfig, HostPort, IdentityConfig, LinkKey, OriginConfig, ProductConfig, RateKeyPart, Rate,
  RejectOverride, RouteConfig, RouteMatch, SecretsConfig, ServerLimits, StaticConfig, StoreConfig, UpstreamConfig,
  UpstreamTarget, ValueSource, WaitingRoomConfig
} from './types.js'

export { parseDuration, parseRate, parseSize, parseHostPort, parseTimerDuration, checkCidr, isLoopbackHost } from './parse.js'

/** The loader's answer: a frozen config and warnings, or every problem found. */
export type LoadResult =
  | { readonly ok: true, readonly config: Config, readonly warnings: string[] }
  | { readonly ok: false, readonly errors: string[] }

/** Documented defaults (ms for durations, bytes for sizes). */
export const DEFAULTS = Object.freeze({
  listen: '0.0.0.0:8080',
  workers: 1,
  store: { kind: 'memory', url: 'redis://127.0.0.1:6379', onError: 'fail_closed', timeoutMs: 50, keyPrefix: 'fg:', breakerFailures: 5, breakerBackoffMs: 1000, maxKeys: 1_000_000, gatewayNodes: 1 },
  server: { maxHeaderSize: 16 * 1024, headersTimeoutMs: 10_000, requestTimeoutMs: 30_000, keepAliveTimeoutMs: 5_000, maxConnections: 10_000, maxBodySize: 1024 * 1024, drainTimeoutMs: 10_000, bodyTimeoutMs: 10_000, bodyBufferSize: 128 * 1024, parser: 'node' },
  accessLog: { enabled: true, path: 'stdout' },
  upstream: { maxFails: 1, failTimeoutMs: 10_000, connectTimeoutMs: 1_000, timeoutMs: 60_000, retries: 1, connections: 64, keepAliveTimeoutMs: 4_000, weight: 1, queue: 1024 },
  campaign: { linkRevealMs: 60_000, linkGraceMs: 60_000 },
  product: { segments: 1 },
  rateLimit: { maxKeys: 100_000 },
  captcha: { timeoutMs: 2_000, tokenTtlMs: 300_000, clearanceCookie: 'fg_clearance', difficulty: 16, challengeTtlMs: 60_000 },
  dedupe: { ttlMs: 86_400_000 },
  quota: { latchTtlMs: 1_000, lease: 10 },
  waitingRoom: { prequeueMs: 600_000, passTtlMs: 300_000, overbook: 1, pollMs: 1_000 },
  origin: { listen: '127.0.0.1:7001', orderRate: 1000, paymentTimeoutMs: 600_000 },
  tracing: { sample: 1, serviceName: 'flashgate', maxQueue: 2048 },
  static: { cacheControl: 'public, max-age=60', htmlCacheControl: 'no-cache' }
})

/** Each provider's documented siteverify endpoint. */
export const CAPTCHA_VERIFY_URLS: Readonly<Record<CaptchaProvider, string>> = Object.freeze({
  turnstile: 'https://challenges.cloudflare.com/turnstile/v0/siteverify',
  hcaptcha: 'https://api.hcaptcha.com/siteverify',
  recaptcha: 'https://www.google.com/recaptcha/api/siteverify',
  pow: ''
})

/** Where each provider's widget puts its token by default. */
export const CAPTCHA_TOKEN_DEFAULTS: Readonly<Record<CaptchaProvider, string>> = Object.freeze({
  turnstile: 'cf-turnstile-response',
  hcaptcha: 'h-captcha-response',
  recaptcha: 'g-recaptcha-response',
  pow: 'x-flashgate-pow'
})

const TOP_KEYS = ['include', 'listen', 'admin', 'admin_token', 'workers', 'store', 'trusted_proxies', 'identity', 'secrets', 'server', 'access_log', 'upstreams', 'campaigns', 'routes', 'origin', 'tracing'] as const
const INCLUDED_KEYS = ['routes', 'upstreams', 'campaigns'] as const
const POLICIES = ['fail_closed', 'fail_open', 'local'] as const
const PARSERS = ['node', 'strict'] as const
const UPSTREAM_CLIENTS = ['undici', 'raw'] as const
const GUARD_KINDS = ['deny', 'rate_limit', 'captcha', 'signed_link', 'campaign_window', 'dedupe', 'quota', 'waiting_room'] as const
const COMMON_GUARD_KEYS = ['shadow', 'reject'] as const
const GUARD_KEYS: Record<typeof GUARD_KINDS[number], readonly string[]> = {
  deny: ['ips', 'ip_files', 'users', 'users_set', 'on_error'],
  rate_limit: ['name', 'key', 'rate', 'burst', 'algorithm', 'delay', 'scope', 'max_keys', 'on_error'],
  captcha: ['provider', 'secret', 'token', 'verify_url', 'timeout', 'min_score', 'action', 'hostname', 'token_ttl', 'clearance', 'clearance_cookie', 'on_error', 'difficulty', 'difficulty_under_load', 'challenge_ttl'],
  signed_link: ['mode', 'single_use', 'secure_link', 'secure_link_md5', 'campaign', 'product'],
  campaign_window: ['campaign'],
  dedupe: ['ttl', 'campaign', 'product', 'on_error'],
  quota: ['campaign', 'product', 'latch_ttl', 'on_error', 'lease'],
  waiting_room: ['campaign', 'on_error']
}
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/
const MIN_SECRET_BYTES = 16

/**
 * What a loader may leave out. `requireRoutes` (on for files, as `serve`, reload and `validate` read
 * them): an empty file, or one with neither routes nor an `origin:` section, is an error.
 */
export interface LoadOptions { readonly requireRoutes?: boolean }

/**
 * Why a PEM certificate chain and key cannot serve TLS, or null when they can (the key must match the
 * certificate). The message never contains key material. Used by the loader and on reload.
 */
export function tlsProblem (cert: string, key: string): string | null {
  try {
    createSecureContext({ cert, key })
    return null
  } catch (err) {
    const msg = (err as Error).message
    if (/key values mismatch/i.test(msg)) return 'the key does not match the certificate'
    if (/no start line|bad base64|PEM/i.test(msg)) return `not a PEM certificate and key (${msg.replace(/^error:[0-9A-F]+:/i, '').slice(0, 80)})`
    return `the certificate or key is not usable (${msg.slice(0, 80)})`
  }
}

/** Read and load a config file (and what it includes). Never throws. */
export function loadConfigFile (file: string, env: NodeJS.ProcessEnv = process.env, opts: LoadOptions = { requireRoutes: true }): LoadResult {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    return { ok: false, errors: [`${file}:1:1: cannot read the config file: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`] }
  }
  return loadConfigText(text, file, env, opts)
}

/**
 * Load config from text; `file` names it in messages and anchors relative paths (`include:`, `ip_files`).
 * Never throws.
 */
export function loadConfigText (text: string, file: string, env: NodeJS.ProcessEnv = process.env, opts: LoadOptions = {}): LoadResult {
  const d = new Diagnostics()
  const config = new Loader(d, file, env, opts.requireRoutes === true).load(text)
  if (config === undefined || d.errorCount > 0) return { ok: false, errors: d.errors() }
  return { ok: true, config: deepFreeze(config), warnings: d.warnings() }
}

/** `loadConfigFile`, throwing a `ConfigError` (with `problems`) instead of answering `ok: false`. */
export function loadConfigOrThrow (file: string, env: NodeJS.ProcessEnv = process.env): Config {
  const r = loadConfigFile(file, env)
  if (!r.ok) throw new ConfigError(r.errors)
  return r.config
}

/** The problems as `flashgate validate` prints them: one per line. */
export function formatErrors (result: LoadResult): string {
  return result.ok ? '' : result.errors.join('\n')
}

// ---------------------------------------------------------------------------------------------------------

interface RouteCtx {
  readonly name: string
  readonly pos: Pos
  /** `:param` names of the route's path; null when the route matches by prefix. */
  readonly params: ReadonlySet<string> | null
  readonly pathText: string | null
}

interface RateLimitSeen { readonly sig: string, readonly pos: Pos }

class Loader {
  private readonly ck: Checker
  private readonly d: Diagnostics
  private readonly file: string
  private readonly env: NodeJS.ProcessEnv
  private readonly includedFiles = new Map<string, Pos>()
  private identityUser = false
  /** store.on_error, for guards that inherit it (the quota refuses the policies it cannot bound). */
  private storeOnError: FailurePolicy = 'fail_closed'
  /** store.on_error is journal (the quota then journals instead of refusing the inherited `local`). */
  private storeJournal = false
  private secrets: SecretsConfig = { linkKeys: [], session: null, pow: null }
  private campaignIds = new Map<string, { pos: Pos, products: Set<string>, room?: boolean }>()
  private readonly rateLimits = new Map<string, RateLimitSeen>()

  private readonly requireRoutes: boolean

  constructor (d: Diagnostics, file: string, env: NodeJS.ProcessEnv, requireRoutes = false) {
    this.requireRoutes = requireRoutes
    this.d = d
    this.ck = new Checker(d)
    this.file = file
    this.env = env
  }

  load (text: string): Config | undefined {
    const { ck } = this
    const root = parseYaml(text, this.file, this.env, this.d)
    if (root === null) return undefined
    const top = ck.map(root, 'config', TOP_KEYS)
    if (top === undefined) return undefined
    if (this.requireRoutes && top.node.entries.length === 0) { ck.error(top.pos, 'the config file is empty'); return undefined }
    this.includedFiles.set(resolve(this.file), top.pos)

    // Gather upstreams, campaigns and routes from the main file and the included ones, in key order.
    const upstreamEntries: Array<{ name: string, keyPos: Pos, value: PNode }> = []
    const campaignNodes: PNode[] = []
    const routeNodes: PNode[] = []
    let syntaxBroken = false
    const takeParts = (m: MapView, where: string): void => {
      for (const key of m.keys()) {
        const v = m.get(key)
        if (key === 'routes') routeNodes.push(...(ck.seq(v, 'routes')?.items ?? []))
        else if (key === 'campaigns') campaignNodes.push(...(ck.seq(v, 'campaigns')?.items ?? []))
        else if (key === 'upstreams') {
          const um = v === undefined ? undefined : v.kind === 'map' ? v : ck.error(v.pos, `upstreams: expected a map of name → upstream, got ${v.kind === 'seq' ? 'a list' : 'a value'}`)
          for (const e of um?.entries ?? []) upstreamEntries.push({ name: e.key, keyPos: e.keyPos, value: e.value })
        } else if (key === 'include' && where === 'main') {
          if (!this.includes(top.get('include'))) syntaxBroken = true
          for (const inc of this.included) takeParts(inc, 'included')
          this.included.length = 0
        }
      }
    }
    takeParts(top, 'main')
    if (syntaxBroken) return undefined

    this.secrets = this.readSecrets(top.get('secrets'))
    const identity = this.readIdentity(top.get('identity'))
    this.identityUser = identity.user !== null

    const listeners = this.readListeners(top.get('listen'))
    const listen = listeners[0]?.address ?? parseHostPort(DEFAULTS.listen)
    const tracing = this.readTracing(top.get('tracing'))
    const adminNode = top.get('admin')
    const admin = adminNode !== undefined && adminNode.kind === 'scalar' && (adminNode.value === 'off' || adminNode.value === false)
      ? null
      : this.hostPort(adminNode, 'admin') ?? null
    const adminToken = ck.str(top.get('admin_token'), 'admin_token', { secret: true }) ?? null
    if (adminToken !== null && Buffer.byteLength(adminToken) < MIN_SECRET_BYTES) ck.warn(top.get('admin_token')?.pos ?? top.pos, `admin_token is shorter than ${MIN_SECRET_BYTES} bytes; use a long random token`)
    if (admin !== null && !isLoopbackHost(admin.host) && adminToken === null) {
      ck.error(adminNode?.pos ?? top.pos, `admin: listening on non-loopback address ${admin.host} needs admin_token (or bind it to 127.0.0.1)`)
    }

    const workers = this.readWorkers(top.get('workers'))
    const store = this.readStore(top.get('store'))
    this.storeOnError = store.onError
    const trustedProxies = this.cidrList(top.get('trusted_proxies'), 'trusted_proxies')
    const server = this.readServer(top.get('server'))
    const accessLog = this.readAccessLog(top.get('access_log'))
    const origin = this.readOrigin(top.get('origin'), store)

    const upstreams = new Map<string, UpstreamConfig>()
    const upstreamPos = new Map<string, Pos>()
    for (const e of upstreamEntries) {
      const first = upstreamPos.get(e.name)
      if (first !== undefined) { ck.error(e.keyPos, `duplicate upstream ${quote(e.name)} (first defined at ${fmtPos(first)})`); continue }
      upstreamPos.set(e.name, e.keyPos)
      if (!NAME_RE.test(e.name)) ck.error(e.keyPos, `upstream name ${quote(e.name)} must be letters, digits, and . _ - (starting with a letter or digit)`)
      const u = this.readUpstream(e.value, e.name)
      if (u !== undefined) upstreams.set(e.name, u)
    }

    const campaigns = new Map<string, CampaignConfig>()
    for (const n of campaignNodes) {
      const c = this.readCampaign(n)
      if (c !== undefined && !campaigns.has(c.id)) campaigns.set(c.id, c)
    }

    const routes: RouteConfig[] = []
    const routePos = new Map<string, Pos>()
    routeNodes.forEach((n) => {
      const r = this.readRoute(n, upstreamPos, server.maxBodySize, routePos)
      if (r !== undefined) routes.push(r)
    })
    this.checkReachability(routes, routeNodes)
    this.checkBypasses(routes)
    // A gateway without routes answers 404 to everything; an origin-only file (origin:) needs none.
    if (this.requireRoutes && routeNodes.length === 0 && !top.has('origin')) ck.error(top.has('routes') ? top.keyPos('routes') : top.pos, 'no routes: the gateway would answer 404 NOT_FOUND to every request (add routes:)')

    if (this.d.errorCount > 0) return undefined
    return {
      file: resolve(this.file),
      listen,
      listeners,
      tracing,
      admin,
      adminToken,
      workers,
      store,
      trustedProxies,
      identity,
      secrets: this.secrets,
      server,
      accessLog,
      upstreams,
      campaigns,
      routes,
      origin
    }
  }

  // --- include -------------------------------------------------------------------------------------------

  private readonly included: MapView[] = []

  /** Returns false when an included file has a YAML syntax error (the rest would only add noise). */
  private includes (n: PNode | undefined): boolean {
    const { ck } = this
    if (n === undefined) return true
    const items: PNode[] = n.kind === 'seq' ? [...n.items] : [n]
    if (n.kind === 'map') { ck.error(n.pos, 'include: expected a list of file patterns'); return true }
    let ok = true
    const base = dirname(this.file)
    for (const it of items) {
      const pattern = ck.str(it, 'include')
      if (pattern === undefined) continue
      let files: string[]
      try {
        files = hasMagic(pattern) ? globSync(pattern, base) : [isAbsolute(pattern) ? pattern : join(base, pattern)]
      } catch (err) {
        ck.error(it.pos, `include: ${(err as Error).message}`)
        continue
      }
      if (files.length === 0) { ck.warn(it.pos, `include: ${quote(pattern)} matched no files`); continue }
      for (const f of files) {
        const abs = resolve(f)
        const first = this.includedFiles.get(abs)
        if (first !== undefined) {
          ck.error(it.pos, abs === resolve(this.file) ? `include: ${quote(f)} is the main config file` : `include: ${quote(f)} is included twice (first at ${fmtPos(first)})`)
          continue
        }
        this.includedFiles.set(abs, it.pos)
        let text: string
        try {
          text = readFileSync(f, 'utf8')
        } catch (err) {
          ck.error(it.pos, `include: cannot read ${quote(f)}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
          continue
        }
        const root = parseYaml(text, f, this.env, this.d)
        if (root === null) { ok = false; continue }
        if (root.kind !== 'map') { ck.error(root.pos, 'an included file must be a map with routes, upstreams and/or campaigns'); continue }
        for (const e of root.entries) {
          if (!(INCLUDED_KEYS as readonly string[]).includes(e.key)) {
            ck.error(e.keyPos, `key ${quote(e.key)} is not allowed in an included file (only routes, upstreams and campaigns)${(TOP_KEYS as readonly string[]).includes(e.key) ? '' : didYouMean(e.key, INCLUDED_KEYS)}`)
          }
        }
        this.included.push(new MapView(root))
      }
    }
    return ok
  }

  // --- small shared readers ------------------------------------------------------------------------------

  private hostPort (n: PNode | undefined, label: string): HostPort | undefined {
    return this.ck.parseWith(n, label, parseHostPort, 'an address HOST:PORT')
  }

  private duration (n: PNode | undefined, label: string, opts: { min?: number, timer?: boolean } = {}): number | undefined {
    const ms = this.ck.parseWith(n, label, opts.timer === false ? parseDuration : parseTimerDuration, 'a duration')
    if (ms !== undefined && n !== undefined && opts.min !== undefined && ms < opts.min) {
      return this.ck.error(n.pos, `${label}: must be at least ${opts.min}ms`)
    }
    return ms
  }

  private size (n: PNode | undefined, label: string, min = 0): number | undefined {
    const b = this.ck.parseWith(n, label, parseSize, 'a size')
    if (b !== undefined && n !== undefined && b < min) return this.ck.error(n.pos, `${label}: must be at least ${min} bytes`)
    return b
  }

  private rate (n: PNode | undefined, label: string): Rate | undefined {
    if (failed(n)) return undefined
    if (n !== undefined && n.kind === 'scalar' && typeof n.value === 'number') {
      return this.ck.error(n.pos, `${label}: a rate needs a period, e.g. ${n.value}/s or ${n.value}/m`)
    }
    return this.ck.parseWith(n, label, (v) => parseRate(String(v)), 'a rate')
  }

  private policy (n: PNode | undefined, label = 'on_error'): FailurePolicy | undefined {
    return this.ck.oneOf(n, label, POLICIES)
  }

  private cidrList (n: PNode | undefined, label: string): string[] {
    return this.ck.list(n, label, (it) => {
      const s = this.ck.str(it, label)
      if (s === undefined) return undefined
      const err = checkCidr(s)
      return err === null ? s.trim() : this.ck.error(it.pos, `${label}: ${err}`)
    }) ?? []
  }

  private stringList (n: PNode | undefined, label: string): string[] {
    if (n !== undefined && n.kind === 'scalar' && typeof n.value === 'string') return [n.value]
    return this.ck.list(n, label, (it) => this.ck.id(it, label, /^\S+$/)) ?? []
  }

  /** `header NAME`, `cookie NAME`, ...: the kinds in `kinds`, or (when `literal`) any other single word. */
  private source (n: PNode | undefined, label: string, kinds: ReadonlyArray<'param' | 'header' | 'query' | 'cookie' | 'form'>, literal: boolean): ValueSource | undefined {
    const { ck } = this
    if (n === undefined || failed(n)) return undefined
    if (n.kind === 'scalar' && typeof n.value === 'number' && literal && Number.isInteger(n.value)) return { from: 'literal', value: String(n.value) }
    const s = ck.str(n, label)
    if (s === undefined) return undefined
    const m = /^(\S+)\s+(\S+)$/.exec(s.trim())
    const forms = kinds.map((k) => `${k} NAME`)
    if (literal) forms.push('a literal value')
    const expected = forms.length === 1 ? forms[0] as string : `${forms.slice(0, -1).join(', ')} or ${forms[forms.length - 1] as string}`
    if (m === null) {
      if (literal && /^\S+$/.test(s.trim())) return { from: 'literal', value: s.trim() }
      return ck.error(n.pos, `${label}: expected ${expected}, got ${ck.show(n as PScalar)}`)
    }
    const kind = m[1] as string
    const name = m[2] as string
    if (!(kinds as readonly string[]).includes(kind)) {
      return ck.error(n.pos, `${label}: expected ${expected}, got ${ck.show(n as PScalar)}${didYouMean(kind, kinds)}`)
    }
    if (kind === 'header') {
      if (!HEADER_NAME.test(name)) return ck.error(n.pos, `${label}: invalid header name ${quote(name)}`)
      return { from: 'header', name: name.toLowerCase() }
    }
    return { from: kind as 'param' | 'query' | 'cookie' | 'form', name }
  }

  // --- top-level sections ----------------------------------------------------------------------------------

  private readWorkers (n: PNode | undefined): number {
    if (n === undefined || failed(n)) return DEFAULTS.workers
    if (n.kind === 'scalar' && n.value === 'auto') return availableParallelism()
    if (n.kind === 'scalar' && typeof n.value === 'number') return this.ck.num(n, 'workers', 1, 1024) ?? 1
    this.ck.error(n.pos, `workers: expected a number or auto, got ${this.ck.show(n as PScalar)}`)
    return 1
  }

  private readStore (n: PNode | undefined): StoreConfig {
    const { ck } = this
    const D = DEFAULTS.store
    const m = ck.map(n, 'store', ['kind', 'url', 'nodes', 'on_error', 'timeout', 'key_prefix', 'breaker_failures', 'breaker_backoff', 'max_keys', 'gateway_nodes', 'journal', ...STORE_HA_KEYS])
    const kind = ck.oneOf(m?.get('kind'), 'kind', ['memory', 'redis', 'redis-cluster'] as const) ?? 'memory'
    const redisUrl = (it: PNode | undefined, label: string): string | undefined => {
      const s = ck.str(it, label, { secret: true })
      if (s === undefined || it === undefined) return undefined
      // the URL may hold a password: never echo it
      let ok = /^rediss?:\/\//i.test(s)
      if (ok) { try { new URL(s) } catch { ok = false } } // eslint-disable-line no-new
      return ok ? s : ck.error(it.pos, `${label}: expected a redis://HOST:PORT or rediss://HOST:PORT URL`)
    }
    let url = redisUrl(m?.get('url'), 'url') ?? null
    let nodes = ck.list(m?.get('nodes'), 'nodes', (it) => redisUrl(it, 'nodes')) ?? []
    if (m !== undefined) {
      if (kind === 'memory' && (m.get('url') !== undefined || m.get('nodes') !== undefined)) {
        ck.warn(m.keyPos(m.get('url') !== undefined ? 'url' : 'nodes'), 'store: url and nodes are ignored with kind: memory')
      }
      if (kind === 'redis-cluster' && nodes.length === 0 && m.get('nodes') === undefined) {
        if (url !== null) nodes = [url]
        else ck.error(m.pos, 'store: kind redis-cluster needs nodes: [redis://HOST:PORT, ...] (seed nodes)')
      }
    }
    if (kind === 'redis' && url === null) url = D.url
    if (kind === 'memory') { url = null; nodes = [] }
    if (kind === 'redis') nodes = []
    const timeoutMs = this.duration(m?.get('timeout'), 'timeout', { min: 1 }) ?? D.timeoutMs
    const ha = readStoreHa(ck, m, kind, timeoutMs)
    if (ha.sentinels !== undefined) url = null
    const keyPrefix = ck.str(m?.get('key_prefix'), 'key_prefix', { nonEmpty: false, pattern: /^[^\s{}]*$/, patternHelp: 'must not contain spaces or braces (braces are hash tags on Redis Cluster)' }) ?? D.keyPrefix
    const journal = readJournal(ck, m)
    this.storeJournal = journal !== null
    return {
      kind,
      url,
      nodes,
      ...(journal !== null ? { journal } : {}),
      onError: journal !== null ? 'local' : this.policy(m?.get('on_error')) ?? 'fail_closed',
      timeoutMs,
      keyPrefix,
      breakerFailures: ck.num(m?.get('breaker_failures'), 'breaker_failures', 1, 1_000_000) ?? D.breakerFailures,
      breakerBackoffMs: this.duration(m?.get('breaker_backoff'), 'breaker_backoff', { min: 1 }) ?? D.breakerBackoffMs,
      maxKeys: ck.num(m?.get('max_keys'), 'max_keys', 1, 1e9) ?? D.maxKeys,
      gatewayNodes: ck.num(m?.get('gateway_nodes'), 'gateway_nodes', 1, 10_000) ?? D.gatewayNodes,
      ...ha
    }
  }

  private readSecrets (n: PNode | undefined): SecretsConfig {
    const { ck } = this
    const m = ck.map(n, 'secrets', ['link_keys', 'session', 'pow'])
    const linkKeys: LinkKey[] = []
    const lk = m?.get('link_keys')
    if (lk !== undefined) {
      if (lk.kind !== 'map') ck.error(lk.pos, 'link_keys: expected a map of key id → secret, e.g. { k1: "${FLASHGATE_LINK_KEY}" }')
      else {
        for (const e of lk.entries) {
          if (!/^[A-Za-z0-9_-]{1,32}$/.test(e.key)) { ck.error(e.keyPos, `link_keys: key id ${quote(e.key)} must be 1-32 letters, digits, _ or -`); continue }
          // A link key below 16 bytes is refused here, not only warned about: signing with it would make
          // links guessable, and the signer refused it at start, so `validate` said ok to what `serve` refused.
          const v = this.secret(e.value, `link_keys.${e.key}`, e.keyPos, { minBytes: MIN_SECRET_BYTES })
          if (v !== undefined) linkKeys.push({ kid: e.key, key: v })
        }
        if (lk.entries.length === 0) ck.error(lk.pos, 'link_keys: needs at least one key')
      }
    }
    const session = this.secret(m?.get('session'), 'session', m?.keyPos('session')) ?? null
    const pow = this.secret(m?.get('pow'), 'pow', m?.keyPos('pow')) ?? null
    return { linkKeys, session, pow }
  }

  /** `minBytes`: shorter is an error (else shorter than MIN_SECRET_BYTES is a warning). */
  private secret (n: PNode | undefined, label: string, keyPos: Pos | undefined, opts: { minBytes?: number } = {}): Buffer | undefined {
    if (n === undefined) {
      if (keyPos !== undefined && label !== 'session' && label !== 'pow') this.ck.error(keyPos, `${label}: must not be empty`)
      return undefined
    }
    const s = this.ck.str(n, label, { secret: true })
    if (s === undefined) return undefined
    const key = Buffer.from(s, 'utf8')
    if (opts.minBytes !== undefined && key.length < opts.minBytes) this.ck.error(n.pos, `${label}: must be at least ${opts.minBytes} bytes; use 32 random bytes`)
    else if (key.length < MIN_SECRET_BYTES) this.ck.warn(n.pos, `${label}: secret is shorter than ${MIN_SECRET_BYTES} bytes; use at least 32 random bytes`)
    return key
  }

  private readIdentity (n: PNode | undefined): IdentityConfig {
    const m = this.ck.map(n, 'identity', ['user'])
    const src = this.source(m?.get('user'), 'user', ['header', 'cookie'], false)
    if (src === undefined || src.from === 'literal') return { user: null }
    if (src.from === 'cookie' && this.secrets.session === null) {
      this.ck.error(m?.get('user')?.pos ?? m!.pos, 'identity.user: cookie sessions need secrets.session (the HMAC key that signs them)')
    }
    return { user: { from: src.from as 'header' | 'cookie', name: src.name } }
  }

  private readServer (n: PNode | undefined): ServerLimits {
    const { ck } = this
    const D = DEFAULTS.server
    const m = ck.map(n, 'server', ['max_header_size', 'headers_timeout', 'request_timeout', 'keepalive_timeout', 'max_connections', 'max_body_size', 'drain_timeout', 'body_timeout', 'body_buffer_size', 'parser'])
    const s: ServerLimits = {
      maxHeaderSize: this.size(m?.get('max_header_size'), 'max_header_size', 1024) ?? D.maxHeaderSize,
      headersTimeoutMs: this.duration(m?.get('headers_timeout'), 'headers_timeout', { min: 1 }) ?? D.headersTimeoutMs,
      requestTimeoutMs: this.duration(m?.get('request_timeout'), 'request_timeout') ?? D.requestTimeoutMs,
      keepAliveTimeoutMs: this.duration(m?.get('keepalive_timeout'), 'keepalive_timeout') ?? D.keepAliveTimeoutMs,
      maxConnections: ck.num(m?.get('max_connections'), 'max_connections', 1, 10_000_000) ?? D.maxConnections,
      maxBodySize: this.size(m?.get('max_body_size'), 'max_body_size') ?? D.maxBodySize,
      drainTimeoutMs: this.duration(m?.get('drain_timeout'), 'drain_timeout') ?? D.drainTimeoutMs,
      bodyTimeoutMs: this.duration(m?.get('body_timeout'), 'body_timeout', { min: 1 }) ?? D.bodyTimeoutMs,
      bodyBufferSize: this.size(m?.get('body_buffer_size'), 'body_buffer_size') ?? D.bodyBufferSize,
      parser: ck.oneOf(m?.get('parser'), 'parser', PARSERS) ?? 'node'
    }
    // node:http refuses headersTimeout > requestTimeout (when the latter is not 0) at server creation
    if (m !== undefined && s.requestTimeoutMs !== 0 && s.headersTimeoutMs > s.requestTimeoutMs) {
      const h = m.get('headers_timeout')
      if (h !== undefined) ck.error(h.pos, 'headers_timeout: must not be longer than request_timeout')
      else ck.error(m.get('request_timeout')!.pos, `request_timeout: must be at least headers_timeout (${s.headersTimeoutMs}ms by default), or 0`)
    }
    return s
  }

  /**
   * `listen`: `HOST:PORT`, or a list of those and `{ address, tls: { cert, key }, http2 }` maps. TLS
   * files are read and paired here (createSecureContext refuses a key that does not match its
   * certificate), so validate and reload refuse what serve could not use.
   */
  private readListeners (n: PNode | undefined): ListenerConfig[] {
    const { ck } = this
    if (n === undefined || failed(n)) return [{ address: parseHostPort(DEFAULTS.listen), tls: null, http2: false }]
    const items = n.kind === 'seq' ? n.items : [n]
    if (n.kind === 'seq' && items.length === 0) { ck.error(n.pos, 'listen: expected at least one address'); return [] }
    const out: ListenerConfig[] = []
    const seen = new Map<string, Pos>()
    for (const it of items) {
      let l: ListenerConfig | undefined
      if (it.kind === 'map') {
        const m = ck.map(it, 'listen', ['address', 'tls', 'http2'])
        if (m === undefined) continue
        const addrNode = m.get('address')
        if (addrNode === undefined) { ck.error(it.pos, 'listen: a listener needs an address'); continue }
        const address = this.hostPort(addrNode, 'address')
        const tls = this.readTls(m.get('tls'))
        const http2 = ck.bool(m.get('http2'), 'http2') ?? false
        if (http2 && m.get('tls') === undefined) ck.error(m.keyPos('http2'), 'http2: needs tls (HTTP/2 is served over TLS with ALPN; cleartext h2c is not supported)')
        if (address === undefined || tls === undefined) continue
        l = { address, tls, http2 }
      } else {
        const address = this.hostPort(it, 'listen')
        if (address === undefined) continue
        l = { address, tls: null, http2: false }
      }
      const key = `${l.address.host}:${l.address.port}`
      const first = seen.get(key)
      if (first !== undefined && l.address.port !== 0) { ck.error(it.pos, `listen: ${key} is listed twice (first at ${fmtPos(first)})`); continue }
      seen.set(key, it.pos)
      out.push(l)
    }
    return out
  }

  /** `tls: { cert, key }` → absolute paths, checked readable and paired; null when absent, undefined on error. */
  private readTls (n: PNode | undefined): TlsConfig | null | undefined {
    const { ck } = this
    if (n === undefined) return null
    const m = ck.map(n, 'tls', ['cert', 'key'])
    if (m === undefined) return undefined
    const base = dirname(n.pos.file)
    const file = (label: 'cert' | 'key'): { path: string, pem: string } | undefined => {
      const v = m.get(label)
      if (v === undefined) return ck.error(m.pos, `tls: ${label} is required (a PEM file)`)
      const p = ck.str(v, label)
      if (p === undefined) return undefined
      const path = isAbsolute(p) ? p : resolve(base, p)
      try {
        return { path, pem: readFileSync(path, 'utf8') }
      } catch (err) {
        return ck.error(v.pos, `${label}: cannot read ${quote(p)}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
      }
    }
    const cert = file('cert')
    const key = file('key')
    if (cert === undefined || key === undefined) return undefined
    const problem = tlsProblem(cert.pem, key.pem)
    if (problem !== null) return ck.error(m.get('cert')!.pos, `tls: ${problem}`)
    return { cert: cert.path, key: key.path }
  }

  /** `tracing: { otlp: URL, sample: 0.01, service_name, max_queue }`. */
  private readTracing (n: PNode | undefined): TracingConfig {
    const { ck } = this
    const D = DEFAULTS.tracing
    const m = ck.map(n, 'tracing', ['otlp', 'sample', 'service_name', 'max_queue'])
    let otlp: string | null = null
    const u = ck.str(m?.get('otlp'), 'otlp')
    if (u !== undefined) {
      let url: URL | null = null
      try { url = new URL(u) } catch {}
      if (url === null || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.search !== '' || url.hash !== '') {
        ck.error(m!.get('otlp')!.pos, `otlp: expected an http:// or https:// base URL (spans go to URL/v1/traces), got ${quote(u)}`)
      } else {
        otlp = u.replace(/\/+$/, '')
      }
    }
    return {
      otlp,
      sample: ck.num(m?.get('sample'), 'sample', 0, 1, false) ?? D.sample,
      serviceName: ck.str(m?.get('service_name'), 'service_name') ?? D.serviceName,
      maxQueue: ck.num(m?.get('max_queue'), 'max_queue', 1, 1_000_000) ?? D.maxQueue
    }
  }

  private readAccessLog (n: PNode | undefined): AccessLogConfig {
    const m = this.ck.map(n, 'access_log', ['enabled', 'path'])
    const enabled = this.ck.bool(m?.get('enabled'), 'enabled') ?? DEFAULTS.accessLog.enabled
    const p = this.ck.str(m?.get('path'), 'path') ?? DEFAULTS.accessLog.path
    const path = p === 'stdout' || p === 'stderr' || isAbsolute(p) ? p : resolve(dirname(m?.get('path')?.pos.file ?? this.file), p)
    return { enabled, path }
  }

  private readOrigin (n: PNode | undefined, store: StoreConfig): OriginConfig {
    const { ck } = this
    const D = DEFAULTS.origin
    const m = ck.map(n, 'origin', ['listen', 'order_rate', 'payment_timeout', ...ORIGIN_ORDER_KEYS])
    let orderRate: number | undefined
    const or = m?.get('order_rate')
    if (or !== undefined && or.kind === 'scalar' && typeof or.value === 'number') orderRate = ck.num(or, 'order_rate', 1, 1e9, false)
    else if (or !== undefined) {
      const r = this.rate(or, 'order_rate')
      if (r !== undefined) orderRate = r.count * 1000 / r.periodMs
    }
    return {
      listen: this.hostPort(m?.get('listen'), 'listen') ?? parseHostPort(D.listen),
      orderRate: orderRate ?? D.orderRate,
      paymentTimeoutMs: this.duration(m?.get('payment_timeout'), 'payment_timeout', { min: 1 }) ?? D.paymentTimeoutMs,
      ...readOriginOrders(ck, m, store)
    }
  }

  // --- upstreams ------------------------------------------------------------------------------------------

  private readUpstream (n: PNode, name: string): UpstreamConfig | undefined {
    const { ck } = this
    const D = DEFAULTS.upstream
    const m = ck.map(n, `upstream ${quote(name)}`, ['balance', 'targets', 'max_fails', 'fail_timeout', 'connect_timeout', 'timeout', 'retries', 'connections', 'keepalive_timeout', 'queue', 'client'])
    if (m === undefined) return undefined
    let balance: BalanceConfig = { kind: 'round_robin' }
    const b = m.get('balance')
    if (b !== undefined) {
      const s = ck.str(b, 'balance')
      const hm = s === undefined ? null : /^hash\s+header\s+(\S+)$/.exec(s.trim())
      if (s === 'round_robin' || s === 'least_conn') balance = { kind: s }
      else if (hm !== null && HEADER_NAME.test(hm[1] as string)) balance = { kind: 'hash', header: (hm[1] as string).toLowerCase() }
      else if (s !== undefined) ck.error(b.pos, `balance: expected round_robin, least_conn or hash header NAME, got ${ck.show(b as PScalar)}${didYouMean(s, ['round_robin', 'least_conn'])}`)
    }
    const tn = m.get('targets')
    const targets = ck.list(tn, 'targets', (it) => this.readTarget(it)) ?? []
    if (tn === undefined) ck.error(m.pos, `upstream ${quote(name)} is missing required key "targets"`)
    else if (tn.kind === 'seq' && tn.items.length === 0) ck.error(tn.pos, 'targets: needs at least one target')
    const seen = new Set<string>()
    if (tn?.kind === 'seq') {
      targets.forEach((t, i) => {
        if (seen.has(t.url)) ck.error((tn.items[i] as PNode).pos, `targets: duplicate target ${t.url}`)
        seen.add(t.url)
      })
    }
    return {
      name,
      balance,
      targets,
      maxFails: ck.num(m.get('max_fails'), 'max_fails', 0, 1_000_000) ?? D.maxFails,
      failTimeoutMs: this.duration(m.get('fail_timeout'), 'fail_timeout') ?? D.failTimeoutMs,
      connectTimeoutMs: this.duration(m.get('connect_timeout'), 'connect_timeout', { min: 1 }) ?? D.connectTimeoutMs,
      timeoutMs: this.duration(m.get('timeout'), 'timeout', { min: 1 }) ?? D.timeoutMs,
      retries: ck.num(m.get('retries'), 'retries', 0, 100) ?? D.retries,
      connections: ck.num(m.get('connections'), 'connections', 1, 100_000) ?? D.connections,
      keepAliveTimeoutMs: this.duration(m.get('keepalive_timeout'), 'keepalive_timeout', { min: 1 }) ?? D.keepAliveTimeoutMs,
      queue: ck.num(m.get('queue'), 'queue', 0, 1_000_000) ?? D.queue,
      ...this.upstreamClient(m.get('client'), targets)
    }
  }

  /** `client: undici | raw` (absent: undici, and no field); raw speaks plain http only. */
  private upstreamClient (n: PNode | undefined, targets: readonly UpstreamTarget[]): { client?: 'undici' | 'raw' } {
    const { ck } = this
    const c = ck.oneOf(n, 'client', UPSTREAM_CLIENTS)
    if (c === undefined || n === undefined) return {}
    const tls = targets.find((t) => t.url.startsWith('https:'))
    if (c === 'raw' && tls !== undefined) ck.error(n.pos, `client: raw speaks http:// only (target ${tls.url}); use client: undici for https targets`)
    return { client: c }
  }

  private readTarget (n: PNode): UpstreamTarget | undefined {
    const { ck } = this
    let urlNode: PNode | undefined = n
    let weight: number = DEFAULTS.upstream.weight
    if (n.kind === 'map') {
      const m = ck.map(n, 'target', ['url', 'weight'])
      urlNode = m?.get('url')
      weight = ck.num(m?.get('weight'), 'weight', 1, 1_000_000) ?? weight
      if (urlNode === undefined) return ck.error(n.pos, 'target is missing required key "url"')
    }
    const s = ck.str(urlNode, 'url')
    if (s === undefined || urlNode === undefined) return undefined
    const shown = ck.show(urlNode as PScalar)
    let u: URL
    try { u = new URL(s) } catch { return ck.error(urlNode.pos, `url: ${shown} is not a URL (expected http://HOST:PORT)`) }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') return ck.error(urlNode.pos, `url: ${shown} must be http:// or https://`)
    if (u.username !== '' || u.password !== '') return ck.error(urlNode.pos, 'url: credentials in a target URL are not supported')
    if ((u.pathname !== '/' && u.pathname !== '') || u.search !== '' || u.hash !== '' || /[?#]/.test(s)) {
      return ck.error(urlNode.pos, `url: ${shown} must have no path, query or fragment (expected http://HOST:PORT)`)
    }
    if (u.port === '' && !/:\d+\/?$/.test(s)) return ck.error(urlNode.pos, `url: ${shown} needs a port (expected http://HOST:PORT)`)
    return { url: u.origin, weight }
  }

  // --- campaigns ------------------------------------------------------------------------------------------

  private instant (n: PNode | undefined, label: string): number | undefined {
    const { ck } = this
    if (n === undefined || failed(n)) return undefined
    if (n.kind === 'scalar' && typeof n.value === 'number' && Number.isInteger(n.value) && n.value >= 0) return n.value
    const s = ck.str(n, label)
    if (s === undefined) return undefined
    const m = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?\s*([Zz]|[+-]\d{2}:?\d{2})?$/.exec(s)
    if (m === null) return ck.error(n.pos, `${label}: expected an ISO 8601 date-time such as 2026-11-11T12:00:00+08:00, got ${ck.show(n as PScalar)}`)
    if (m[3] === undefined) return ck.error(n.pos, `${label}: ${ck.show(n as PScalar)} needs a time zone (Z or an offset such as +08:00)`)
    const t = Date.parse(s.replace(' ', 'T').replace(/([+-]\d{2})(\d{2})$/, '$1:$2'))
    if (Number.isNaN(t)) return ck.error(n.pos, `${label}: ${ck.show(n as PScalar)} is not a valid date-time`)
    return t
  }

  private readCampaign (n: PNode): CampaignConfig | undefined {
    const { ck } = this
    const D = DEFAULTS.campaign
    const m = ck.map(n, 'campaign', ['id', 'starts_at', 'ends_at', 'link_reveal', 'link_grace', 'link_ttl', 'products', 'waiting_room'])
    if (m === undefined) return undefined
    const id = ck.id(m.get('id'), 'id')
    for (const k of ['id', 'starts_at', 'ends_at'] as const) if (m.get(k) === undefined) ck.error(m.pos, `campaign is missing required key ${quote(k)}`)
    let fresh = true
    if (id !== undefined) {
      const first = this.campaignIds.get(id)
      if (first !== undefined) { ck.error(m.get('id')!.pos, `duplicate campaign id ${quote(id)} (first defined at ${fmtPos(first.pos)})`); fresh = false } else this.campaignIds.set(id, { pos: m.get('id')!.pos, products: new Set() })
    }
    const startsAt = this.instant(m.get('starts_at'), 'starts_at')
    const endsAt = this.instant(m.get('ends_at'), 'ends_at')
    if (startsAt !== undefined && endsAt !== undefined && startsAt >= endsAt) ck.error(m.get('ends_at')!.pos, 'ends_at: must be after starts_at')
    const products: ProductConfig[] = []
    const productPos = new Map<string, Pos>()
    ck.list(m.get('products'), 'products', (it) => {
      const pm = ck.map(it, 'product', ['id', 'quota', 'segments'])
      if (pm === undefined) return undefined
      const pid = ck.id(pm.get('id'), 'id')
      const quota = ck.num(pm.get('quota'), 'quota', 0, 1e12)
      for (const k of ['id', 'quota'] as const) if (pm.get(k) === undefined) ck.error(pm.pos, `product is missing required key ${quote(k)}`)
      const segments = ck.num(pm.get('segments'), 'segments', 1, 64) ?? DEFAULTS.product.segments
      if (pid !== undefined) {
        const first = productPos.get(pid)
        if (first !== undefined) { ck.error(pm.get('id')!.pos, `duplicate product id ${quote(pid)} in campaign${id === undefined ? '' : ' ' + quote(id)} (first defined at ${fmtPos(first)})`); return undefined }
        productPos.set(pid, pm.get('id')!.pos)
        if (id !== undefined && fresh) this.campaignIds.get(id)?.products.add(pid)
      }
      if (quota !== undefined && segments > 1 && segments > quota) ck.error(pm.get('segments')!.pos, `segments: ${segments} is more than the quota (${quota})`)
      if (pid === undefined || quota === undefined) return undefined
      products.push({ id: pid, quota, segments })
      return undefined
    })
    const linkRevealMs = this.duration(m.get('link_reveal'), 'link_reveal', { timer: false }) ?? D.linkRevealMs
    const linkGraceMs = this.duration(m.get('link_grace'), 'link_grace', { timer: false }) ?? D.linkGraceMs
    const linkTtlMs = this.duration(m.get('link_ttl'), 'link_ttl', { min: 1000, timer: false }) ?? null
    const waitingRoom = this.readWaitingRoom(m.get('waiting_room'), products.length)
    // Marked even when its settings have errors (those are reported there, not again at every guard).
    if (m.get('waiting_room') !== undefined && id !== undefined && fresh) { const e = this.campaignIds.get(id); if (e !== undefined) e.room = true }
    if (id === undefined || startsAt === undefined || endsAt === undefined || !fresh) return undefined
    // waitingRoom only when configured (the key stays absent otherwise).
    return { id, startsAt, endsAt, linkRevealMs, linkGraceMs, linkTtlMs, products, ...(waitingRoom === null ? {} : { waitingRoom }) }
  }

  /** `campaigns[].waiting_room` (null when absent). */
  private readWaitingRoom (n: PNode | undefined, products: number): WaitingRoomConfig | null {
    const { ck } = this
    if (n === undefined) return null
    const D = DEFAULTS.waitingRoom
    const m = ck.map(n, 'waiting_room', ['prequeue', 'admit', 'pass_ttl', 'overbook', 'poll'])
    if (m === undefined) return null
    if (m.get('admit') === undefined) ck.error(m.pos, 'waiting_room is missing required key "admit" (users let in per unit of time, e.g. 600/m)')
    const admit = this.rate(m.get('admit'), 'admit')
    const prequeueMs = this.duration(m.get('prequeue'), 'prequeue', { timer: false }) ?? D.prequeueMs
    const passTtlMs = this.duration(m.get('pass_ttl'), 'pass_ttl', { min: 1000, timer: false }) ?? D.passTtlMs
    const overbook = ck.num(m.get('overbook'), 'overbook', 1, 100, false) ?? D.overbook
    const pollMs = this.duration(m.get('poll'), 'poll', { min: 100, timer: false }) ?? D.pollMs
    if (pollMs > 60_000 && m.get('poll') !== undefined) ck.error(m.get('poll')!.pos, 'poll: must be at most 60s')
    if (products === 0) ck.error(m.pos, 'waiting_room: the campaign has no products (the room admits against their remaining stock)')
    if (admit === undefined || admit.count <= 0) return null
    return { prequeueMs, admit, passTtlMs, overbook, pollMs }
  }

  // --- routes ---------------------------------------------------------------------------------------------

  private readRoute (n: PNode, upstreams: ReadonlyMap<string, Pos>, defaultBody: number, routePos: Map<string, Pos>): RouteConfig | undefined {
    const { ck } = this
    const m = ck.map(n, 'route', ['name', 'match', 'guards', 'upstream', 'static', 'max_body_size', 'allow_bypass_of'])
    if (m === undefined) return undefined
    const name = ck.str(m.get('name'), 'name', { pattern: NAME_RE, patternHelp: 'must be letters, digits, and . _ - (it is a metrics label)' })
    if (m.get('name') === undefined) ck.error(m.pos, 'route is missing required key "name"')
    if (name !== undefined) {
      const first = routePos.get(name)
      if (first !== undefined) ck.error(m.get('name')!.pos, `duplicate route name ${quote(name)} (first defined at ${fmtPos(first)})`)
      else routePos.set(name, m.get('name')!.pos)
    }
    const match = this.readMatch(m.get('match'))
    const upstream = ck.str(m.get('upstream'), 'upstream')
    const staticNode = m.get('static')
    const files = staticNode === undefined ? undefined : this.readStatic(staticNode, match)
    if (staticNode !== undefined && m.get('upstream') !== undefined) ck.error(staticNode.pos, `route${name === undefined ? '' : ' ' + quote(name)}: use either upstream or static, not both`)
    else if (staticNode !== undefined) { /* a static route: no upstream */ }
    else if (m.get('upstream') === undefined) ck.error(m.pos, `route${name === undefined ? '' : ' ' + quote(name)} is missing required key "upstream"`)
    else if (upstream !== undefined && !upstreams.has(upstream)) {
      const known = [...upstreams.keys()]
      ck.error(m.get('upstream')!.pos, `upstream ${ck.show(m.get('upstream') as PScalar)} is not defined${didYouMean(upstream, known) || (known.length > 0 ? ` (defined: ${known.join(', ')})` : ' (no upstreams are defined)')}`)
    }
    const maxBodySize = this.size(m.get('max_body_size'), 'max_body_size') ?? defaultBody
    const params = match.path === null ? null : new Set(match.path.split('/').filter((s) => s.startsWith(':')).map((s) => s.slice(1)))
    const rc: RouteCtx = { name: name ?? '?', pos: m.pos, params, pathText: match.path }
    const guards: GuardConfig[] = []
    ck.list(m.get('guards'), 'guards', (it, i) => {
      const g = this.readGuard(it, i, rc)
      if (g !== undefined) guards.push(g)
      return undefined
    })
    const allow: Array<{ name: string, pos: Pos }> = []
    ck.list(m.get('allow_bypass_of'), 'allow_bypass_of', (it) => {
      const s = ck.str(it, 'allow_bypass_of')
      if (s !== undefined) allow.push({ name: s, pos: it.pos })
      return undefined
    })
    if (name === undefined) return undefined
    this.routeInfo.set(name, { pos: m.pos, allow })
    const bypass = allow.length === 0 ? {} : { allowBypassOf: allow.map((a) => a.name) }
    if (staticNode !== undefined) return files === undefined ? undefined : { name, match, guards, upstream: null, static: files, maxBodySize, ...bypass }
    if (upstream === undefined) return undefined
    return { name, match, guards, upstream, maxBodySize, ...bypass }
  }

  /**
   * `static: DIR` or `static: { dir: DIR, cache_control: "...", html_cache_control: "..." }`. DIR is relative
   * to the file that names it and must be a directory; it is kept as its real path (symlinks resolved),
   * the root no served file may leave. A static route answers GET and HEAD only.
   */
  private readStatic (n: PNode, match: RouteMatch): StaticConfig | undefined {
    const { ck } = this
    const D = DEFAULTS.static
    let dirNode: PNode | undefined = n
    let cacheControl: string = D.cacheControl
    let htmlCacheControl: string = D.htmlCacheControl
    if (n.kind === 'map') {
      const m = ck.map(n, 'static', ['dir', 'cache_control', 'html_cache_control'])
      if (m === undefined) return undefined
      dirNode = m.get('dir')
      if (dirNode === undefined) return ck.error(n.pos, 'static: missing required key "dir"')
      for (const [key, set] of [['cache_control', (v: string) => { cacheControl = v }], ['html_cache_control', (v: string) => { htmlCacheControl = v }]] as const) {
        const cn = m.get(key)
        const v = ck.str(cn, key, { nonEmpty: true })
        if (v === undefined || cn === undefined) continue
        // A header value: printable ASCII and spaces only (no CR/LF to split the answer).
        if (!/^[\x20-\x7e]+$/.test(v)) ck.error(cn.pos, `${key}: must be printable ASCII (a Cache-Control header value)`)
        else set(v.trim())
      }
    }
    const d = ck.str(dirNode, 'static', { nonEmpty: true })
    if (d === undefined || dirNode === undefined) return undefined
    const abs = isAbsolute(d) ? d : resolve(dirname(dirNode.pos.file), d)
    let st
    try { st = statSync(abs) } catch (err) {
      return ck.error(dirNode.pos, `static: directory ${quote(d)} does not exist (${(err as NodeJS.ErrnoException).code ?? 'cannot stat'}; looked for in ${quote(dirname(abs))})`)
    }
    if (!st.isDirectory()) return ck.error(dirNode.pos, `static: ${quote(d)} is not a directory`)
    if (match.methods !== null) {
      const other = match.methods.filter((x) => x !== 'GET' && x !== 'HEAD')
      if (other.length > 0) ck.error(dirNode.pos, `static: a static route answers GET and HEAD only, but its match.methods has ${other.join(', ')}`)
    }
    return { dir: realpathSync(abs), cacheControl, htmlCacheControl }
  }

  private readMatch (n: PNode | undefined): RouteMatch {
    const { ck } = this
    const m = ck.map(n, 'match', ['host', 'path', 'path_prefix', 'methods'])
    let host: string | null = null
    const hn = m?.get('host')
    const hs = ck.str(hn, 'host')
    if (hs !== undefined && hn !== undefined) {
      const h = hs.toLowerCase()
      if (!/^(\*\.)?([a-z0-9]([a-z0-9-]*[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.?$/.test(h) && !/^\[?[0-9a-f:.]+\]?$/.test(h)) {
        ck.error(hn.pos, `host: ${ck.show(hn as PScalar)} must be a host name or *.domain (no port, no scheme)`)
      } else host = h.replace(/\.$/, '')
    }
    const pathNode = m?.get('path')
    const prefixNode = m?.get('path_prefix')
    let path: string | null = null
    let pathPrefix: string | null = null
    const ps = ck.str(pathNode, 'path')
    if (ps !== undefined && pathNode !== undefined) {
      const problem = pathProblem(ps)
      if (problem !== null) ck.error(pathNode.pos, `path: ${problem}`)
      else path = ps
    }
    const pp = ck.str(prefixNode, 'path_prefix')
    if (pp !== undefined && prefixNode !== undefined) {
      if (!pp.startsWith('/')) ck.error(prefixNode.pos, 'path_prefix: must start with /')
      else if (/[?#\s]/.test(pp)) ck.error(prefixNode.pos, 'path_prefix: must not contain spaces, ? or #')
      else if (pp.includes('/:')) ck.error(prefixNode.pos, 'path_prefix: :param segments belong in path:, not path_prefix:')
      else pathPrefix = pp
    }
    if (pathNode !== undefined && prefixNode !== undefined) ck.error(prefixNode.pos, 'match: use either path or path_prefix, not both')
    if (path === null && pathPrefix === null && pathNode === undefined && prefixNode === undefined) pathPrefix = '/'
    let methods: string[] | null = null
    const mn = m?.get('methods')
    if (mn !== undefined) {
      const list = mn.kind === 'scalar' ? [mn] : ck.seq(mn, 'methods')?.items ?? []
      const out: string[] = []
      for (const it of list) {
        const s = ck.str(it, 'methods')
        if (s === undefined) continue
        if (!/^[A-Za-z]+$/.test(s)) { ck.error(it.pos, `methods: ${ck.show(it as PScalar)} is not an HTTP method`); continue }
        if (!out.includes(s.toUpperCase())) out.push(s.toUpperCase())
      }
      if (mn.kind === 'seq' && mn.items.length === 0) ck.error(mn.pos, 'methods: needs at least one method (leave methods out to match any)')
      methods = out
    }
    return { host, path, pathPrefix, methods }
  }

  private checkReachability (routes: readonly RouteConfig[], nodes: readonly PNode[]): void {
    const catchAll = routes.findIndex((r) => r.match.host === null && r.match.methods === null && r.match.pathPrefix === '/')
    if (catchAll === -1 || catchAll === routes.length - 1) return
    const r = routes[catchAll] as RouteConfig
    const later = routes[catchAll + 1] as RouteConfig
    const node = nodes.find((n) => n.kind === 'map' && n.entries.some((e) => e.key === 'name' && e.value.kind === 'scalar' && e.value.value === later.name))
    this.ck.warn(node?.pos ?? this.nodePos(), `route ${quote(later.name)} can never match: route ${quote(r.name)} before it matches every request (first match wins)`)
  }

  private nodePos (): Pos { return { file: this.file, line: 1, col: 1 } }

  /** Positions of each route and of its allow_bypass_of entries, for checkBypasses. */
  private readonly routeInfo = new Map<string, { pos: Pos, allow: ReadonlyArray<{ name: string, pos: Pos }> }>()

  /** Funnel bypasses (conf/bypass.ts) are errors at the open route, naming both routes. */
  private checkBypasses (routes: readonly RouteConfig[]): void {
    const names = new Set(routes.map((r) => r.name))
    for (const [name, info] of this.routeInfo) {
      for (const a of info.allow) {
        if (a.name === name) this.ck.error(a.pos, `allow_bypass_of: route ${quote(name)} cannot bypass itself`)
        else if (!names.has(a.name)) this.ck.error(a.pos, `allow_bypass_of: route ${quote(a.name)} is not defined${didYouMean(a.name, names)}`)
      }
    }
    for (const b of findBypasses(routes)) {
      const g = routes[b.guarded] as RouteConfig
      const r = routes[b.open] as RouteConfig
      const at = this.routeInfo.get(r.name)?.pos ?? this.nodePos()
      const gAt = this.routeInfo.get(g.name)?.pos ?? this.nodePos()
      this.ck.error(at, `funnel bypass: route ${quote(r.name)} sends paths of route ${quote(g.name)} (${fmtPos(gAt)}) to the same upstream ${quote(g.upstream)} for ${b.via}, without its ${b.missing.join(', ')} guard${b.missing.length === 1 ? '' : 's'}; narrow ${quote(r.name)}'s match, or accept it with allow_bypass_of: [${g.name}] on route ${quote(r.name)}`)
    }
  }

  // --- guards ---------------------------------------------------------------------------------------------

  private readGuard (n: PNode, index: number, rc: RouteCtx): GuardConfig | undefined {
    const { ck } = this
    let kindName: string
    let kindPos: Pos
    let opts: PNode | undefined
    if (n.kind === 'scalar' && typeof n.value === 'string') {
      kindName = n.value; kindPos = n.pos; opts = undefined
    } else if (n.kind === 'map' && n.entries.length === 1) {
      const e = n.entries[0]!
      kindName = e.key; kindPos = e.keyPos; opts = e.value.kind === 'scalar' && e.value.value === null ? undefined : e.value
    } else if (n.kind === 'map' && n.entries.length > 1) {
      const kinds = n.entries.filter((e) => (GUARD_KINDS as readonly string[]).includes(e.key))
      const hint = kinds.length === 1 ? ` (indent the options under ${kinds[0]!.key}:)` : ''
      return ck.error(n.pos, `a guard is a one-key map such as "- rate_limit: {...}", got keys ${n.entries.map((e) => e.key).join(', ')}${hint}`)
    } else {
      return ck.error(n.pos, 'a guard is a one-key map such as "- rate_limit: {...}"')
    }
    if (!(GUARD_KINDS as readonly string[]).includes(kindName)) {
      return ck.error(kindPos, `unknown guard ${quote(kindName)}${didYouMean(kindName, GUARD_KINDS) || ` (guards: ${GUARD_KINDS.join(', ')})`}`)
    }
    const kind = kindName as typeof GUARD_KINDS[number]
    const empty: PMap = { kind: 'map', pos: kindPos, entries: [] }
    const m = ck.map(opts ?? empty, kind, [...GUARD_KEYS[kind], ...COMMON_GUARD_KEYS])
    if (m === undefined) return undefined
    const before = this.d.errorCount
    const common = { index, shadow: ck.bool(m.get('shadow'), 'shadow') ?? false, reject: this.readReject(m.get('reject')) }
    const g = this.guardBody(kind, m, kindPos, rc, common)
    return this.d.errorCount > before ? undefined : g
  }

  private readReject (n: PNode | undefined): RejectOverride | null {
    const m = this.ck.map(n, 'reject', ['status', 'body'])
    if (m === undefined) return null
    const status = this.ck.num(m.get('status'), 'status', 200, 599) ?? null
    const bn = m.get('body')
    if (status === null && bn === undefined) this.ck.error(m.pos, 'reject: needs status and/or body')
    return { status, body: bn === undefined ? null : toPlain(bn) }
  }

  private guardBody (kind: typeof GUARD_KINDS[number], m: MapView, pos: Pos, rc: RouteCtx, common: { index: number, shadow: boolean, reject: RejectOverride | null }): GuardConfig | undefined {
    const { ck } = this
    const onError = (): FailurePolicy | null => this.policy(m.get('on_error')) ?? null
    const needUser = (what: string): void => {
      if (!this.identityUser) ck.error(pos, `${what} needs identity.user (who the user is): set identity: { user: header x-user-id } or cookie NAME`)
    }
    switch (kind) {
      case 'deny': {
        const ips = this.cidrList(m.get('ips'), 'ips')
        const read = this.ck.list(m.get('ip_files'), 'ip_files', (it) => this.ipFile(it)) ?? []
        const ipFiles = read.map((f) => f.path)
        const fileIps = read.flatMap((f) => f.entries)
        const users = this.stringList(m.get('users'), 'users')
        const usersSet = ck.str(m.get('users_set'), 'users_set', { pattern: /^\S+$/, patternHelp: 'must not contain spaces' }) ?? null
        if ((users.length > 0 || usersSet !== null)) needUser('deny users / users_set')
        if (ips.length === 0 && ipFiles.length === 0 && users.length === 0 && usersSet === null && m.keys().every((k) => k === 'shadow' || k === 'reject')) {
          ck.warn(pos, 'deny: nothing to deny (set ips, ip_files, users or users_set)')
        }
        return { kind, ...common, ips, ipFiles, fileIps, users, usersSet, onError: onError() }
      }
      case 'rate_limit': {
        const rateNode = m.get('rate')
        const rate = this.rate(rateNode, 'rate')
        if (rateNode === undefined) ck.error(pos, 'rate_limit is missing required key "rate" (e.g. rate: 100/s)')
        const name = ck.str(m.get('name'), 'name', { pattern: NAME_RE, patternHelp: 'must be letters, digits, and . _ - (it is a metrics label)' }) ?? `${rc.name}.${common.index}`
        const key = this.rateKey(m.get('key'))
        if (key.some((k) => k.kind === 'user')) needUser('rate_limit key: user')
        const algorithm = ck.oneOf(m.get('algorithm'), 'algorithm', ['token_bucket', 'leaky_bucket'] as const) ?? 'token_bucket'
        const burstNode = m.get('burst')
        let burst = ck.num(burstNode, 'burst', algorithm === 'token_bucket' ? 1 : 0, 1e9)
        if (burst === undefined) burst = algorithm === 'leaky_bucket' ? 0 : rate?.count ?? 1
        let delay: number | 'nodelay' = 0
        const dn = m.get('delay')
        if (dn !== undefined) {
          if (algorithm !== 'leaky_bucket') ck.error(dn.pos, 'delay: only applies to algorithm: leaky_bucket')
          else if (dn.kind === 'scalar' && dn.value === 'nodelay') delay = 'nodelay'
          else if (dn.kind === 'scalar' && typeof dn.value === 'number') delay = ck.num(dn, 'delay', 0, 1e9) ?? 0
          else ck.error(dn.pos, `delay: expected a number or nodelay, got ${ck.show(dn as PScalar)}`)
        }
        const scope = ck.oneOf(m.get('scope'), 'scope', ['node', 'cluster'] as const) ?? 'node'
        // A leaky bucket queues or delays requests on this node (nginx limit_req); it has no store form.
        if (algorithm === 'leaky_bucket' && scope === 'cluster') ck.error(m.get('scope')?.pos ?? pos, 'scope: cluster needs algorithm: token_bucket (leaky_bucket is node-scoped, as nginx limit_req)')
        const maxKeys = ck.num(m.get('max_keys'), 'max_keys', 1, 1e8) ?? DEFAULTS.rateLimit.maxKeys
        const cfg = { kind, ...common, name, key, rate: rate ?? { count: 1, periodMs: 1000 }, burst, algorithm, delay, scope, maxKeys, onError: onError() } as const
        if (rate !== undefined && m.get('name') !== undefined) {
          const sig = JSON.stringify([key, cfg.rate, burst, algorithm, delay, scope])
          const seen = this.rateLimits.get(name)
          if (seen === undefined) this.rateLimits.set(name, { sig, pos: m.get('name')!.pos })
          else if (seen.sig !== sig) ck.error(m.get('name')!.pos, `rate_limit ${quote(name)} is already defined with different settings at ${fmtPos(seen.pos)} (guards with one name share one limit)`)
        }
        return cfg
      }
      case 'captcha': return this.captcha(m, pos, rc, common, onError())
      case 'signed_link': {
        const mode = ck.oneOf(m.get('mode'), 'mode', ['hmac', 'nginx_secure_link_md5'] as const) ?? 'hmac'
        const singleUse = ck.bool(m.get('single_use'), 'single_use') ?? false
        const secureLinkNode = m.get('secure_link')
        const md5Node = m.get('secure_link_md5')
        const secureLink = ck.str(secureLinkNode, 'secure_link') ?? '$arg_md5,$arg_expires'
        const secureLinkMd5 = ck.str(md5Node, 'secure_link_md5', { secret: true }) ?? ''
        if (mode === 'hmac') {
          for (const [k, v] of [['secure_link', secureLinkNode], ['secure_link_md5', md5Node]] as const) {
            if (v !== undefined) ck.error(m.keyPos(k), `${k}: only applies to mode: nginx_secure_link_md5`)
          }
          if (this.secrets.linkKeys.length === 0) ck.error(pos, 'signed_link (mode hmac) needs secrets.link_keys: { k1: "${FLASHGATE_LINK_KEY}" }')
          needUser('signed_link')
        } else if (md5Node === undefined) {
          ck.error(pos, 'signed_link mode nginx_secure_link_md5 needs secure_link_md5 (the nginx expression, e.g. "$secure_link_expires$uri secret")')
        }
        const campaign = this.campaignSource(m, 'campaign', rc, 'signed_link')
        const product = this.productSource(m, rc, 'signed_link', campaign)
        if (mode === 'nginx_secure_link_md5') {
          // The guard compiles these at start; a template it cannot compile is refused here, where validate sees it.
          for (const [k, v, node] of [['secure_link', secureLink, secureLinkNode], ['secure_link_md5', secureLinkMd5, md5Node]] as const) {
            try { parseSecureLinkTemplate(v) } catch (err) { ck.error(node?.pos ?? pos, `${k}: ${(err as Error).message}`) }
          }
        }
        return { kind, ...common, mode, singleUse, secureLink, secureLinkMd5, campaign, product }
      }
      case 'campaign_window': {
        const campaign = this.campaignSource(m, 'campaign', rc, 'campaign_window')
        if (this.campaignIds.size === 0) ck.error(pos, 'campaign_window needs at least one campaign in campaigns:')
        return { kind, ...common, campaign }
      }
      case 'dedupe': {
        needUser('dedupe')
        const ttlMs = this.duration(m.get('ttl'), 'ttl', { min: 1000, timer: false }) ?? DEFAULTS.dedupe.ttlMs
        const campaign = this.campaignSource(m, 'campaign', rc, 'dedupe')
        const product = this.productSource(m, rc, 'dedupe', campaign)
        return { kind, ...common, ttlMs, campaign, product, onError: onError() }
      }
      case 'waiting_room': {
        needUser('waiting_room')
        const campaign = this.campaignSource(m, 'campaign', rc, 'waiting_room')
        const rooms = [...this.campaignIds.entries()].filter(([, c]) => c.room === true).map(([id]) => id)
        if (campaign.from === 'literal') {
          if (this.campaignIds.has(campaign.value) && !rooms.includes(campaign.value)) ck.error(m.get('campaign')?.pos ?? pos, `waiting_room: campaign ${quote(campaign.value)} has no waiting_room (add campaigns[].waiting_room: { admit: 600/m })`)
        } else if (rooms.length === 0) {
          ck.error(pos, 'waiting_room: no campaign has a waiting_room (add campaigns[].waiting_room: { admit: 600/m })')
        }
        return { kind, ...common, campaign, onError: onError() }
      }
      case 'quota': {
        const campaign = this.campaignSource(m, 'campaign', rc, 'quota')
        const product = this.productSource(m, rc, 'quota', campaign)
        if (this.campaignIds.size === 0) ck.error(pos, 'quota needs at least one campaign with products in campaigns:')
        const latchTtlMs = this.duration(m.get('latch_ttl'), 'latch_ttl') ?? DEFAULTS.quota.latchTtlMs
        // A quota sells exactly its units: admitting everything while the store is down (fail_open) has no
        // bound, so it is refused for a quota (issue 13); local admits from units leased in the store ahead
        // (limiter/quota-lease.ts), fail_closed answers 503.
        const own = onError()
        const effective = own ?? this.storeOnError
        if (effective === 'fail_open') {
          const at = m.get('on_error')?.pos ?? pos
          ck.error(at, `quota: on_error fail_open${own === null ? ' (inherited from store.on_error)' : ''} cannot bound the units sold while the store is down (it would oversell); use quota: { on_error: local } (bounded by leases) or { on_error: fail_closed }`)
        }
        const lease = ck.num(m.get('lease'), 'lease', 1, 1_000_000) ?? DEFAULTS.quota.lease
        const journaled = own === null && this.storeJournal
        if (m.get('lease') !== undefined && (effective !== 'local' || journaled)) ck.error(m.get('lease')!.pos, `lease: only with on_error: local (this quota's on_error is ${journaled ? 'journal, inherited from store.on_error' : effective})`)
        return { kind, ...common, campaign, product, latchTtlMs, onError: own, lease }
      }
    }
  }

  private captcha (m: MapView, pos: Pos, rc: RouteCtx, common: { index: number, shadow: boolean, reject: RejectOverride | null }, onError: FailurePolicy | null): CaptchaGuardConfig | undefined {
    const { ck } = this
    const D = DEFAULTS.captcha
    const pn = m.get('provider')
    const provider = ck.oneOf(pn, 'provider', ['turnstile', 'hcaptcha', 'recaptcha', 'pow'] as const)
    if (pn === undefined) ck.error(pos, 'captcha is missing required key "provider" (turnstile, hcaptcha, recaptcha or pow)')
    const p = provider ?? 'turnstile'
    const secretNode = m.get('secret')
    const secret = ck.str(secretNode, 'secret', { secret: true }) ?? null
    if (provider !== undefined && provider !== 'pow' && secretNode === undefined) ck.error(pos, `captcha provider ${provider} needs secret (e.g. secret: "\${${provider.toUpperCase()}_SECRET}")`)
    if (provider === 'pow' && secretNode !== undefined) ck.error(m.keyPos('secret'), 'secret: the pow provider signs its challenges with secrets.pow (or secrets.session); remove secret here')
    if (provider === 'pow' && this.secrets.pow === null && this.secrets.session === null) ck.error(pos, 'captcha provider pow needs secrets.pow (or secrets.session) to sign its challenges')
    const token = this.source(m.get('token'), 'token', ['header', 'form', 'query'], false) ?? { from: 'header', name: CAPTCHA_TOKEN_DEFAULTS[p] }
    const vn = m.get('verify_url')
    let verifyUrl = CAPTCHA_VERIFY_URLS[p]
    const vs = ck.str(vn, 'verify_url')
    if (vs !== undefined && vn !== undefined) {
      if (p === 'pow') ck.error(vn.pos, 'verify_url: the pow provider verifies locally, no URL')
      else {
        let ok = false
        try { const u = new URL(vs); ok = u.protocol === 'http:' || u.protocol === 'https:' } catch {}
        if (ok) verifyUrl = vs
        else ck.error(vn.pos, `verify_url: ${ck.show(vn as PScalar)} is not an http(s) URL`)
      }
    }
    const only = (key: string, providers: readonly CaptchaProvider[]): void => {
      if (provider !== undefined && m.get(key) !== undefined && !providers.includes(provider)) ck.error(m.keyPos(key), `${key}: only applies to provider ${providers.join(' / ')}`)
    }
    only('min_score', ['recaptcha']); only('action', ['recaptcha'])
    only('difficulty', ['pow']); only('difficulty_under_load', ['pow']); only('challenge_ttl', ['pow'])
    only('hostname', ['turnstile', 'hcaptcha', 'recaptcha']); only('timeout', ['turnstile', 'hcaptcha', 'recaptcha'])
    const difficulty = ck.num(m.get('difficulty'), 'difficulty', 1, 32) ?? D.difficulty
    const dul = ck.num(m.get('difficulty_under_load'), 'difficulty_under_load', 1, 32) ?? null
    if (dul !== null && dul < difficulty) ck.error(m.get('difficulty_under_load')!.pos, `difficulty_under_load: must be at least difficulty (${difficulty})`)
    const clearanceMs = this.duration(m.get('clearance'), 'clearance', { min: 1000, timer: false }) ?? null
    if (clearanceMs !== null && this.secrets.session === null) ck.error(m.keyPos('clearance'), 'clearance: the clearance cookie is signed with secrets.session; set it')
    const cookie = ck.str(m.get('clearance_cookie'), 'clearance_cookie', { pattern: HEADER_NAME, patternHelp: 'is not a valid cookie name' }) ?? D.clearanceCookie
    void rc
    return {
      kind: 'captcha',
      ...common,
      provider: p,
      secret,
      token,
      verifyUrl,
      timeoutMs: this.duration(m.get('timeout'), 'timeout', { min: 1 }) ?? D.timeoutMs,
      minScore: ck.num(m.get('min_score'), 'min_score', 0, 1, false) ?? null,
      action: ck.str(m.get('action'), 'action') ?? null,
      hostname: ck.str(m.get('hostname'), 'hostname')?.toLowerCase() ?? null,
      tokenTtlMs: this.duration(m.get('token_ttl'), 'token_ttl', { min: 1000 }) ?? D.tokenTtlMs,
      clearanceMs,
      clearanceCookie: cookie,
      onError,
      difficulty,
      difficultyUnderLoad: dul,
      challengeTtlMs: this.duration(m.get('challenge_ttl'), 'challenge_ttl', { min: 1000 }) ?? D.challengeTtlMs
    }
  }

  /** `campaign:` of a guard: default `param campaign`; a param must exist in the route path; a literal must be a campaign. */
  private campaignSource (m: MapView, key: 'campaign', rc: RouteCtx, guard: string): ValueSource {
    const n = m.get(key)
    const src = this.source(n, key, ['param', 'header', 'query', 'cookie'], true) ?? { from: 'param', name: 'campaign' }
    this.checkParam(src, n, m, rc, guard, key)
    if (src.from === 'literal' && n !== undefined && !this.campaignIds.has(src.value)) {
      const known = [...this.campaignIds.keys()]
      this.ck.error(n.pos, `${guard}: campaign ${quote(src.value)} is not defined${didYouMean(src.value, known) || (known.length > 0 ? ` (defined: ${known.join(', ')})` : ' (no campaigns are defined)')}`)
    }
    return src
  }

  private productSource (m: MapView, rc: RouteCtx, guard: string, campaign: ValueSource): ValueSource {
    const n = m.get('product')
    const src = this.source(n, 'product', ['param', 'header', 'query', 'cookie'], true) ?? { from: 'param', name: 'product' }
    this.checkParam(src, n, m, rc, guard, 'product')
    if (src.from === 'literal' && n !== undefined) {
      const c = campaign.from === 'literal' ? this.campaignIds.get(campaign.value) : undefined
      const exists = c !== undefined ? c.products.has(src.value) : [...this.campaignIds.values()].some((x) => x.products.has(src.value))
      if (!exists && (campaign.from !== 'literal' || c !== undefined)) {
        this.ck.error(n.pos, `${guard}: product ${quote(src.value)} is not defined${c !== undefined && campaign.from === 'literal' ? ` in campaign ${quote(campaign.value)}` : ' in any campaign'}`)
      }
    }
    return src
  }

  private checkParam (src: ValueSource, n: PNode | undefined, m: MapView, rc: RouteCtx, guard: string, key: string): void {
    if (src.from !== 'param') return
    if (rc.params !== null && rc.params.has(src.name)) return
    const where = n?.pos ?? m.pos
    const how = n === undefined ? ` (by default ${key} comes from param ${key}; set ${key}: to a param, header, query or a literal)` : ''
    if (rc.params === null) this.ck.error(where, `${guard}: ${key} comes from route param :${src.name} but route ${quote(rc.name)} has no path: with params${how}`)
    else this.ck.error(where, `${guard}: ${key} comes from route param :${src.name} but route ${quote(rc.name)} path ${quote(rc.pathText)} has no :${src.name}${how}`)
  }

  private rateKey (n: PNode | undefined): RateKeyPart[] {
    if (n === undefined) return []
    const items = n.kind === 'seq' ? n.items : [n]
    const out: RateKeyPart[] = []
    for (const it of items) {
      const s = this.ck.str(it, 'key')
      if (s === undefined) continue
      const t = s.trim()
      const hm = /^header\s+(\S+)$/.exec(t)
      if (t === 'ip' || t === 'user' || t === 'route') out.push({ kind: t })
      else if (hm !== null && HEADER_NAME.test(hm[1] as string)) out.push({ kind: 'header', name: (hm[1] as string).toLowerCase() })
      else this.ck.error(it.pos, `key: expected ip, user, route or header NAME, got ${this.ck.show(it as PScalar)}${didYouMean(t, ['ip', 'user', 'route'])}`)
    }
    return out
  }

  /** An ip file, read and checked once: its absolute path and its entries. */
  private ipFile (n: PNode): { path: string, entries: string[] } | undefined {
    const s = this.ck.str(n, 'ip_files')
    if (s === undefined) return undefined
    const abs = isAbsolute(s) ? s : resolve(dirname(n.pos.file), s)
    const shown = isAbsolute(s) ? s : join(dirname(n.pos.file), s)
    if (!existsSync(abs)) return this.ck.error(n.pos, `ip_files: ${quote(s)} does not exist`)
    let text: string
    try { text = readFileSync(abs, 'utf8') } catch (err) { return this.ck.error(n.pos, `ip_files: cannot read ${quote(s)}: ${(err as NodeJS.ErrnoException).code ?? ''}`) }
    this.d.file(shown)
    const entries: string[] = []
    text.split(/\r?\n/).forEach((line, i) => {
      const hash = line.indexOf('#')
      const body = hash === -1 ? line : line.slice(0, hash)
      const entry = body.trim()
      if (entry === '') return
      const err = checkCidr(entry)
      if (err !== null) this.ck.error({ file: shown, line: i + 1, col: body.indexOf(entry) + 1 }, err)
      else entries.push(entry)
    })
    return { path: abs, entries }
  }
}

/** `/buy/:campaign/:product` checks; null when fine. */
function pathProblem (p: string): string | null {
  if (!p.startsWith('/')) return 'must start with /'
  if (/[?#\s]/.test(p)) return 'must not contain spaces, ? or #'
  const seen = new Set<string>()
  for (const seg of p.split('/').slice(1)) {
    if (!seg.startsWith(':')) { if (seg.includes(':')) return `segment ${quote(seg)}: a :param must be a whole segment`; continue }
    const name = seg.slice(1)
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) return `invalid param ${quote(seg)} (letters, digits and _)`
    if (seen.has(name)) return `param :${name} appears twice`
    seen.add(name)
  }
  return null
}

/** A YAML subtree as plain JSON-able data (for `reject.body`). */
function toPlain (n: PNode): unknown {
  if (n.kind === 'scalar') return n.value
  if (n.kind === 'seq') return n.items.map(toPlain)
  const o: Record<string, unknown> = {}
  for (const e of n.entries) o[e.key] = toPlain(e.value)
  return o
}

function frozenMap<K, V> (m: Map<K, V>): ReadonlyMap<K, V> {
  const fail = (): never => { throw new TypeError('config maps are frozen') }
  Object.defineProperties(m, { set: { value: fail }, delete: { value: fail }, clear: { value: fail } })
  return Object.freeze(m)
}

/** Deep-freeze plain objects, arrays and Maps (Buffers cannot be frozen and are left as they are). */
export function deepFreeze<T> (v: T): T {
  if (v === null || typeof v !== 'object' || Buffer.isBuffer(v) || Object.isFrozen(v)) return v
  if (v instanceof Map) {
    for (const [k, x] of v) { deepFreeze(k); deepFreeze(x) }
    return frozenMap(v) as T
  }
  for (const x of Object.values(v as object)) deepFreeze(x)
  return Object.freeze(v)
}
