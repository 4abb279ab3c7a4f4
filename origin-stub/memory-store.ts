/**
 * The origin's state in this process (the `memory` store): the same behaviour as the Redis store,
 * step for step. Each method runs synchronously to completion before it resolves, so each is atomic
 * exactly as a Lua script is on Redis. Two processes do not share it: run one origin on memory.
 */
import { newOrderToken, orderId as makeOrderId, parseOrderId, refKey } from './keys.js'
import type { BuyResult, DeadLetter, Order, OrderStatus, OriginStore, PayResult, ProductRef, QueueEntry, StockView } from './types.js'

interface MemOrder {
  status: OrderStatus
  readonly user: string
  readonly queuedAt: number
  createdAt: number | null
  payBy: number | null
  paidAt: number | null
  cancelledAt: number | null
}

interface Delivery { readonly seq: string, consumer: string, deliveredAt: number }

interface MemProduct {
  readonly ref: ProductRef
  readonly stock: number
  sale: number
  locked: number
  sold: number
  seq: number
  /** user → order token */
  readonly buyers: Map<string, string>
  readonly orders: Map<string, MemOrder>
  /** Not yet delivered, FIFO: [entryId, order token]. */
  readonly fresh: Array<[string, string]>
  /** Delivered, not completed: entryId → delivery (insertion order = delivery order). */
  readonly pending: Map<string, Delivery>
  /** CREATED orders awaiting payment: order token → deadline. */
  readonly paydue: Map<string, number>
  entrySeq: number
  /** Units released and not yet claimed by takeReleased. */
  released: number
  /** The dead-letter stream: entryId → letter (insertion order = oldest first). */
  readonly dead: Map<string, { seq: string, reason: string, attempts: number, at: number }>
  /**
   * QUEUED orders whose notice is not known to be in the queue (the Redis store's `queued` zset): order
   * token → since when. Always empty here: the buy and its notice are one step.
   */
  readonly noticed: Map<string, number>
}

export interface MemoryOriginStoreOptions {
  /** Clock for delivery idle times (claimIdle); default Date.now. */
  readonly clock?: () => number
}

export function createMemoryOriginStore (opts: MemoryOriginStoreOptions = {}): OriginStore {
  const clock = opts.clock ?? Date.now
  const products = new Map<string, MemProduct>()
  let closed = false

  const get = (ref: ProductRef): MemProduct | undefined => products.get(refKey(ref))

  const view = (p: MemProduct, seq: string, o: MemOrder): Order => ({
    orderId: makeOrderId(p.ref, seq),
    campaign: p.ref.campaign,
    product: p.ref.product,
    user: o.user,
    status: o.status,
    queuedAt: o.queuedAt,
    createdAt: o.createdAt,
    payBy: o.payBy,
    paidAt: o.paidAt,
    cancelledAt: o.cancelledAt
  })

  const cancel = (p: MemProduct, seq: string, o: MemOrder, now: number): void => {
    o.status = 'CANCELLED'
    o.cancelledAt = now
    p.locked -= 1
    p.sale += 1
    p.released += 1
    p.paydue.delete(seq)
  }

  const entries = (p: MemProduct, list: Array<[string, string]>): QueueEntry[] =>
    list.map(([entryId, seq]) => ({ ref: p.ref, entryId, orderId: makeOrderId(p.ref, seq) }))

  return {
    kind: 'memory',
    get healthy () { return !closed },

    async init (list) {
      for (const { campaign, product, stock } of list) {
        const ref = { campaign, product }
        const k = refKey(ref)
        if (products.has(k)) continue
        products.set(k, {
          ref,
          stock,
          sale: stock,
          locked: 0,
          sold: 0,
          seq: 0,
          buyers: new Map(),
          orders: new Map(),
          fresh: [],
          pending: new Map(),
          paydue: new Map(),
          entrySeq: 0,
          released: 0,
          dead: new Map(),
          noticed: new Map()
        })
      }
    },

    async buy (ref, user, now): Promise<BuyResult> {
      const p = get(ref)
      if (p === undefined) return { kind: 'sold_out' }
      const existing = p.buyers.get(user)
      if (existing !== undefined) return { kind: 'duplicate', orderId: makeOrderId(ref, existing) }
      if (p.sale < 1) return { kind: 'sold_out' }
      p.sale -= 1
      p.locked += 1
      p.seq++
      const seq = newOrderToken()
      p.buyers.set(user, seq)
      p.orders.set(seq, { status: 'QUEUED', user, queuedAt: now, createdAt: null, payBy: null, paidAt: null, cancelledAt: null })
      p.fresh.push([`${++p.entrySeq}-0`, seq])
      return { kind: 'queued', orderId: makeOrderId(ref, seq) }
    },

    async stock (ref): Promise<StockView | null> {
      const p = get(ref)
      return p === undefined ? null : { stock: p.stock, sale: p.sale, locked: p.locked, sold: p.sold }
    },

    async order (id) {
      const parsed = parseOrderId(id)
      if (parsed === null) return null
      const p = get(parsed.ref)
      const o = p?.orders.get(parsed.token)
      return p === undefined || o === undefined ? null : view(p, parsed.token, o)
    },

    async orderOf (ref, user) {
      const p = get(ref)
      const token = p?.buyers.get(user)
      const o = token === undefined ? undefined : p?.orders.get(token)
      return p === undefined || token === undefined || o === undefined ? null : view(p, token, o)
    },

    async pay (id, user, now): Promise<PayResult> {
      const parsed = parseOrderId(id)
      if (parsed === null) return { kind: 'not_found' }
      const p = get(parsed.ref)
      const o = p?.orders.get(parsed.token)
      if (p === undefined || o === undefined) return { kind: 'not_found' }
      if (user !== null && user !== o.user) return { kind: 'forbidden' }
      switch (o.status) {
        case 'PAID': return { kind: 'paid', already: true, order: view(p, parsed.token, o) }
        case 'CANCELLED': return { kind: 'cancelled', order: view(p, parsed.token, o), byThisCall: false }
        case 'QUEUED': return { kind: 'not_created', order: view(p, parsed.token, o) }
        case 'CREATED':
          if (o.payBy !== null && now >= o.payBy) {
            cancel(p, parsed.token, o, now)
            return { kind: 'cancelled', order: view(p, parsed.token, o), byThisCall: true }
          }
          o.status = 'PAID'
          o.paidAt = now
          p.locked -= 1
          p.sold += 1
          p.paydue.delete(parsed.token)
          return { kind: 'paid', already: false, order: view(p, parsed.token, o) }
      }
    },

    async readOwnPending (ref, consumer, max) {
      const p = get(ref)
      if (p === undefined) return []
      const out: Array<[string, string]> = []
      const t = clock()
      for (const [id, d] of p.pending) {
        if (out.length >= max) break
        if (d.consumer === consumer) {
          d.deliveredAt = t
          out.push([id, d.seq])
        }
      }
      return entries(p, out)
    },

    async readNew (ref, consumer, max) {
      const p = get(ref)
      if (p === undefined) return []
      const taken = p.fresh.splice(0, Math.max(0, max))
      const t = clock()
      for (const [id, seq] of taken) p.pending.set(id, { seq, consumer, deliveredAt: t })
      return entries(p, taken)
    },

    async claimIdle (ref, consumer, minIdleMs, max) {
      const p = get(ref)
      if (p === undefined) return []
      const t = clock()
      const out: Array<[string, string]> = []
      for (const [id, d] of p.pending) {
        if (out.length >= max) break
        if (t - d.deliveredAt >= minIdleMs) {
          d.consumer = consumer
          d.deliveredAt = t
          out.push([id, d.seq])
        }
      }
      return entries(p, out)
    },

    async complete (entry, now, paymentTimeoutMs) {
      const parsed = parseOrderId(entry.orderId)
      const p = get(entry.ref)
      if (p === undefined) return false
      p.pending.delete(entry.entryId)
      const o = parsed === null ? undefined : p.orders.get(parsed.token)
      if (parsed === null || o === undefined || o.status !== 'QUEUED') return false
      p.noticed.delete(parsed.token)
      o.status = 'CREATED'
      o.createdAt = now
      o.payBy = now + paymentTimeoutMs
      p.paydue.set(parsed.token, o.payBy)
      return true
    },

    async queueDepth (ref) {
      const p = get(ref)
      return p === undefined ? 0 : p.fresh.length + p.pending.size
    },

    async createDirect (id, now, paymentTimeoutMs) {
      const parsed = parseOrderId(id)
      const p = parsed === null ? undefined : get(parsed.ref)
      const o = parsed === null ? undefined : p?.orders.get(parsed.token)
      if (parsed === null || p === undefined || o === undefined || o.status !== 'QUEUED') return false
      p.noticed.delete(parsed.token)
      o.status = 'CREATED'
      o.createdAt = now
      o.payBy = now + paymentTimeoutMs
      p.paydue.set(parsed.token, o.payBy)
      return true
    },

    async lostNotices (ref, before, now, max) {
      const p = get(ref)
      if (p === undefined || max <= 0) return []
      const cand: string[] = []
      for (const [seq, at] of p.noticed) {
        if (cand.length >= max) break
        if (at <= before) cand.push(seq)
      }
      const lost: string[] = []
      for (const seq of cand) {
        p.noticed.delete(seq) // re-inserted last: the map stays in time order
        if (p.orders.get(seq)?.status !== 'QUEUED') continue
        p.noticed.set(seq, now)
        lost.push(makeOrderId(ref, seq))
      }
      return lost
    },

    async noticeKept (id) {
      const parsed = parseOrderId(id)
      if (parsed !== null) get(parsed.ref)?.noticed.delete(parsed.token)
    },

    async requeue (id) {
      const parsed = parseOrderId(id)
      const p = parsed === null ? undefined : get(parsed.ref)
      if (parsed === null || p === undefined || p.orders.get(parsed.token)?.status !== 'QUEUED') return 'skipped'
      p.fresh.push([`${++p.entrySeq}-0`, parsed.token])
      p.noticed.delete(parsed.token)
      return 'queued'
    },

    async deadLetterDirect (id, reason, attempts, now) {
      const parsed = parseOrderId(id)
      const p = parsed === null ? undefined : get(parsed.ref)
      if (parsed === null || p === undefined || p.orders.get(parsed.token)?.status !== 'QUEUED') return
      p.dead.set(`${++p.entrySeq}-0`, { seq: parsed.token, reason: reason.slice(0, 200), attempts, at: now })
    },

    async deadLetter (entry, reason, attempts, now) {
      const p = get(entry.ref)
      const parsed = parseOrderId(entry.orderId)
      if (p === undefined || parsed === null) return
      const d = p.pending.get(entry.entryId)
      const i = p.fresh.findIndex(([id]) => id === entry.entryId)
      if (d === undefined && i === -1) return // already parked or completed
      p.pending.delete(entry.entryId)
      if (i !== -1) p.fresh.splice(i, 1)
      p.dead.set(`${++p.entrySeq}-0`, { seq: parsed.token, reason: reason.slice(0, 200), attempts, at: now })
    },

    async deadLetters (ref, max) {
      const p = get(ref)
      if (p === undefined) return []
      const out: DeadLetter[] = []
      for (const [entryId, l] of p.dead) {
        if (out.length >= max) break
        out.push({ ref, entryId, orderId: makeOrderId(ref, l.seq), reason: l.reason, attempts: l.attempts, at: l.at })
      }
      return out
    },

    async deadLetterCount (ref) {
      return get(ref)?.dead.size ?? 0
    },

    async redrive (ref, max) {
      const p = get(ref)
      if (p === undefined) return 0
      let n = 0
      for (const [id, l] of [...p.dead].slice(0, Math.max(0, max))) {
        p.dead.delete(id)
        if (p.orders.get(l.seq)?.status !== 'QUEUED') continue
        p.fresh.push([`${++p.entrySeq}-0`, l.seq])
        n++
      }
      return n
    },

    async sweep (ref, now, max) {
      const p = get(ref)
      if (p === undefined) return 0
      let n = 0
      for (const [seq, deadline] of p.paydue) {
        if (n >= max) break
        if (deadline > now) continue
        const o = p.orders.get(seq)
        if (o !== undefined && o.status === 'CREATED') {
          cancel(p, seq, o, now)
          n++
        } else {
          p.paydue.delete(seq)
        }
      }
      return n
    },

    async takeReleased (ref) {
      const p = get(ref)
      if (p === undefined) return 0
      const n = p.released
      p.released = 0
      return n
    },

    async releaseToEdge () { return 0 },
    async followQuota () { return 0 },

    async close () { closed = true }
  }
}
