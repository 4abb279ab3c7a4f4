/**
 * Peer selection and passive health, as pure functions over plain peer records: the clock is an
 * argument, nothing here does I/O or keeps a timer. The algorithms follow nginx
 * (`src/http/ngx_http_upstream_round_robin.c`, `ngx_http_upstream_least_conn_module.c`,
 * `ngx_http_upstream_hash_module.c`), in milliseconds instead of nginx's seconds.
 *
 * Passive health (nginx `max_fails` / `fail_timeout`):
 * - a failure sets `fails++`, `accessed = checked = now` and lowers `effectiveWeight` by
 *   `weight / maxFails` (it climbs back by 1 per selection pass: nginx's slow recovery);
 * - a peer with `fails >= maxFails` is skipped while `now - checked <= failTimeoutMs`;
 * - whenever a peer is picked and `now - checked > failTimeoutMs`, `checked = now`: after the timeout one
 *   request probes the peer and the others keep skipping it for another `failTimeoutMs`;
 * - a success resets `fails` to 0 only if the peer was checked after its last failure
 *   (`accessed < checked`), so failures count "within fail_timeout";
 * - `maxFails: 0` disables all of it.
 *
 * Deliberate difference from nginx: when every untried peer is down, nginx answers 502 at once ("no live
 * upstreams") and resets all fail counters. We pick the untried peer that failed least recently (oldest
 * `checked`) and let that request probe it; a single-target upstream is thus always tried, as in nginx.
 */
import { createHash } from 'node:crypto'

/** Mutable per-target state, owned by one upstream group. */
export interface PeerState {
  /** Position in the group (config order; updated when a reload reorders targets). */
  index: number
  /** Configured weight (>= 1). */
  weight: number
  /** nginx effective_weight: lowered by failures, restored by selections. */
  effectiveWeight: number
  /** nginx current_weight (smooth weighted round robin). */
  currentWeight: number
  /** Failures counted since the last reset. */
  fails: number
  /** Time of the last failure (epoch ms). */
  accessed: number
  /** Time the peer was last failed or probed (epoch ms). */
  checked: number
  /** Requests in flight on this peer (least_conn). */
  active: number
}

export interface HealthPolicy {
  readonly maxFails: number
  readonly failTimeoutMs: number
}

export function newPeer (index: number, weight: number): PeerState {
  return { index, weight, effectiveWeight: weight, currentWeight: 0, fails: 0, accessed: 0, checked: 0, active: 0 }
}

/** Eligible for selection now (not ejected by passive health). */
export function available (p: PeerState, h: HealthPolicy, now: number): boolean {
  return h.maxFails === 0 || p.fails < h.maxFails || now - p.checked > h.failTimeoutMs
}

/** What `flashgate_upstream_up` reports: 0 from the failure that reached max_fails until a success. */
export function isUp (p: PeerState, h: HealthPolicy): boolean {
  return h.maxFails === 0 || p.fails < h.maxFails
}

/** Record a failed attempt (connect error, timeout, reset). Returns true when this failure took the peer down. */
export function recordFailure (p: PeerState, h: HealthPolicy, now: number): boolean {
  const wasUp = isUp(p, h)
  p.fails++
  p.accessed = now
  p.checked = now
  if (h.maxFails > 0) {
    p.effectiveWeight -= Math.floor(p.weight / h.maxFails)
    if (p.effectiveWeight < 0) p.effectiveWeight = 0
  }
  return wasUp && !isUp(p, h)
}

/** Record an attempt the peer answered. Returns true when this success brought the peer back up. */
export function recordSuccess (p: PeerState, h: HealthPolicy): boolean {
  if (p.fails > 0 && p.accessed < p.checked) {
    const wasUp = isUp(p, h)
    p.fails = 0
    return !wasUp
  }
  return false
}

function tried (list: readonly PeerState[] | null, p: PeerState): boolean {
  return list !== null && list.includes(p)
}

/** Called on the chosen peer: the probe rule. */
function picked (p: PeerState, h: HealthPolicy, now: number): PeerState {
  if (now - p.checked > h.failTimeoutMs) p.checked = now
  return p
}

/**
 * All untried peers are down: try the one that failed least recently anyway (see the module note).
 * Null only when every peer has been tried by this request.
 */
export function pickFallback (peers: readonly PeerState[], now: number, triedList: readonly PeerState[] | null): PeerState | null {
  let best: PeerState | null = null
  for (const p of peers) {
    if (tried(triedList, p)) continue
    if (best === null || p.checked < best.checked) best = p
  }
  if (best !== null) best.checked = now
  return best
}

/**
 * nginx's smooth weighted round robin (`ngx_http_upstream_get_peer`): every eligible peer gains its
 * effective weight, the largest current weight wins and pays the total back. For {a:5,b:1,c:1} the
 * sequence is a a b a c a a. Falls back to {@link pickFallback} when nothing is eligible.
 */
export function pickRoundRobin (peers: readonly PeerState[], h: HealthPolicy, now: number, triedList: readonly PeerState[] | null): PeerState | null {
  let best: PeerState | null = null
  let total = 0
  for (const p of peers) {
    if (tried(triedList, p) || !available(p, h, now)) continue
    p.currentWeight += p.effectiveWeight
    total += p.effectiveWeight
    if (p.effectiveWeight < p.weight) p.effectiveWeight++
    if (best === null || p.currentWeight > best.currentWeight) best = p
  }
  if (best === null) return pickFallback(peers, now, triedList)
  best.currentWeight -= total
  return picked(best, h, now)
}

/**
 * nginx least_conn: the fewest in-flight requests relative to weight (`active / weight`, compared by
 * cross-multiplication); ties are broken by smooth weighted round robin among the tied peers.
 */
export function pickLeastConn (peers: readonly PeerState[], h: HealthPolicy, now: number, triedList: readonly PeerState[] | null): PeerState | null {
  let best: PeerState | null = null
  let many = false
  for (const p of peers) {
    if (tried(triedList, p) || !available(p, h, now)) continue
    if (best === null || p.active * best.weight < best.active * p.weight) {
      best = p
      many = false
    } else if (p.active * best.weight === best.active * p.weight) {
      many = true
    }
  }
  if (best === null) return pickFallback(peers, now, triedList)
  if (many) {
    const first = best
    let total = 0
    for (let i = first.index; i < peers.length; i++) {
      const p = peers[i]!
      if (tried(triedList, p) || !available(p, h, now)) continue
      if (p.active * first.weight !== first.active * p.weight) continue
      p.currentWeight += p.effectiveWeight
      total += p.effectiveWeight
      if (p.effectiveWeight < p.weight) p.effectiveWeight++
      if (p.currentWeight > best.currentWeight) best = p
    }
    best.currentWeight -= total
  }
  return picked(best, h, now)
}

/** A consistent-hash ring: sorted 32-bit points and the peer index owning each. */
export interface Ring {
  readonly points: Uint32Array
  readonly owners: Uint32Array
}

/** Virtual nodes per unit of weight (nginx `hash ... consistent` uses 160, as ketama). */
const POINTS_PER_WEIGHT = 160

/**
 * Build a ketama-like ring: `160 * weight` points per target, four per MD5 digest of `key#n`. Keyed by
 * the target's URL, so a target keeps its points when others are added or removed (only the keys that
 * hashed to a removed target move).
 */
export function buildRing (targets: ReadonlyArray<{ readonly key: string, readonly weight: number }>): Ring {
  const pairs: Array<[number, number]> = []
  targets.forEach((t, owner) => {
    const n = POINTS_PER_WEIGHT * t.weight
    for (let d = 0; d * 4 < n; d++) {
      const digest = createHash('md5').update(`${t.key}#${d}`).digest()
      for (let k = 0; k < 4 && d * 4 + k < n; k++) pairs.push([digest.readUInt32LE(k * 4), owner])
    }
  })
  pairs.sort((a, b) => a[0] - b[0] || a[1] - b[1])
  const points = new Uint32Array(pairs.length)
  const owners = new Uint32Array(pairs.length)
  pairs.forEach(([p, o], i) => { points[i] = p; owners[i] = o })
  return { points, owners }
}

/** 32-bit hash of a request key: FNV-1a over UTF-16 code units, then murmur3's finaliser for avalanche. */
export function hashKey (s: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/** Index of the first ring point >= hash (wrapping to 0). */
function ringIndex (points: Uint32Array, hash: number): number {
  let lo = 0
  let hi = points.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (points[mid]! < hash) lo = mid + 1
    else hi = mid
  }
  return lo === points.length ? 0 : lo
}

/**
 * Consistent hash: the peer owning the first ring point at or after the key's hash. A down or already
 * tried peer passes the key on to the next point's owner (nginx walks up to 20 points, then falls back
 * to round robin; we walk the ring up to 20 points per peer, then do the same).
 */
export function pickHash (peers: readonly PeerState[], ring: Ring, keyHash: number, h: HealthPolicy, now: number, triedList: readonly PeerState[] | null): PeerState | null {
  const n = ring.points.length
  if (n === 0) return null
  let i = ringIndex(ring.points, keyHash)
  const limit = Math.min(n, 20 * peers.length)
  for (let step = 0; step < limit; step++) {
    const p = peers[ring.owners[i]!]!
    if (!tried(triedList, p) && available(p, h, now)) return picked(p, h, now)
    if (++i === n) i = 0
  }
  return pickRoundRobin(peers, h, now, triedList)
}
