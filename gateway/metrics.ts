/**
 * Every metric of the contract, on a Registry of our own (never prom-client's global one), created once
 * in the composition root and handed down. Label values are bounded: route, upstream, target, campaign,
 * product and op names come from the config, outcome from the fixed set of reject codes.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client'
import { defaultMetrics } from '../conf/default-metrics.js'
import type { StoreMetrics } from '../limiter/store.js'
import { VERSION } from './version.js'

export interface Metrics extends StoreMetrics {
  readonly registry: Registry
  readonly requests: Counter<'route' | 'outcome'>
  readonly requestDuration: Histogram<'route' | 'outcome'>
  /** Would-be rejections of guards in shadow mode. */
  readonly shadowRejections: Counter<'route' | 'guard' | 'code'>
  readonly upstreamRequests: Counter<'upstream' | 'target' | 'status'>
  readonly upstreamUp: Gauge<'upstream' | 'target'>
  readonly upstreamRetries: Counter<'upstream'>
  readonly quotaAdmitted: Counter<'campaign' | 'product'>
  readonly quotaRemaining: Gauge<'campaign' | 'product'>
  /** Units given back because the request was not admitted after all (later reject, upstream failure). */
  readonly quotaReleased: Counter<'campaign' | 'product'>
  readonly quotaInDoubt: Counter<'campaign' | 'product'>
  /** Units this process holds leased for `quota: { on_error: local }` (with workers: summed). */
  readonly quotaLeased: Gauge<'campaign' | 'product'>
  readonly storeErrors: Counter<'op'>
  readonly storeDuration: Histogram<'op'>
  /** Decisions taken by a failure policy while the store was unusable: policy=fail_open|fail_closed|local. */
  readonly storeFallbacks: Counter<'guard' | 'policy'>
  readonly storeBreakerOpen: Gauge
  readonly captchaVerifications: Counter<'provider' | 'result'>
  readonly configReloads: Counter<'result'>
  readonly connections: Gauge
  /** Time to the upstream's response head (or to the failure of an attempt that got none), per attempt. */
  readonly upstreamDuration: Histogram<'upstream' | 'target'>
  /** Rejections by the guard that made them; guard = `<index>:<kind>` of the route's guard list. */
  readonly guardRejections: Counter<'route' | 'guard' | 'code'>
  /** Always 1; the labels say what runs. */
  readonly buildInfo: Gauge<'version' | 'node'>
  /** When the config was last loaded or a reload was last tried (start counts as a load). */
  readonly configLastReload: Gauge
  /** 1 when the last load or reload attempt succeeded, else 0. */
  readonly configLastReloadOk: Gauge
  /** Waiting room: users by state (waiting, admitted, expired), as last synced by this node. */
  readonly waitingRoomUsers: Gauge<'campaign' | 'state'>
  /** Waiting room: users admitted per second over the last seconds (the whole room, all nodes). */
  readonly waitingRoomAdmitRate: Gauge<'campaign'>
  /** Waiting room: estimated wait of the last user in line, seconds. */
  readonly waitingRoomWait: Gauge<'campaign'>
}

/** Record the outcome of a config load or reload attempt (counter, timestamp and success gauges). */
export function recordReload (m: Metrics, ok: boolean, nowMs: number = Date.now()): void {
  m.configReloads.inc({ result: ok ? 'success' : 'failure' })
  m.configLastReload.set(nowMs / 1000)
  m.configLastReloadOk.set(ok ? 1 : 0)
}

/** Buckets of `flashgate_upstream_duration_seconds` (for {@link HistogramCell}). */
export const UPSTREAM_DURATION_BUCKETS: readonly number[] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

/** Gauges that add up over workers (each counts its own part); every other flashgate gauge names its aggregator. */
export const SUMMED_GAUGES: readonly string[] = ['flashgate_connections', 'flashgate_quota_leased']

/** Buckets of `flashgate_store_duration_seconds` (for {@link HistogramCell}). */
export const STORE_DURATION_BUCKETS: readonly number[] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1]

/** Buckets of `flashgate_request_duration_seconds` (for {@link HistogramCell}). */
export const REQUEST_DURATION_BUCKETS: readonly number[] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

export function createMetrics (opts: { defaultMetrics?: boolean, prefix?: string } = {}): Metrics {
  const registry = new Registry()
  if (opts.defaultMetrics !== false) defaultMetrics(registry)
  const r = [registry]
  // `aggregator`: how the cluster primary merges a metric over its workers (gateway/cluster.ts, prom-client's
  // AggregatorRegistry). Counters and histograms add up (the default, 'sum'); a gauge says what it means.
  const buildInfo = new Gauge({ name: 'flashgate_build_info', help: 'Always 1: the flashgate version and the Node version running it.', labelNames: ['version', 'node'], aggregator: 'first', registers: r })
  buildInfo.set({ version: VERSION, node: process.versions.node }, 1)
  const configLastReload = new Gauge({ name: 'flashgate_config_last_reload_timestamp_seconds', help: 'Unix time of the last config load or reload attempt (start counts as a load).', aggregator: 'max', registers: r })
  const configReloads = new Counter({ name: 'flashgate_config_reloads_total', help: 'Config reloads by result (success or failure).', labelNames: ['result'], registers: r })
  for (const result of ['success', 'failure']) configReloads.inc({ result }, 0)
  const configLastReloadOk = new Gauge({ name: 'flashgate_config_last_reload_successful', help: '1 when the last config load or reload attempt succeeded, else 0 (the old config keeps serving).', aggregator: 'min', registers: r })
  const storeBreakerOpen = new Gauge({ name: 'flashgate_store_breaker_open', help: '1 while the store circuit breaker is open (with workers: in any worker).', aggregator: 'max', registers: r })
  const storeErrors = new Counter({ name: 'flashgate_store_errors_total', help: 'Store operations that failed or timed out.', labelNames: ['op'], registers: r })
  const storeDuration = new Histogram({
    name: 'flashgate_store_duration_seconds',
    help: 'Store operation latency.',
    labelNames: ['op'],
    buckets: [...STORE_DURATION_BUCKETS],
    registers: r
  })
  return {
    storeOpErrors: (op) => storeErrors.labels(op),
    storeOpDuration: (op) => new HistogramCell(storeDuration, { op }, STORE_DURATION_BUCKETS),
    storeBreakerChanged: (open) => { storeBreakerOpen.set(open ? 1 : 0) },
    registry,
    requests: new Counter({ name: 'flashgate_requests_total', help: 'Requests by route and outcome (passed or a reject code).', labelNames: ['route', 'outcome'], registers: r }),
    requestDuration: new Histogram({
      name: 'flashgate_request_duration_seconds',
      help: 'Time from request arrival to the end of the answer.',
      labelNames: ['route', 'outcome'],
      buckets: [...REQUEST_DURATION_BUCKETS],
      registers: r
    }),
    shadowRejections: new Counter({ name: 'flashgate_shadow_rejections_total', help: 'Rejections a guard in shadow mode would have made.', labelNames: ['route', 'guard', 'code'], registers: r }),
    upstreamRequests: new Counter({ name: 'flashgate_upstream_requests_total', help: 'Upstream attempts by target and status (or error code).', labelNames: ['upstream', 'target', 'status'], registers: r }),
    upstreamUp: new Gauge({ name: 'flashgate_upstream_up', help: '1 while a target is considered up by passive health checks (with workers: by every worker).', labelNames: ['upstream', 'target'], aggregator: 'min', registers: r }),
    upstreamRetries: new Counter({ name: 'flashgate_upstream_retries_total', help: 'Attempts retried on another target.', labelNames: ['upstream'], registers: r }),
    quotaAdmitted: new Counter({ name: 'flashgate_quota_admitted_total', help: 'Requests admitted by the per-product quota.', labelNames: ['campaign', 'product'], registers: r }),
    quotaRemaining: new Gauge({ name: 'flashgate_quota_remaining', help: 'Quota left per product, as last seen by this node.', labelNames: ['campaign', 'product'], aggregator: 'min', registers: r }),
    quotaReleased: new Counter({ name: 'flashgate_quota_released_total', help: 'Quota units given back because the request was not admitted downstream.', labelNames: ['campaign', 'product'], registers: r }),
    quotaInDoubt: new Counter({ name: 'flashgate_quota_in_doubt_total', help: 'Quota units kept for buys that reached the upstream and got no complete answer (it may have taken them): unsold unless it did; give back with the admin release.', labelNames: ['campaign', 'product'], registers: r }),
    quotaLeased: new Gauge({ name: 'flashgate_quota_leased', help: 'Quota units reserved in the store by this node for on_error: local and not used yet (counted as admitted there).', labelNames: ['campaign', 'product'], aggregator: 'sum', registers: r }),
    storeErrors,
    storeDuration,
    storeFallbacks: new Counter({ name: 'flashgate_store_fallbacks_total', help: 'Decisions made by a failure policy while the store was unusable.', labelNames: ['guard', 'policy'], registers: r }),
    storeBreakerOpen,
    captchaVerifications: new Counter({ name: 'flashgate_captcha_verifications_total', help: 'Captcha checks by provider and result.', labelNames: ['provider', 'result'], registers: r }),
    configReloads,
    connections: new Gauge({ name: 'flashgate_connections', help: 'Open client connections.', aggregator: 'sum', registers: r }),
    upstreamDuration: new Histogram({
      name: 'flashgate_upstream_duration_seconds',
      help: 'Per upstream attempt: time from dispatch to the response head, or to the failure of an attempt that got none.',
      labelNames: ['upstream', 'target'],
      buckets: [...UPSTREAM_DURATION_BUCKETS],
      registers: r
    }),
    guardRejections: new Counter({ name: 'flashgate_guard_rejections_total', help: 'Rejections by route, guard (<index>:<kind> in the route\'s guard list) and code.', labelNames: ['route', 'guard', 'code'], registers: r }),
    buildInfo,
    configLastReload,
    configLastReloadOk,
    waitingRoomUsers: new Gauge({ name: 'flashgate_waiting_room_users', help: 'Waiting room users by state: waiting (in line, not reached), admitted (cumulative), expired (positions skipped for not polling, cumulative).', labelNames: ['campaign', 'state'], aggregator: 'max', registers: r }),
    waitingRoomAdmitRate: new Gauge({ name: 'flashgate_waiting_room_admitted_per_second', help: 'Waiting room admissions per second (whole room), over the last 5 s.', labelNames: ['campaign'], aggregator: 'max', registers: r }),
    waitingRoomWait: new Gauge({ name: 'flashgate_waiting_room_wait_seconds', help: 'Estimated wait of the last user in line.', labelNames: ['campaign'], aggregator: 'max', registers: r })
  }
}

/** What a series entry looks like inside prom-client 15's Counter / Histogram (`hashMap` values). */
interface CounterEntry { labels: Record<string, string | number>, value: number }
interface HistogramEntry { labels: Record<string, string | number>, bucketValues: Record<string, number>, sum: number, count: number }
interface WithHashMap<E> { hashMap: Record<string, E | undefined> }

function sameLabels (a: Record<string, string | number>, b: Readonly<Record<string, string>>): boolean {
  let n = 0
  for (const k in a) {
    if (String(a[k]) !== b[k]) return false
    n++
  }
  return n === Object.keys(b).length
}

/** Find the entry of `labels` in a metric's hashMap: its key and value, or null (not created yet). */
function findEntry<E extends { labels: Record<string, string | number> }> (map: Record<string, E | undefined>, labels: Readonly<Record<string, string>>): [string, E] | null {
  for (const key in map) {
    const e = map[key]
    if (e !== undefined && sameLabels(e.labels, labels)) return [key, e]
  }
  return null
}

/**
 * The series entry of `labels` in a counter or gauge, bound once and re-checked on every use
 * (`hashMap[key] === entry`, one property read): after a `reset()` or `remove()` the subclass falls back
 * to prom-client's own method and re-binds, so the exposition is exactly prom-client's.
 */
abstract class ValueCell {
  private key = ''
  private entry: CounterEntry | null = null

  constructor (protected readonly metric: Counter<string> | Gauge<string>, protected readonly labels: Readonly<Record<string, string>>) {}

  /** The bound entry while it is still the metric's, else null. */
  protected current (): CounterEntry | null {
    const e = this.entry
    return e !== null && (this.metric as unknown as WithHashMap<CounterEntry>).hashMap[this.key] === e ? e : null
  }

  /** Find the entry again (after prom-client created or replaced it). */
  protected bind (): void {
    const map = (this.metric as unknown as Partial<WithHashMap<CounterEntry>>).hashMap
    const found = map === undefined ? null : findEntry(map, this.labels)
    if (found === null || typeof found[1].value !== 'number') {
      this.entry = null
      return
    }
    this.key = found[0]
    this.entry = found[1]
  }
}

/**
 * One counter series resolved once (per route × outcome, per upstream target × status...), for the
 * request path. Performance: prom-client's `inc(labels)` — and a `labels()` child, which only rebinds
 * it — builds the series' hash string and validates the labels on every call (≈0.6 µs here, two or three
 * times per request). A cell adds to the series' entry directly after the first `inc`.
 */
export class CounterCell extends ValueCell {
  constructor (counter: Counter<string>, labels: Readonly<Record<string, string>>) {
    super(counter, labels)
  }

  inc (): void {
    const e = this.current()
    if (e !== null) {
      e.value += 1
      return
    }
    ;(this.metric as Counter<string>).inc(this.labels)
    this.bind()
  }
}

/**
 * One gauge series resolved once, as {@link CounterCell}: `set(v)` writes the entry's value. prom-client's
 * `set` builds the hash string and a new entry object on every call, which the long-lived series map then
 * holds: on the quota's admission path (the remaining units, set per admitted request) that was a
 * promotion to the old generation per request.
 */
export class GaugeCell extends ValueCell {
  constructor (gauge: Gauge<string>, labels: Readonly<Record<string, string>>) {
    super(gauge, labels)
  }

  set (v: number): void {
    const e = this.current()
    if (e !== null) {
      e.value = v
      return
    }
    ;(this.metric as Gauge<string>).set(this.labels, v)
    this.bind()
  }
}

/**
 * One histogram series resolved once, as {@link CounterCell}: `observe(v)` adds to the entry's sum,
 * count and the first bucket whose bound is ≥ v (prom-client's own rule; cumulative counts and +Inf are
 * computed at export). Performance: prom-client's `observe(labels, v)` costs ≈1.1 µs here (label
 * validation, hash string, a closure per call); this is a few property writes.
 */
export class HistogramCell {
  private readonly histogram: Histogram<string>
  private readonly labels: Readonly<Record<string, string>>
  private readonly bounds: readonly number[]
  private readonly bucketKeys: readonly string[]
  private key = ''
  private entry: HistogramEntry | null = null

  constructor (histogram: Histogram<string>, labels: Readonly<Record<string, string>>, buckets: readonly number[]) {
    this.histogram = histogram
    this.labels = labels
    this.bounds = buckets
    this.bucketKeys = buckets.map((b) => String(b))
  }

  observe (v: number): void {
    const e = this.entry
    if (e !== null && (this.histogram as unknown as WithHashMap<HistogramEntry>).hashMap[this.key] === e && v === v /* not NaN */) {
      e.sum += v
      e.count += 1
      const bounds = this.bounds
      for (let i = 0; i < bounds.length; i++) {
        if (v <= (bounds[i] as number)) { (e.bucketValues as Record<string, number>)[this.bucketKeys[i] as string]! += 1; break }
      }
      return
    }
    this.histogram.observe(this.labels, v)
    this.bind()
  }

  private bind (): void {
    const map = (this.histogram as unknown as Partial<WithHashMap<HistogramEntry>>).hashMap
    const found = map === undefined ? null : findEntry(map, this.labels)
    const e = found === null ? null : found[1]
    // Only when the entry has exactly our buckets; otherwise keep going through prom-client.
    if (found === null || e === null || typeof e.sum !== 'number' || typeof e.count !== 'number' ||
      typeof e.bucketValues !== 'object' || !this.bucketKeys.every((k) => typeof e.bucketValues[k] === 'number')) {
      this.entry = null
      return
    }
    this.key = found[0]
    this.entry = e
  }
}
