/**
 * Leaky bucket with nginx `limit_req` semantics (ngx_http_limit_req_module.c), pure: the same integer
 * arithmetic in milli-requests, so the delays and rejections match nginx's for the same arrivals.
 *
 * - `rate` is kept as nginx does: milli-requests per second, `count·1000·1000 / periodMs` rounded down
 *   (`1r/m` → 16).
 * - State: `excess` (milli-requests queued above the rate) and `last` (ms of the last accepted request).
 * - Per request: `excess = excess − rate·ms/1000 + 1000` (floored at 0); above `burst·1000` → rejected
 *   (state untouched); else accepted, and delayed by `(excess − delay·1000)·1000 / rate` ms when `excess`
 *   is above the `delay` threshold (`nodelay` = never delayed). A new key starts with excess 0.
 * - The clock going backwards: by up to 60 s counts as no time elapsed; further back as 1 ms (nginx).
 */

export interface LeakyBucketPolicy {
  /** milli-requests per second. */
  readonly rate: number
  /** milli-requests of excess allowed. */
  readonly burst: number
  /** milli-requests of excess served without delay (nodelay: Infinity). */
  readonly delay: number
}

export interface LeakyBucketState {
  readonly excess: number
  readonly last: number
}

export interface LeakyResult {
  readonly ok: boolean
  readonly state: LeakyBucketState
  /** ms the request should wait before it is served (0 = now). */
  readonly delayMs: number
  /** When rejected: ms until one request would be accepted. */
  readonly retryAfterMs: number
  /** Whole requests of burst left. */
  readonly remaining: number
}

export function leakyBucketPolicy (count: number, periodMs: number, burst: number, delay: number | 'nodelay'): LeakyBucketPolicy {
  const rate = Math.floor(count * 1_000_000 / periodMs)
  if (!(rate > 0)) throw new RangeError(`leaky bucket: rate ${count}/${periodMs}ms is below nginx's resolution (1 milli-request/s)`)
  if (!Number.isSafeInteger(burst) || burst < 0) throw new RangeError(`leaky bucket: burst must be an integer ≥ 0, got ${burst}`)
  if (delay !== 'nodelay' && (!Number.isSafeInteger(delay) || delay < 0)) throw new RangeError(`leaky bucket: delay must be an integer ≥ 0 or 'nodelay', got ${delay}`)
  return { rate, burst: burst * 1000, delay: delay === 'nodelay' ? Infinity : delay * 1000 }
}

export function leak (state: LeakyBucketState | null, now: number, p: LeakyBucketPolicy): LeakyResult {
  let excess = 0
  let last = now
  if (state !== null) {
    let ms = now - state.last
    if (ms < -60000) ms = 1
    else if (ms < 0) ms = 0
    excess = state.excess - Math.trunc(p.rate * ms / 1000) + 1000
    if (excess < 0) excess = 0
    if (excess > p.burst) {
      // nginx answers 503/429 without touching the node. Time until excess+1000-drain <= burst:
      const retryAfterMs = Math.ceil((excess - p.burst) * 1000 / p.rate)
      return { ok: false, state, delayMs: 0, retryAfterMs, remaining: 0 }
    }
    last = ms !== 0 ? now : state.last
  }
  const delayMs = excess <= p.delay ? 0 : Math.trunc((excess - p.delay) * 1000 / p.rate)
  return { ok: true, state: { excess, last }, delayMs, retryAfterMs: 0, remaining: Math.floor((p.burst - excess) / 1000) }
}

/** Undo one accepted request (a later guard rejected it). */
export function unleak (state: LeakyBucketState): LeakyBucketState {
  const e = state.excess - 1000
  return { excess: e < 0 ? 0 : e, last: state.last }
}
