/** What every load generator run answers, whatever made the load. */
import type { LatencyMs } from '../hist.js'

/** One request shape; a run cycles through a list of them (one per request, round robin). */
export interface RequestSpec {
  readonly method: string
  /** Path with query, starting with `/`. */
  readonly path: string
  readonly headers?: Readonly<Record<string, string>>
  readonly body?: string
}

/** One second of a run, by outcome (a reject code, `passed`, or an HTTP status when codes are unknown). */
export interface TimelinePoint {
  /** Seconds since the run started (end of the interval). */
  readonly t: number
  readonly outcomes: Readonly<Record<string, { readonly count: number, readonly p99: number | null }>>
}

export interface LoadResult {
  readonly generator: 'wrk' | 'autocannon' | 'users'
  readonly seconds: number
  /** Requests sent (for wrk: completed + socket errors; wrk does not count in-flight requests at the end). */
  readonly sent: number
  /** Requests that got an HTTP answer. */
  readonly answered: number
  /** Socket errors and timeouts: sent but not answered. */
  readonly lost: number
  readonly rps: number
  readonly latencyMs: LatencyMs
  /** HTTP status → count, when the generator knows it (autocannon, users). */
  readonly statuses: Readonly<Record<string, number>> | null
  /** Answers that were not 2xx/3xx. */
  readonly non2xx: number
  /** Per-second figures from the generator itself (autocannon, users); wrk runs get theirs from the gateway's metrics. */
  readonly timeline: readonly TimelinePoint[] | null
}
