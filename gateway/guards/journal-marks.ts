/**
 * What the guards before the quota hand it under `store.on_error: journal`, so that a buy the quota
 * journals carries everything its replay must judge (the replay itself: limiter/quota-ledger.ts
 * replayAdmit; the journal: gateway/pending.ts).
 */
import type { Rejection, Settler } from '../pipeline/types.js'

/**
 * ctx.locals key: the dedupe mark (a JournalMark) a dedupe guard not fused with the quota leaves for the
 * quota, so that a journaled buy carries its buyer's mark wherever the dedupe stood in the route.
 */
export const JOURNAL_MARK = 'dedupe:journal-mark'

/**
 * What a dedupe before the quota (not fused with it: another guard between them, or a Redis Cluster)
 * tells the quota:
 * - the dedupe set its mark in the store (`deferred` absent): the mark holds `<request id>/-1`, so the
 *   replay of this request's journal entry knows the mark as its own and takes the unit; the mark is
 *   kept while the buy is PENDING (dedupe.ts releasesMark), so a second attempt is DUPLICATE;
 * - the dedupe's store call failed and it marked node-locally (`deferred` set): the store mark is not set
 *   yet. If the quota's call then reaches the store (the store came back, or on a cluster the mark's
 *   shard is the one down), the quota sets the mark first (`setIfAbsent`; a standing mark → `duplicate`)
 *   and registers `release`; if not, the journal entry carries the mark and its replay sets it.
 * Without the mark in the entry, a journaled buy's mark was given back at the 202 and the same user
 * could buy a second unit.
 */
export interface JournalMark {
  readonly key: string
  readonly ttlMs: number
  readonly deferred?: { readonly duplicate: Rejection, readonly release: Settler }
}

/**
 * ctx.locals key: a waiting-room pass the `waiting_room` guard could not mark used (the store failed),
 * a RoomPassMark. The quota journals it with the buy, and the replay marks it used before it takes the
 * unit; if the store answers the quota live instead, the quota marks it used first. So a pass buys once
 * across nodes and across the outage.
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
