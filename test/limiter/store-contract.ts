/**
 * The store contract: one suite every Store implementation runs (memory, redis, redis-cluster), as
 * undici's cache-store-test-utils. `make` returns a fresh store (unique key space) and `advance(ms)` moves
 * the store's notion of time for TTLs (fake clock for memory, a real sleep for Redis).
 */
import type { Test } from 'tap'
import type { Store } from '../../limiter/store.js'
import { preQueueOrder, shuffleScore, type RoomEntry, type RoomParams } from '../../limiter/waiting-room.js'

export interface ContractSubject {
  store: Store
  /** Let `ms` pass for TTL purposes. */
  advance(ms: number): Promise<void>
}

let seq = 0
const uniq = (p: string): string => `${p}:{t${process.pid}-${Date.now()}-${++seq}}`

export function storeContract (t: Test, make: () => Promise<ContractSubject>): void {
  let s: ContractSubject
  t.before(async () => { s = await make() })

  t.test('addIfWithin: applies while within the limit, leaves the counter otherwise', async (t) => {
    const k = uniq('q')
    t.same(await s.store.addIfWithin(k, 1, 2), { ok: true, value: 1 })
    t.same(await s.store.addIfWithin(k, 1, 2), { ok: true, value: 2 })
    t.same(await s.store.addIfWithin(k, 1, 2), { ok: false, value: 2 })
    t.same(await s.store.addIfWithin(k, -1, 2), { ok: true, value: 1 })
    t.same(await s.store.addIfWithin(k, 5, 3), { ok: false, value: 1 }, 'a too large delta is refused whole')
    t.equal(await s.store.get(k), '1')
  })

  t.test('addIfWithin: exactly limit admitted under concurrency', async (t) => {
    const k = uniq('q')
    const results = await Promise.all(Array.from({ length: 300 }, async () => await s.store.addIfWithin(k, 1, 100)))
    t.equal(results.filter((r) => r.ok).length, 100)
    t.equal(await s.store.get(k), '100')
    const values = results.filter((r) => r.ok).map((r) => r.value).sort((a, b) => a - b)
    t.same(values, Array.from({ length: 100 }, (_, i) => i + 1), 'each admitted call saw a distinct value')
  })

  t.test('3,000 calls at once: every one answered, exactly (more in flight than the timeout ring starts with)', async (t) => {
    const k = uniq('q')
    const results = await Promise.all(Array.from({ length: 3000 }, async () => await s.store.addIfWithin(k, 1, 2500)))
    t.equal(results.filter((r) => r.ok).length, 2500)
    t.equal(await s.store.get(k), '2500')
  })

  t.test('addIfWithin with min: a give-back never takes a counter below the floor', async (t) => {
    const k = uniq('q')
    const big = Number.MAX_SAFE_INTEGER
    t.same(await s.store.addIfWithin(k, -1, big, { min: 0 }), { ok: false, value: 0 }, 'missing counter: nothing to give back')
    t.equal(await s.store.get(k), null, 'and nothing written')
    t.same(await s.store.addIfWithin(k, 2, 5), { ok: true, value: 2 })
    t.same(await s.store.addIfWithin(k, -1, big, { min: 0 }), { ok: true, value: 1 })
    t.same(await s.store.addIfWithin(k, -1, big, { min: 0 }), { ok: true, value: 0 })
    t.same(await s.store.addIfWithin(k, -1, big, { min: 0 }), { ok: false, value: 0 }, 'floor holds')
    t.same(await s.store.addIfWithin(k, 3, 5, { min: 4 }), { ok: false, value: 0 }, 'below min refused even within the limit')
    t.same(await s.store.addIfWithin(k, 4, 5, { min: 4 }), { ok: true, value: 4 })
    const k2 = uniq('q')
    await s.store.addIfWithin(k2, 10, 10)
    const rs = await Promise.all(Array.from({ length: 30 }, async () => await s.store.addIfWithin(k2, -1, big, { min: 0 })))
    t.equal(rs.filter((r) => r.ok).length, 10, 'exactly the counter given back under concurrency')
    t.equal(await s.store.get(k2), '0')
  })

  t.test('markAndAdd: the mark and the unit together, or neither', async (t) => {
    // One hash tag for both keys (a cluster runs the script on one slot).
    const tag = uniq('mq')
    const m = (u: string): string => `${tag}:m:${u}`
    const q = `${tag}:q`
    t.same(await s.store.markAndAdd(m('u1'), 'a', 60_000, q, 1, 2), { fresh: true, ok: true, value: 1 }, 'first: marked and added')
    t.equal(await s.store.get(m('u1')), 'a', 'the mark holds its value')
    t.same(await s.store.markAndAdd(m('u1'), 'b', 60_000, q, 1, 2), { fresh: false, ok: false, value: -1 }, 'marked: nothing changes')
    t.equal(await s.store.get(q), '1', 'a duplicate takes nothing')
    t.equal(await s.store.get(m('u1')), 'a', 'nor rewrites the mark')
    t.same(await s.store.markAndAdd(m('u2'), 'a', 60_000, q, 1, 2), { fresh: true, ok: true, value: 2 })
    t.same(await s.store.markAndAdd(m('u3'), 'a', 60_000, q, 1, 2), { fresh: true, ok: false, value: 2 }, 'full: refused')
    t.equal(await s.store.get(m('u3')), null, 'and no mark is left for the refused one')
    t.same(await s.store.markAndAdd(m('u2'), 'a', 60_000, q, 1, 2), { fresh: false, ok: false, value: -1 }, 'a standing mark wins over a full counter')
    // The mark expires after its TTL; the counter stays.
    t.same(await s.store.markAndAdd(m('t'), 'a', 150, `${tag}:q2`, 1, 5), { fresh: true, ok: true, value: 1 })
    await s.advance(400)
    t.equal(await s.store.get(m('t')), null, 'the mark expired')
    t.same(await s.store.markAndAdd(m('t'), 'a', 150, `${tag}:q2`, 1, 5), { fresh: true, ok: true, value: 2 }, 'then the same mark may be set again')
  })

  t.test('markAndAdd: under concurrency, one mark per key and never past the limit', async (t) => {
    const tag = uniq('mq')
    const q = `${tag}:q`
    // 30 users × 10 attempts each, 20 units.
    const calls = Array.from({ length: 300 }, (_, i) => s.store.markAndAdd(`${tag}:m:u${i % 30}`, 'x', 60_000, q, 1, 20))
    const rs = await Promise.all(calls)
    t.equal(rs.filter((r) => r.ok).length, 20, 'exactly the limit admitted')
    const admittedUsers = new Set(rs.map((r, i) => r.ok ? i % 30 : -1).filter((u) => u >= 0))
    t.equal(admittedUsers.size, 20, 'each admission a different mark')
    t.equal(await s.store.get(q), '20')
    let marks = 0
    for (let u = 0; u < 30; u++) if ((await s.store.get(`${tag}:m:u${u}`)) !== null) marks++
    t.equal(marks, 20, 'marks only for the admitted')
  })

  t.test('add: missing is 0, negative deltas', async (t) => {
    const k = uniq('c')
    t.equal(await s.store.add(k, 5), 5)
    t.equal(await s.store.add(k, -7), -2)
    t.equal(await s.store.get(k), '-2')
  })

  t.test('get/set/del, ttl', async (t) => {
    const k = uniq('kv')
    t.equal(await s.store.get(k), null)
    await s.store.set(k, 'v1')
    t.equal(await s.store.get(k), 'v1')
    t.equal(await s.store.del(k), true)
    t.equal(await s.store.del(k), false)
    t.equal(await s.store.get(k), null)
    await s.store.set(k, 'v2', 150)
    t.equal(await s.store.get(k), 'v2')
    await s.advance(400)
    t.equal(await s.store.get(k), null, 'expired')
  })

  t.test('setIfAbsent', async (t) => {
    const k = uniq('nx')
    t.equal(await s.store.setIfAbsent(k, 'a', 150), true)
    t.equal(await s.store.setIfAbsent(k, 'b', 150), false)
    t.equal(await s.store.get(k), 'a')
    await s.advance(400)
    t.equal(await s.store.setIfAbsent(k, 'c', 10_000), true, 'free again after the ttl')
    t.equal(await s.store.get(k), 'c')
    const k2 = uniq('nx')
    const wins = await Promise.all(Array.from({ length: 50 }, async (_, i) => await s.store.setIfAbsent(k2, String(i), 10_000)))
    t.equal(wins.filter(Boolean).length, 1, 'one winner under concurrency')
  })

  t.test('sets', async (t) => {
    const k = uniq('set')
    t.equal(await s.store.setHas(k, 'a'), false)
    t.equal(await s.store.setAdd(k, ['a', 'b', 'a']), 2)
    t.equal(await s.store.setAdd(k, ['b', 'c']), 1)
    t.equal(await s.store.setHas(k, 'c'), true)
    t.equal(await s.store.setRemove(k, ['a', 'x']), 1)
    t.equal(await s.store.setHas(k, 'a'), false)
    t.equal(await s.store.setAdd(k, []), 0)
  })

  t.test('gcra: burst, refill, retry-after, give back', async (t) => {
    const k = uniq('rl')
    const t0 = 1_700_000_000_000
    // 10/s → interval 100 ms, burst 3
    const a = []
    for (let i = 0; i < 4; i++) a.push(await s.store.gcra(k, t0, 100, 3, 1))
    t.same(a.map((r) => r.ok), [true, true, true, false])
    t.same(a.map((r) => r.remaining), [2, 1, 0, 0])
    t.equal(a[3]?.retryAfterMs, 100)
    t.equal(a[2]?.resetAfterMs, 300)
    t.equal((await s.store.gcra(k, t0 + 99, 100, 3, 1)).ok, false)
    const r = await s.store.gcra(k, t0 + 100, 100, 3, 1)
    t.equal(r.ok, true)
    t.equal(r.remaining, 0)
    const back = await s.store.gcra(k, t0 + 100, 100, 3, -1)
    t.equal(back.ok, true)
    t.equal(back.remaining, 1, 'giving back restores one')
    t.equal((await s.store.gcra(k, t0 + 100, 100, 3, 1)).ok, true)
    t.equal((await s.store.gcra(k, t0 + 100, 100, 3, 5)).retryAfterMs, Infinity, 'cost above burst never fits')
    t.equal((await s.store.gcra(k, t0 + 50, 100, 3, 1)).ok, false, 'clock going back takes nothing extra')
    const frac = uniq('rl')
    // 3/s: fractional interval 333.33 ms
    t.equal((await s.store.gcra(frac, t0, 1000 / 3, 1, 1)).ok, true)
    t.equal((await s.store.gcra(frac, t0 + 333, 1000 / 3, 1, 1)).ok, false)
    t.equal((await s.store.gcra(frac, t0 + 334, 1000 / 3, 1, 1)).ok, true)
  })

  t.test('gcra: exact under concurrency', async (t) => {
    const k = uniq('rl')
    const t0 = 1_700_000_000_000
    const rs = await Promise.all(Array.from({ length: 200 }, async () => await s.store.gcra(k, t0, 1000, 50, 1)))
    t.equal(rs.filter((r) => r.ok).length, 50)
  })

  t.test('publish/subscribe', async (t) => {
    const ch = uniq('ch')
    const got: string[] = []
    const got2: string[] = []
    const off = s.store.subscribe(ch, (m) => got.push(m))
    const off2 = s.store.subscribe(ch, (m) => got2.push(m))
    // Redis: the subscriber connection needs a moment to be subscribed.
    const until = async (cond: () => boolean): Promise<void> => {
      for (let i = 0; i < 100 && !cond(); i++) await new Promise((resolve) => setTimeout(resolve, 20))
    }
    for (let i = 0; i < 50 && got.length === 0; i++) {
      await s.store.publish(ch, 'ping')
      await until(() => got.length > 0)
    }
    t.ok(got.length > 0, 'delivered')
    got.length = 0
    got2.length = 0
    await s.store.publish(ch, 'hello')
    await until(() => got.includes('hello') && got2.includes('hello'))
    t.ok(got.includes('hello') && got2.includes('hello'), 'both subscribers')
    off()
    await s.store.publish(ch, 'after')
    await until(() => got2.includes('after'))
    t.ok(got2.includes('after'))
    t.notOk(got.includes('after'), 'unsubscribed one gets nothing')
    off2()
  })

  t.test('waiting room: pre-queue shuffle, admission at the rate, abandonment, overbook cap, passes', async (t) => {
    const room = `r${process.pid}-${Date.now()}-${++seq}`
    const T0 = 1_700_000_000_000
    const startsAt = T0 + 10_000
    const Pn = (now: number, cap = 1000): RoomParams => ({ now, startsAt, expireMs: 3000, rate: { count: 10, periodMs: 1000 }, burst: 10, idleBurst: 10, cap, passTtlMs: 5000, scanMax: 1000, keyTtlMs: 600_000 })
    let at = T0
    const join = (user: string, score = 0): RoomEntry => ({ op: 'join', user, score, at })
    const seen = (user: string): RoomEntry => ({ op: 'seen', user, score: 0, at })
    const P = (now: number, cap = 1000): RoomParams => { at = now; return Pn(now, cap) }
    const st = (r: { sealed: boolean, pre: number, total: number, cursor: number, outstanding: number, admitted: number, expired: number }): unknown =>
      ({ sealed: r.sealed, pre: r.pre, total: r.total, cursor: r.cursor, outstanding: r.outstanding, admitted: r.admitted, expired: r.expired })

    let r = await s.store.roomSync(room, P(T0), [join('u1', 50), join('u2', 10), join('u3', 30), join('u4', 20), join('u5', 40)])
    t.same(r.results, [0, 0, 0, 0, 0].map(() => ({ position: 0, pass: 0 })), 'pre-queue: no position before the draw')
    t.same(st(r), { sealed: false, pre: 5, total: 0, cursor: 0, outstanding: 0, admitted: 0, expired: 0 })
    r = await s.store.roomSync(room, P(T0 + 1), [join('u1', 99)])
    t.equal(r.pre, 5, 'joining again is idempotent')

    r = await s.store.roomSync(room, P(startsAt), [seen('u1'), join('u2'), seen('u4'), seen('u5')])
    t.same(st(r), { sealed: true, pre: 5, total: 5, cursor: 0, outstanding: 0, admitted: 0, expired: 0 }, 'sealed at starts_at, no credit yet')
    t.same(r.results, [{ position: 1, pass: 0 }], 'lowest score first')

    r = await s.store.roomSync(room, P(startsAt + 300), [seen('u1'), join('u2'), seen('u4'), seen('u5')])
    t.same(st(r), { sealed: true, pre: 5, total: 5, cursor: 4, outstanding: 3, admitted: 3, expired: 1 }, '300 ms at 10/s: 3 admitted, the silent u3 skipped')
    t.same(r.results, [{ position: 1, pass: startsAt + 300 + 5000 }], 'admitted: the pass expiry')

    r = await s.store.roomSync(room, P(startsAt + 400), [join('u6')])
    t.same(r.results, [{ position: 6, pass: 0 }], 'after starts_at: first come, first served, behind the pre-queue')
    t.same(st(r), { sealed: true, pre: 5, total: 6, cursor: 5, outstanding: 4, admitted: 4, expired: 1 }, 'one more credit: u1 (position 5)')

    const exp2 = startsAt + 5300
    t.equal(await s.store.roomPass(room, 'u2', startsAt + 500, true, exp2), true, 'a pass is used once')
    t.equal(await s.store.roomPass(room, 'u2', startsAt + 500, true, exp2), false, '... and only once')
    t.equal(await s.store.roomPass(room, 'u2', startsAt + 500, false, exp2), true, 'given back (the buy was rejected downstream)')
    t.equal(await s.store.roomPass(room, 'u2', startsAt + 500, true, exp2), true, 'used again')
    t.equal(await s.store.roomPass(room, 'nobody', startsAt + 500, true, exp2), false, 'no pass, nothing to use')
    t.equal(await s.store.roomPass(room, 'u6', startsAt + 500, true, exp2), false, 'not admitted yet')

    r = await s.store.roomSync(room, P(startsAt + 2000, 3), [seen('u6'), join('u3')])
    t.same(st(r), { sealed: true, pre: 5, total: 7, cursor: 5, outstanding: 3, admitted: 4, expired: 1 }, 'cap 3 with 3 unused passes: nobody admitted')
    t.same(r.results, [{ position: 7, pass: 0 }], 'the skipped user comes back: joins again at the back')

    r = await s.store.roomSync(room, P(startsAt + 5301, 3), [seen('u6'), seen('u3'), join('u4')])
    t.same(r.results, [{ position: 8, pass: 0 }], 'a pass that expired unused: back in line')
    t.same(st(r), { sealed: true, pre: 5, total: 8, cursor: 7, outstanding: 3, admitted: 6, expired: 1 }, 'two passes expired: two admitted under the cap')

    const log = await s.store.roomLog(room)
    t.same(log.preQueue.map((e) => [e.user, e.score]), [['u2', 10], ['u4', 20], ['u3', 30], ['u5', 40], ['u1', 50]], 'join log: the pre-queue in served order')
    t.same(log.preQueue.map((e) => e.joinedAt), [T0, T0, T0, T0, T0].map((x, i) => i === 1 ? startsAt + 5301 : i === 2 ? startsAt + 2000 : x), 'joined_at (a rejoin restamps it)')
    t.same(log.after.map((e) => [e.user, e.position]), [['u6', 6], ['u3', 7], ['u4', 8]])
    t.equal(log.sealed, true)
  })

  t.test('waiting room: concurrent joins get distinct positions; the shuffle is the HMAC order', async (t) => {
    const room = `r${process.pid}-${Date.now()}-${++seq}`
    const seed = Buffer.alloc(32, 7)
    const startsAt = 1_700_000_000_000
    const P = (now: number): RoomParams => ({ now, startsAt, expireMs: 3000, rate: { count: 100, periodMs: 1000 }, burst: 100, idleBurst: 100, cap: 0, passTtlMs: 5000, scanMax: 1000, keyTtlMs: 600_000 })
    const users = Array.from({ length: 60 }, (_, i) => `user-${i}`)
    await Promise.all(users.map(async (u) => await s.store.roomSync(room, P(startsAt - 1000), [{ op: 'join', user: u, score: shuffleScore(seed, room, u), at: startsAt - 1000 }])))
    const r = await s.store.roomSync(room, P(startsAt), users.map((u) => ({ op: 'join' as const, user: u, score: 0, at: startsAt })))
    const order = preQueueOrder(seed, room, users)
    t.same(r.results.map((x) => x.position), users.map((u) => order.indexOf(u) + 1), 'positions are the recomputed order')
    const later = await Promise.all(Array.from({ length: 40 }, async (_, i) => await s.store.roomSync(room, P(startsAt + 1), [{ op: 'join', user: `late-${i}`, score: 0, at: startsAt + 1 }])))
    const pos = later.map((x) => (x.results[0] as { position: number }).position).sort((a, b) => a - b)
    t.same(pos, Array.from({ length: 40 }, (_, i) => 61 + i), 'each late joiner a distinct position after the pre-queue')
    t.equal(r.admitted, 0, 'cap 0 (sold out): nobody admitted')
  })

  t.test('waiting room: credit banked while users wait, clamped once the line runs empty', async (t) => {
    const room = `r${process.pid}-${Date.now()}-${++seq}`
    const startsAt = 1_700_000_000_000
    const P = (now: number): RoomParams => ({ now, startsAt, expireMs: 60_000, rate: { count: 10, periodMs: 1000 }, burst: 100, idleBurst: 2, cap: 1000, passTtlMs: 60_000, scanMax: 1000, keyTtlMs: 600_000 })
    const joins = (n: number, at: number, from = 0): RoomEntry[] => Array.from({ length: n }, (_, i) => ({ op: 'join' as const, user: `u${from + i}`, score: 0, at }))
    await s.store.roomSync(room, P(startsAt), [])
    let r = await s.store.roomSync(room, P(startsAt + 10_000), [])
    r = await s.store.roomSync(room, P(startsAt + 10_000), joins(5, startsAt + 10_000))
    t.equal(r.admitted, 2, 'after 10 s with nobody waiting: only idleBurst at once')
    r = await s.store.roomSync(room, P(startsAt + 10_000), joins(40, startsAt + 10_000, 5))
    r = await s.store.roomSync(room, P(startsAt + 13_000), [])
    t.equal(r.admitted, 32, '3 s later with users waiting: 30 more, at the rate')
    r = await s.store.roomSync(room, P(startsAt + 20_000), joins(45, startsAt + 19_000))
    t.equal(r.admitted, 45, 'a late sync (7 s) still admits 7 s worth while users wait (banked up to burst)')
  })

  t.test('healthy', async (t) => {
    t.equal(s.store.healthy, true)
  })
}
