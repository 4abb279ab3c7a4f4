/** rate_limit and quota guards with a fake RequestContext and a fake clock, on the memory store. */
import t from 'tap'
import { loadConfigText } from '../../conf/load.js'
import { createStore } from '../../limiter/index.js'
import { quotaGuard } from '../../gateway/guards/quota.js'
import { createQuotaAdmin } from '../../limiter/quota-ledger.js'
import { rateLimitGuard } from '../../gateway/guards/rate-limit.js'
import type { Rejection, Verdict } from '../../gateway/pipeline/types.js'
import { campaign, config, ctx, deps, qg, route, storeCfg } from '../../bench/guard-kit.js'
import { counting, rl, settle } from './fixtures.js'

const T0 = 1_700_000_000_000
const header = (r: Verdict | Promise<Verdict>, name: string): string | undefined => {
  const h = r instanceof Promise ? [] : (r?.headers ?? [])
  for (let i = 0; i < h.length; i += 2) if (h[i] === name) return h[i + 1]
  return undefined
}
const mem = (clock: () => number) => createStore(storeCfg, { metrics: deps(null as never).metrics, clock })

t.test('global token bucket: sync, 429 with Retry-After and RateLimit headers, overloaded signal', async (t) => {
  const d = deps(mem(() => T0))
  const g = rateLimitGuard(rl({ rate: { count: 2, periodMs: 1000 }, burst: 2, name: 'global' }), route(), d)
  const a = g.check(ctx(T0))
  t.equal(a, undefined, 'passes synchronously (not a Promise)')
  t.equal(g.check(ctx(T0)), undefined)
  const r = g.check(ctx(T0)) as Rejection
  t.equal(r.status, 429)
  t.equal(r.code, 'RATE_LIMITED')
  t.equal(header(r, 'retry-after'), '1', '500 ms rounds up to 1 s')
  t.equal(header(r, 'ratelimit-policy'), '"global";q=2;w=1')
  t.equal(header(r, 'ratelimit'), '"global";r=0;t=1')
  t.equal(d.overload.active, true, 'overloaded while rejecting')
  t.equal(g.check(ctx(T0 + 500)), undefined, 'refilled after 500 ms')
  t.equal(d.overload.active, false)
  const slow = rateLimitGuard(rl({ name: 'slow', rate: { count: 1, periodMs: 60_000 }, burst: 1 }), route(), d)
  t.equal(slow.check(ctx(T0)), undefined)
  t.equal(header(slow.check(ctx(T0 + 1)), 'retry-after'), '60')
})

t.test('per-worker split and per-key buckets with max_keys', async (t) => {
  const d = deps(mem(() => T0), { workers: 2 })
  const g = rateLimitGuard(rl({ name: 'per-ip', key: [{ kind: 'ip' }], rate: { count: 10, periodMs: 1000 }, burst: 4, maxKeys: 2 }), route(), d)
  const pass = (ip: string): boolean => g.check(ctx(T0, { ip })) === undefined
  t.same([pass('a'), pass('a'), pass('a')], [true, true, false], 'burst 4 split over 2 workers = 2')
  t.equal(pass('b'), true, 'another key has its own bucket')
  pass('c'); pass('d') // evicts a
  t.equal(pass('a'), true, 'evicted key starts full again (bounded memory)')
  const u = rateLimitGuard(rl({ name: 'per-user', key: [{ kind: 'user' }], burst: 1 }), route(), d)
  t.equal(u.check(ctx(T0)), undefined, 'no user → not counted (nginx skips empty keys)')
  t.equal(u.check(ctx(T0)), undefined)
  t.equal(u.check(ctx(T0, { user: 'x' })), undefined)
  t.not(u.check(ctx(T0, { user: 'x' })), undefined)
})

t.test('stacked limits do not leak: a later rejection gives tokens back', async (t) => {
  const d = deps(mem(() => T0))
  const g1 = rateLimitGuard(rl({ name: 'outer', burst: 3 }), route(), d)
  const g2 = rateLimitGuard(rl({ name: 'inner', key: [{ kind: 'ip' }], burst: 1, index: 1 }), route(), d)
  let passedOuter = 0
  for (let i = 0; i < 10; i++) {
    const c = ctx(T0)
    if (g1.check(c) !== undefined) continue
    passedOuter++
    const r = g2.check(c)
    if (r !== undefined) settle(c, { kind: 'rejected', rejection: r as Rejection })
    else settle(c, { kind: 'upstream', status: 200 })
  }
  t.equal(passedOuter, 10, 'the outer limit got every token back for requests the inner one rejected')
  const c = ctx(T0)
  t.equal(g1.check(c), undefined)
  settle(c, { kind: 'upstream', status: 200 })
  t.equal(g1.check(ctx(T0)), undefined)
  t.not(g1.check(ctx(T0)), undefined, 'a real pass keeps its token')
})

t.test('leaky bucket: delayed requests wait on the shared queue, beyond burst rejected', async (t) => {
  let now = Date.now()
  const d = deps(mem(() => now), { clock: () => Date.now() })
  const g = rateLimitGuard(rl({ name: 'lb', algorithm: 'leaky_bucket', rate: { count: 20, periodMs: 1000 }, burst: 2, delay: 0 }), route(), d)
  now = Date.now()
  t.equal(g.check(ctx(now)), undefined)
  const p1 = g.check(ctx(now))
  const p2 = g.check(ctx(now))
  t.ok(p1 instanceof Promise && p2 instanceof Promise, 'excess is delayed')
  t.not(g.check(ctx(now)), undefined, 'beyond the burst: rejected')
  const t0 = Date.now()
  t.equal(await p1, undefined)
  t.equal(await p2, undefined)
  t.ok(Date.now() - t0 >= 90, 'the second delayed one waited ~100 ms')
  // leaky + cluster is refused by the loader (conf owns the rule; test/conf/validate-serve.test.ts)
  const r = loadConfigText('upstreams: { u: { targets: [http://127.0.0.1:1] } }\nroutes:\n  - { name: r, upstream: u, guards: [{ rate_limit: { rate: 10/s, algorithm: leaky_bucket, scope: cluster } }] }\n', 'lb.yaml', {})
  t.same(r.ok ? [] : r.errors, ['lb.yaml:3:98: scope: cluster needs algorithm: token_bucket (leaky_bucket is node-scoped, as nginx limit_req)'], 'leaky + cluster is a config error, at load')
})

t.test('cluster scope on the store: GCRA, uncommit', async (t) => {
  const d = deps(mem(() => T0))
  const g = rateLimitGuard(rl({ name: 'c', scope: 'cluster', burst: 2 }), route(), d)
  const c1 = ctx(T0)
  t.equal(await g.check(c1), undefined)
  t.equal(await g.check(ctx(T0)), undefined)
  const limited = (await g.check(ctx(T0))) as Rejection
  t.equal(limited.status, 429)
  settle(c1, { kind: 'rejected', rejection: limited })
  await new Promise((resolve) => setImmediate(resolve))
  t.equal(await g.check(ctx(T0)), undefined, 'uncommitted token usable again')
})

const params = (c: string, p: string): { params: Record<string, string> } => ({ params: { campaign: c, product: p } })

t.test('quota: exactly quota admitted, latch answers without the store, 404 for unknown', async (t) => {
  let now = T0
  const { store, calls } = counting(mem(() => now))
  const cfg = config(storeCfg, [campaign('c1', [['p1', 50]])])
  const d = deps(store, { config: cfg })
  const g = quotaGuard(qg(), route(), d)
  const results = await Promise.all(Array.from({ length: 200 }, async (_, i) => await g.check(ctx(now, { user: `u${i}`, ...params('c1', 'p1') }))))
  t.equal(results.filter((r) => r === undefined).length, 50)
  t.ok(results.filter((r) => r !== undefined).every((r) => r?.code === 'SOLD_OUT' && r.status === 409))
  const before = calls.addIfWithin ?? 0
  const r = g.check(ctx(now, params('c1', 'p1')))
  t.notOk(r instanceof Promise, 'latched: answered synchronously')
  t.equal((r as Rejection).code, 'SOLD_OUT')
  t.equal(calls.addIfWithin ?? 0, before, 'no store call while latched')
  t.equal((g.check(ctx(now, params('c1', 'nope'))) as Rejection).status, 404)
  t.equal((g.check(ctx(now, {})) as Rejection).status, 404)
  const text = await d.metrics.registry.getSingleMetricAsString('flashgate_quota_admitted_total')
  t.match(text, /flashgate_quota_admitted_total\{campaign="c1",product="p1"\} 50/)
  t.match(await d.metrics.registry.getSingleMetricAsString('flashgate_quota_remaining'), /product="p1"\} 0/)
  // admin: raise the quota → latch cleared at once (publish), 10 more admitted
  const admin = createQuotaAdmin({ config: cfg, store })
  t.same(await admin.get('c1', 'p1'), { quota: 50, admitted: 50, remaining: 0 })
  t.same(await admin.set('c1', 'p1', 60), { quota: 60, admitted: 50, remaining: 10 })
  const more = await Promise.all(Array.from({ length: 30 }, async () => await g.check(ctx(now, params('c1', 'p1')))))
  t.equal(more.filter((x) => x === undefined).length, 10, 'raised quota admits the difference, without waiting for the latch TTL')
  t.same(await admin.reset('c1', 'p1'), { quota: 60, admitted: 0, remaining: 60 })
  t.equal(await g.check(ctx(now, params('c1', 'p1'))), undefined, 'reset clears the latch')
  t.equal(await admin.get('c1', 'zz'), null, 'unknown product → null')
  await t.rejects(admin.set('c1', 'p1', -1), RangeError)
  now += 2000
})

t.test('quota: give back on later rejection, upstream failure, 4xx (the origin refused: no unit locked) and 5xx; not on 2xx', async (t) => {
  const store = mem(() => T0)
  const cfg = config(storeCfg, [campaign('c1', [['p1', 2]])])
  const d = deps(store, { config: cfg })
  const g = quotaGuard(qg(), route(), d)
  const admin = createQuotaAdmin({ config: cfg, store })
  for (const outcome of [{ kind: 'rejected', rejection: {} as Rejection }, { kind: 'failed', code: 'X' }, { kind: 'upstream', status: 503 }, { kind: 'upstream', status: 409 }] as const) {
    const c = ctx(T0, params('c1', 'p1'))
    t.equal(await g.check(c), undefined)
    settle(c, outcome)
    await new Promise((resolve) => setImmediate(resolve))
    t.equal((await admin.get('c1', 'p1'))?.admitted, 0, `${outcome.kind} ${'status' in outcome ? outcome.status : ''} gives the unit back`)
  }
  for (const status of [200, 202]) {
    const c = ctx(T0, params('c1', 'p1'))
    t.equal(await g.check(c), undefined)
    settle(c, { kind: 'upstream', status })
  }
  t.equal((await admin.get('c1', 'p1'))?.admitted, 2)
  const c = ctx(T0, params('c1', 'p1'))
  t.equal(((await g.check(c)) as Rejection).code, 'SOLD_OUT')
})

t.test('quota: a give-back that lands after an admin reset gives nothing back (no unit too many)', async (t) => {
  const store = mem(() => T0)
  const cfg = config(storeCfg, [campaign('c1', [['p1', 2]])])
  const d = deps(store, { config: cfg })
  // a second node on the same store (its own process-local state), which hears the reset too
  const d2 = deps(store, { config: cfg })
  const g = quotaGuard(qg(), route(), d)
  const g2 = quotaGuard(qg(), route(), d2)
  const admin = createQuotaAdmin({ config: cfg, store })
  const tick = async (): Promise<void> => { await new Promise((resolve) => setImmediate(resolve)) }

  // A admitted on node 1, B on node 2; the operator resets; both fail upstream afterwards
  const a = ctx(T0, params('c1', 'p1'))
  const b = ctx(T0, params('c1', 'p1'))
  t.equal(await g.check(a), undefined)
  t.equal(await g2.check(b), undefined)
  t.same(await admin.reset('c1', 'p1'), { quota: 2, admitted: 0, remaining: 2 })
  settle(b, { kind: 'upstream', status: 502 })
  await tick()
  t.equal(await store.get('q:{c1:p1:0}'), null, 'counter not taken below zero (nor recreated)')
  // two new buyers take the whole quota after the reset; then A's failure settles
  const c1 = ctx(T0, params('c1', 'p1'))
  t.equal(await g.check(c1), undefined)
  t.equal(await g2.check(ctx(T0, params('c1', 'p1'))), undefined)
  settle(a, { kind: 'failed', code: 'X' })
  await tick()
  t.same(await admin.get('c1', 'p1'), { quota: 2, admitted: 2, remaining: 0 }, 'a pre-reset unit is not given back into the new count')
  const after = await Promise.all(Array.from({ length: 5 }, async (_, i) => await (i % 2 === 0 ? g : g2).check(ctx(T0, params('c1', 'p1')))))
  t.same(after.map((r) => r?.code), Array(5).fill('SOLD_OUT'), 'exactly the quota after the reset')
  // a post-reset admission still gives back normally
  settle(c1, { kind: 'upstream', status: 500 })
  await tick()
  t.equal((await admin.get('c1', 'p1'))?.admitted, 1, 'post-reset give-back applies')
  t.equal(await g.check(ctx(T0, params('c1', 'p1'))), undefined, 'and the latch is cleared for it')
})

t.test('quota: segments never exceed the quota; users spread over segments', async (t) => {
  const store = mem(() => T0)
  const cfg = config(storeCfg, [campaign('c1', [['hot', 100, 3]])])
  const d = deps(store, { config: cfg })
  const g = quotaGuard(qg(), route(), d)
  const results = await Promise.all(Array.from({ length: 500 }, async (_, i) => await g.check(ctx(T0, { user: `user-${i}`, ...params('c1', 'hot') }))))
  t.equal(results.filter((r) => r === undefined).length, 100)
  const segs = await Promise.all([0, 1, 2].map(async (i) => await store.get(`q:{c1:hot:${i}}`)))
  t.same(segs, ['34', '33', '33'], 'quota split 34/33/33 and each segment filled')
  t.same(await createQuotaAdmin({ config: cfg, store }).get('c1', 'hot'), { quota: 100, admitted: 100, remaining: 0 })
})

t.test('quota: fail_closed / fail_open / local when the store throws', async (t) => {
  const { StoreError } = await import('../../conf/errors.js')
  const inner = mem(() => T0)
  let down = false
  const flaky = new Proxy(inner, {
    get (target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver)
      if (typeof v !== 'function') return v
      return (...a: unknown[]) => (down && prop !== 'subscribe') ? Promise.reject(new StoreError('FG_ERR_STORE_UNAVAILABLE', 'down')) : (v as (...x: unknown[]) => unknown).apply(target, a)
    }
  })
  const cfg = config({ ...storeCfg, gatewayNodes: 2 }, [campaign('c1', [['p1', 100]])])
  for (const policy of ['fail_closed'] as const) {
    await inner.del('q:{c1:p1:0}')
    down = false
    const d = deps(flaky, { config: cfg })
    const g = quotaGuard(qg({ onError: policy }), route(), d)
    for (let i = 0; i < 60; i++) await g.check(ctx(T0, params('c1', 'p1')))
    down = true
    const rs = await Promise.all(Array.from({ length: 100 }, async () => await g.check(ctx(T0, params('c1', 'p1')))))
    const passed = rs.filter((r) => r === undefined).length
    if (policy === 'fail_closed') t.ok(rs.every((r) => r?.code === 'STORE_UNAVAILABLE' && r.status === 503), 'fail_closed: 503')
    t.equal(passed, 0, 'nothing admitted while the store is down')
    t.match(await d.metrics.registry.getSingleMetricAsString('flashgate_store_fallbacks_total'), new RegExp(`policy="${policy}"\\} 100`))
  }
})
