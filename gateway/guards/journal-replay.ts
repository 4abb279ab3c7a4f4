/**
 * The store side of replaying a journaled buy (gateway/pending.ts): the same operations the dedupe and
 * quota guards make live — the segment counters `q:{C:P:i}` with `addIfWithin`, and with a dedupe mark
 * `markAndAdd` (one atomic step) — so a replayed buy is judged exactly as a live one, against the same
 * counters other nodes and live requests use. No HTTP here.
 *
 * The dedupe mark a replay sets holds `<ticket>/<segment>`: a gateway that crashed after the store
 * admitted an entry but before the journal said so finds its own mark on the next replay and knows the
 * entry was admitted, in which segment, instead of answering DUPLICATE. Without a dedupe mark that window
 * (milliseconds) leaves the unit taken and unsent — never an extra unit sold.
 */
import { limitKey, segmentKey } from '../../conf/store-keys.js'
import type { Store } from '../../limiter/store.js'
import type { Rejection, Settler } from '../pipeline/types.js'
import { fnv1a } from './values.js'
import { segmentQuota } from './quota.js'

/**
 * ctx.locals key: the dedupe mark (a JournalMark) a dedupe guard not fused with the quota leaves for the
 * quota, so that a buy the quota journals carries its buyer's mark wherever the dedupe stood in the route.
 */
export const JOURNAL_MARK = 'dedupe:journal-mark'

/**
 * What a dedupe before the quota (not fused with it: another guard between them, or a Redis Cluster)
 * tells the quota under `store.on_error: journal`:
 * - the dedupe set its mark in the store (`deferred` absent): the mark holds `<request id>/-1`, so the
 *   replay of this request's journal entry knows the mark as its own and takes the unit; the mark is
 *   kept while the buy is PENDING (dedupe.ts releasesMark), so a second attempt is DUPLICATE;
 * - the dedupe's store call failed and it marked node-locally (`deferred` set): the store mark is not set
 *   yet. If the quota's call then reaches the store (the store came back, or on a cluster the mark's
 *   shard is the one down), the quota sets the mark first (`setIfAbsent`; a standing mark → `duplicate`)
 *   and registers `release`; if not, the journal entry carries the mark and its replay sets it.
 * Without this a journaled buy carried no mark when the dedupe had reached the store, the mark was given
 * back at the 202, and the same user could buy a second unit (issue 17, the dedupe-not-adjacent gap).
 */
/**
 * ctx.locals key: a waiting-room pass the `waiting_room` guard could not mark used (the store failed)
 * under `store.on_error: journal` (a RoomPassMark). The quota journals it with the buy, and the replay
 * marks it used before it takes the unit; if the store answers the quota live instead, the quota marks it
 * used first. So a pass buys once across nodes and across the outage.
 */
export const ROOM_PASS = 'waiting-room:journal-pass'

export interface RoomPassMark {
  readonly room: string
  readonly user: string
  readonly exp: number
  /** The guard's answer for a pass already used, and its give-back (a later step refused the buy). */
  readonly used: Rejection
  readonly release: Settler
}

export interface JournalMark {
  readonly key: string
  readonly ttlMs: number
  readonly deferred?: { readonly duplicate: Rejection, readonly release: Settler }
}

export interface ReplayOp {
  readonly ticket: string
  /** The journaled request's X-Request-Id: a live mark `<id>/<segment>` is this request's own (see quota.ts liveMark). */
  readonly requestId: string | null
  readonly campaign: string
  readonly product: string
  /** Segment count and config quota of the product (from the config at replay time). */
  readonly segments: number
  readonly quota: number
  /** Who the unit is for (segment choice, as the live guard: user, else address). */
  readonly who: string
  /** The dedupe mark, when a dedupe guard was before the quota. */
  readonly mark: { readonly key: string, readonly ttlMs: number } | null
  /** Mark and counter can be one atomic call (not on a Redis Cluster: different slots). */
  readonly fused: boolean
  readonly now: number
}

export type ReplayResult =
  | { readonly status: 'ADMITTED', readonly segment: number }
  | { readonly status: 'SOLD_OUT' | 'DUPLICATE' }

/** One replay step; store failures reject (StoreError) and the caller retries the same entry later. */
export async function replayAdmit (store: Store, op: ReplayOp): Promise<ReplayResult> {
  const v = await store.get(limitKey(op.campaign, op.product))
  const n = v === null ? NaN : Number(v)
  const quota = Number.isSafeInteger(n) && n >= 0 ? n : op.quota
  const segs = Math.max(1, op.segments)
  const start = segs > 1 ? fnv1a(op.who) % segs : 0
  const mine = (m: string | null): number | null => {
    if (m === null) return null
    const slash = m.lastIndexOf('/')
    const who = slash < 0 ? m : m.slice(0, slash)
    if (who !== op.ticket && (op.requestId === null || op.requestId === '' || who !== op.requestId)) return null
    const s = Number(m.slice(slash + 1))
    return Number.isSafeInteger(s) ? s : -1
  }
  if (op.mark !== null && op.fused) {
    for (let j = 0; j < segs; j++) {
      const i = (start + j) % segs
      const r = await store.markAndAdd(op.mark.key, `${op.ticket}/${i}`, op.mark.ttlMs, segmentKey(op.campaign, op.product, i), 1, segmentQuota(quota, segs, i))
      if (!r.fresh) {
        const s = mine(await store.get(op.mark.key))
        if (s === null) return { status: 'DUPLICATE' }
        if (s >= 0) return { status: 'ADMITTED', segment: s }
        // `-1`: the mark this request's dedupe set live (or a replay cut short) and no unit yet: take it below.
        return await takeUnit(store, op, quota, segs, start)
      }
      if (r.ok) return { status: 'ADMITTED', segment: i }
    }
    return { status: 'SOLD_OUT' }
  }
  if (op.mark !== null) {
    // Two calls (a cluster): the mark first, as the dedupe guard before the quota does live.
    const fresh = await store.setIfAbsent(op.mark.key, `${op.ticket}/-1`, op.mark.ttlMs)
    if (!fresh) {
      const s = mine(await store.get(op.mark.key))
      if (s === null) return { status: 'DUPLICATE' }
      if (s >= 0) return { status: 'ADMITTED', segment: s }
      // Our own mark (set live by this request's dedupe, or by a replay cut short): go on and take the unit
      // (at worst a second unit counted, never sold twice).
    }
  }
  return await takeUnit(store, op, quota, segs, start)
}

/** The unit of an entry whose mark (if any) is already its own: segments in order; SOLD_OUT drops the mark. */
async function takeUnit (store: Store, op: ReplayOp, quota: number, segs: number, start: number): Promise<ReplayResult> {
  for (let j = 0; j < segs; j++) {
    const i = (start + j) % segs
    const r = await store.addIfWithin(segmentKey(op.campaign, op.product, i), 1, segmentQuota(quota, segs, i))
    if (r.ok) {
      if (op.mark !== null) await store.set(op.mark.key, `${op.ticket}/${i}`, op.mark.ttlMs)
      return { status: 'ADMITTED', segment: i }
    }
  }
  if (op.mark !== null) await store.del(op.mark.key)
  return { status: 'SOLD_OUT' }
}

/** Give back a replayed entry's unit (the upstream did not take the buy); never below 0. */
export async function replayGiveBack (store: Store, campaign: string, product: string, segment: number): Promise<void> {
  await store.addIfWithin(segmentKey(campaign, product, segment), -1, Number.MAX_SAFE_INTEGER, { min: 0 })
}
