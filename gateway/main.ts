/**
 * The composition root: the one place that creates the metrics Registry, the store, the upstream
 * Pools, the guard pipelines, the public and admin listeners, and wires reload and shutdown. Nothing
 * here is a module-level singleton; tests start as many gateways as they like in one process.
 */
import type { AddressInfo } from 'node:net'
import type { Server } from 'node:http'
import { loadConfigFile } from '../conf/load.js'
import { checkConfigOffThread } from '../conf/load-worker.js'
import type { Config, HostPort, ListenerConfig } from '../conf/types.js'
import { denyGuard } from './guards/deny.js'
import { captchaGuard } from './guards/captcha.js'
import { signedLinkGuard } from './guards/signed-link.js'
import { campaignWindowGuard } from './guards/campaign-window.js'
import { dedupeGuard } from './guards/dedupe.js'
import { roomJoinLog, waitingRoomGuard } from './guards/waiting-room.js'
import { createIdentity } from './guards/identity.js'
import { createEdgeHandlers } from './edge/handlers.js'
import { createStore, type StoreDeps } from '../limiter/index.js'
import { quotaGuard } from './guards/quota.js'
import { createQuotaAdmin, type QuotaAdmin, type QuotaView } from '../limiter/quota-ledger.js'
import { rateLimitGuard } from './guards/rate-limit.js'
import type { Store } from '../limiter/store.js'
import { createAccessLog, type AccessLog } from './access-log.js'
import { createAdminServer, type ReloadResult } from './admin.js'
import { ConfigError } from '../conf/errors.js'
import { createLog, type Log } from './log.js'
import { createMetrics, recordReload, type Metrics } from './metrics.js'
import { createListener, listenerUrl, readTlsFiles, type PublicListener } from './http/listeners.js'
import { createTracer, type Tracer } from './otlp.js'
import { buildPipelines, closeGuards, type GuardFactories } from './pipeline/build.js'
import { KeptState, OverloadSignal } from './pipeline/state.js'
import { PENDING_PATH, PendingJournal } from './pending.js'
import { createState, Frontend, type ServingState, type UpstreamForwarder } from './http/server.js'
import { timeHandler } from './edge/time.js'
import type { EdgeHandler, GuardDeps } from './pipeline/types.js'
import { createUpstreams } from './upstream/index.js'

/** The upstream side as the composition root uses it (gateway/upstream implements it). */
export interface UpstreamsLike extends UpstreamForwarder {
  update (upstreams: Config['upstreams']): void
  status (): unknown
  close (): Promise<void>
}

export interface StartOptions {
  /** The config file: loaded at start (unless `config` is given) and on every reload. */
  readonly configFile?: string
  /** A config object (tests); reload then needs `configFile` or an explicit config. */
  readonly config?: Config
  readonly env?: NodeJS.ProcessEnv
  /** Override `listen` (tests pass port 0). */
  readonly listen?: HostPort
  /** Override `admin`: a HostPort, or null for none (cluster workers: the primary owns admin). */
  readonly admin?: HostPort | null
  /** Guard factories; default: the limiter's and antibot's. */
  readonly factories?: GuardFactories
  /** Edge handlers per config; default: antibot's `/_flashgate/link` and `/_flashgate/challenge`. */
  readonly edgeHandlers?: (deps: GuardDeps) => Record<string, EdgeHandler>
  readonly store?: Store
  /** Make the store from the config (default createStore); a cluster worker reaches the primary's ledger. */
  readonly makeStore?: (cfg: Config['store'], deps: StoreDeps) => Store
  readonly upstreams?: UpstreamsLike
  readonly metrics?: Metrics
  readonly clock?: () => number
  readonly log?: Log
  /** This process's share of node-local limits. */
  readonly worker?: { readonly index: number, readonly count: number }
  /** Access log override (tests capture lines). */
  readonly accessLog?: AccessLog
}

export interface Gateway {
  /** `http://host:port` of the public listener. */
  readonly url: string
  readonly address: AddressInfo
  readonly adminUrl: string | null
  readonly metrics: Metrics
  readonly frontend: Frontend
  readonly store: Store
  /** Every public listener (the first is `url`), in config order. */
  readonly listeners: ReadonlyArray<{ readonly url: string, readonly address: AddressInfo, readonly tls: boolean, readonly http2: boolean }>
  /** Reopen the access log file (SIGUSR1, after rotation). */
  reopenLog (): void
  /** The config in force. */
  config (): Config
  /** Load the file again (or take `next`) and swap; failures keep the old config. */
  reload (next?: Config): Promise<ReloadResult>
  /** Config loaded, store usable, not draining. */
  ready (): boolean
  /** The quota admin for the config in force (the admin API and cluster workers use it). */
  quotaAdmin (): QuotaAdmin | null
  /** Stop accepting, let in-flight requests finish (up to `server.drainTimeoutMs`), release everything. */
  close (): Promise<void>
}

/** The guards this build ships. */
const DEFAULT_FACTORIES: GuardFactories = {
  deny: denyGuard,
  rate_limit: rateLimitGuard,
  captcha: captchaGuard,
  signed_link: signedLinkGuard,
  campaign_window: campaignWindowGuard,
  dedupe: dedupeGuard,
  quota: quotaGuard,
  waiting_room: waitingRoomGuard
}

function urlOf (a: AddressInfo): string {
  const host = a.family === 'IPv6' ? `[${a.address}]` : a.address
  return `http://${host}:${a.port}`
}

function listen (server: Server, hp: HostPort): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => { reject(err) }
    server.once('error', onError)
    server.listen(hp.port, hp.host, () => {
      server.off('error', onError)
      resolve(server.address() as AddressInfo)
    })
  })
}

function closeServer (server: Server): Promise<void> {
  return new Promise((resolve) => { server.close(() => { resolve() }) })
}

function listenersOf (c: Config): readonly ListenerConfig[] {
  return c.listeners ?? [{ address: c.listen, tls: null, http2: false }]
}

/** What of a listener needs a restart to change (its certificate files reload). */
function shapeOf (l: ListenerConfig): unknown {
  return [l.address.host, l.address.port, l.tls !== null, l.http2]
}

/** Things a config change on reload cannot change without a restart. */
function restartOnly (a: Config, b: Config): string[] {
  const out: string[] = []
  if (a.listen.host !== b.listen.host || a.listen.port !== b.listen.port ||
    JSON.stringify(listenersOf(a).map(shapeOf)) !== JSON.stringify(listenersOf(b).map(shapeOf))) out.push('listen')
  if (JSON.stringify(a.admin) !== JSON.stringify(b.admin) || a.adminToken !== b.adminToken) out.push('admin')
  if (JSON.stringify(a.store) !== JSON.stringify(b.store)) out.push('store')
  if (a.workers !== b.workers) out.push('workers')
  if (a.server.maxHeaderSize !== b.server.maxHeaderSize) out.push('server.max_header_size')
  if (a.server.parser !== b.server.parser) out.push('server.parser')
  if (JSON.stringify(a.accessLog) !== JSON.stringify(b.accessLog)) out.push('access_log')
  return out
}

/**
 * Start a gateway: load the config, build store, upstreams, pipelines, listen. Rejects with a
 * ConfigError when the config is invalid, or the listen error.
 */
export async function startGateway (opts: StartOptions): Promise<Gateway> {
  const env = opts.env ?? process.env
  const log = opts.log ?? createLog()
  const clock = opts.clock ?? Date.now
  let config: Config
  if (opts.config !== undefined) {
    config = opts.config
  } else if (opts.configFile !== undefined) {
    const r = loadConfigFile(opts.configFile, env)
    if (!r.ok) throw new ConfigError(r.errors)
    for (const w of r.warnings) log('warn', w)
    config = r.config
  } else {
    throw new Error('startGateway needs configFile or config')
  }

  const metrics = opts.metrics ?? createMetrics()
  metrics.configLastReload.set(Date.now() / 1000)
  metrics.configLastReloadOk.set(1)
  const worker = opts.worker ?? { index: 0, count: 1 }
  const store = opts.store ?? (opts.makeStore ?? createStore)(config.store, { metrics, clock, log })
  // Connect before listening, as Envoy warms its clusters before its listeners take traffic: a Redis store
  // fails fast while it is not connected, so the first buyers of a gateway started at the sale's opening
  // were answered 503 STORE_UNAVAILABLE. Bounded, and not waiting past a refused connection: a store that
  // is down at start is served under store.on_error, as any outage (and /readyz stays 503).
  const startWaitMs = Math.max(1000, config.store.timeoutMs * 20)
  await store.ready?.(startWaitMs, { untilError: true }).catch((err: unknown) => {
    log('warn', 'store not ready at start: serving under its outage policy', { store: config.store.kind, error: err instanceof Error ? err.message : String(err) })
  })
  const upstreams: UpstreamsLike = opts.upstreams ?? createUpstreams(config.upstreams, { metrics, clock, log })
  const factories = opts.factories ?? DEFAULT_FACTORIES
  const edgeFor = opts.edgeHandlers ?? createEdgeHandlers
  const kept = new KeptState()
  const overload = new OverloadSignal()
  const accessLog = opts.accessLog ?? createAccessLog(config.accessLog, (err) => { log('warn', 'access log write failed', { err }) })
  // store.on_error: journal — this worker's journal, read back and replayed from start (gateway/pending.ts).
  const journalCfg = config.store.journal ?? null
  const pending = journalCfg === null ? null : await PendingJournal.open({ config, journal: journalCfg, store, registry: metrics.registry, worker, clock, log })

  function depsFor (cfg: Config): GuardDeps {
    return {
      config: cfg,
      store,
      metrics,
      registry: metrics.registry,
      clock,
      identity: createIdentity(cfg),
      worker,
      kept,
      overload,
      log,
      pending
    }
  }

  let quotaAdmin: QuotaAdmin | null = null
  const onQuotaStatus = (c: string, p: string, v: QuotaView): void => { metrics.quotaRemaining.labels(c, p).set(v.remaining) }

  /** Build a whole serving state for a config; throws ConfigError on problems found while building. */
  function build (cfg: Config): ServingState {
    const deps = depsFor(cfg)
    const { routes, guards } = buildPipelines(cfg, factories, deps)
    let edge: Map<string, EdgeHandler>
    try {
      edge = new Map(Object.entries(edgeFor(deps)))
    } catch (err) {
      closeGuards(guards, deps)
      throw new ConfigError([`${cfg.file}: edge endpoints: ${err instanceof Error ? err.message : String(err)}`])
    }
    edge.set('/_flashgate/time', timeHandler(clock, cfg.campaigns))
    if (pending !== null) edge.set(PENDING_PATH, pending.handler(deps.identity))
    return createState(cfg, routes, guards, edge, log)
  }

  const onTraceError = (err: unknown): void => { log('debug', 'trace export failed', { err }) }
  let tracer: Tracer = createTracer(config.tracing, metrics.registry, { onError: onTraceError })
  const frontend = new Frontend({ state: build(config), upstreams, metrics, accessLog, log, clock, tracer })
  quotaAdmin = createQuotaAdmin({ config, store, onStatus: onQuotaStatus })
  const publics: PublicListener[] = []
  let address: AddressInfo
  try {
    for (const l of listenersOf(config)) {
      try {
        publics.push(createListener(l, config, frontend, metrics, log))
      } catch (err) {
        throw new ConfigError([`${config.file}:1:1: listen ${l.address.host}:${l.address.port}: ${(err as Error).message}`])
      }
    }
    for (let i = 0; i < publics.length; i++) {
      const pl = publics[i]!
      const a = await listen(pl.server, i === 0 && opts.listen !== undefined ? opts.listen : pl.cfg.address)
      pl.address = a
      pl.url = listenerUrl(pl.cfg, a)
    }
    address = publics[0]!.address!
  } catch (err) {
    await Promise.all(publics.filter((p) => p.address !== null).map(async (p) => { await closeServer(p.server) }))
    closeGuards(frontend.state.guards, { log })
    await upstreams.close()
    await pending?.close()
    await store.close()
    await tracer.close()
    accessLog.close()
    throw err
  }

  let draining = false
  const ready = (): boolean => !draining && store.healthy

  async function reload (next?: Config): Promise<ReloadResult> {
    let cfg: Config
    if (next !== undefined) {
      cfg = next
    } else {
      const file = opts.configFile ?? config.file
      // Loaded on a worker thread: neither a hostile file (alias bomb, huge) nor a big valid one stalls
      // serving; the config comes back by structured clone (conf/load-worker.ts).
      const pre = await checkConfigOffThread(file, env)
      if (!pre.ok) {
        recordReload(metrics, false)
        log('warn', 'reload rejected', { errors: pre.errors })
        return { ok: false, errors: [...pre.errors] }
      }
      const r = pre.config != null ? { ok: true as const, config: pre.config, warnings: pre.warnings ?? [] } : loadConfigFile(file, env)
      if (!r.ok) {
        recordReload(metrics, false)
        log('warn', 'reload rejected', { errors: r.errors })
        return { ok: false, errors: r.errors }
      }
      for (const w of r.warnings) log('warn', w)
      cfg = r.config
    }
    // New certificates: read and checked before anything changes; a bad one keeps the old serving.
    const pems: Array<{ cert: string, key: string } | null> = []
    const newListeners = listenersOf(cfg)
    for (let i = 0; i < publics.length; i++) {
      const tls = newListeners[i]?.tls ?? null
      if (tls === null || publics[i]!.cfg.tls === null) { pems.push(null); continue }
      const pem = readTlsFiles(tls)
      if (typeof pem === 'string') {
        metrics.configReloads.inc({ result: 'failure' })
        const errors = [`${cfg.file}:1:1: listen ${publics[i]!.cfg.address.host}:${publics[i]!.cfg.address.port}: tls: ${pem} (the old certificate keeps serving)`]
        log('warn', 'reload rejected', { errors })
        return { ok: false, errors }
      }
      pems.push(pem)
    }
    let state: ServingState
    try {
      state = build(cfg)
    } catch (err) {
      recordReload(metrics, false)
      const errors = err instanceof ConfigError ? err.problems : [`${cfg.file}:1:1: ${err instanceof Error ? err.message : String(err)}`]
      log('warn', 'reload rejected', { errors })
      return { ok: false, errors }
    }
    const fixed = restartOnly(config, cfg)
    if (fixed.length > 0) log('warn', 'reload: these settings take effect only after a restart', { settings: fixed })
    upstreams.update(cfg.upstreams)
    frontend.swap(state)
    for (let i = 0; i < publics.length; i++) {
      const pl = publics[i]!
      pl.applyLimits(cfg)
      const pem = pems[i]
      if (pem != null) {
        const e = pl.setTls(pem)
        if (e !== null) log('warn', 'certificate reload failed; the old one keeps serving', { listen: pl.url, error: e })
      }
    }
    if (JSON.stringify(cfg.tracing) !== JSON.stringify(config.tracing)) {
      const old = tracer
      tracer = createTracer(cfg.tracing, metrics.registry, { onError: onTraceError })
      frontend.tracer = tracer
      old.close().catch(() => {})
    }
    quotaAdmin = createQuotaAdmin({ config: cfg, store, onStatus: onQuotaStatus })
    pending?.update(cfg)
    config = cfg
    recordReload(metrics, true)
    log('info', 'config reloaded', { routes: cfg.routes.length })
    return { ok: true }
  }

  let admin: Server | null = null
  let adminAddress: AddressInfo | null = null
  const adminAt = opts.admin === undefined ? config.admin : opts.admin
  if (adminAt !== null) {
    try {
      admin = createAdminServer(adminAt.host, config.adminToken, {
        metrics: async () => ({ contentType: metrics.registry.contentType, body: await metrics.registry.metrics() }),
        ready,
        reload: async () => await reload(),
        config: () => config,
        quota: () => quotaAdmin,
        queueJoins: async (campaign: string) => await roomJoinLog({ config, store, metrics, clock, log }, campaign),
        upstreams: () => upstreams.status()
      }, log)
      adminAddress = await listen(admin, adminAt)
    } catch (err) {
      await Promise.all(publics.map(async (p) => { await closeServer(p.server) }))
      closeGuards(frontend.state.guards, { log })
      await upstreams.close()
      await pending?.close()
      await store.close()
      accessLog.close()
      throw err
    }
  }

  let closing: Promise<void> | null = null
  async function close (): Promise<void> {
    if (closing !== null) return await closing
    closing = (async () => {
      draining = true
      frontend.draining = true
      // Stop accepting; idle keep-alive connections (h2: sessions without a stream) close now.
      const closed = Promise.all(publics.map(async (p) => { const c = closeServer(p.server); p.closeIdle(); await c }))
      const sweep = setInterval(() => { for (const p of publics) p.closeIdle() }, 50)
      let timer: NodeJS.Timeout | undefined
      const deadline = new Promise<'timeout'>((resolve) => { timer = setTimeout(() => { resolve('timeout') }, config.server.drainTimeoutMs) })
      const result = await Promise.race([Promise.all([closed, frontend.idle()]).then(() => 'drained' as const), deadline])
      clearTimeout(timer)
      clearInterval(sweep)
      if (result === 'timeout') {
        log('warn', 'drain timeout: closing remaining connections', { inflight: frontend.inflight })
        for (const p of publics) p.closeAll()
      }
      if (admin !== null) { admin.closeAllConnections(); await closeServer(admin) }
      closeGuards(frontend.state.guards, { log })
      await upstreams.close()
      await pending?.close()
      await store.close()
      await tracer.close()
      accessLog.close()
    })()
    return await closing
  }

  log('info', 'listening', { url: publics[0]!.url, ...(publics.length > 1 ? { listeners: publics.map((p) => p.url) } : {}), admin: adminAddress === null ? null : urlOf(adminAddress), worker: worker.index })

  return {
    url: publics[0]!.url,
    address,
    adminUrl: adminAddress === null ? null : urlOf(adminAddress),
    metrics,
    frontend,
    store,
    listeners: publics.map((p) => ({ url: p.url, address: p.address!, tls: p.cfg.tls !== null, http2: p.cfg.http2 })),
    reopenLog: () => { accessLog.reopen?.() },
    config: () => config,
    reload,
    ready,
    quotaAdmin: () => quotaAdmin,
    close
  }
}
