/**
 * The edge↔origin ledger sampled while the flash sale runs (issue 13): every `everyMs`, the origin's
 * order counters, its stock per product, the edge's admitted per product (admin API), then the origin's
 * counters again. With the units the origin cancelled and has not handed back yet (cancelled − released
 * to the edge, from its metrics), the gap
 *   edge admitted − (origin locked + sold) − released-not-yet-handed-back
 * is the buys in flight: ≥ 0, and at most the crowd's connections. The reads are not one instant (two
 * stores, three HTTP calls), so what happened between the first and the last read — orders queued,
 * cancelled, released during the sample, seen as the change of the origin's counters — widens the
 * allowed range by that much on each side. A sample whose reads failed is skipped (and counted).
 */
import { request } from 'undici'

export interface LedgerSampling {
  readonly samples: number
  readonly skipped: number
  /** Lowest and highest gap seen (null: no sample). */
  readonly minGap: number | null
  readonly maxGap: number | null
  /** Samples outside [−slack, connections + slack]. */
  readonly violations: number
  readonly connections: number
}

async function text (url: string): Promise<string> {
  const r = await request(url, { headersTimeout: 2000, bodyTimeout: 2000 })
  const b = await r.body.text()
  if (r.statusCode !== 200) throw new Error(`${url}: ${r.statusCode}`)
  return b
}

/** Sum of a counter's samples with these labels in Prometheus text. */
function counter (prom: string, name: string, labels: Record<string, string>): number {
  let sum = 0
  for (const line of prom.split('\n')) {
    if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) sum += Number(line.slice(line.lastIndexOf(' ') + 1))
  }
  return sum
}

interface Counters { cancelled: number, released: number, queued: number }

async function counters (origin: string): Promise<Counters> {
  const m = await text(`${origin}/metrics`)
  return {
    cancelled: counter(m, 'flashgate_origin_orders_total', { status: 'cancelled' }),
    released: counter(m, 'flashgate_origin_edge_released_total', {}),
    queued: counter(m, 'flashgate_origin_buys_total', { result: 'queued' })
  }
}

export function sampleLedger (o: { admin: string, origin: string, campaign: string, products: readonly string[], connections: number, everyMs: number }): { stop: () => Promise<LedgerSampling> } {
  let running = true
  let samples = 0
  let skipped = 0
  let violations = 0
  let minGap: number | null = null
  let maxGap: number | null = null
  const one = async (): Promise<void> => {
    const a = await counters(o.origin)
    const held = await Promise.all(o.products.map(async (p) => {
      const s = JSON.parse(await text(`${o.origin}/stock/${o.campaign}/${p}`)) as { locked: number, sold: number }
      return s.locked + s.sold
    }))
    const edge = await Promise.all(o.products.map(async (p) => (JSON.parse(await text(`${o.admin}/admin/quota/${o.campaign}/${p}`)) as { admitted: number }).admitted))
    const b = await counters(o.origin)
    const gap = edge.reduce((x, y) => x + y, 0) - held.reduce((x, y) => x + y, 0) - (a.cancelled - a.released)
    const slack = (b.cancelled - a.cancelled) + (b.released - a.released) + (b.queued - a.queued)
    samples++
    minGap = minGap === null ? gap : Math.min(minGap, gap)
    maxGap = maxGap === null ? gap : Math.max(maxGap, gap)
    if (gap < -slack || gap > o.connections + slack) violations++
  }
  const loop = (async () => {
    while (running) {
      await one().catch(() => { skipped++ })
      await new Promise((resolve) => setTimeout(resolve, o.everyMs))
    }
  })()
  return {
    async stop () {
      running = false
      await loop
      return { samples, skipped, minGap, maxGap, violations, connections: o.connections }
    }
  }
}
