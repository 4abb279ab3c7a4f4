/**
 * The composition root: the one place that creates the metrics Registry, the store, the upstream
 * Pools, the guard pipelines, the public and admin listeners, and wires reload and shutdown. Nothing
 * here is a module-level singleton; tests start as many gateways as they like in one process.
 */
import type { AddressInfo } from 'node:net'
import type { Server } from 'node:http'
import { loadConfigFile } from '../conf/load.js'
import type { Config, HostPort } from '../conf/types.js'
import * as antibot from '../antibot/index.js'
import { createQuotaAdmin, createStore, quotaGuard, rateLimitGuard } from '../limiter/index.js'
import type { Store } from '../limiter/store.js'
import { createAccessLog, type AccessLog } from './access-log.js'
import { createAdminServer, type QuotaAdmin, type ReloadResult } from './admin.js'
import { ConfigError } from './errors.js'
import { createLog, type Log } from './log.js'
import { createMetrics, type Metrics } from './metrics.js'
import { buildPipelines, closeGuards, type GuardFactories } from './pipeline.js'
import { applyServerLimits, createPublicServer, createState, Frontend, timeHandler, type ServingState, type UpstreamForwarder } from './server.js'
import type { EdgeHandler, GuardDeps } from './types.js'
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
export const DEFAULT_FACTORIES: GuardFactories = {
  deny: antibot.denyGuard,
  rate_limit: rateLimitGuard,
  captcha: antibot.captchaGuard,
  signed_link: antibot.signedLinkGuard,
  campaign_window: antibot.campaignWindowGuard,
  dedupe: antibot.dedupeGuard,
  quota: quotaGuard,
  waiting_room: antibot.waitingRoomGuard
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

/** Things a config change on reload cannot change without a restart. */
function restartOnly (a: Config, b: Config): string[] {
  const out: string[] = []
  if (a.listen.host !== b.listen.host || a.listen.port !== b.listen.port) out.push('listen')
  if (JSON.stringify(a.admin) !== JSON.stringify(b.admin) || a.adminToken !== b.adminToken) out.push('admin')
  if (JSON.stringify(a.store) !== JSON.stringify(b.store)) out.push('store')
  if (a.workers !== b.workers) out.push('workers')
  if (a.server.maxHeaderSize !== b.server.maxHeaderSize) out.push('server.max_header_size')
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
  const worker = opts.worker ?? { index: 0, count: 1 }
  const store = opts.store ?? createStore(config.store, { metrics, clock, log })
  const upstreams: UpstreamsLike = opts.upstreams ?? createUpstreams(config.upstreams, { metrics, clock, log })
  const factories = opts.factories ?? DEFAULT_FACTORIES
  const edgeFor = opts.edgeHandlers ?? antibot.createEdgeHandlers
  const persistent = new Map<string, unknown>()
  const signals = { overloaded: false }
  const accessLog = opts.accessLog ?? createAccessLog(config.accessLog, (err) => { log('warn', 'access log write failed', { err }) })

  function depsFor (cfg: Config): GuardDeps {
    return {
      config: cfg,
      store,
      metrics,
      registry: metrics.registry,
      clock,
      identity: antibot.createIdentity(cfg),
      worker,
      persistent,
      signals,
      log
    }
  }

  let quotaAdmin: QuotaAdmin | null = null

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
    return createState(cfg, routes, guards, edge, log)
  }

  const frontend = new Frontend({ state: build(config), upstreams, metrics, accessLog, log, clock })
  quotaAdmin = createQuotaAdmin({ config, store, metrics, persistent })
  const server = createPublicServer(config, frontend, metrics, log)
  const listenAt = opts.listen ?? config.listen
  let address: AddressInfo
  try {
    address = await listen(server, listenAt)
  } catch (err) {
    closeGuards(frontend.state.guards, { log })
    await upstreams.close()
    await store.close()
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
      const r = loadConfigFile(file, env)
      if (!r.ok) {
        metrics.configReloads.inc({ result: 'failure' })
        log('warn', 'reload rejected', { errors: r.errors })
        return { ok: false, errors: r.errors }
      }
      for (const w of r.warnings) log('warn', w)
      cfg = r.config
    }
    let state: ServingState
    try {
      state = build(cfg)
    } catch (err) {
      metrics.configReloads.inc({ result: 'failure' })
      const errors = err instanceof ConfigError ? err.problems : [`${cfg.file}:1:1: ${err instanceof Error ? err.message : String(err)}`]
      log('warn', 'reload rejected', { errors })
      return { ok: false, errors }
    }
    const fixed = restartOnly(config, cfg)
    if (fixed.length > 0) log('warn', 'reload: these settings take effect only after a restart', { settings: fixed })
    upstreams.update(cfg.upstreams)
    frontend.swap(state)
    applyServerLimits(server, cfg)
    quotaAdmin = createQuotaAdmin({ config: cfg, store, metrics, persistent })
    config = cfg
    metrics.configReloads.inc({ result: 'success' })
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
        queueJoins: async (campaign: string) => await antibot.roomJoinLog({ config, store, metrics, clock, log }, campaign),
        upstreams: () => upstreams.status()
      }, log)
      adminAddress = await listen(admin, adminAt)
    } catch (err) {
      await closeServer(server)
      closeGuards(frontend.state.guards, { log })
      await upstreams.close()
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
      const closed = closeServer(server) // stops accepting; idle keep-alive connections close now
      const sweep = setInterval(() => { server.closeIdleConnections() }, 50)
      let timer: NodeJS.Timeout | undefined
      const deadline = new Promise<'timeout'>((resolve) => { timer = setTimeout(() => { resolve('timeout') }, config.server.drainTimeoutMs) })
      const result = await Promise.race([Promise.all([closed, frontend.idle()]).then(() => 'drained' as const), deadline])
      clearTimeout(timer)
      clearInterval(sweep)
      if (result === 'timeout') {
        log('warn', 'drain timeout: closing remaining connections', { inflight: frontend.inflight })
        server.closeAllConnections()
      }
      if (admin !== null) { admin.closeAllConnections(); await closeServer(admin) }
      closeGuards(frontend.state.guards, { log })
      await upstreams.close()
      await store.close()
      accessLog.close()
    })()
    return await closing
  }

  log('info', 'listening', { url: urlOf(address), admin: adminAddress === null ? null : urlOf(adminAddress), worker: worker.index })

  return {
    url: urlOf(address),
    address,
    adminUrl: adminAddress === null ? null : urlOf(adminAddress),
    metrics,
    frontend,
    store,
    config: () => config,
    reload,
    ready,
    quotaAdmin: () => quotaAdmin,
    close
  }
}
