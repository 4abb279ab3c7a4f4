/**
 * autocannon, programmatically, as the fallback throughput generator when wrk is not installed (it is a
 * devDependency: bench runs from a checkout with dev dependencies). It runs in this process, so the bench
 * pins itself to the load core. It tops out around 40–60k requests/s on one core, below what a bare
 * node:http server answers, which is why wrk is preferred when present. Its advantage: a per-response
 * hook, so the timeline (per second, by status) comes from the generator itself.
 */
import { createRequire } from 'node:module'
import { Histogram, latencyOf } from '../hist.js'
import type { LoadResult, RequestSpec, TimelinePoint } from './types.js'

const require = createRequire(import.meta.url)

interface AcInstance {
  on(ev: 'response', fn: (client: unknown, status: number, bytes: number, ms: number) => void): void
  on(ev: 'reqError', fn: (err: Error) => void): void
  on(ev: 'done', fn: (r: AcResult) => void): void
  stop(): void
}
interface AcResult { errors: number, timeouts: number, duration: number, requests: { sent: number, total: number }, non2xx: number }
type Autocannon = (opts: Record<string, unknown>) => AcInstance

export interface AutocannonOptions {
  readonly baseUrl: string
  readonly requests: readonly RequestSpec[]
  readonly connections: number
  readonly seconds: number
  readonly timeoutS?: number
  /** Called about once a second with the seconds elapsed (for the progress bar). */
  readonly onTick?: (elapsedS: number) => void
}

export async function runAutocannon (o: AutocannonOptions): Promise<LoadResult> {
  let ac: Autocannon
  try {
    ac = require('autocannon') as Autocannon
  } catch {
    throw new Error('autocannon is not installed (it is a devDependency: run `npm ci` in the checkout), and wrk is missing: `apt-get install -y wrk`')
  }
  const first = o.requests[0]
  if (first === undefined) throw new Error('autocannon: no request')
  const total = new Histogram()
  const statuses: Record<string, number> = {}
  const timeline: TimelinePoint[] = []
  let sec = new Map<string, Histogram>()
  const t0 = performance.now()
  let lastTick = 0
  const flush = (): void => {
    const t = Math.round((performance.now() - t0) / 100) / 10
    const outcomes: Record<string, { count: number, p99: number | null }> = {}
    for (const [k, h] of sec) outcomes[k] = { count: h.count, p99: Math.round(h.percentile(99)) / 1000 }
    timeline.push({ t, outcomes })
    sec = new Map()
  }
  const timer = setInterval(() => { flush(); lastTick++; o.onTick?.(lastTick) }, 1000)
  const requests = o.requests.map((r) => ({ method: r.method, path: r.path, headers: r.headers ?? {}, body: r.body }))
  const inst = ac({
    url: o.baseUrl,
    connections: o.connections,
    duration: o.seconds,
    timeout: o.timeoutS ?? 10,
    requests,
    // Every answer counts in the latency figures, not only the 2xx ones.
    excludeErrorStats: false
  })
  inst.on('response', (_c, status, _b, ms) => {
    const us = ms * 1000
    total.record(us)
    const k = String(status)
    statuses[k] = (statuses[k] ?? 0) + 1
    let h = sec.get(k)
    if (h === undefined) { h = new Histogram(); sec.set(k, h) }
    h.record(us)
  })
  const result = await new Promise<AcResult>((resolve) => { inst.on('done', resolve) })
  clearInterval(timer)
  flush()
  const seconds = (performance.now() - t0) / 1000
  const answered = total.count
  const non2xx = Object.entries(statuses).filter(([s]) => !/^[23]/.test(s)).reduce((a, [, n]) => a + n, 0)
  return {
    generator: 'autocannon',
    seconds,
    sent: answered + result.errors,
    answered,
    lost: result.errors,
    rps: answered / seconds,
    latencyMs: latencyOf(total),
    statuses,
    non2xx,
    timeline
  }
}
