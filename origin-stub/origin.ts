/**
 * The origin's composition root: store (memory, redis or redis-cluster, from `config.store`), metrics,
 * order worker, disk buffer of order notices and its sender (when `origin.buffer`), payment sweeper and
 * HTTP server, created here and handed down. Constructing does no
 * I/O; `start()` initialises the stock (only where absent), starts the worker and the sweeper, and
 * listens; `close()` stops all of it in reverse order.
 */
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { hostname } from 'node:os'
import { randomBytes } from 'node:crypto'
import type { Config, HostPort } from '../conf/types.js'
import { createMemoryOriginStore } from './memory-store.js'
import { createOriginMetrics, type OriginMetrics } from './metrics.js'
import { createRedisOriginStore } from './redis-store.js'
import { createOriginHandler } from './server.js'
import type { OriginStore, ProductRef } from './types.js'
import { startSweeper, startWorker, type Sweeper, type Worker } from './worker.js'
import { httpOrderWriter, type OrderWriter } from './dead-letter.js'
import { openNoticeBuffer, startSender, type NoticeBuffer, type Sender } from './buffer.js'
import { createRequeue } from './requeue.js'

export type LogFn = (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void

export interface OriginOptions {
  /** Use this store instead of building one from `config.store` (it is closed by `close()`). */
  readonly store?: OriginStore
  /** Overrides `config.origin.listen` (port 0 = any free port). */
  readonly listen?: HostPort
  readonly clock?: () => number
  /** Stream consumer name; default `<hostname>-<pid>-<random>`, unique per process start. */
  readonly consumer?: string
  /** Pending entries of a consumer idle this long are taken over (default 5 s). */
  readonly claimIdleMs?: number
  /** Idle poll of the queue (default 50 ms). */
  readonly pollMs?: number
  /** Sweeper period (default paymentTimeout / 10, between 20 ms and 1 s). */
  readonly sweepIntervalMs?: number
  /** Redis command timeout: a buy answers 503 at the latest after this (default 1000 ms). */
  readonly commandTimeoutMs?: number
  /** Register Node's default process metrics (default true; the demo, which shares a process with the gateway, turns it off). */
  readonly defaultMetrics?: boolean
  readonly log?: LogFn
  /**
   * Where units the origin released (cancelled unpaid orders) go, for an edge that does not share the
   * store (the in-process demo on memory, or `--release-to`: a remote gateway's `POST
   * /admin/quota/:c/:p/release`). When set, the store's edge counters are not touched (one release path,
   * never two). Unset: the release is written to the edge's counters on the shared store. A rejection is
   * logged; the units are not offered again (never an oversell).
   */
  readonly onRelease?: (ref: ProductRef, units: number) => Promise<void> | void
  /** The order system each order is handed to before it is created (origin-stub/dead-letter.ts). */
  readonly orderWriter?: OrderWriter
  /** Failures of one order before it goes to the dead-letter stream (default `origin.writer.attempts`, 5). */
  readonly maxOrderAttempts?: number
  /** Overrides `origin.buffer.path`: the directory of the disk buffer of order notices (origin-stub/buffer.ts). */
  readonly bufferDir?: string
  /** Overrides `origin.buffer.rate`: notices sent on per second. */
  readonly bufferRate?: number
  /** Overrides `origin.requeue_after` (tests use less than its 1 s minimum). */
  readonly requeueAfterMs?: number
}

export interface Origin {
  readonly store: OriginStore
  readonly metrics: OriginMetrics
  readonly products: readonly ProductRef[]
  /** Resolves with the bound address once listening. */
  start(): Promise<{ host: string, port: number, url: string }>
  /** Stop accepting, finish in-flight requests (up to `drainMs`), stop the worker and sweeper, close the store. Idempotent. */
  close(drainMs?: number): Promise<void>
  /** Orders created by this process's worker. */
  readonly created: number
  /** Notices in the disk buffer now (0 without one). */
  readonly buffered: number
  /** Buffered notices delivered by this process's sender (created, found created, or parked). */
  readonly drained: number
}

/** The products an origin sells, with their initial stock (the config's quota). */
export function productsOf (config: Config): Array<ProductRef & { stock: number, segments: number }> {
  const out: Array<ProductRef & { stock: number, segments: number }> = []
  for (const c of config.campaigns.values()) {
    for (const p of c.products) out.push({ campaign: c.id, product: p.id, stock: p.quota, segments: p.segments })
  }
  return out
}

function buildStore (config: Config, opts: OriginOptions): OriginStore {
  const s = config.store
  if (s.kind === 'memory') return createMemoryOriginStore(opts.clock !== undefined ? { clock: opts.clock } : {})
  let lastLog = 0
  return createRedisOriginStore({
    kind: s.kind,
    url: s.url,
    nodes: s.nodes,
    keyPrefix: s.keyPrefix,
    commandTimeoutMs: opts.commandTimeoutMs ?? 1000,
    ...(config.origin.queue !== undefined ? { queueUrl: config.origin.queue.url } : {}),
    onError: (err) => {
      // A dead Redis reports every reconnect attempt: log at most every 5 s.
      const now = Date.now()
      if (now - lastLog < 5000) return
      lastLog = now
      opts.log?.('warn', 'origin store connection error', { err: err.message })
    }
  })
}

export function createOrigin (config: Config, opts: OriginOptions = {}): Origin {
  const clock = opts.clock ?? Date.now
  const log: LogFn = opts.log ?? (() => {})
  const stock = productsOf(config)
  const products: ProductRef[] = stock.map(({ campaign, product }) => ({ campaign, product }))
  const segmentsOf = new Map(stock.map((s) => [`${s.campaign}\u0000${s.product}`, s.segments]))
  const store = opts.store ?? buildStore(config, opts)
  const metrics = createOriginMetrics({ store, products, defaultMetrics: opts.defaultMetrics ?? true })
  const consumer = opts.consumer ?? `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`
  const { orderRate, paymentTimeoutMs } = config.origin
  const listen = opts.listen ?? config.origin.listen
  const w = config.origin.writer
  const orderWriter = opts.orderWriter ?? (w?.url != null ? httpOrderWriter(w.url, w.timeoutMs) : undefined)
  const maxAttempts = opts.maxOrderAttempts ?? w?.attempts
  const backoff = w === undefined ? {} : { backoffMs: w.backoffMs, maxBackoffMs: w.maxBackoffMs }
  const bufferDir = opts.bufferDir ?? config.origin.buffer?.path
  const bufferRate = opts.bufferRate ?? config.origin.buffer?.rate ?? 50
  let buffer: NoticeBuffer | null = null
  let sender: Sender | null = null
  const requeue = createRequeue({
    store,
    afterMs: opts.requeueAfterMs ?? config.origin.requeueAfterMs,
    clock,
    buffer: () => buffer,
    onRequeued: (id, to) => {
      metrics.requeued.inc({ to })
      if (to === 'stream') worker?.wake()
      else sender?.wake()
      log('info', 'origin: a lost order notice was sent again', { order: id, to })
    },
    onUnsent: (id, err) => {
      metrics.requeued.inc({ to: 'none' })
      log('warn', 'origin: a lost order notice could not be sent again; looked at again later', { order: id, ...(err !== undefined ? { err: err instanceof Error ? err.message : String(err) } : {}) })
    }
  })

  let worker: Worker | null = null
  let sweeper: Sweeper | null = null
  let server: Server | null = null
  let closing: Promise<void> | null = null
  let lastErrLog = 0
  const onLoopError = (what: string) => (err: unknown): void => {
    const now = Date.now()
    if (now - lastErrLog < 5000) return
    lastErrLog = now
    log('warn', `origin ${what}: store error, retrying`, { err: err instanceof Error ? err.message : String(err) })
  }

  const handler = createOriginHandler({
    store,
    products,
    metrics,
    clock,
    onQueued: () => worker?.wake(),
    buffer: () => buffer,
    onBuffered: () => sender?.wake(),
    log
  })

  return {
    store,
    metrics,
    products,
    get created () { return worker?.created ?? 0 },
    get buffered () { return buffer?.pending ?? 0 },
    get drained () { return sender?.sent ?? 0 },

    async start () {
      await store.init(stock)
      if (bufferDir !== undefined) {
        const b = await openNoticeBuffer(bufferDir)
        buffer = b.buffer
        if (b.recovered > 0 || b.dropped > 0) log('info', 'origin: order notices recovered from the disk buffer', { dir: bufferDir, pending: b.recovered, dropped_torn: b.dropped })
        sender = startSender({
          buffer: b.buffer,
          store,
          rate: bufferRate,
          paymentTimeoutMs,
          clock,
          ...(orderWriter !== undefined ? { orderWriter } : {}),
          ...(maxAttempts !== undefined ? { maxAttempts } : {}),
          ...backoff,
          onSent: (_id, created) => { metrics.buffer.inc({ event: 'sent' }); if (created) metrics.orders.inc({ status: 'created' }) },
          onDeadLetter: (id, reason) => {
            metrics.buffer.inc({ event: 'dead_lettered' })
            metrics.orders.inc({ status: 'dead_lettered' })
            log('warn', 'origin: buffered order parked in the dead-letter stream', { order: id, reason })
          },
          onError: onLoopError('order buffer sender')
        })
      }
      worker = startWorker({
        store,
        products,
        consumer,
        orderRate,
        paymentTimeoutMs,
        clock,
        ...(opts.claimIdleMs !== undefined ? { claimIdleMs: opts.claimIdleMs } : {}),
        ...(opts.pollMs !== undefined ? { pollMs: opts.pollMs } : {}),
        onCreated: () => metrics.orders.inc({ status: 'created' }),
        ...(orderWriter !== undefined ? { orderWriter } : {}),
        ...(maxAttempts !== undefined ? { maxAttempts } : {}),
        ...backoff,
        onDeadLetter: (e, reason) => {
          metrics.orders.inc({ status: 'dead_lettered' })
          log('warn', 'origin: order parked in the dead-letter stream', { order: e.orderId, reason })
        },
        onError: onLoopError('order worker')
      })
      sweeper = startSweeper({
        store,
        products,
        clock,
        intervalMs: opts.sweepIntervalMs ?? Math.min(1000, Math.max(20, Math.floor(paymentTimeoutMs / 10))),
        onCancelled: (_p, n) => metrics.orders.inc({ status: 'cancelled' }, n),
        // The ledger with the edge: released units go back to the edge's quota (shared store: its
        // counters, and a message that clears every node's sold-out latch), then to the hook.
        onReleased: async (ref, n) => {
          let applied = 0
          try {
            if (opts.onRelease !== undefined) {
              await opts.onRelease(ref, n)
              applied = n
            } else {
              applied = await store.releaseToEdge(ref, n, segmentsOf.get(`${ref.campaign}\u0000${ref.product}`) ?? 1)
            }
          } catch (err) {
            log('warn', 'origin: release to the edge failed; the units stay admitted there', { campaign: ref.campaign, product: ref.product, units: n, err: err instanceof Error ? err.message : String(err) })
          }
          metrics.edgeReleased.inc({ campaign: ref.campaign, product: ref.product }, applied)
        },
        beforeSweep: async (ref) => {
          const d = await store.followQuota(ref)
          if (d === null) log('warn', "origin: cannot follow the edge's quota (fewer units for sale than it takes away)", { campaign: ref.campaign, product: ref.product })
          else if (d !== 0) log('info', "origin: stock follows the edge's quota", { campaign: ref.campaign, product: ref.product, change: d })
        },
        // Its failure (the queue's Redis down: the streams cannot be read) must not stop the payment
        // sweep of the other products: reported, and tried again with the next sweep.
        afterSweep: async (ref) => { await requeue(ref).catch(onLoopError('lost notice requeue')) },
        onError: onLoopError('payment sweeper')
      })
      // At start too: the orders a crashed process left without a notice need not wait for the first tick.
      sweeper.sweepNow().catch(onLoopError('payment sweeper'))
      const srv = createServer({ keepAliveTimeout: 5000, headersTimeout: 10_000, requestTimeout: 30_000 }, handler)
      server = srv
      await new Promise<void>((resolve, reject) => {
        srv.once('error', reject)
        srv.listen(listen.port, listen.host, () => {
          srv.off('error', reject)
          resolve()
        })
      })
      const addr = srv.address() as AddressInfo
      const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address
      log('info', 'origin listening', { url: `http://${host}:${addr.port}`, store: store.kind, consumer })
      return { host: addr.address, port: addr.port, url: `http://${host}:${addr.port}` }
    },

    async close (drainMs = 5000) {
      closing ??= (async () => {
        const srv = server
        if (srv !== null) {
          const closed = new Promise<void>((resolve) => srv.close(() => resolve()))
          srv.closeIdleConnections()
          const timer = setTimeout(() => srv.closeAllConnections(), drainMs)
          await closed
          clearTimeout(timer)
        }
        await worker?.stop()
        await sender?.stop()
        await buffer?.close()
        await sweeper?.stop()
        await store.close()
      })()
      await closing
    }
  }
}
