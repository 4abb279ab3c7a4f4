/**
 * Bench scenario `faults` (issue 17): a sale run through four failures, each phase bounded (≈ 12 s,
 * ≤ 60 s in all), reporting for each: oversold (admitted − quota when positive; must be 0), lost (buyers
 * with no final answer at the end of the phase, or orders neither created nor parked; must be 0), the
 * time each buyer waited for a final answer (admitted or SOLD_OUT; a 503 is retried after 100 ms), and
 * admissions per second during the outage.
 *
 * 1. `redis-kill`: a redis-server with an AOF (appendfsync always) is SIGKILLed 3 s into the sale and
 *    restarted 2 s later; the quota answers 503 meanwhile (fail_closed). `redis-kill-journal`
 *    (bench/faults-journal.ts) runs the same kill with `store.on_error: journal` through a real HTTP
 *    gateway (`flashgate serve`): buys answered 202 PENDING meanwhile, replayed after the restart.
 * 2. `sentinel-failover`: a primary, two replicas and three redis-sentinel processes; 3 s in, the
 *    replicas' links are paused and 200 ms later the primary is SIGKILLed; the store runs with
 *    `wait: { replicas: 1 }`.
 * 3. `order-worker`: an origin whose order system (a real HTTP server) answers 503 for 3 s: its orders
 *    are retried, parked in the dead-letter stream and re-driven; `sale + locked + sold == stock` is
 *    checked every 100 ms.
 * 4. `order-stream`: an origin whose order stream is on a redis-server of its own (`origin.queue`),
 *    SIGKILLed 1 s into the sale and restarted 3 s later: the buys go on (the stock step on the store's
 *    Redis), their notices go to the disk buffer and are sent on by direct call at `origin.buffer.rate`;
 *    reports the notices buffered, drained and lost (202 answers whose order is not CREATED at the end:
 *    must be 0), and the invariant sampled every 100 ms.
 *
 * What it is not: the quota runs in the bench process on a real RedisStore (the guard and store a
 * gateway runs, without its HTTP layer), and the buyers are promise loops in the same process. The
 * machine is shared: the figures are noisy; oversold and lost are exact.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { StoreConfig } from '../conf/types.js'
import { loadConfigText } from '../conf/load.js'
import { quotaGuard } from '../gateway/guards/quota.js'
import { createMetrics } from '../gateway/metrics.js'
import type { Rejection } from '../gateway/pipeline/types.js'
import { createStore } from '../limiter/index.js'
import type { Store } from '../limiter/store.js'
import { httpOrderWriter } from '../origin-stub/dead-letter.js'
import { createOrigin } from '../origin-stub/origin.js'
import { startBenchRedis as startRedis } from './redis-server.js'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startSentinelSetup } from './procs/sentinel.js'
import { campaign, config, ctx, deps, qg, route } from './guard-kit.js'
import { redisKillJournal } from './faults-journal.js'

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

export interface PhaseResult {
  readonly phase: string
  readonly quota: number
  readonly buyers: number
  readonly admitted: number
  readonly oversold: number
  readonly lost: number
  readonly waitMs: { readonly p50: number, readonly p99: number, readonly max: number }
  readonly outageMs: number
  /** Admissions per second during the outage (and before it, for comparison). */
  readonly admittedPerSecOutage: number
  readonly admittedPerSecBefore: number
  readonly answers503: number
  /** ms from the fault to the first admission after it (-1: none). */
  readonly recoveryMs: number
  readonly notes: string
  /** The order-stream phase: notices the disk buffer took, delivered by direct call, and lost (must be 0). */
  readonly notices?: { readonly buffered: number, readonly drained: number, readonly lost: number }
}

const pct = (xs: number[], p: number): number => {
  if (xs.length === 0) return 0
  const s = [...xs].sort((a, b) => a - b)
  return Math.round(s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] as number)
}

/**
 * Buyers arrive at `rate`/s for `seconds`; each retries a 503 every 100 ms until admitted or SOLD_OUT
 * (at most `seconds + 5` s). `fault(at)` runs beside, `at` = ms since the start.
 */
async function crowd (name: string, store: Store, scfg: StoreConfig, quota: number, rate: number, seconds: number, fault: (mark: (what: 'down' | 'up') => void) => Promise<void>): Promise<PhaseResult> {
  const metrics = createMetrics({ defaultMetrics: false })
  const cfg = config(scfg, [campaign('c1', [['p1', quota]])])
  const g = quotaGuard(qg({ latchTtlMs: 100 }), route(), deps(store, { config: cfg, metrics }))
  const params = { params: { campaign: 'c1', product: 'p1' } }
  const t0 = Date.now()
  const admittedAt: number[] = []
  const waits: number[] = []
  let answers503 = 0
  let finals = 0
  let downAt = -1
  let upAt = -1
  const buyer = async (i: number): Promise<void> => {
    const start = Date.now()
    const giveUp = t0 + (seconds + 5) * 1000
    while (Date.now() < giveUp) {
      const v = await g.check(ctx(Date.now(), { ...params, user: `${name}-${i}` }))
      if (v === undefined) { admittedAt.push(Date.now() - t0); break }
      if ((v as Rejection).code === 'SOLD_OUT') break
      answers503++
      await sleep(100)
    }
    if (Date.now() < giveUp) { finals++; waits.push(Date.now() - start) }
  }
  const all: Array<Promise<void>> = []
  const faultDone = fault((what) => { if (what === 'down') downAt = Date.now() - t0; else upAt = Date.now() - t0 })
  let n = 0
  while (Date.now() - t0 < seconds * 1000) {
    const due = Math.floor(((Date.now() - t0) / 1000) * rate)
    for (; n < due; n++) all.push(buyer(n))
    await sleep(10)
  }
  await Promise.all(all)
  await faultDone
  const down = downAt >= 0 ? downAt : 0
  const up = upAt >= 0 ? upAt : down
  const during = admittedAt.filter((a) => a >= down && a < up).length
  const before = admittedAt.filter((a) => a < down).length
  const after = admittedAt.filter((a) => a >= down).sort((a, b) => a - b)
  return {
    phase: name,
    quota,
    buyers: n,
    admitted: admittedAt.length,
    oversold: Math.max(0, admittedAt.length - quota),
    lost: n - finals,
    waitMs: { p50: pct(waits, 50), p99: pct(waits, 99), max: pct(waits, 100) },
    outageMs: up - down,
    admittedPerSecOutage: up > down ? Math.round(during / ((up - down) / 1000)) : 0,
    admittedPerSecBefore: down > 0 ? Math.round(before / (down / 1000)) : 0,
    answers503,
    recoveryMs: after[0] !== undefined ? after[0] - down : -1,
    notes: ''
  }
}

const BASE: StoreConfig = { kind: 'redis', url: null, nodes: [], onError: 'fail_closed', timeoutMs: 300, keyPrefix: 'fg:', breakerFailures: 3, breakerBackoffMs: 200, maxKeys: 10_000 }

async function redisKill (log: (l: string) => void): Promise<PhaseResult> {
  const r = await startRedis({ args: ['--appendonly', 'yes', '--appendfsync', 'always'] })
  const scfg: StoreConfig = { ...BASE, url: r.url }
  const store = createStore(scfg, { metrics: createMetrics({ defaultMetrics: false }), clock: Date.now })
  try {
    await store.ready?.(5000)
    return { ...await crowd('redis-kill', store, scfg, 400, 60, 10, async (mark) => {
      await sleep(3000)
      log('faults: SIGKILL redis-server')
      r.kill(); mark('down')
      await sleep(2000)
      await r.restart(); mark('up')
      log('faults: redis-server restarted (AOF kept the counters)')
    }), notes: 'fail_closed; AOF appendfsync always; outage = kill → restart answered PING' }
  } finally {
    await store.close()
    await r.stop()
  }
}

async function sentinelFailover (log: (l: string) => void): Promise<PhaseResult> {
  const s = await startSentinelSetup()
  const scfg: StoreConfig = { ...BASE, sentinels: s.sentinels, sentinelName: s.name, wait: { replicas: 1, timeoutMs: 100 } }
  const store = createStore(scfg, { metrics: createMetrics({ defaultMetrics: false }), clock: Date.now })
  try {
    await store.ready?.(10_000)
    return { ...await crowd('sentinel-failover', store, scfg, 400, 60, 12, async (mark) => {
      await sleep(3000)
      s.link.pause()
      await sleep(200)
      log('faults: replicas lag; SIGKILL the primary')
      s.primary.kill(); s.link.cut(); mark('down')
      const t = Date.now()
      while (Date.now() - t < 15_000 && await s.masterPort() === s.primary.port) await sleep(100)
      mark('up')
      log(`faults: Sentinel promoted 127.0.0.1:${await s.masterPort()}`)
    }), notes: 'store.wait { replicas: 1, timeout: 100ms }; replicas\' links paused 200 ms before the kill; outage = kill → Sentinel names the new primary' }
  } finally {
    await store.close()
    await s.stop()
  }
}

async function orderWorker (log: (l: string) => void): Promise<PhaseResult> {
  let status = 503
  const srv = createServer((req: IncomingMessage, res: ServerResponse) => { req.resume(); req.on('end', () => { res.writeHead(status); res.end() }) })
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve))
  const yaml = 'store: { kind: memory }\ncampaigns:\n  - { id: c1, starts_at: 2020-01-01T00:00:00Z, ends_at: 2099-01-01T00:00:00Z, products: [{ id: p1, quota: 300 }] }\norigin: { listen: 127.0.0.1:0, order_rate: 500/s, payment_timeout: 60s }\n'
  const loaded = loadConfigText(yaml, 'faults-origin.yaml', {})
  if (!loaded.ok) throw new Error(loaded.errors.join('\n'))
  const origin = createOrigin(loaded.config, { orderWriter: httpOrderWriter(`http://127.0.0.1:${(srv.address() as AddressInfo).port}/`, 1000), maxOrderAttempts: 3, pollMs: 10, defaultMetrics: false })
  const ref = { campaign: 'c1', product: 'p1' }
  const t0 = Date.now()
  let violations = 0
  let connErrors = 0
  let unanswered = 0
  let checks = 0
  const waits: number[] = []
  try {
    const { url } = await origin.start()
    const watch = setInterval(() => {
      void origin.store.stock(ref).then((s) => { checks++; if (s === null || s.sale + s.locked + s.sold !== s.stock) violations++ })
    }, 100)
    let queued = 0
    const buys: Array<Promise<void>> = []
    const downAt = 1000
    const upAt = 4000
    let n = 0
    while (Date.now() - t0 < 6000) {
      const due = Math.floor(((Date.now() - t0) / 1000) * 80)
      for (; n < due; n++) {
        const i = n
        buys.push((async () => {
          const s0 = Date.now()
          // A buyer retries a failed connection (3 tries; the same user: a retry is a DUPLICATE at worst).
          for (let k = 0; k < 3; k++) {
            try {
              const res = await fetch(`${url}/buy/c1/p1`, { method: 'POST', headers: { 'x-user-id': `ow-${i}` } })
              await res.arrayBuffer()
              if (res.status === 202) queued++
              if (res.status === 202 || res.status === 409) { waits.push(Date.now() - s0); return }
            } catch { connErrors++ }
            await sleep(100)
          }
          unanswered++
        })())
      }
      const el = Date.now() - t0
      if (el >= downAt && el < upAt && status !== 503) status = 503
      if (el >= upAt && status !== 200) { status = 200; log('faults: order system back; re-drive the dead letters') }
      await sleep(10)
    }
    if (status !== 200) status = 200
    await Promise.all(buys)
    await sleep(1000)
    const parked = await origin.store.deadLetterCount(ref)
    const redriven = await origin.store.redrive(ref, 10_000)
    const until = Date.now() + 8000
    while (Date.now() < until && origin.created < queued) await sleep(50)
    clearInterval(watch)
    const st = await origin.store.stock(ref)
    const lost = queued - origin.created - await origin.store.deadLetterCount(ref) + unanswered
    return {
      phase: 'order-worker', quota: 300, buyers: n, admitted: queued, oversold: Math.max(0, (st?.locked ?? 0) + (st?.sold ?? 0) - 300), lost,
      waitMs: { p50: pct(waits, 50), p99: pct(waits, 99), max: pct(waits, 100) }, outageMs: upAt - downAt,
      admittedPerSecOutage: 0, admittedPerSecBefore: 0, answers503: 0, recoveryMs: -1,
      notes: `order system 503 for 3 s (down from t=0 until 4 s: the first orders too); ${parked} parked, ${redriven} re-driven, ${origin.created} orders created of ${queued} buys; invariant checked ${checks} times, ${violations} violations; ${connErrors} buy connections failed and were retried, ${unanswered} buyers never answered; waits are the buy's answer (202), not the order's creation`
    }
  } finally {
    await origin.close(500)
    srv.closeAllConnections()
    await new Promise<void>((resolve) => srv.close(() => resolve()))
  }
}

async function orderStream (log: (l: string) => void): Promise<PhaseResult> {
  const QUOTA = 300
  const store = await startRedis({ args: ['--appendonly', 'yes', '--appendfsync', 'always'] })
  const queue = await startRedis({ args: ['--appendonly', 'yes', '--appendfsync', 'always'] })
  const dir = mkdtempSync(join(tmpdir(), 'fg-faults-buffer-'))
  const srv = createServer((req: IncomingMessage, res: ServerResponse) => { req.resume(); req.on('end', () => { res.writeHead(200); res.end() }) })
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve))
  const yaml = `store: { kind: redis, url: "${store.url}", key_prefix: "faults:" }
campaigns:
  - { id: c1, starts_at: 2020-01-01T00:00:00Z, ends_at: 2099-01-01T00:00:00Z, products: [{ id: p1, quota: ${QUOTA} }] }
origin:
  listen: 127.0.0.1:0
  order_rate: 500/s
  payment_timeout: 10m
  queue: { url: "${queue.url}" }
  buffer: { path: ${JSON.stringify(dir)}, rate: 100/s }
  writer: { url: "http://127.0.0.1:${(srv.address() as AddressInfo).port}/", attempts: 3, backoff: 50ms, max_backoff: 500ms, timeout: 1s }
`
  const loaded = loadConfigText(yaml, join(dir, 'faults-origin.yaml'), {})
  if (!loaded.ok) throw new Error(loaded.errors.join('\n'))
  const origin = createOrigin(loaded.config, { pollMs: 10, commandTimeoutMs: 300, defaultMetrics: false })
  const ref = { campaign: 'c1', product: 'p1' }
  const t0 = Date.now()
  const downAt = 1000
  const upAt = 4000
  let violations = 0
  let checks = 0
  let unanswered = 0
  const waits: number[] = []
  const orders: string[] = []
  try {
    const { url } = await origin.start()
    const watch = setInterval(() => {
      void origin.store.stock(ref).then((s) => { checks++; if (s === null || s.sale + s.locked + s.sold !== s.stock) violations++ }, () => {})
    }, 100)
    const buys: Array<Promise<void>> = []
    let n = 0
    let down = false
    let up = false
    while (Date.now() - t0 < 6000) {
      const el = Date.now() - t0
      if (el >= downAt && !down) { down = true; queue.kill(); log('faults: SIGKILL the order stream\'s redis-server') }
      if (el >= upAt && !up) { up = true; await queue.restart(); log('faults: the order stream\'s redis-server restarted') }
      const due = Math.floor((el / 1000) * 80)
      for (; n < due; n++) {
        const i = n
        buys.push((async () => {
          const s0 = Date.now()
          for (let k = 0; k < 3; k++) {
            try {
              const res = await fetch(`${url}/buy/c1/p1`, { method: 'POST', headers: { 'x-user-id': `os-${i}` } })
              const body = await res.json() as { order_id?: string }
              if (res.status === 202 && typeof body.order_id === 'string') orders.push(body.order_id)
              if (res.status === 202 || res.status === 409) { waits.push(Date.now() - s0); return }
            } catch {}
            await sleep(100)
          }
          unanswered++
        })())
      }
      await sleep(10)
    }
    if (!up) await queue.restart()
    await Promise.all(buys)
    const m0 = await origin.metrics.registry.metrics()
    const buffered = counter(m0, 'buffered')
    const until = Date.now() + 15_000
    while (Date.now() < until && origin.buffered > 0) await sleep(50)
    await sleep(500)
    clearInterval(watch)
    const statuses = await Promise.all(orders.map(async (id) => (await origin.store.order(id))?.status))
    const lost = statuses.filter((s) => s !== 'CREATED').length + unanswered
    const st = await origin.store.stock(ref)
    const drained = counter(await origin.metrics.registry.metrics(), 'sent')
    return {
      phase: 'order-stream', quota: QUOTA, buyers: n, admitted: orders.length, oversold: Math.max(0, (st?.locked ?? 0) + (st?.sold ?? 0) - QUOTA), lost,
      waitMs: { p50: pct(waits, 50), p99: pct(waits, 99), max: pct(waits, 100) }, outageMs: upAt - downAt,
      admittedPerSecOutage: 0, admittedPerSecBefore: 0, answers503: 0, recoveryMs: -1,
      notices: { buffered, drained, lost },
      notes: `order stream's redis-server SIGKILLed at 1 s, restarted at 4 s; ${orders.length} buys answered 202, ${buffered} notices buffered on disk, ${drained} drained by direct call (buffer rate 100/s), ${lost} lost; ${origin.created} orders created by the worker from the stream; invariant checked ${checks} times, ${violations} violations; ${unanswered} buyers never answered; waits are the buy's answer (202), not the order's creation`
    }
  } finally {
    await origin.close(500)
    srv.closeAllConnections()
    await new Promise<void>((resolve) => srv.close(() => resolve()))
    await queue.stop()
    await store.stop()
    rmSync(dir, { recursive: true, force: true })
  }
}

/** flashgate_origin_buffer_notices_total{event} from a Prometheus text. */
function counter (text: string, event: string): number {
  const m = new RegExp(`^flashgate_origin_buffer_notices_total\\{event="${event}"\\} (\\S+)$`, 'm').exec(text)
  return m === null ? 0 : Number(m[1])
}

/** The origin phases alone (order system down, order stream down). */
export async function runOriginFaults (log: (l: string) => void): Promise<PhaseResult[]> {
  log('faults: the order system fails')
  const a = await orderWorker(log)
  log('faults: the order stream cannot be written')
  return [a, await orderStream(log)]
}

export async function runFaults (log: (l: string) => void): Promise<PhaseResult[]> {
  const out: PhaseResult[] = []
  log('faults: phase 1/4 redis-server killed and restarted')
  out.push(await redisKill(log))
  log('faults: phase 1b/4 redis-server killed and restarted, store.on_error: journal, through an HTTP gateway')
  out.push(await redisKillJournal(log))
  log('faults: phase 2/4 Sentinel failover with store.wait')
  out.push(await sentinelFailover(log))
  log('faults: phase 3/4 the order system fails')
  out.push(await orderWorker(log))
  log('faults: phase 4/4 the order stream cannot be written')
  out.push(await orderStream(log))
  return out
}

export function faultsTable (rs: readonly PhaseResult[]): string {
  return ['| phase | quota | buyers | admitted | oversold | lost | wait p50 / p99 / max ms | outage ms | admitted/s before → during outage | 503s | first admission after the fault ms |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...rs.map((r) => `| ${r.phase} | ${r.quota} | ${r.buyers} | ${r.admitted} | ${r.oversold} | ${r.lost} | ${r.waitMs.p50} / ${r.waitMs.p99} / ${r.waitMs.max} | ${r.outageMs} | ${r.admittedPerSecBefore} → ${r.admittedPerSecOutage} | ${r.answers503} | ${r.recoveryMs} |`),
    '', ...rs.map((r) => `- ${r.phase}: ${r.notes}`)].join('\n')
}
