/**
 * The behaviour every OriginStore honours, run on memory, Redis and Redis Cluster
 * (store-memory.test.ts, store-redis.test.ts). Time is passed in as numbers (the store never reads a
 * clock for state changes), so payment deadlines are tested without sleeping; only consumer idle times
 * (claimIdle) are real milliseconds.
 */
import type { Test } from 'tap'
import type { OriginStore, ProductRef, QueueEntry, StockView } from '../../origin-stub/types.js'

export type MakeStore = (t: Test) => Promise<OriginStore>

/**
 * What a backend can do that the interface cannot: make an order's notice lost, as an origin killed
 * between the stock step and the buffer's fsync leaves it — not in the stream, still in the queued
 * index at its buy's time (the memory store cannot lose one: its buy is one step in the process).
 */
export interface StoreHooks {
  readonly loseNotice?: (t: Test, store: OriginStore, ref: ProductRef, orderId: string) => Promise<void>
}

const A: ProductRef = { campaign: 'c1', product: 'p1' }
const B: ProductRef = { campaign: 'c1', product: 'p2' }
const T0 = 1_763_800_000_000
const PAY_MS = 10_000

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

function invariant (t: Test, s: StockView | null, msg: string): void {
  t.ok(s !== null, `${msg}: stock exists`)
  if (s === null) return
  t.equal(s.sale + s.locked + s.sold, s.stock, `${msg}: sale + locked + sold == stock`)
  t.ok(s.sale >= 0 && s.locked >= 0 && s.sold >= 0, `${msg}: all >= 0`)
}

async function queueAll (store: OriginStore, ref: ProductRef, consumer = 'w1'): Promise<void> {
  for (;;) {
    const batch = await store.readNew(ref, consumer, 100)
    if (batch.length === 0) return
    for (const e of batch) await store.complete(e, T0, PAY_MS)
  }
}

export function storeBehaviour (t: Test, make: MakeStore, hooks: StoreHooks = {}): void {
  t.test('init creates the stock only when absent', async (t) => {
    const store = await make(t)
    await store.init([{ ...A, stock: 3 }])
    t.same(await store.stock(A), { stock: 3, sale: 3, locked: 0, sold: 0 })
    t.equal(await store.stock(B), null, 'an unknown product has no stock')
    t.equal((await store.buy(A, 'u1', T0)).kind, 'queued')
    await store.init([{ ...A, stock: 10 }, { ...B, stock: 2 }])
    t.same(await store.stock(A), { stock: 3, sale: 2, locked: 1, sold: 0 }, 'a second init (a restart) never resets a sale')
    t.same(await store.stock(B), { stock: 2, sale: 2, locked: 0, sold: 0 })
  })

  t.test('buy: queued, duplicate with the same order, sold out, invariant', async (t) => {
    const store = await make(t)
    await store.init([{ ...A, stock: 2 }, { ...B, stock: 1 }])
    const r1 = await store.buy(A, 'alice', T0)
    t.equal(r1.kind, 'queued')
    const id = r1.kind === 'queued' ? r1.orderId : ''
    t.match(id, /^c1:p1:[A-Za-z0-9_-]{22}$/, 'product, then a random 128-bit token')
    t.same(await store.buy(A, 'alice', T0 + 1), { kind: 'duplicate', orderId: id }, 'retried buy returns the same order')
    const o = await store.order(id)
    t.match(o, { orderId: id, campaign: 'c1', product: 'p1', user: 'alice', status: 'QUEUED', queuedAt: T0, createdAt: null, payBy: null })
    t.same(await store.orderOf(A, 'alice'), o, "the user's order, looked up by product")
    t.equal(await store.orderOf(A, 'nobody'), null)
    t.equal(await store.orderOf(B, 'alice'), null, 'per product')
    t.equal((await store.buy(A, 'bob', T0)).kind, 'queued')
    t.same(await store.buy(A, 'carol', T0), { kind: 'sold_out' })
    t.same(await store.stock(A), { stock: 2, sale: 0, locked: 2, sold: 0 })
    t.equal((await store.buy(B, 'alice', T0)).kind, 'queued', 'one order per user PER PRODUCT')
    t.same(await store.buy({ campaign: 'c1', product: 'nope' }, 'alice', T0), { kind: 'sold_out' }, 'no stock = nothing to sell')
    invariant(t, await store.stock(A), 'A')
    invariant(t, await store.stock(B), 'B')
    t.equal(await store.order('c1:p1:99'), null, 'unknown order')
    t.equal(await store.order('garbage'), null, 'malformed id')
    t.equal(await store.order('c1:p1:0'), null, 'malformed id (zero)')
  })

  t.test('ids with separators do not collide', async (t) => {
    const store = await make(t)
    const x = { campaign: 'a:b', product: 'c' }
    const y = { campaign: 'a', product: 'b:c' }
    const z = { campaign: 'x{y}', product: '}{' }
    await store.init([{ ...x, stock: 1 }, { ...y, stock: 1 }, { ...z, stock: 1 }])
    const rx = await store.buy(x, 'u', T0)
    const ry = await store.buy(y, 'u', T0)
    const rz = await store.buy(z, 'u', T0)
    t.equal(rx.kind, 'queued')
    t.equal(ry.kind, 'queued')
    t.equal(rz.kind, 'queued')
    if (rz.kind === 'queued') t.match(await store.order(rz.orderId), { campaign: 'x{y}', product: '}{', user: 'u' })
    if (rx.kind === 'queued') t.match(await store.order(rx.orderId), { campaign: 'a:b', product: 'c' })
  })

  t.test('queue: complete creates the order once, redelivery creates nothing', async (t) => {
    const store = await make(t)
    await store.init([{ ...A, stock: 5 }])
    for (const u of ['u1', 'u2', 'u3']) await store.buy(A, u, T0)
    t.equal(await store.queueDepth(A), 3)
    const batch = await store.readNew(A, 'w1', 10)
    t.equal(batch.length, 3)
    t.same(await store.readNew(A, 'w2', 10), [], 'delivered entries are not delivered again as new')
    t.equal(await store.queueDepth(A), 3, 'pending entries still count')
    const first = batch[0]
    if (first === undefined) throw new Error('no entry')
    t.equal(await store.complete(first, T0 + 5, PAY_MS), true)
    t.equal(await store.complete(first, T0 + 9, PAY_MS), false, 'a redelivered entry creates no second order')
    t.match(await store.order(first.orderId), { status: 'CREATED', createdAt: T0 + 5, payBy: T0 + 5 + PAY_MS })
    t.equal(await store.queueDepth(A), 2)
    t.same((await store.readOwnPending(A, 'w1', 10)).map((e) => e.orderId), batch.slice(1).map((e) => e.orderId), 'own pending = delivered, not completed')
    t.same(await store.readOwnPending(A, 'w2', 10), [], 'nothing pending for another consumer')
    for (const e of batch.slice(1)) await store.complete(e, T0 + 5, PAY_MS)
    t.equal(await store.queueDepth(A), 0)
    t.same(await store.readOwnPending(A, 'w1', 10), [])
    t.same(await store.stock(A), { stock: 5, sale: 2, locked: 3, sold: 0 }, 'creating an order moves no stock')
  })

  t.test('a dead consumer\'s entries are claimed by another after the idle time', async (t) => {
    const store = await make(t)
    await store.init([{ ...A, stock: 5 }])
    for (const u of ['u1', 'u2']) await store.buy(A, u, T0)
    const taken = await store.readNew(A, 'dead', 10)
    t.equal(taken.length, 2)
    t.same(await store.claimIdle(A, 'alive', 60_000, 10), [], 'not idle long enough: not claimed')
    await sleep(60)
    const claimed = await store.claimIdle(A, 'alive', 30, 10)
    t.same(claimed.map((e) => e.orderId).sort(), taken.map((e) => e.orderId).sort(), 'both claimed')
    t.same(await store.readOwnPending(A, 'dead', 10), [], 'no longer the dead consumer\'s')
    for (const e of claimed) t.equal(await store.complete(e, T0, PAY_MS), true)
    // The dead consumer coming back and completing its stale copy is harmless.
    const stale = taken[0]
    if (stale !== undefined) t.equal(await store.complete(stale, T0, PAY_MS), false)
    t.equal(await store.queueDepth(A), 0)
  })

  t.test('pay: not created yet, paid, idempotent, forbidden, not found', async (t) => {
    const store = await make(t)
    await store.init([{ ...A, stock: 3 }])
    const r = await store.buy(A, 'alice', T0)
    const id = r.kind === 'queued' ? r.orderId : ''
    t.match(await store.pay(id, 'alice', T0), { kind: 'not_created', order: { status: 'QUEUED' } })
    await queueAll(store, A)
    t.same(await store.pay(id, 'mallory', T0 + 1), { kind: 'forbidden' })
    const p1 = await store.pay(id, 'alice', T0 + 100)
    t.match(p1, { kind: 'paid', already: false, order: { status: 'PAID', paidAt: T0 + 100 } })
    t.same(await store.stock(A), { stock: 3, sale: 2, locked: 0, sold: 1 })
    t.match(await store.pay(id, null, T0 + 200), { kind: 'paid', already: true, order: { paidAt: T0 + 100 } }, 'paying twice is idempotent')
    t.same(await store.stock(A), { stock: 3, sale: 2, locked: 0, sold: 1 }, 'and moves nothing')
    t.same(await store.pay('c1:p1:42', null, T0), { kind: 'not_found' })
    t.same(await store.pay('c1:p1:' + 'A'.repeat(22), null, T0), { kind: 'not_found' }, 'well-formed, unknown')
    t.same(await store.pay('nonsense', null, T0), { kind: 'not_found' })
    t.equal(await store.sweep(A, T0 + PAY_MS * 2, 100), 0, 'a paid order is never cancelled')
    t.same(await store.stock(A), { stock: 3, sale: 2, locked: 0, sold: 1 })
  })

  t.test('payment timeout: sweep cancels exactly once, unit back to sale, pay after cancel refused', async (t) => {
    const store = await make(t)
    await store.init([{ ...A, stock: 3 }])
    const ids: string[] = []
    for (const u of ['u1', 'u2', 'u3']) {
      const r = await store.buy(A, u, T0)
      if (r.kind === 'queued') ids.push(r.orderId)
    }
    await queueAll(store, A)
    const [i1, i2, i3] = ids as [string, string, string]
    await store.pay(i1, 'u1', T0 + 1)
    t.equal(await store.sweep(A, T0 + PAY_MS - 1, 100), 0, 'nothing due before the deadline')
    t.equal(await store.sweep(A, T0 + PAY_MS, 1), 1, 'one per call with max 1')
    t.equal(await store.sweep(A, T0 + PAY_MS, 100), 1)
    t.equal(await store.sweep(A, T0 + PAY_MS + 5, 100), 0, 'never twice')
    t.same(await store.stock(A), { stock: 3, sale: 2, locked: 0, sold: 1 })
    t.match(await store.order(i2), { status: 'CANCELLED', cancelledAt: T0 + PAY_MS })
    t.match(await store.pay(i3, 'u3', T0 + PAY_MS + 10), { kind: 'cancelled', byThisCall: false, order: { status: 'CANCELLED' } })
    t.same(await store.stock(A), { stock: 3, sale: 2, locked: 0, sold: 1 }, 'refused pay moves nothing')
    t.same(await store.buy(A, 'u2', T0), { kind: 'duplicate', orderId: i2 }, 'one order per user, even cancelled')
    t.equal((await store.buy(A, 'u4', T0)).kind, 'queued', 'the released unit sells again')
  })

  t.test('pay after the deadline but before the sweeper: cancelled by the pay, once', async (t) => {
    const store = await make(t)
    await store.init([{ ...A, stock: 1 }])
    const r = await store.buy(A, 'u1', T0)
    const id = r.kind === 'queued' ? r.orderId : ''
    await queueAll(store, A)
    t.match(await store.pay(id, 'u1', T0 + PAY_MS), { kind: 'cancelled', byThisCall: true })
    t.same(await store.stock(A), { stock: 1, sale: 1, locked: 0, sold: 0 })
    t.equal(await store.sweep(A, T0 + PAY_MS * 3, 100), 0, 'the sweeper finds nothing left')
    t.match(await store.pay(id, 'u1', T0 + PAY_MS), { kind: 'cancelled', byThisCall: false })
    t.same(await store.stock(A), { stock: 1, sale: 1, locked: 0, sold: 0 })
  })

  t.test('concurrent buys: exactly the stock, no user twice', async (t) => {
    const store = await make(t)
    await store.init([{ ...A, stock: 50 }])
    const users = Array.from({ length: 300 }, (_, i) => `u${i % 120}`)
    const results = await Promise.all(users.map(async (u) => ({ u, r: await store.buy(A, u, T0) })))
    const queued = results.filter((x) => x.r.kind === 'queued')
    t.equal(queued.length, 50, 'exactly the stock')
    t.equal(new Set(queued.map((x) => x.u)).size, 50, 'no user twice')
    t.equal(new Set(queued.map((x) => x.r.kind === 'queued' ? x.r.orderId : '')).size, 50, 'distinct order ids')
    let wrong = 0
    for (const x of results) {
      if (x.r.kind !== 'duplicate') continue
      const o = await store.order(x.r.orderId)
      if (o?.user !== x.u) wrong++
    }
    t.equal(wrong, 0, 'every duplicate points at the user\'s own order')
    t.same(await store.stock(A), { stock: 50, sale: 0, locked: 50, sold: 0 })
  })

  t.test('direct call of a buffered notice: created once, idempotent with the stream path; parked without a queue entry', async (t) => {
    const store = await make(t)
    await store.init([{ ...A, stock: 5 }])
    const b1 = await store.buy(A, 'u1', T0)
    const b2 = await store.buy(A, 'u2', T0)
    const b3 = await store.buy(A, 'u3', T0)
    if (b1.kind !== 'queued' || b2.kind !== 'queued' || b3.kind !== 'queued') { t.fail('queued'); return }
    t.equal(b1.unsent, undefined, 'the stream took the notice')
    t.equal(await store.createDirect(b1.orderId, T0 + 5, PAY_MS), true, 'created by the direct call')
    t.match(await store.order(b1.orderId), { status: 'CREATED', createdAt: T0 + 5, payBy: T0 + 5 + PAY_MS })
    t.equal(await store.createDirect(b1.orderId, T0 + 6, PAY_MS), false, 'a second direct call changes nothing')
    t.equal(await store.createDirect('c1:p1:AAAAAAAAAAAAAAAAAAAAAA', T0, PAY_MS), false, 'an unknown order: nothing')
    t.equal(await store.createDirect('garbage', T0, PAY_MS), false)
    // The same notice also in the stream (an XADD that did arrive): the worker's completion only acks.
    const batch = await store.readNew(A, 'w1', 10)
    const e1 = batch.find((e) => e.orderId === b1.orderId)
    t.ok(e1 !== undefined)
    if (e1 !== undefined) t.equal(await store.complete(e1, T0 + 7, PAY_MS), false, 'created once')
    t.match(await store.order(b1.orderId), { status: 'CREATED', createdAt: T0 + 5 })
    // A notice whose order system kept failing: parked without an entry; re-driven into the queue.
    await store.deadLetterDirect(b2.orderId, 'order system answered 503', 5, T0 + 8)
    t.same((await store.deadLetters(A, 10)).map((l) => [l.orderId, l.reason, l.attempts]), [[b2.orderId, 'order system answered 503', 5]])
    t.equal(await store.redrive(A, 10), 1)
    const again = await store.readNew(A, 'w1', 10)
    t.ok(again.some((e) => e.orderId === b2.orderId), 're-driven into the queue')
    for (const e of [...batch, ...again]) await store.complete(e, T0 + 9, PAY_MS)
    for (const b of [b1, b2, b3]) t.equal((await store.order(b.orderId))?.status, 'CREATED')
    invariant(t, await store.stock(A), 'direct and stream')
    t.same(await store.stock(A), { stock: 5, sale: 2, locked: 3, sold: 0 })
  })

  t.test('lost notices: none while the notice is new, pending or parked, or the order created; a second notice creates once', async (t) => {
    const store = await make(t)
    await store.init([{ ...A, stock: 5 }])
    const ids: string[] = []
    for (const u of ['u1', 'u2', 'u3']) {
      const b = await store.buy(A, u, T0)
      if (b.kind === 'queued') ids.push(b.orderId)
    }
    const [o1, o2, o3] = ids as [string, string, string]
    const LATER = T0 + 60_000
    t.same(await store.lostNotices(A, T0 - 1, LATER, 10), [], 'not older than the bound')
    t.same(await store.lostNotices(A, T0, LATER, 10), [], 'notices the stream took are not lost')
    const batch = await store.readNew(A, 'w1', 2)
    const [e1, e2] = batch as [QueueEntry, QueueEntry]
    await store.deadLetter(e2, 'order system answered 503', 5, T0 + 1)
    t.same(await store.lostNotices(A, LATER, LATER, 10), [], 'pending and parked are not lost (examined: notice time now LATER)')
    t.same(await store.lostNotices(A, LATER - 1, LATER + 1, 10), [], 'examined orders wait another bound')
    // An order created meanwhile: a second notice of it (a lost-notice re-queue racing the worker) only acks.
    t.equal(await store.requeue(o1), 'queued', 'a QUEUED order: its notice is sent again')
    t.equal(await store.complete(e1, T0 + 2, PAY_MS), true, 'the first delivery creates it')
    const dup = (await store.readNew(A, 'w1', 10)).filter((e) => e.orderId === o1)
    t.equal(dup.length, 1, 'the second notice is delivered')
    for (const e of dup) t.equal(await store.complete(e, T0 + 3, PAY_MS), false, 'and creates nothing')
    t.match(await store.order(o1), { status: 'CREATED', createdAt: T0 + 2, payBy: T0 + 2 + PAY_MS })
    t.equal(await store.requeue(o1), 'skipped', 'a created order: nothing sent')
    t.equal(await store.requeue('c1:p1:AAAAAAAAAAAAAAAAAAAAAA'), 'skipped', 'an unknown order')
    t.equal(await store.requeue('garbage'), 'skipped')
    t.equal(await store.createDirect(o3, T0 + 4, PAY_MS), true)
    t.same(await store.lostNotices(A, LATER * 2, LATER * 2, 10), [], 'created orders are never lost')
    t.equal((await store.order(o2))?.status, 'QUEUED', 'the parked one waits for its re-drive')
    invariant(t, await store.stock(A), 'lost-notice checks')
    t.same(await store.stock(A), { stock: 5, sale: 2, locked: 3, sold: 0 })
  })

  if (hooks.loseNotice !== undefined) {
    const lose = hooks.loseNotice
    t.test('a lost notice: found once per bound, sent again, created once', async (t) => {
      const store = await make(t)
      await store.init([{ ...A, stock: 3 }])
      const b1 = await store.buy(A, 'u1', T0)
      const b2 = await store.buy(A, 'u2', T0 + 10)
      if (b1.kind !== 'queued' || b2.kind !== 'queued') { t.fail('queued'); return }
      await lose(t, store, A, b1.orderId)
      t.same(await store.lostNotices(A, T0 - 1, T0 + 100, 10), [], 'younger than the bound: not looked at')
      t.same(await store.lostNotices(A, T0 + 10, T0 + 100, 10), [b1.orderId], 'lost; the other is in the stream')
      t.same(await store.lostNotices(A, T0 + 10, T0 + 100, 10), [], 'examined: not named again within the bound')
      t.same(await store.lostNotices(A, T0 + 100, T0 + 200, 10), [b1.orderId], 'named again after another bound')
      invariant(t, await store.stock(A), 'lost')
      t.same(await store.stock(A), { stock: 3, sale: 1, locked: 2, sold: 0 }, 'its unit is locked')
      t.equal(await store.requeue(b1.orderId), 'queued')
      t.same(await store.lostNotices(A, T0 + 10_000, T0 + 10_000, 10), [], 'in the stream again')
      const batch = await store.readNew(A, 'w1', 10)
      t.same(batch.map((e) => e.orderId).sort(), [b1.orderId, b2.orderId].sort())
      for (const e of batch) t.equal(await store.complete(e, T0 + 20, PAY_MS), true, 'each created once')
      t.equal((await store.order(b1.orderId))?.status, 'CREATED')
      invariant(t, await store.stock(A), 're-queued and created')
    })
  }

  t.test('dead letters: parked once, listed, re-driven once; a parked order keeps its unit locked', async (t) => {
    const store = await make(t)
    await store.init([{ ...A, stock: 5 }])
    for (const u of ['u1', 'u2', 'u3']) t.equal((await store.buy(A, u, T0)).kind, 'queued')
    const batch = await store.readNew(A, 'w1', 10)
    t.equal(batch.length, 3)
    const [e1, e2, e3] = batch as [typeof batch[0] & object, typeof batch[0] & object, typeof batch[0] & object]
    await store.deadLetter(e1, 'order system answered 503', 5, T0 + 1)
    await store.deadLetter(e1, 'again', 6, T0 + 2)
    await store.deadLetter(e2, 'timeout', 5, T0 + 3)
    t.equal(await store.deadLetterCount(A), 2, 'a second park of one entry does nothing')
    t.equal(await store.queueDepth(A), 1, 'parked entries left the queue')
    const letters = await store.deadLetters(A, 10)
    t.same(letters.map((l) => [l.orderId, l.reason, l.attempts, l.at]), [[e1.orderId, 'order system answered 503', 5, T0 + 1], [e2.orderId, 'timeout', 5, T0 + 3]])
    t.equal((await store.order(e1.orderId))?.status, 'QUEUED')
    invariant(t, await store.stock(A), 'parked')
    t.same(await store.stock(A), { stock: 5, sale: 2, locked: 3, sold: 0 })
    t.ok(await store.complete(e3, T0, PAY_MS))
    t.equal(await store.redrive(A, 1), 1, 'max respected')
    t.equal(await store.deadLetterCount(A), 1)
    t.equal(await store.redrive(A, 10), 1)
    t.equal(await store.redrive(A, 10), 0, 'nothing left')
    const again = await store.readNew(A, 'w1', 10)
    t.same(again.map((e) => e.orderId).sort(), [e1.orderId, e2.orderId].sort(), 're-driven entries are delivered again')
    for (const e of again) t.ok(await store.complete(e, T0, PAY_MS), 'and created')
    invariant(t, await store.stock(A), 're-driven and created')
    t.same(await store.stock(A), { stock: 5, sale: 2, locked: 3, sold: 0 })
  })
}
