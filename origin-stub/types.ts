/**
 * The purchase origin's vocabulary: what a buy, a payment and an order look like, and the one
 * interface (`OriginStore`) that the memory and the Redis implementations both honour. Both run the
 * same behaviour suite (test/origin-stub/store-behaviour.ts).
 *
 * Clock: every method that changes state takes `now` (epoch ms) from the caller — the origin process's
 * clock (`Date.now()` in production, a fake one in tests), never Redis TIME. Exactly-once cancellation
 * does not depend on clocks agreeing: it comes from the status check inside one atomic step; a skew
 * between two origin processes only moves the moment an unpaid order is cancelled by that skew.
 */

export type OrderStatus = 'QUEUED' | 'CREATED' | 'PAID' | 'CANCELLED'

/** One campaign × product sold by the origin. */
export interface ProductRef { readonly campaign: string; readonly product: string }

/** `{stock, sale, locked, sold}`: stock == sale + locked + sold, each >= 0, at every instant. */
export interface StockView {
  /** Units the sale started with (the config's quota when the stock was first initialised). */
  readonly stock: number
  /** Still for sale. */
  readonly sale: number
  /** Held by an order that is QUEUED or CREATED (not paid yet). */
  readonly locked: number
  /** Paid. */
  readonly sold: number
}

export interface Order {
  readonly orderId: string
  readonly campaign: string
  readonly product: string
  readonly user: string
  readonly status: OrderStatus
  readonly queuedAt: number
  readonly createdAt: number | null
  /** Payment deadline, set when the order is created (createdAt + payment timeout). */
  readonly payBy: number | null
  readonly paidAt: number | null
  readonly cancelledAt: number | null
}

export type BuyResult =
  /**
   * `unsent`: the unit is taken and the order recorded (QUEUED) in the atomic stock step, but the order
   * stream (on a Redis of its own, `origin.queue`) refused the notice: the caller must put it in the
   * disk buffer (origin-stub/buffer.ts) before it answers the buyer.
   */
  | { readonly kind: 'queued'; readonly orderId: string; readonly unsent?: true }
  | { readonly kind: 'sold_out' }
  | { readonly kind: 'duplicate'; readonly orderId: string }

export type PayResult =
  /** `already`: it was paid before (idempotent retry). */
  | { readonly kind: 'paid'; readonly already: boolean; readonly order: Order }
  | { readonly kind: 'not_found' }
  /** The order belongs to another user (only checked when the payer says who they are). */
  | { readonly kind: 'forbidden' }
  /** Still QUEUED: the order system has not created it yet; retry later. */
  | { readonly kind: 'not_created'; readonly order: Order }
  /** Cancelled (payment timeout), possibly by this very call when the deadline had passed. */
  | { readonly kind: 'cancelled'; readonly order: Order; readonly byThisCall: boolean }

/** A message of the order queue, as delivered to one consumer. */
export interface QueueEntry {
  readonly ref: ProductRef
  /** The queue's own id of this delivery (a stream entry id on Redis). */
  readonly entryId: string
  readonly orderId: string
}

/** An order notice the order writer kept failing on, parked in the product's dead-letter stream. */
export interface DeadLetter {
  readonly ref: ProductRef
  /** Its id in the dead-letter stream. */
  readonly entryId: string
  readonly orderId: string
  /** The last failure, as the worker saw it. */
  readonly reason: string
  readonly attempts: number
  /** When it was parked (epoch ms). */
  readonly at: number
}

/**
 * Shared state of the origin. Every method is one atomic step on the store (one Lua script on Redis),
 * so any number of origin processes may share one Redis.
 *
 * Failures (store down, timeout) reject with a `StoreError`; expected outcomes are values.
 */
export interface OriginStore {
  readonly kind: 'memory' | 'redis' | 'redis-cluster'

  /** Create the stock of each product with `stock` units unless it already exists (a restart never resets a sale), and the order queue. */
  init(products: ReadonlyArray<ProductRef & { readonly stock: number }>): Promise<void>

  /**
   * One purchase attempt: DUPLICATE when the user already has an order for this product; SOLD_OUT when
   * `sale < 1`; else move one unit sale → locked, record the user's order (QUEUED) and enqueue it.
   */
  buy(ref: ProductRef, user: string, now: number): Promise<BuyResult>

  /** null when the product was never initialised. */
  stock(ref: ProductRef): Promise<StockView | null>

  order(orderId: string): Promise<Order | null>

  /** The user's order for this product (there is at most one), null when none. */
  orderOf(ref: ProductRef, user: string): Promise<Order | null>

  /** CREATED → PAID and one unit locked → sold. `user` (when not null) must be the order's user. */
  pay(orderId: string, user: string | null, now: number): Promise<PayResult>

  // --- the order queue (a Redis Stream with a consumer group on Redis) ---

  /** Entries delivered to `consumer` earlier and not completed (after a crash or a store outage). */
  readOwnPending(ref: ProductRef, consumer: string, max: number): Promise<QueueEntry[]>
  /** New entries, now owned by `consumer` until completed. */
  readNew(ref: ProductRef, consumer: string, max: number): Promise<QueueEntry[]>
  /** Take over entries that another consumer got more than `minIdleMs` ago and never completed. */
  claimIdle(ref: ProductRef, consumer: string, minIdleMs: number, max: number): Promise<QueueEntry[]>
  /**
   * Create the order (QUEUED → CREATED, payment deadline `now + paymentTimeoutMs`) and acknowledge the
   * entry, in one step. Idempotent: a redelivered entry whose order is no longer QUEUED only acks;
   * answers whether this call created the order.
   */
  complete(entry: QueueEntry, now: number, paymentTimeoutMs: number): Promise<boolean>
  /** Entries not completed yet (new + pending). */
  queueDepth(ref: ProductRef): Promise<number>

  // --- the direct call of a buffered notice (origin-stub/buffer.ts): no stream involved ---

  /**
   * Create the order (QUEUED → CREATED, deadline `now + paymentTimeoutMs`) straight in the order store,
   * without the stream. Idempotent: answers false (and changes nothing) when the order is not QUEUED
   * (created already by the worker, because an ambiguous XADD did reach the stream) or does not exist.
   */
  createDirect(orderId: string, now: number, paymentTimeoutMs: number): Promise<boolean>
  /** Park a buffered notice the order writer kept failing on in the product's dead-letter stream (no queue entry to ack). */
  deadLetterDirect(orderId: string, reason: string, attempts: number, now: number): Promise<void>

  // --- lost notices (origin-stub/requeue.ts): a QUEUED order whose notice reached no stream ---

  /**
   * QUEUED orders whose notice is not known to have reached the order stream or a disk buffer, recorded
   * at or before `before`: their notice was lost (an origin killed between the stock step and the
   * buffer's fsync). An order enters this index in the stock step only when the stream is on a Redis of
   * its own (on the store's Redis the stock step and the notice are one step), and leaves it when the
   * stream took the notice (in `buy`, `requeue`), when `noticeKept` says a buffer holds it, or when it
   * is created. At most `max`, oldest first; each one named has its time moved to `now`, so it is named
   * again only after another bound. Naming an order whose notice did arrive (a lost answer, a failed
   * removal) only causes a duplicate notice: creation is exactly once.
   */
  lostNotices(ref: ProductRef, before: number, now: number, max: number): Promise<string[]>
  /** The order's notice is on a disk buffer (fsynced): it leaves the lost-notice index. */
  noticeKept(orderId: string): Promise<void>
  /**
   * Send a QUEUED order's notice to the order stream again (it then leaves the lost-notice index): `queued`; `skipped` (nothing sent) when the
   * order is no longer QUEUED or does not exist; `unsent` when the stream (on a Redis of its own) refused
   * it — the caller puts it in the disk buffer.
   */
  requeue(orderId: string): Promise<'queued' | 'skipped' | 'unsent'>

  // --- the dead-letter stream (origin-stub/dead-letter.ts) ---

  /**
   * Park an entry the order writer failed on `attempts` times: it leaves the queue (acked) and is added
   * to the product's dead-letter stream, in one step. Its order stays QUEUED and its unit locked (the
   * invariant holds; the sweeper does not cancel a QUEUED order). Idempotent per entry.
   */
  deadLetter(entry: QueueEntry, reason: string, attempts: number, now: number): Promise<void>
  /** The oldest `max` dead letters of a product (an admin view). */
  deadLetters(ref: ProductRef, max: number): Promise<DeadLetter[]>
  /** Dead letters in total (a gauge). */
  deadLetterCount(ref: ProductRef): Promise<number>
  /**
   * Re-drive up to `max` dead letters, oldest first: each whose order is still QUEUED goes back to the
   * order queue (one step per letter); the others are dropped. Answers how many were queued again.
   */
  redrive(ref: ProductRef, max: number): Promise<number>

  /** Cancel up to `max` CREATED orders whose deadline is <= now, unit locked → sale; answers how many. Exactly once per order. */
  sweep(ref: ProductRef, now: number, max: number): Promise<number>

  // --- the ledger with the edge (see origin-stub/ledger.ts) ---

  /**
   * Units released (cancelled orders: by the sweeper or by a pay after the deadline) and not yet handed
   * to the edge, claimed by this call: answers how many and sets the count to 0, atomically. A process
   * that dies after claiming and before handing them on loses them for the edge (units stay counted as
   * admitted there: never an oversell).
   */
  takeReleased(ref: ProductRef): Promise<number>

  /**
   * Give `units` back to the edge's quota when the gateway shares this store (same Redis, same
   * key_prefix): the edge's segment counters `q:{C:P:i}` go down by `units` in total (never below 0) and
   * a `{"c","p","released"}` message on the edge's `quota` channel clears every node's sold-out latch.
   * Answers the units applied. Memory: 0 (nothing is shared; the origin's `onRelease` hook carries them).
   */
  releaseToEdge(ref: ProductRef, units: number, segments: number): Promise<number>

  /**
   * Follow a quota the edge's admin set (`PUT /admin/quota`, key `ql:{C:P}` on a shared store): the
   * stock and sale move by the difference from the last quota followed (or from the initial stock).
   * Answers the change applied, 0 when none, null when it cannot be followed (sale would go below 0).
   * Memory: 0.
   */
  followQuota(ref: ProductRef): Promise<number | null>

  /** True while the store is believed reachable. */
  readonly healthy: boolean
  close(): Promise<void>
}
