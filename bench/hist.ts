/**
 * A small log-linear latency histogram (≈1 % relative precision, values in microseconds) for the
 * virtual users and the autocannon runner: constant memory, O(1) record, mergeable, exact count.
 */

const GROWTH = Math.log(1.01)
const SIZE = 2400 // 1.01^2400 µs ≈ 2.3e10 µs: far beyond any bounded run

export class Histogram {
  readonly counts = new Float64Array(SIZE)
  count = 0
  sum = 0
  max = 0

  /** Record one latency in microseconds. */
  record (us: number): void {
    const v = us < 1 ? 1 : us
    const i = Math.min(SIZE - 1, Math.floor(Math.log(v) / GROWTH))
    this.counts[i] = (this.counts[i] ?? 0) + 1
    this.count++
    this.sum += v
    if (v > this.max) this.max = v
  }

  merge (other: Histogram): void {
    for (let i = 0; i < SIZE; i++) this.counts[i] = (this.counts[i] ?? 0) + (other.counts[i] ?? 0)
    this.count += other.count
    this.sum += other.sum
    if (other.max > this.max) this.max = other.max
  }

  /** The value (µs) at percentile p (0..100); 0 when empty. Bucket midpoint, capped at the max seen. */
  percentile (p: number): number {
    if (this.count === 0) return 0
    const rank = Math.max(1, Math.ceil((p / 100) * this.count))
    let seen = 0
    for (let i = 0; i < SIZE; i++) {
      seen += this.counts[i] ?? 0
      if (seen >= rank) return Math.min(this.max, Math.exp((i + 0.5) * GROWTH))
    }
    return this.max
  }

  get mean (): number { return this.count === 0 ? 0 : this.sum / this.count }
}

/** Latency summary in milliseconds, as every report row carries it. */
export interface LatencyMs {
  readonly p50: number
  readonly p90: number
  readonly p99: number
  readonly p999: number
  readonly max: number
  readonly mean: number
}

export function latencyOf (h: Histogram): LatencyMs {
  const ms = (us: number): number => Math.round(us) / 1000
  return { p50: ms(h.percentile(50)), p90: ms(h.percentile(90)), p99: ms(h.percentile(99)), p999: ms(h.percentile(99.9)), max: ms(h.max), mean: ms(h.mean) }
}
