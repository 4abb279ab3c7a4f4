/**
 * GCRA (generic cell rate algorithm): a token bucket stored as one number, the theoretical arrival time
 * (TAT) of the next request. Pure, integer, clock as an argument. This is the reference the stores
 * implement (memory calls it; the Redis Lua script is a line-by-line copy, see redis-store.ts), so all
 * stores answer identically for the same inputs.
 *
 * Units: the caller picks one integer time unit for `now`, `interval` and the TAT (the stores use µs, so a
 * fractional emission interval such as 1000/3 ms is 333333 µs and epoch µs still fit in 2^53).
 *
 * Bucket of `burst` requests: a request of `cost` is allowed when `max(tat, now) + cost·interval − now ≤
 * burst·interval`; the TAT then advances by `cost·interval`. A negative cost gives requests back (the
 * TAT moves back, never below `now`).
 */

export interface GcraStep {
  readonly ok: boolean
  /** The TAT to store (unchanged when ok=false). */
  readonly tat: number
  readonly remaining: number
  /** Units until `cost` would be allowed (0 when ok). */
  readonly retryAfter: number
  /** Units until the bucket is full (the key's natural expiry). */
  readonly resetAfter: number
}

export function gcraStep (tat: number | null, now: number, interval: number, burst: number, cost: number): GcraStep {
  const base = tat === null || tat < now ? now : tat
  if (cost <= 0) {
    const back = base + cost * interval
    const t = back < now ? now : back
    return { ok: true, tat: t, remaining: Math.floor((now + burst * interval - t) / interval), retryAfter: 0, resetAfter: t - now }
  }
  const newTat = base + cost * interval
  const limit = now + burst * interval
  if (newTat > limit) {
    const retryAfter = cost > burst ? Infinity : newTat - limit
    const rem = Math.floor((limit - base) / interval)
    return { ok: false, tat: base, remaining: rem < 0 ? 0 : rem, retryAfter, resetAfter: base - now }
  }
  return { ok: true, tat: newTat, remaining: Math.floor((limit - newTat) / interval), retryAfter: 0, resetAfter: newTat - now }
}
