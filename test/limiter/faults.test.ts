/**
 * Faults on a real redis-server: killed mid-run and restarted. Each on_error policy behaves, no store
 * call outlives the timeout, admissions never exceed the quota (fail_closed), and service
 * recovers within 2 s of Redis coming back. Also: Redis commands per admitted / per latched request.
 */
import t, { type Test } from 'tap'
import { loadConfigText } from '../../conf/load.js'
import { createMetrics } from '../../gateway/metrics.js'
import type { Rejection } from '../../gateway/pipeline/types.js'
import { createStore } from '../../limiter/index.js'
import { quotaGuard } from '../../gateway/guards/quota.js'
import { createQuotaAdmin } from '../../limiter/quota-ledger.js'
import type { Store } from '../../limiter/store.js'
import { redisCli, startRedis, type RedisHandle } from '../helpers/redis.js'
import { campaign, config, ctx, deps, qg, route, storeCfg } from '../../bench/guard-kit.js'

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** A Redis store on a fresh redis-server, both gone when the test ends; ready before it is returned. */
async function redisStore (t: Test, over: Partial<typeof storeCfg>, log?: (level: string, msg: string) => void): Promise<{ r: RedisHandle, store: Store, metrics: ReturnType<typeof createMetrics> }> {
  const r = await startRedis()
  const metrics = createMetrics({ defaultMetrics: false })
  const store = createStore({ ...storeCfg, kind: 'redis', url: r.url, ...over }, log === undefined ? { metrics, clock: Date.now } : { metrics, clock: Date.now, log })
  t.teardown(async () => { await store.close(); await r.stop() })
  await store.ready?.()
  return { r, store, metrics }
}
const params = { params: { campaign: 'c1', product: 'p1' } }

async function commandStats (port: number): Promise<Map<string, number>> {
  const out = await redisCli(port, 'info', 'commandstats')
  const m = new Map<string, number>()
  for (const line of out.split('\n')) {
    const r = /^cmdstat_([^:]+):calls=(\d+)/.exec(line.trim())
    if (r !== null) m.set(r[1] as string, Number(r[2]))
  }
  return m
}
const total = (m: Map<string, number>, skip: string[]): number => [...m].filter(([k]) => !skip.includes(k)).reduce((a, [, v]) => a + v, 0)

t.test('redis commands per admitted and per latched request', async (t) => {
  const { r, store, metrics } = await redisStore(t, { timeoutMs: 500 })
  const cfg = config({ ...storeCfg, kind: 'redis' }, [campaign('c1', [['p1', 200]])])
  const g = quotaGuard(qg({ latchTtlMs: 60_000 }), route(), deps(store, { config: cfg, metrics }))
  const now = Date.now()
  await g.check(ctx(now, params)) // warm: loads the admin quota override once, script cached
  await redisCli(r.port, 'config', 'resetstat')
  for (let i = 0; i < 199; i++) t.equal(await g.check(ctx(now, params)), undefined)
  const s1 = await commandStats(r.port)
  // Not per request: INFO and CONFIG are the test's own; SUBSCRIBE is the gateway's one subscription to the
  // quota channel (releases clear the latch), made once when its subscriber connection comes up.
  const skip = ['info', 'config|resetstat', 'config', 'subscribe']
  // EVALSHA counts once, and the GET/INCRBY run inside the script count as their own entries: count round trips.
  t.equal(s1.get('evalsha'), 199, 'one EVALSHA (one round trip) per admitted request')
  t.equal(total(s1, [...skip, 'evalsha', 'get', 'incrby']), 0, `no other command: ${JSON.stringify([...s1])}`)
  t.equal(((await g.check(ctx(now, params))) as Rejection).code, 'SOLD_OUT')
  await redisCli(r.port, 'config', 'resetstat')
  for (let i = 0; i < 1000; i++) t.equal((g.check(ctx(now, params)) as Rejection).code, 'SOLD_OUT')
  const s2 = await commandStats(r.port)
  t.equal(total(s2, skip), 0, 'zero Redis commands for 1000 requests after sell-out')
  t.comment(`admitted: ${s1.get('evalsha')} evalsha for 199 admissions; after sell-out: ${total(s2, skip)} commands for 1000 requests`)
})

async function scenario (t: Test, policy: 'fail_closed'): Promise<void> {
  const { r, store, metrics } = await redisStore(t, { timeoutMs: 200, breakerFailures: 3, breakerBackoffMs: 300 })
  const quota = 300
  const cfg = config({ ...storeCfg, kind: 'redis', onError: policy, gatewayNodes: 1 }, [campaign('c1', [['p1', quota]])])
  const g = quotaGuard(qg({ latchTtlMs: 100 }), route(), deps(store, { config: cfg, metrics }))
  let admitted = 0
  let maxMs = 0
  const codes = new Map<string, number>()
  const one = async (): Promise<void> => {
    const t0 = performance.now()
    const v = await g.check(ctx(Date.now(), params))
    const ms = performance.now() - t0
    if (ms > maxMs) maxMs = ms
    if (v === undefined) admitted++
    else codes.set(v.code, (codes.get(v.code) ?? 0) + 1)
  }
  const burst = async (n: number): Promise<void> => { await Promise.all(Array.from({ length: n }, one)) }
  for (let i = 0; i < 10; i++) await burst(10) // 100 admitted
  t.equal(admitted, 100)
  r.kill()
  const downFrom = Date.now()
  for (let i = 0; i < 10; i++) { await burst(20); await sleep(20) }
  t.ok(maxMs < 200 + 150, `no check hung past the store timeout (max ${maxMs.toFixed(1)} ms)`)
  const whileDown = admitted - 100
  if (policy === 'fail_closed') {
    t.equal(whileDown, 0, 'fail_closed admits nothing while down')
    t.ok((codes.get('STORE_UNAVAILABLE') ?? 0) > 0, '503 STORE_UNAVAILABLE')
  }
  t.ok(Date.now() - downFrom > 0)
  await r.restart()
  const upAt = Date.now()
  let recoveredAt = 0
  while (Date.now() - upAt < 5000) {
    // Recovered = the guard's store call answers again (no fallback taken).
    const fb = await metrics.registry.getSingleMetricAsString('flashgate_store_fallbacks_total')
    const v = await g.check(ctx(Date.now(), params))
    const fb2 = await metrics.registry.getSingleMetricAsString('flashgate_store_fallbacks_total')
    if (v === undefined) admitted++
    if (fb === fb2 && store.healthy) { recoveredAt = Date.now(); break }
    await sleep(10)
  }
  t.ok(recoveredAt > 0 && recoveredAt - upAt <= 2000, `recovered ${recoveredAt - upAt} ms after Redis came back`)
  for (let i = 0; i < 20; i++) await burst(20)
  const admin = createQuotaAdmin({ config: cfg, store })
  let st = null
  for (let i = 0; i < 40 && st === null; i++) {
    // a loaded 2-core machine can time a call out and re-open the breaker briefly: retry the read
    st = await admin.get('c1', 'p1').catch(async () => { await sleep(50); return null })
  }
  t.ok(st !== null && st.admitted <= quota, `store counter never above the quota (${st?.admitted})`)
  t.match(await metrics.registry.getSingleMetricAsString('flashgate_store_errors_total'), /op="add_if_within"\} [1-9]/)
}

t.test('fail_closed', async (t) => { await scenario(t, 'fail_closed') })
t.test('fail_open is refused for a quota (it cannot bound the units sold while the store is down; local is bounded by leases: test/limiter/quota-lease.test.ts)', async (t) => {
  // A rule of the config: the loader refuses it at FILE:LINE:COL (test/conf/quota-policy.test.ts), so no quota guard is ever built with it.
  const yaml = (store: string, quota: string): string => `store: { kind: memory${store} }
upstreams: { u: { targets: [http://127.0.0.1:9] } }
campaigns: [{ id: c1, starts_at: 2030-01-01T00:00:00Z, ends_at: 2030-01-02T00:00:00Z, products: [{ id: p1, quota: 10 }] }]
routes: [{ name: buy, match: { path: /buy/:campaign/:product }, upstream: u, guards: [{ quota: ${quota} }] }]
`
  const inherited = loadConfigText(yaml(', on_error: fail_open', '{}'), 'fg.yaml', {})
  t.match(inherited.ok ? [] : inherited.errors, [/^fg\.yaml:4:\d+: quota: on_error fail_open \(inherited from store\.on_error\) cannot bound/], 'fail_open (inherited): refused')
  const own = loadConfigText(yaml('', '{ on_error: fail_open }'), 'fg.yaml', {})
  t.match(own.ok ? [] : own.errors, [/^fg\.yaml:4:\d+: quota: on_error fail_open cannot bound/], 'fail_open (own): refused')
})

t.test('slow redis (CLIENT PAUSE, data kept): timeouts bound latency, total admissions never exceed the quota', async (t) => {
  const { r, store, metrics } = await redisStore(t, { timeoutMs: 50, breakerFailures: 3, breakerBackoffMs: 200 })
  for (const policy of ['fail_closed'] as const) {
    const cfg = config({ ...storeCfg, kind: 'redis', onError: policy, gatewayNodes: 1 }, [campaign('c1', [[policy, 300]])])
    const g = quotaGuard(qg({ latchTtlMs: 50 }), route(), deps(store, { config: cfg, metrics }))
    const p = { params: { campaign: 'c1', product: policy } }
    let admitted = 0
    let maxMs = 0
    const one = async (): Promise<void> => {
      const t0 = performance.now()
      if ((await g.check(ctx(Date.now(), p))) === undefined) admitted++
      maxMs = Math.max(maxMs, performance.now() - t0)
    }
    for (let i = 0; i < 10; i++) await Promise.all(Array.from({ length: 10 }, one))
    await redisCli(r.port, 'client', 'pause', '400', 'ALL')
    const until = Date.now() + 1200
    while (Date.now() < until) { await Promise.all(Array.from({ length: 20 }, one)); await sleep(10) }
    t.ok(maxMs < 200, `${policy}: no check waited past the timeout (max ${maxMs.toFixed(1)} ms)`)
    t.ok(admitted <= 300, `${policy}: ${admitted} admitted ≤ quota 300`)
    await sleep(300)
    const st = await createQuotaAdmin({ config: cfg, store }).get('c1', policy)
    t.ok(st !== null && st.admitted <= 300 + 200, `${policy}: store counter ${st?.admitted}`)
    t.ok(st !== null && st.admitted >= admitted, 'timed-out calls Redis applied later count against the quota (never the other way)')
    if (policy === 'fail_closed') {
      // Every call Redis applied for a request that was answered 503 is given back when its late answer
      // arrives (give-backs the open breaker refused are tried again): the counter settles at exactly the
      // admissions, so a slow moment leaves no unit admitted but unsold.
      let now = st?.admitted
      const until = Date.now() + 10_000
      while (now !== admitted && Date.now() < until) {
        await sleep(100)
        now = (await createQuotaAdmin({ config: cfg, store }).get('c1', policy).catch(() => null))?.admitted
      }
      t.equal(now, admitted, `fail_closed: the store counter settles at the ${admitted} admissions`)
    }
  }
})

t.test('a server that stops answering without closing the connection: the connection is reopened, then service recovers', async (t) => {
  const logs: string[] = []
  const { r, store } = await redisStore(t, { timeoutMs: 50, breakerFailures: 3, breakerBackoffMs: 100 }, (_level, msg) => { logs.push(msg) })
  t.equal(await store.add('k', 1), 1)
  // CLIENT PAUSE ALL: the server reads commands and answers none for 2.5 s; the socket stays open.
  await redisCli(r.port, 'client', 'pause', '2500', 'ALL')
  const codes = new Map<string, number>()
  const until = Date.now() + 1800
  let maxMs = 0
  while (Date.now() < until) {
    const t0 = performance.now()
    const code = await store.add('k', 1).then(() => 'ok', (err: { code?: string }) => err.code ?? 'other')
    maxMs = Math.max(maxMs, performance.now() - t0)
    codes.set(code, (codes.get(code) ?? 0) + 1)
    await sleep(20)
  }
  t.ok(maxMs < 200, `no call waited past the timeout (max ${maxMs.toFixed(1)} ms)`)
  t.equal(codes.get('ok'), undefined, 'nothing answered while paused')
  t.ok((codes.get('FG_ERR_STORE_TIMEOUT') ?? 0) > 0, 'calls timed out')
  t.ok(logs.includes('store not answering: reconnecting'), 'after 1 s (20 × the timeout) of silence the connection was reopened')
  // Once the pause is over, calls are answered again.
  let ok = false
  const deadline = Date.now() + 5000
  while (!ok && Date.now() < deadline) {
    ok = await store.add('k', 1).then(() => true, () => false)
    if (!ok) await sleep(50)
  }
  t.ok(ok, 'service recovers once the server answers again')
})

t.test('a server that lost its script cache (SCRIPT FLUSH): the next script call is answered, sent again as EVAL', async (t) => {
  const { r, store, metrics } = await redisStore(t, { timeoutMs: 500 })
  t.same(await store.addIfWithin('q', 1, 5), { ok: true, value: 1 })
  await redisCli(r.port, 'script', 'flush')
  t.same(await store.addIfWithin('q', 1, 5), { ok: true, value: 2 }, 'add-if-within after the flush')
  t.same(await store.markAndAdd('m:{x}', 'v', 1000, 'c:{x}', 1, 3), { fresh: true, ok: true, value: 1 }, 'mark-and-add after the flush')
  t.equal((await store.gcra('g', Date.now(), 100, 5, 1)).ok, true, 'gcra after the flush')
  t.same(await store.addIfWithin('q', 1, 5), { ok: true, value: 3 }, 'and again (EVALSHA: the EVAL loaded it)')
  t.match(await metrics.registry.getSingleMetricAsString('flashgate_store_errors_total'), /^(?!.*op="add_if_within"\} [1-9])/s, 'no call failed')
})
