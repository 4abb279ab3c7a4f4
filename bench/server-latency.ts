/**
 * The gateway's own latency per outcome, from the difference of two scrapes of its
 * `flashgate_request_duration_seconds` histogram (time from request arrival to the end of the answer),
 * reported beside what the client measured: the gap between the two is time the gateway does not see
 * (its accept queue, its event loop before a request is parsed, the network stack, the generator).
 * Coarse: the buckets are 0.5, 1, 2.5, 5, 10, 25, 50, 100 ms …, and percentiles are interpolated inside
 * a bucket as Prometheus' histogram_quantile does.
 */
import type { GatewayCounters } from './prom.js'
import { bucketPercentile } from './prom.js'

export interface ServerLatency {
  readonly count: number
  readonly p50: number | null
  readonly p99: number | null
  /** Share (%) answered within 50 ms (an exact bucket bound). */
  readonly within50msPct: number | null
  /** Share (%) answered within 0.5 ms (the first bucket). */
  readonly within05msPct: number | null
}

/** Per outcome, for the routes accepted by `route` (null = every route), between scrapes a and b. */
export function serverLatency (a: GatewayCounters | null, b: GatewayCounters | null, route: string | null = null): Record<string, ServerLatency> | null {
  if (a === null || b === null) return null
  const merged = new Map<string, { a: Map<number, number>, b: Map<number, number> }>()
  for (const [k, bb] of b.buckets) {
    const r = k.slice(0, k.indexOf('|'))
    if (route !== null && r !== route) continue
    const outcome = k.slice(k.indexOf('|') + 1)
    let m = merged.get(outcome)
    if (m === undefined) { m = { a: new Map(), b: new Map() }; merged.set(outcome, m) }
    const ab = a.buckets.get(k)
    for (const [le, v] of bb) {
      m.b.set(le, (m.b.get(le) ?? 0) + v)
      m.a.set(le, (m.a.get(le) ?? 0) + (ab?.get(le) ?? 0))
    }
  }
  const out: Record<string, ServerLatency> = {}
  for (const [outcome, { a: ha, b: hb }] of merged) {
    const count = (hb.get(Infinity) ?? 0) - (ha.get(Infinity) ?? 0)
    if (count <= 0) continue
    const within = (le: number): number | null => hb.has(le) ? Math.round(1000 * ((hb.get(le) ?? 0) - (ha.get(le) ?? 0)) / count) / 10 : null
    const round = (x: number | null): number | null => x === null ? null : Math.round(x * 1000) / 1000
    out[outcome] = { count, p50: round(bucketPercentile(ha, hb, 50)), p99: round(bucketPercentile(ha, hb, 99)), within50msPct: within(0.05), within05msPct: within(0.0005) }
  }
  return out
}
