/**
 * Token bucket, pure: `take(state, now, policy, cost)` → verdict and the next state. No clock reads, no
 * timers; a bucket refills lazily from the time elapsed since it was last touched.
 *
 * Integer arithmetic, exact: a token is `periodMs` units, and every elapsed millisecond adds `count`
 * units (the rate `count / periodMs` tokens per ms). So `600/m` or `3/s` refill without rounding drift,
 * where a float tokens-per-ms (or milli-tokens, as lua-resty-limit-traffic uses) would accumulate error.
 * Elapsed time is clamped to the time needed to fill the bucket before it is multiplied, so a bucket idle
 * for years cannot overflow 2^53.
 */

export interface TokenBucketPolicy {
  /** Units per token (= rate.periodMs). */
  readonly unit: number
  /** Units added per elapsed ms (= rate.count). */
  readonly refill: number
  /** Bucket size in units (= burst × unit). */
  readonly capacity: number
  /** Whole tokens the bucket holds (= burst). */
  readonly burst: number
  /** ms to refill from empty to full (clamp for long idle). */
  readonly fillMs: number
}

/** A bucket: units held, and when it was last refilled (epoch ms, never moves backwards). */
export interface TokenBucketState {
  readonly units: number
  readonly at: number
}

export interface TakeResult<S> {
  readonly ok: boolean
  readonly state: S
  /** Whole tokens left after this take. */
  readonly remaining: number
  /** When ok=false: ms until `cost` tokens are available (0 when ok). */
  readonly retryAfterMs: number
  /** ms until the bucket is full again. */
  readonly resetAfterMs: number
}

/** Compile `count` tokens per `periodMs`, bucket size `burst` (≥ 1). */
export function tokenBucketPolicy (count: number, periodMs: number, burst: number): TokenBucketPolicy {
  if (!Number.isSafeInteger(count) || count <= 0) throw new RangeError(`token bucket: count must be a positive integer, got ${count}`)
  if (!Number.isSafeInteger(periodMs) || periodMs <= 0) throw new RangeError(`token bucket: periodMs must be a positive integer, got ${periodMs}`)
  if (!Number.isSafeInteger(burst) || burst <= 0) throw new RangeError(`token bucket: burst must be a positive integer, got ${burst}`)
  const capacity = burst * periodMs
  if (!Number.isSafeInteger(capacity)) throw new RangeError('token bucket: burst × period too large')
  return { unit: periodMs, refill: count, capacity, burst, fillMs: Math.ceil(capacity / count) }
}

/** What `takeTo` writes: the verdict and the bucket's next state, in an object the caller owns and reuses. */
export interface TakeOut {
  ok: boolean
  units: number
  at: number
  remaining: number
  retryAfterMs: number
  resetAfterMs: number
}

/** A TakeOut to reuse (one per caller; it is overwritten by each call). */
export function takeOut (): TakeOut {
  return { ok: false, units: 0, at: 0, remaining: 0, retryAfterMs: 0, resetAfterMs: 0 }
}

/**
 * `take` without a result object: the bucket (`units` at `at`, or a missing one when `missing`) taken
 * from at `now`, the verdict and next state written into `out`. For a hot path that keeps its buckets
 * in long-lived cells (a reject then allocates nothing); `take` is this plus the objects.
 */
export function takeTo (out: TakeOut, units: number, at: number, missing: boolean, now: number, p: TokenBucketPolicy, cost = 1): TakeOut {
  const at2 = missing ? now : (now > at ? now : at)
  let u: number
  if (missing) u = p.capacity
  else {
    // A clock that went backwards refills nothing (and `at` is kept, so time is not counted twice).
    const elapsed = now - at
    if (elapsed <= 0) u = units
    else {
      u = units + (elapsed >= p.fillMs ? p.capacity : elapsed * p.refill)
      if (u > p.capacity) u = p.capacity
    }
  }
  const need = cost * p.unit
  out.at = at2
  if (u >= need) {
    const left = u - need
    out.ok = true
    out.units = left
    out.remaining = Math.floor(left / p.unit)
    out.retryAfterMs = 0
    out.resetAfterMs = Math.ceil((p.capacity - left) / p.refill)
    return out
  }
  out.ok = false
  out.units = u
  out.remaining = Math.floor(u / p.unit)
  out.retryAfterMs = need > p.capacity ? Infinity : Math.ceil((need - u) / p.refill) + (at2 - now > 0 ? at2 - now : 0)
  out.resetAfterMs = Math.ceil((p.capacity - u) / p.refill)
  return out
}

/**
 * Take `cost` tokens at `now`. A missing bucket (`state` null) is full. When there are not enough tokens,
 * nothing is taken (ok=false, state only refilled). A cost above the burst can never succeed
 * (retryAfterMs = Infinity).
 */
export function take (state: TokenBucketState | null, now: number, p: TokenBucketPolicy, cost = 1): TakeResult<TokenBucketState> {
  const o = takeTo(takeOut(), state === null ? 0 : state.units, state === null ? 0 : state.at, state === null, now, p, cost)
  return { ok: o.ok, state: { units: o.units, at: o.at }, remaining: o.remaining, retryAfterMs: o.retryAfterMs, resetAfterMs: o.resetAfterMs }
}

/** Give `cost` tokens back (uncommit after a later guard rejected the request); capped at the capacity. */
export function giveBack (state: TokenBucketState, p: TokenBucketPolicy, cost = 1): TokenBucketState {
  const u = state.units + cost * p.unit
  return { units: u > p.capacity ? p.capacity : u, at: state.at }
}
