/**
 * The waiting room's pure parts: the fair pre-queue order, the admission arithmetic, ETA, and the room's
 * shared state machine (the memory store runs it; the Redis store runs its Lua twin, `ROOM_SYNC_LUA` in
 * redis-store.ts — keep the two in step; the store contract suite holds them to the same answers).
 * Nothing here reads a clock: `now` is always passed in.
 *
 * Fairness. Users who join during the pre-queue (from `starts_at - prequeue` until `starts_at`) are
 * ordered at `starts_at` by
 *
 *     score(user) = the first 6 bytes, big-endian, of HMAC-SHA256(key = seed bytes, message = "<campaign>\n<user>")
 *
 * ascending, ties (2^-48) broken by the user id's UTF-8 bytes. The seed is 32 random bytes made by the
 * first node that needs it and kept in the store (`wr:{<campaign>}:seed`), so every node shares it; its
 * SHA-256 (the commitment) is public from the start, the seed itself from `starts_at`. Anyone holding the
 * seed and the join log can recompute the order (`flashgate audit-queue`). After `starts_at`, first come,
 * first served: a joiner takes the next position after everyone already in line.
 *
 * Admission. A credit grows at `admit` (count per periodMs) since the last advance, capped at `burst`
 * admissions (10 s worth) while users wait and at `idleBurst` (1 s worth) once the line has run empty;
 * each admission spends one. Integer arithmetic: the credit is kept in units of
 * 1/periodMs of an admission (elapsed ms × count), so no rounding drifts over a long sale. The number
 * admitted in one advance is also capped by `cap − outstanding` (cap = floor(remaining stock × overbook),
 * outstanding = admitted users holding an unused, unexpired pass). The cursor walks positions in order;
 * a position whose user has not polled within `expireMs` (3 × poll_ms) is skipped (abandoned), and that
 * user, if they come back, joins again at the back.
 */
import { createHash, createHmac } from 'node:crypto'

/** A user's pre-queue shuffle score: 48 bits of HMAC-SHA256(seed, campaign + "\n" + user). */
export function shuffleScore (seed: Buffer, campaign: string, user: string): number {
  const h = createHmac('sha256', seed).update(`${campaign}\n${user}`).digest()
  return h.readUIntBE(0, 6)
}

/** SHA-256 hex of the seed bytes: the commitment published before starts_at. */
export function commitmentOf (seed: Buffer): string {
  return createHash('sha256').update(seed).digest('hex')
}

/** Order of two pre-queue entries: score, then the user id's bytes (what a Redis sorted set does). */
function compareEntries (a: { score: number, user: string }, b: { score: number, user: string }): number {
  if (a.score !== b.score) return a.score < b.score ? -1 : 1
  return Buffer.compare(Buffer.from(a.user), Buffer.from(b.user))
}

/** The pre-queue order recomputed from the seed and the users who joined before starts_at. */
export function preQueueOrder (seed: Buffer, campaign: string, users: readonly string[]): string[] {
  return users.map((user) => ({ user, score: shuffleScore(seed, campaign, user) })).sort(compareEntries).map((e) => e.user)
}

/** Admissions per ms as a rational: `count` per `periodMs`. */
export interface AdmitRate { readonly count: number, readonly periodMs: number }

/** Default burst: one second's worth of admissions, at least 1. */
export function defaultBurst (r: AdmitRate): number {
  return Math.max(1, Math.ceil(r.count * 1000 / r.periodMs))
}

/**
 * One advance of the admission credit. `credit` is in units of 1/periodMs admission. Returns the new
 * credit (before spending) and how many may be admitted now (before the walk finds live users).
 */
export function admitBudget (credit: number, last: number, now: number, rate: AdmitRate, burst: number, cap: number, outstanding: number): { credit: number, last: number, k: number } {
  let c = credit
  let l = last
  if (now > l) { c += (now - l) * rate.count; l = now }
  const max = burst * rate.periodMs
  if (c > max) c = max
  let k = Math.floor(c / rate.periodMs)
  if (cap >= 0 && cap - outstanding < k) k = cap - outstanding
  return { credit: c, last: l, k: k < 0 ? 0 : k }
}

/** ms until `ahead` more admissions at `rate` (the ETA of a user with `ahead` live users before them). */
export function etaMs (ahead: number, rate: AdmitRate): number {
  if (ahead <= 0) return 0
  return Math.ceil(ahead * rate.periodMs / rate.count)
}

/** Stock cap of outstanding passes: floor(remaining × overbook); -1 = unknown (admit nothing). */
export function stockCap (remaining: number, overbook: number): number {
  return Math.floor(remaining * overbook + 1e-9)
}

// --- the shared state (memory twin of the Lua) --------------------------------------------------------

/** Parameters of one sync call (the same for memory and Redis). */
export interface RoomParams {
  readonly now: number
  readonly startsAt: number
  /** A position whose user has not been seen for this long is skipped (3 × poll_ms). */
  readonly expireMs: number
  readonly rate: AdmitRate
  /**
   * Admissions banked at most while users wait (so that a node syncing late, e.g. starved of CPU, still
   * admits at the rate on average; the Room passes 10 s worth) ...
   */
  readonly burst: number
  /** ... and while nobody waits (the line ran empty: at most this many at once when a crowd comes). */
  readonly idleBurst: number
  /** floor(remaining × overbook); < 0: no cap known (admit nothing). */
  readonly cap: number
  readonly passTtlMs: number
  /** Bound on positions examined in one call. */
  readonly scanMax: number
  /** TTL of the room's keys (ms). */
  readonly keyTtlMs: number
}

/**
 * `join`: join if new, answer the position and pass. `seen`: the user polled (liveness). `at`: when the
 * user polled (epoch ms; a node batches polls, so this is earlier than the call's `now`).
 */
export interface RoomEntry { readonly op: 'join' | 'seen', readonly user: string, readonly score: number, readonly at: number }

/** Pass state in an answer: > 0 the pass's expiry (admitted); 0 not admitted; USED; (expired passes rejoin). */
export const PASS_USED = -1

export interface RoomEntryResult {
  /** 0: in the pre-queue, order not drawn yet; else 1-based position in line. */
  readonly position: number
  readonly pass: number
}

export interface RoomView {
  readonly sealed: boolean
  /** Users in the pre-queue (fixed at starts_at; before it, joined so far). */
  readonly pre: number
  /** Positions handed out (pre + after). */
  readonly total: number
  /** Positions up to here have been reached (admitted or skipped). */
  readonly cursor: number
  /** Admitted users holding an unused, unexpired pass. */
  readonly outstanding: number
  /** Users admitted so far (cumulative). */
  readonly admitted: number
  /** Positions skipped because their user stopped polling (cumulative). */
  readonly expired: number
}

export interface RoomSyncResult extends RoomView {
  /** One per `join` entry, in order. */
  readonly results: readonly RoomEntryResult[]
}

/** The join log: the pre-queue in served order with scores, then later joiners in order. */
export interface RoomLog extends RoomView {
  readonly pre: number
  readonly preQueue: ReadonlyArray<{ readonly user: string, readonly score: number, readonly joinedAt: number }>
  readonly after: ReadonlyArray<{ readonly user: string, readonly position: number, readonly joinedAt: number }>
}

/** Admission state of a user: expiry (number, unused pass), 'u' used, 'x' expired. */
type Adm = number | 'u' | 'x'

/**
 * The room as the memory store keeps it. Every method is one atomic step (as the Lua scripts are).
 * `users` maps user → [position (0 = pre-queue), joinedAt].
 */
export class RoomState {
  sealed = false
  preCount = 0
  cursor = 0
  last = 0
  credit = 0
  outstanding = 0
  admitted = 0
  expired = 0
  /** Pre-queue entries (sorted once sealed). */
  preList: Array<{ user: string, score: number }> = []
  preSorted = false
  preRank = new Map<string, number>()
  post: string[] = []
  users = new Map<string, [number, number]>()
  seen = new Map<string, number>()
  adm = new Map<string, Adm>()
  /** Unused passes by expiry (small: at most cap). */
  live = new Map<string, number>()

  private view (): RoomView {
    return { sealed: this.sealed, pre: this.sealed ? this.preCount : this.preList.length, total: this.preCount + this.post.length, cursor: this.cursor, outstanding: this.outstanding, admitted: this.admitted, expired: this.expired }
  }

  private sortPre (): void {
    if (this.preSorted) return
    this.preList.sort(compareEntries)
    this.preList.forEach((e, i) => this.preRank.set(e.user, i + 1))
    this.preSorted = true
  }

  private append (user: string, now: number): number {
    this.post.push(user)
    const p = this.preCount + this.post.length
    this.users.set(user, [p, now])
    this.adm.delete(user)
    return p
  }

  private positionOf (user: string): number | null {
    const u = this.users.get(user)
    if (u === undefined) return null
    if (u[0] === 0 && this.sealed) return this.preRank.get(user) ?? null
    return u[0]
  }

  /** The user at position p, when that position is still theirs (not left behind by a rejoin). */
  private userAt (p: number): string | null {
    if (p <= this.preCount) {
      const e = this.preList[p - 1]
      if (e === undefined) return null
      return this.users.get(e.user)?.[0] === 0 ? e.user : null
    }
    const user = this.post[p - this.preCount - 1]
    if (user === undefined) return null
    return this.users.get(user)?.[0] === p ? user : null
  }

  sync (params: RoomParams, entries: readonly RoomEntry[]): RoomSyncResult {
    const now = params.now
    if (!this.sealed && now >= params.startsAt) {
      this.sealed = true
      this.sortPre()
      this.preCount = this.preList.length
      this.last = params.startsAt
    }
    if (this.sealed) {
      // Passes that expired unused first: their users join again, and they no longer hold stock.
      for (const [user, exp] of this.live) {
        if (exp <= now) { this.live.delete(user); this.adm.set(user, 'x'); this.outstanding-- }
      }
    }
    for (const e of entries) {
      const at = Math.min(e.at, now)
      if (e.op === 'seen') { this.seen.set(e.user, Math.max(at, this.seen.get(e.user) ?? -Infinity)); continue }
      const p = this.positionOf(e.user)
      if (p === null) {
        if (!this.sealed) {
          this.preList.push({ user: e.user, score: e.score })
          this.users.set(e.user, [0, now])
        } else {
          this.append(e.user, now)
        }
      } else if (this.sealed && p <= this.cursor) {
        const a = this.adm.get(e.user)
        // Reached but skipped (no admission), or a pass that expired unused: join again at the back.
        if (a === undefined || a === 'x') this.append(e.user, now)
      }
      this.seen.set(e.user, Math.max(at, this.seen.get(e.user) ?? -Infinity))
    }
    if (this.sealed) {
      const b = admitBudget(this.credit, this.last, now, params.rate, params.burst, params.cap, this.outstanding)
      this.credit = b.credit
      this.last = b.last
      let k = b.k
      const total = this.preCount + this.post.length
      let scanned = 0
      while (k > 0 && this.cursor < total && scanned < params.scanMax) {
        const p = ++this.cursor
        scanned++
        const user = this.userAt(p)
        if (user === null) continue
        if ((this.seen.get(user) ?? -Infinity) >= now - params.expireMs) {
          const exp = now + params.passTtlMs
          this.adm.set(user, exp)
          this.live.set(user, exp)
          this.outstanding++
          this.admitted++
          this.credit -= params.rate.periodMs
          k--
        } else {
          this.expired++
        }
      }
      if (this.cursor >= total && this.credit > params.idleBurst * params.rate.periodMs) this.credit = params.idleBurst * params.rate.periodMs
    }
    const results: RoomEntryResult[] = []
    for (const e of entries) {
      if (e.op !== 'join') continue
      const p = this.positionOf(e.user) ?? 0
      const a = this.adm.get(e.user)
      results.push({ position: p, pass: typeof a === 'number' ? a : a === 'u' ? PASS_USED : 0 })
    }
    return { ...this.view(), results }
  }

  /** Use (true) or give back (false) the pass of `user`; true when the state changed. */
  pass (user: string, now: number, use: boolean, expiresAt: number): boolean {
    const a = this.adm.get(user)
    if (use) {
      if (typeof a !== 'number' || a <= now) return false
      this.adm.set(user, 'u')
      this.live.delete(user)
      this.outstanding--
      return true
    }
    if (a !== 'u') return false
    if (expiresAt > now) {
      this.adm.set(user, expiresAt)
      this.live.set(user, expiresAt)
      this.outstanding++
    } else {
      this.adm.set(user, 'x')
    }
    return true
  }

  log (): RoomLog {
    if (this.sealed) this.sortPre()
    const pre = [...this.preList].sort(compareEntries).map((e) => ({ user: e.user, score: e.score, joinedAt: this.users.get(e.user)?.[1] ?? 0 }))
    const after: Array<{ user: string, position: number, joinedAt: number }> = []
    this.post.forEach((user, i) => {
      const p = this.preCount + i + 1
      const u = this.users.get(user)
      if (u !== undefined && u[0] === p) after.push({ user, position: p, joinedAt: u[1] })
    })
    return { ...this.view(), preQueue: pre, after }
  }
}
