/**
 * Lost order notices (issue 17): with the order stream on a Redis of its own (`origin.queue`), a buy
 * takes its unit and records its order (QUEUED) in the stock step, then sends the notice to the stream
 * or, when that fails, to the disk buffer. An origin killed between the stock step and the buffer's
 * fsync leaves a QUEUED order whose notice is nowhere: nothing would ever create it, and its unit
 * would stay locked. This step, run at start and with every sweep, finds such orders and sends their
 * notice again: to the stream, or to the disk buffer while the stream refuses it.
 *
 * How they are found: the stock step puts the order in an index (`queued:{C:P}`, scored by time) that
 * it leaves as soon as its notice is known to be safe — the XADD answered, the buffer's fsync returned
 * (`noticeKept`), or the order created. So the index holds only the few orders whose notice is in
 * flight, and those older than `origin.requeue_after` are the lost ones (`OriginStore.lostNotices`),
 * found without reading the streams (whose backlog may be long). One that did arrive (an XADD whose
 * answer was lost, a failed removal) is named too: its notice is sent twice, harmless (below). A notice
 * in this origin's own buffer is left to its sender.
 *
 * Why re-queue and not cancel: the buyer had no answer, but a retried buy answers DUPLICATE with this
 * very order id (one order per user and product), so the buyer may already be waiting on it; cancelling
 * would leave them an order that can never be paid and no way to buy again. Re-queueing is safe because
 * creation (QUEUED → CREATED) is one atomic step that checks the status (the worker's `complete`, the
 * sender's `createDirect`): a notice sent again for an order that was created meanwhile — its first
 * notice did arrive after all, or a buffer's direct call got there first — only acks. The order system may see the order
 * twice (at least once, as with an ambiguous XADD); the order store never.
 *
 * Bound: an order's notice time is set when it is queued and moved to now each time it is examined, so
 * an order is looked at once per bound at most; the bound must exceed the longest a live buy can take
 * between its stock step and its notice (the command timeout plus the buffer's fsync), hence at least 1 s.
 */
import type { NoticeBuffer } from './buffer.js'
import type { OriginStore, ProductRef } from './types.js'

export interface RequeueOptions {
  readonly store: OriginStore
  /** A QUEUED order whose notice was last known sent longer ago than this is examined. */
  readonly afterMs: number
  readonly clock?: () => number
  /** This origin's disk buffer, when it has one (a notice there is not lost). */
  readonly buffer?: () => NoticeBuffer | null
  /** Orders examined per product and call (default 200). */
  readonly batch?: number
  /** A lost notice was sent again: to the stream, or to the disk buffer. */
  readonly onRequeued?: (orderId: string, to: 'stream' | 'buffer') => void
  /** The stream refused a lost notice and there is no buffer, or the buffer's disk refused it: looked at again after `afterMs`. */
  readonly onUnsent?: (orderId: string, err?: unknown) => void
}

/** One pass over a product: answers the notices sent again. Store failures reject (the caller retries with the next sweep). */
export type Requeue = (ref: ProductRef) => Promise<number>

export function createRequeue (opts: RequeueOptions): Requeue {
  const clock = opts.clock ?? Date.now
  const batch = opts.batch ?? 200
  return async (ref) => {
    let n = 0
    for (;;) {
      const now = clock()
      const lost = await opts.store.lostNotices(ref, now - opts.afterMs, now, batch)
      const buffer = opts.buffer?.() ?? null
      for (const id of lost) {
        if (buffer?.has(id) === true) continue
        const r = await opts.store.requeue(id)
        if (r === 'queued') { n++; opts.onRequeued?.(id, 'stream'); continue }
        if (r === 'skipped') continue
        if (buffer === null) { opts.onUnsent?.(id); continue }
        try {
          await buffer.append(id, now)
          await opts.store.noticeKept(id).catch(() => {})
          n++
          opts.onRequeued?.(id, 'buffer')
        } catch (err) {
          opts.onUnsent?.(id, err)
        }
      }
      // Each order named has its time moved to now: the next call names the next ones.
      if (lost.length < batch) return n
    }
  }
}
