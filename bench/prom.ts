/**
 * Reading the gateway's own /metrics (Prometheus text) during a run: answers by outcome, the request
 * duration histogram per outcome (for the per-second timeline when the load generator is wrk), and the
 * number of store operations (each one Redis round trip on the redis stores).
 */
import { request } from 'undici'

export interface Sample { readonly name: string, readonly labels: Readonly<Record<string, string>>, readonly value: number }

/** Parse the Prometheus text format (what prom-client writes). Comments and malformed lines are skipped. */
export function parseProm (text: string): Sample[] {
  const out: Sample[] = []
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line)
    if (m === null) continue
    const labels: Record<string, string> = {}
    const body = m[3]
    if (body !== undefined) {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g
      let l: RegExpExecArray | null
      while ((l = re.exec(body)) !== null) labels[l[1] ?? ''] = (l[2] ?? '').replace(/\\(.)/g, '$1')
    }
    const value = Number(m[4])
    if (Number.isFinite(value)) out.push({ name: m[1] ?? '', labels, value })
  }
  return out
}

/** What the bench needs from one scrape. */
export interface GatewayCounters {
  /** `route|outcome` → requests. */
  readonly requests: Map<string, number>
  /** `route|outcome` → cumulative bucket counts (le in seconds → count), +Inf included. */
  readonly buckets: Map<string, Map<number, number>>
  /** store op → operations (from the store duration histogram's _count, plus errors). */
  readonly storeOps: Map<string, number>
  readonly storeErrors: number
  /** `campaign|product` → admitted. */
  readonly quotaAdmitted: Map<string, number>
  readonly quotaReleased: Map<string, number>
  readonly upstream: Map<string, number>
}

export function countersOf (samples: readonly Sample[]): GatewayCounters {
  const c: GatewayCounters = { requests: new Map(), buckets: new Map(), storeOps: new Map(), storeErrors: 0, quotaAdmitted: new Map(), quotaReleased: new Map(), upstream: new Map() }
  let storeErrors = 0
  const add = (m: Map<string, number>, k: string, v: number): void => { m.set(k, (m.get(k) ?? 0) + v) }
  for (const s of samples) {
    const l = s.labels
    switch (s.name) {
      case 'flashgate_requests_total': add(c.requests, `${l.route ?? ''}|${l.outcome ?? ''}`, s.value); break
      case 'flashgate_request_duration_seconds_bucket': {
        const k = `${l.route ?? ''}|${l.outcome ?? ''}`
        let b = c.buckets.get(k)
        if (b === undefined) { b = new Map(); c.buckets.set(k, b) }
        const le = l.le === '+Inf' ? Infinity : Number(l.le)
        b.set(le, (b.get(le) ?? 0) + s.value)
        break
      }
      case 'flashgate_store_duration_seconds_count': add(c.storeOps, l.op ?? '', s.value); break
      case 'flashgate_store_errors_total': storeErrors += s.value; break
      case 'flashgate_quota_admitted_total': add(c.quotaAdmitted, `${l.campaign ?? ''}|${l.product ?? ''}`, s.value); break
      case 'flashgate_quota_released_total': add(c.quotaReleased, `${l.campaign ?? ''}|${l.product ?? ''}`, s.value); break
      case 'flashgate_upstream_requests_total': add(c.upstream, l.status ?? '', s.value); break
    }
  }
  return { ...c, storeErrors }
}

/** Scrape the admin /metrics; null when it cannot be reached (a target without admin). */
export async function scrape (adminUrl: string, token: string | null = null): Promise<GatewayCounters | null> {
  try {
    const res = await request(`${adminUrl}/metrics`, { headers: token === null ? {} : { authorization: `Bearer ${token}` }, headersTimeout: 5000, bodyTimeout: 5000 })
    const text = await res.body.text()
    if (res.statusCode !== 200) return null
    return countersOf(parseProm(text))
  } catch {
    return null
  }
}

/** b − a per key (keys only in b count from 0). */
export function deltaMap (a: ReadonlyMap<string, number> | undefined, b: ReadonlyMap<string, number>): Map<string, number> {
  const out = new Map<string, number>()
  for (const [k, v] of b) {
    const d = v - (a?.get(k) ?? 0)
    if (d !== 0) out.set(k, d)
  }
  return out
}

/** Sum a `route|outcome` map by outcome only. */
export function byOutcome (m: ReadonlyMap<string, number>): Record<string, number> {
  const out: Record<string, number> = {}
  for (const [k, v] of m) {
    const outcome = k.slice(k.indexOf('|') + 1)
    out[outcome] = (out[outcome] ?? 0) + v
  }
  return out
}

/**
 * A percentile (ms) from the difference of two cumulative histograms, interpolated linearly inside the
 * bucket (as Prometheus' histogram_quantile does). Coarse: the gateway's buckets are 0.5, 1, 2.5, 5 ms...
 */
export function bucketPercentile (a: ReadonlyMap<number, number> | undefined, b: ReadonlyMap<number, number>, p: number): number | null {
  const les = [...b.keys()].sort((x, y) => x - y)
  const cum = les.map((le) => (b.get(le) ?? 0) - (a?.get(le) ?? 0))
  const total = cum[cum.length - 1] ?? 0
  if (total <= 0) return null
  const rank = (p / 100) * total
  let prevLe = 0
  let prevCum = 0
  for (let i = 0; i < les.length; i++) {
    const le = les[i] ?? Infinity
    const c = cum[i] ?? 0
    if (c >= rank) {
      if (!Number.isFinite(le)) return prevLe * 1000
      const within = c - prevCum
      const frac = within > 0 ? (rank - prevCum) / within : 1
      return (prevLe + (le - prevLe) * frac) * 1000
    }
    prevLe = le
    prevCum = c
  }
  return prevLe * 1000
}
