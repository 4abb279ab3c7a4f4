/**
 * Running the gateway: one process, or a node:cluster primary with N workers. The primary validates
 * the config, owns the admin port (metrics aggregated from every worker over IPC with prom-client's
 * AggregatorRegistry), coordinates reloads (validate first, then every worker reloads), restarts a
 * worker that dies, and on SIGTERM/SIGINT has every worker drain before it exits 0.
 *
 * On the embedded store (`store.kind: memory`) the primary holds the node's one ledger (a LedgerStore,
 * limiter/ipc-store.ts) and every worker's Store reaches it over a socketpair of its own, so quota,
 * dedupe, cluster-scope limits and single-use tokens are exact across the workers. The primary then
 * answers the quota admin endpoints from the ledger itself. Admin answers and gauges are for the whole
 * node: counters are summed over the workers; `flashgate_quota_remaining` is the primary's own reading
 * of the ledger (on Redis: of the store, through a worker), never a sum; see GAUGES for the others.
 */
import cluster from 'node:cluster'
import type { Worker } from 'node:cluster'
import { Socket, type AddressInfo } from 'node:net'
import type { Duplex } from 'node:stream'
import { AggregatorRegistry, Counter, type MetricObjectWithValues, type MetricValue } from 'prom-client'
import { loadConfigFile } from '../conf/load.js'
import type { Config } from '../conf/types.js'
import { createStore } from '../limiter/index.js'
import { createQuotaAdmin, type QuotaAdmin, type QuotaConflict, type QuotaOp, type QuotaView } from '../limiter/quota-ledger.js'
import { IpcStore, LedgerStore, serveLedger, socketPeer, type Peer } from '../limiter/ipc-store.js'
import { createAdminServer, type ReloadResult } from './admin.js'
import { ConfigError } from '../conf/errors.js'
import type { Log } from './log.js'
import { startGateway, type Gateway } from './main.js'
import { CounterCell, createMetrics, recordReload } from './metrics.js'
import { missingFlags } from './node-flags.js'

/** Messages between primary and workers (all carry `fg: true`). */
type ToWorker =
  | { fg: true, type: 'metrics', id: number }
  | { fg: true, type: 'reload', id: number }
  | { fg: true, type: 'quota', id: number, op: QuotaOp, campaign: string, product: string, quota?: number }
  | { fg: true, type: 'shutdown' }
type FromWorker =
  | { fg: true, type: 'ready', url: string }
  | { fg: true, type: 'reply', id: number, ok: boolean, value?: unknown, error?: string, code?: string }
  | { fg: true, type: 'failed', error: string }

/**
 * Set by the primary in a worker's environment when it serves the node's ledger (store.kind memory): the
 * worker's file descriptor of its socketpair to the primary (limiter/ipc-store.ts socketPeer says why
 * not the cluster IPC channel).
 */
const LEDGER_ENV = 'FLASHGATE_LEDGER_FD'
const LEDGER_FD = 4

/**
 * How gauges are combined over the workers (prom-client's aggregators; the default, and every counter's,
 * is the sum). A gauge that is a per-process view of one shared value must not be summed.
 */
const GAUGES: Readonly<Record<string, 'min' | 'max'>> = {
  // Every worker's last view of the same counter (the primary replaces it with its own reading when it can).
  flashgate_quota_remaining: 'min',
  // Up for the node only while every worker sees it up; open while any worker's breaker is open.
  flashgate_upstream_up: 'min',
  flashgate_store_breaker_open: 'max'
}

type MetricsJson = MetricObjectWithValues<MetricValue<string>>[]

/** The primary's end of a worker's ledger socketpair. */
function peerOf (w: Worker): Peer {
  const sock = w.process.stdio[LEDGER_FD]
  if (sock === undefined || sock === null || !('write' in sock)) throw new Error('worker has no ledger channel')
  return socketPeer(sock as Duplex)
}

function installShutdown (close: () => Promise<void>, log: Log): void {
  let stopping = false
  const stop = (signal: string): void => {
    if (stopping) return
    stopping = true
    log('info', 'draining', { signal })
    close().then(() => { log('info', 'stopped'); process.exit(0) }, (err: unknown) => { log('error', 'shutdown failed', { err }); process.exit(1) })
  }
  process.on('SIGTERM', () => { stop('SIGTERM') })
  process.on('SIGINT', () => { stop('SIGINT') })
}

/** SIGUSR1 reopens the access log file (logrotate's postrotate, nginx's `-s reopen`). */
function installReopen (reopen: () => void): void {
  process.on('SIGUSR1', reopen)
}

/** Single-process `serve`: the gateway with its admin listener; SIGHUP reloads, SIGTERM/SIGINT drain. */
export async function serveSingle (configFile: string, log: Log): Promise<Gateway> {
  const gw = await startGateway({ configFile, log })
  process.on('SIGHUP', () => {
    gw.reload().then((r) => { if (!r.ok) log('warn', 'SIGHUP reload rejected', { errors: r.errors }) }, (err: unknown) => { log('error', 'reload failed', { err }) })
  })
  installShutdown(gw.close, log)
  installReopen(gw.reopenLog)
  return gw
}

/** A cluster worker: no admin listener (the primary owns it), answers the primary's IPC requests. */
export async function serveWorker (configFile: string, index: number, count: number, log: Log): Promise<void> {
  let gw: Gateway
  // The primary holds the node's ledger: on the embedded store, every store call goes to it (fd LEDGER_FD).
  const ledgerFd = Number(process.env[LEDGER_ENV] ?? '')
  try {
    gw = await startGateway({
      configFile,
      log,
      admin: null,
      worker: { index, count },
      makeStore: (cfg, deps) => ledgerFd > 2 && cfg.kind === 'memory'
        ? new IpcStore(cfg, socketPeer(new Socket({ fd: ledgerFd, readable: true, writable: true })), deps)
        : createStore(cfg, deps)
    })
  } catch (err) {
    const msg = err instanceof ConfigError ? err.problems.join('\n') : err instanceof Error ? err.message : String(err)
    process.send?.({ fg: true, type: 'failed', error: msg } satisfies FromWorker)
    process.exit(1)
  }
  installReopen(gw.reopenLog)
  const reply = (id: number, p: Promise<unknown>): void => {
    p.then((value) => { process.send?.({ fg: true, type: 'reply', id, ok: true, value } satisfies FromWorker) },
      (err: unknown) => {
        process.send?.({ fg: true, type: 'reply', id, ok: false, error: err instanceof Error ? err.message : String(err), code: (err as { code?: string }).code ?? '' } satisfies FromWorker)
      })
  }
  process.on('message', (m: ToWorker) => {
    if (typeof m !== 'object' || m === null || m.fg !== true) return
    switch (m.type) {
      case 'metrics': reply(m.id, gw.metrics.registry.getMetricsAsJSON()); break
      case 'reload': reply(m.id, gw.reload()); break
      case 'quota': {
        const q = gw.quotaAdmin()
        if (q === null) { reply(m.id, Promise.resolve(null)); break }
        reply(m.id, m.op === 'get'
          ? q.get(m.campaign, m.product)
          : m.op === 'reset'
            ? q.reset(m.campaign, m.product)
            : m.op === 'release'
              ? q.release(m.campaign, m.product, m.quota ?? 0)
              : q.set(m.campaign, m.product, m.quota ?? 0))
        break
      }
      case 'shutdown': process.kill(process.pid, 'SIGTERM'); break
    }
  })
  // The primary coordinates reloads; a SIGHUP sent to the whole process group must not kill a worker.
  process.on('SIGHUP', () => {})
  installShutdown(gw.close, log)
  process.send?.({ fg: true, type: 'ready', url: gw.url } satisfies FromWorker)
}

/**
 * The cluster primary. Resolves once every worker is listening; the process then lives until
 * SIGTERM/SIGINT. Rejects (ConfigError) when the config is invalid.
 */
export async function servePrimary (configFile: string, workers: number, log: Log): Promise<{ url: string, adminUrl: string | null }> {
  const first = loadConfigFile(configFile)
  if (!first.ok) throw new ConfigError(first.errors)
  // The workers serve the traffic: they get the Node flags flashgate ships with that this process was
  // started without (gateway/node-flags.ts; --no-memory-reducer cannot come from NODE_OPTIONS).
  const extra = missingFlags()
  let config: Config = first.config
  // The ledger's channel to each worker: a socketpair as the worker's fd 4 (after stdin/out/err and IPC).
  const ledgerStdio = config.store.kind === 'memory' ? { stdio: ['inherit', 'inherit', 'inherit', 'ipc', 'pipe'] } : {}
  if (extra.length > 0 || config.store.kind === 'memory') cluster.setupPrimary({ ...(extra.length > 0 ? { execArgv: [...process.execArgv, ...extra] } : {}), ...ledgerStdio })
  const metrics = createMetrics()
  metrics.configLastReload.set(Date.now() / 1000)
  metrics.configLastReloadOk.set(1)
  // The node's one ledger on the embedded store (a store change needs a restart, as for one process).
  const ledger = config.store.kind === 'memory' ? new LedgerStore({ maxKeys: config.store.maxKeys, clock: Date.now }) : null
  const ledgerAdmin = (): QuotaAdmin | null => ledger === null ? null : createQuotaAdmin({ config, store: ledger, onStatus: (c, p, v) => { metrics.quotaRemaining.labels(c, p).set(v.remaining) } })
  let quotaAdmin = ledgerAdmin()
  const ledgerMessages = new Counter({ name: 'flashgate_ledger_messages_total', help: 'IPC messages (batches of store calls) the primary\'s ledger answered, by worker.', labelNames: ['worker'], registers: ledger === null ? [] : [metrics.registry] })
  const ledgerCalls = new Counter({ name: 'flashgate_ledger_calls_total', help: 'Store calls the primary\'s ledger answered.', registers: ledger === null ? [] : [metrics.registry] })
  const slots: Array<Worker | null> = new Array<Worker | null>(workers).fill(null)
  const ready: boolean[] = new Array<boolean>(workers).fill(false)
  let stopping = false
  let nextId = 1
  const pending = new Map<number, { resolve: (v: unknown) => void, reject: (e: Error) => void }>()
  let firstUrl = ''
  let readyResolve: (() => void) | null = null
  let readyReject: ((e: Error) => void) | null = null
  const allReady = new Promise<void>((resolve, reject) => { readyResolve = resolve; readyReject = reject })

  function ask (w: Worker, msg: Omit<Extract<ToWorker, { id: number }>, 'id' | 'fg'>, timeoutMs = 10_000): Promise<unknown> {
    const id = nextId++
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { pending.delete(id); reject(new Error('worker did not answer')) }, timeoutMs)
      pending.set(id, {
        resolve: (v) => { clearTimeout(timer); resolve(v) },
        reject: (e) => { clearTimeout(timer); reject(e) }
      })
      w.send({ fg: true, id, ...msg })
    })
  }

  function fork (index: number): void {
    const w = cluster.fork({ FLASHGATE_WORKER_INDEX: String(index), FLASHGATE_WORKER_COUNT: String(workers), [LEDGER_ENV]: ledger === null ? '' : String(LEDGER_FD) })
    slots[index] = w
    ready[index] = false
    let unserve: (() => void) | null = null
    if (ledger !== null) {
      const messages = new CounterCell(ledgerMessages, { worker: String(index) })
      unserve = serveLedger(ledger, peerOf(w), { message: () => { messages.inc() }, calls: (n) => { ledgerCalls.inc(n) } })
    }
    w.on('message', (m: FromWorker) => {
      if (typeof m !== 'object' || m === null || m.fg !== true) return
      if (m.type === 'ready') {
        ready[index] = true
        if (firstUrl === '') firstUrl = m.url
        if (ready.every(Boolean) && readyResolve !== null) { readyResolve(); readyResolve = null }
      } else if (m.type === 'failed') {
        if (readyReject !== null && !ready.some(Boolean)) { readyReject(new Error(m.error)); readyReject = null }
      } else if (m.type === 'reply') {
        const p = pending.get(m.id)
        if (p === undefined) return
        pending.delete(m.id)
        if (m.ok) p.resolve(m.value)
        else p.reject(Object.assign(new Error(m.error), { code: m.code }))
      }
    })
    w.on('exit', (code, signal) => {
      unserve?.()
      ready[index] = false
      if (slots[index] === w) slots[index] = null
      if (stopping) return
      log('error', 'worker died; restarting', { index, code, signal })
      setTimeout(() => { if (!stopping) fork(index) }, 200).unref()
    })
  }

  const live = (): Worker[] => slots.filter((w, i): w is Worker => w !== null && ready[i] === true)

  async function reloadAll (): Promise<ReloadResult> {
    const r = loadConfigFile(configFile)
    if (!r.ok) {
      recordReload(metrics, false)
      log('warn', 'reload rejected', { errors: r.errors })
      return { ok: false, errors: r.errors }
    }
    const answers = await Promise.all(live().map(async (w) => await ask(w, { type: 'reload' }) as ReloadResult))
    const bad = answers.find((a) => !a.ok)
    if (bad !== undefined) return bad
    config = r.config
    // The workers count the reload; the primary's gauges follow (aggregated by max / min with theirs).
    metrics.configLastReload.set(Date.now() / 1000)
    metrics.configLastReloadOk.set(1)
    quotaAdmin = ledgerAdmin()
    return { ok: true }
  }

  async function quota (op: QuotaOp, campaign: string, product: string, q?: number): Promise<QuotaView | QuotaConflict | null> {
    // The ledger's own admin answers for the node (its set/reset/release publish reaches every worker's latch).
    if (quotaAdmin !== null) {
      switch (op) {
        case 'get': return await quotaAdmin.get(campaign, product)
        case 'reset': return await quotaAdmin.reset(campaign, product)
        case 'set': return await quotaAdmin.set(campaign, product, q ?? 0)
        case 'release': return await quotaAdmin.release(campaign, product, q ?? 0)
      }
    }
    const ws = live()
    if (ws.length === 0) throw Object.assign(new Error('no worker ready'), { code: 'FG_ERR_STORE_UNAVAILABLE' })
    // On a shared store one worker reads or gives back (a release done by every worker would count N
    // times); a quota change or reset goes to every worker, so each one's latch follows at once.
    const targets = op === 'get' || op === 'release' ? ws.slice(0, 1) : ws
    const msg = q === undefined ? { type: 'quota' as const, op, campaign, product } : { type: 'quota' as const, op, campaign, product, quota: q }
    const answers = await Promise.all(targets.map(async (w) => await ask(w, msg) as QuotaView | QuotaConflict | null))
    return answers[0] ?? null
  }

  /**
   * The primary's reading of every product's remaining units into its own gauge (from the ledger, or on
   * Redis through one worker). Returns the products read (`campaign\0product`); a product whose reading
   * failed keeps the workers' views (their minimum).
   */
  async function readRemaining (): Promise<Set<string>> {
    const read = new Set<string>()
    await Promise.all([...config.campaigns.values()].flatMap((c) => c.products.map(async (p) => {
      try {
        const v = await quota('get', c.id, p.id) as QuotaView | null
        if (v === null) return
        metrics.quotaRemaining.labels(c.id, p.id).set(v.remaining)
        read.add(`${c.id}\u0000${p.id}`)
      } catch {
        metrics.quotaRemaining.remove(c.id, p.id)
      }
    })))
    return read
  }

  async function aggregated (): Promise<{ contentType: string, body: string }> {
    const [jsons, read] = await Promise.all([
      Promise.all(live().map(async (w) => await ask(w, { type: 'metrics' }) as MetricsJson)),
      readRemaining()
    ])
    for (const json of jsons) {
      for (const m of json) {
        if (m.name === 'flashgate_quota_remaining') m.values = m.values.filter((v) => !read.has(`${String(v.labels.campaign)}\u0000${String(v.labels.product)}`))
      }
    }
    jsons.push(await metrics.registry.getMetricsAsJSON())
    for (const json of jsons) {
      for (const m of json) {
        const a = GAUGES[m.name]
        if (a !== undefined) (m as { aggregator: string }).aggregator = a
      }
    }
    const reg = AggregatorRegistry.aggregate(jsons)
    return { contentType: reg.contentType, body: await reg.metrics() }
  }

  for (let i = 0; i < workers; i++) fork(i)
  await allReady

  let adminUrl: string | null = null
  let admin: ReturnType<typeof createAdminServer> | null = null
  if (config.admin !== null) {
    admin = createAdminServer(config.admin.host, config.adminToken, {
      metrics: aggregated,
      ready: () => !stopping && ready.every(Boolean),
      reload: reloadAll,
      config: () => config,
      quota: () => quotaAdmin ?? ({
        get: async (c, p) => await quota('get', c, p) as QuotaView | null,
        set: async (c, p, q) => await quota('set', c, p, q),
        reset: async (c, p) => await quota('reset', c, p),
        release: async (c, p, units) => await quota('release', c, p, units)
      })
    }, log)
    const at = config.admin
    await new Promise<void>((resolve, reject) => {
      admin?.once('error', reject)
      admin?.listen(at.port, at.host, () => { resolve() })
    })
    const a = admin.address() as AddressInfo
    adminUrl = `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`
  }

  process.on('SIGHUP', () => {
    reloadAll().then((r) => { if (r.ok) log('info', 'config reloaded on every worker'); else log('warn', 'SIGHUP reload rejected', { errors: r.errors }) },
      (err: unknown) => { log('error', 'reload failed', { err }) })
  })
  installReopen(() => { for (const w of slots) if (w !== null && !w.isDead()) w.process.kill('SIGUSR1') })
  installShutdown(async () => {
    stopping = true
    const exits = slots.filter((w): w is Worker => w !== null).map(async (w) => await new Promise<void>((resolve) => {
      if (w.isDead()) { resolve(); return }
      w.once('exit', () => { resolve() })
      w.process.kill('SIGTERM')
    }))
    const grace = setTimeout(() => { for (const w of slots) w?.process.kill('SIGKILL') }, config.server.drainTimeoutMs + 5000)
    await Promise.all(exits)
    clearTimeout(grace)
    if (admin !== null) { admin.closeAllConnections(); await new Promise<void>((resolve) => admin?.close(() => { resolve() })) }
  }, log)
  log('info', 'listening', { url: firstUrl, admin: adminUrl, workers })
  return { url: firstUrl, adminUrl }
}
