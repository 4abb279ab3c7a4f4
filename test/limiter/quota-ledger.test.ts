/**
 * The quota ledger (limiter/quota-ledger.ts) on the memory store and on a real redis-server: the admin
 * operations over the segment counters, the quota override, journal replay's store step. One suite, run
 * on both, as the store contract is.
 */
import t, { type Test } from 'tap'
import type { StoreConfig } from '../../conf/types.js'
import { QUOTA_CHANNEL, limitKey, originKey, segmentKey } from '../../conf/store-keys.js'
import { createMetrics } from '../../gateway/metrics.js'
import { createStore } from '../../limiter/index.js'
import {
  createQuotaAdmin, fnv1a, parseQuota, readOverride, replayAdmit, replayGiveBack, type QuotaView, type ReplayOp
} from '../../limiter/quota-ledger.js'
import type { Store } from '../../limiter/store.js'
import { startRedis } from '../helpers/redis.js'
import { needTools } from '../helpers/tools.js'
import { campaign, config } from '../../bench/guard-kit.js'

const base: StoreConfig = {
  kind: 'memory', url: null, nodes: [], onError: 'fail_closed', timeoutMs: 1000, keyPrefix: 'fg:',
  breakerFailures: 5, breakerBackoffMs: 1000, maxKeys: 10_000
}
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

t.test('fnv1a and parseQuota', async (t) => {
  t.equal(fnv1a(''), 0x811c9dc5, 'the offset basis')
  t.equal(fnv1a('a'), 0xe40c292c, 'the published FNV-1a 32 value of "a"')
  t.equal(parseQuota(null), null)
  t.equal(parseQuota('0'), 0)
  t.equal(parseQuota('42'), 42)
  for (const bad of ['-1', '1.5', 'x', '9007199254740993']) t.equal(parseQuota(bad), null, `'${bad}'`)
})

let seq = 0

/** The suite; `make` gives a fresh store. */
function ledgerSuite (t: Test, make: () => Promise<Store>): void {
  let store: Store
  t.before(async () => { store = await make() })

  /** A campaign of its own per test (one key space), with products `[id, quota, segments]`. */
  const setup = (products: Array<[string, number, number?]>): { c: string, admin: ReturnType<typeof createQuotaAdmin>, views: Array<[string, string, QuotaView]> } => {
    const c = `c${process.pid}x${++seq}`
    const views: Array<[string, string, QuotaView]> = []
    const admin = createQuotaAdmin({ config: config(base, [campaign(c, products)]), store, onStatus: (cc, p, v) => { views.push([cc, p, v]) } })
    return { c, admin, views }
  }
  /** Messages on the quota channel, from once the subscription is known to be live. */
  const listen = async (t: Test): Promise<string[]> => {
    const got: string[] = []
    let live = false
    const off = store.subscribe(QUOTA_CHANNEL, (m) => { if (m === '"probe"') live = true; else got.push(m) })
    t.teardown(off)
    for (let i = 0; i < 100 && !live; i++) { await store.publish(QUOTA_CHANNEL, '"probe"'); await sleep(20) }
    t.ok(live, 'subscribed')
    return got
  }
  const until = async (f: () => boolean): Promise<void> => { for (let i = 0; i < 100 && !f(); i++) await sleep(20) }
  const seg = async (c: string, p: string, i: number): Promise<string | null> => await store.get(segmentKey(c, p, i))

  t.test('get: the config quota until one is set, admitted summed over segments, negatives as 0', async (t) => {
    const { c, admin, views } = setup([['p', 10, 3]])
    t.equal(await admin.get(c, 'nope'), null, 'unknown product')
    t.equal(await admin.get('nope', 'p'), null, 'unknown campaign')
    t.same(await admin.get(c, 'p'), { quota: 10, admitted: 0, remaining: 10 })
    await store.add(segmentKey(c, 'p', 0), 3)
    await store.add(segmentKey(c, 'p', 2), 4)
    await store.add(segmentKey(c, 'p', 1), -2)
    t.same(await admin.get(c, 'p'), { quota: 10, admitted: 7, remaining: 3 })
    await store.set(limitKey(c, 'p'), '5')
    t.same(await admin.get(c, 'p'), { quota: 5, admitted: 7, remaining: 0 }, 'remaining never below 0')
    await store.set(limitKey(c, 'p'), 'junk')
    t.equal((await admin.get(c, 'p'))?.quota, 10, 'an unreadable stored quota: the config holds')
    t.same(views.map(([cc, p]) => `${cc === c ? 'C' : cc}/${p}`), ['C/p', 'C/p', 'C/p', 'C/p'], 'onStatus on every status read of a known product')
    t.same(views[1]?.[2], { quota: 10, admitted: 7, remaining: 3 })
  })

  t.test('set: stored and published; refused below admitted with nothing changed; bad values throw', async (t) => {
    const { c, admin } = setup([['p', 10, 2]])
    const msgs = await listen(t)
    await t.rejects(admin.set(c, 'p', -1), RangeError)
    await t.rejects(admin.set(c, 'p', 1.5), RangeError)
    t.equal(await admin.set(c, 'x', 3), null)
    await store.add(segmentKey(c, 'p', 1), 4)
    const refused = await admin.set(c, 'p', 3)
    t.same(refused, { conflict: 'QUOTA_BELOW_ADMITTED', message: '4 units are admitted (held by buyers); the quota cannot go below that', view: { quota: 10, admitted: 4, remaining: 6 } })
    t.equal(await readOverride(store, c, 'p'), null, 'nothing stored')
    t.same(await admin.set(c, 'p', 4), { quota: 4, admitted: 4, remaining: 0 }, 'down to admitted is allowed')
    t.equal(await readOverride(store, c, 'p'), 4)
    t.equal(await store.get(limitKey(c, 'p')), '4')
    await until(() => msgs.length > 0)
    t.same(msgs.map((m) => JSON.parse(m)), [{ c, p: 'p', quota: 4 }], 'one publish, after the refusal published nothing')
  })

  t.test('release: largest segment first, never below 0, published; more than admitted refused', async (t) => {
    const { c, admin } = setup([['p', 20, 3]])
    const msgs = await listen(t)
    await t.rejects(admin.release(c, 'p', 0), RangeError)
    await t.rejects(admin.release(c, 'p', 2.5), RangeError)
    t.equal(await admin.release(c, 'x', 1), null)
    await store.add(segmentKey(c, 'p', 0), 5)
    await store.add(segmentKey(c, 'p', 1), 1)
    await store.add(segmentKey(c, 'p', 2), 3)
    t.same(await admin.release(c, 'p', 10), { conflict: 'RELEASE_EXCEEDS_ADMITTED', message: 'only 9 units are admitted; cannot release 10', view: { quota: 20, admitted: 9, remaining: 11 } })
    t.same([await seg(c, 'p', 0), await seg(c, 'p', 1), await seg(c, 'p', 2)], ['5', '1', '3'], 'refused: counters untouched')
    t.same(await admin.release(c, 'p', 6), { quota: 20, admitted: 3, remaining: 17 })
    t.same([await seg(c, 'p', 0), await seg(c, 'p', 1), await seg(c, 'p', 2)], ['0', '1', '2'], '5 off segment 0, then 1 off segment 2')
    t.same(await admin.release(c, 'p', 3), { quota: 20, admitted: 0, remaining: 20 })
    await until(() => msgs.length >= 2)
    t.same(msgs.map((m) => JSON.parse(m)), [{ c, p: 'p', released: 6 }, { c, p: 'p', released: 3 }])
  })

  t.test('reset: zeroes the counters and keeps the quota; refused while an origin keeps the orders', async (t) => {
    const { c, admin } = setup([['p', 10, 2]])
    const msgs = await listen(t)
    t.equal(await admin.reset(c, 'x'), null)
    await store.add(segmentKey(c, 'p', 0), 2)
    await store.add(segmentKey(c, 'p', 1), 3)
    await store.set(limitKey(c, 'p'), '8')
    await store.set(originKey(c, 'p'), '1')
    const refused = await admin.reset(c, 'p')
    t.equal(refused !== null && 'conflict' in refused ? refused.conflict : null, 'RESET_BREAKS_LEDGER')
    t.same(refused !== null && 'view' in refused ? refused.view : null, { quota: 8, admitted: 5, remaining: 3 })
    t.same([await seg(c, 'p', 0), await seg(c, 'p', 1)], ['2', '3'], 'refused: counters untouched')
    await store.del(originKey(c, 'p'))
    t.same(await admin.reset(c, 'p'), { quota: 8, admitted: 0, remaining: 8 })
    t.same([await seg(c, 'p', 0), await seg(c, 'p', 1)], [null, null])
    await until(() => msgs.length > 0)
    t.same(msgs.map((m) => JSON.parse(m)), [{ c, p: 'p', reset: true }])
  })

  const op = (c: string, over: Partial<ReplayOp> = {}): ReplayOp => ({
    ticket: 't1', requestId: null, campaign: c, product: 'p', segments: 3, quota: 3, who: 'alice', mark: null, fused: true, ...over
  })

  t.test('replayAdmit without a mark: the buyer\'s segment first, the others next, then SOLD_OUT', async (t) => {
    const { c } = setup([['p', 3, 3]])
    const first = fnv1a('alice') % 3
    t.same(await replayAdmit(store, op(c)), { status: 'ADMITTED', segment: first })
    t.same(await replayAdmit(store, op(c, { ticket: 't2' })), { status: 'ADMITTED', segment: (first + 1) % 3 }, 'its segment is full: the next one')
    t.same(await replayAdmit(store, op(c, { ticket: 't3' })), { status: 'ADMITTED', segment: (first + 2) % 3 })
    t.same(await replayAdmit(store, op(c, { ticket: 't4' })), { status: 'SOLD_OUT' })
    await replayGiveBack(store, c, 'p', first)
    await replayGiveBack(store, c, 'p', first)
    t.equal(await seg(c, 'p', first), '0', 'a give-back never takes a counter below 0')
  })

  t.test('replayAdmit follows a stored quota over the config\'s', async (t) => {
    const { c } = setup([['p', 10, 1]])
    await store.set(limitKey(c, 'p'), '1')
    const o = op(c, { segments: 1, quota: 10 })
    t.same(await replayAdmit(store, o), { status: 'ADMITTED', segment: 0 })
    t.same(await replayAdmit(store, { ...o, ticket: 't2' }), { status: 'SOLD_OUT' })
  })

  for (const fused of [true, false]) {
    t.test(`replayAdmit with a dedupe mark (${fused ? 'one call' : 'two calls, as on a cluster'})`, async (t) => {
      const { c } = setup([['p', 2, 2]])
      const mark = { key: `d:{${c}:alice}`, ttlMs: 60_000 }
      const o = op(c, { segments: 2, quota: 2, mark, fused })
      const r = await replayAdmit(store, o)
      t.equal(r.status, 'ADMITTED')
      const s = r.status === 'ADMITTED' ? r.segment : -9
      t.equal(await store.get(mark.key), `t1/${s}`, 'the mark names the ticket and the segment')
      t.same(await replayAdmit(store, o), { status: 'ADMITTED', segment: s }, 'a replay after a crash finds its own mark: no second unit')
      t.equal(Number(await seg(c, 'p', 0) ?? 0) + Number(await seg(c, 'p', 1) ?? 0), 1, 'one unit taken')
      t.same(await replayAdmit(store, { ...o, ticket: 't2' }), { status: 'DUPLICATE' }, 'another ticket for the same mark')
      // A live request that was journaled after its store call was applied: its mark is `<request id>/<segment>`.
      const live = { key: `d:{${c}:bob}`, ttlMs: 60_000 }
      await store.set(live.key, 'rid-7/1', 60_000)
      t.same(await replayAdmit(store, { ...o, ticket: 't3', who: 'bob', mark: live, requestId: 'rid-7' }), { status: 'ADMITTED', segment: 1 }, 'the journaled request\'s own live mark')
      t.same(await replayAdmit(store, { ...o, ticket: 't4', who: 'bob', mark: live, requestId: '' }), { status: 'DUPLICATE' }, 'an empty request id owns nothing')
      // Sold out: the mark is not left behind.
      const carol = { key: `d:{${c}:carol}`, ttlMs: 60_000 }
      await store.add(segmentKey(c, 'p', 0), 5)
      await store.add(segmentKey(c, 'p', 1), 5)
      t.same(await replayAdmit(store, { ...o, ticket: 't5', who: 'carol', mark: carol }), { status: 'SOLD_OUT' })
      t.equal(await store.get(carol.key), null, 'no mark without a unit')
      if (!fused) {
        // Our own mark from a replay cut short between the mark and the unit: the unit is taken now.
        await store.set(segmentKey(c, 'p', 0), '0')
        await store.set(carol.key, 't6/-1', 60_000)
        t.same(await replayAdmit(store, { ...o, ticket: 't6', who: 'carol', mark: carol }), { status: 'ADMITTED', segment: 0 })
        t.equal(await store.get(carol.key), 't6/0')
      }
    })
  }
}

t.test('memory store', async (t) => {
  ledgerSuite(t, async () => {
    const store = createStore(base, { metrics: createMetrics({ defaultMetrics: false }), clock: Date.now })
    t.teardown(() => store.close())
    return store
  })
})

t.test('redis-server', async (t) => {
  if (!needTools(t, 'redis-server')) return
  ledgerSuite(t, async () => {
    const r = await startRedis()
    const store = createStore({ ...base, kind: 'redis', url: r.url }, { metrics: createMetrics({ defaultMetrics: false }), clock: Date.now })
    t.teardown(async () => { await store.close(); await r.stop() })
    await store.ready?.()
    return store
  })
})
