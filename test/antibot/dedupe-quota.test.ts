/**
 * dedupe directly before quota: the two guards fuse into one (one store round trip, Store.markAndAdd).
 * The same table of attempts runs through the two guards apart and through the fused one, on the memory
 * store and on a real Redis; the answers must be the same except the one documented difference (a repeated
 * attempt for a product latched sold out gets SOLD_OUT, with no store call).
 */
import t from 'tap'
import { dedupeGuard } from '../../gateway/guards/dedupe.js'
import { quotaGuard } from '../../gateway/guards/quota.js'
import { buildPipelines } from '../../gateway/pipeline/build.js'
import { redisCli, startRedis } from '../helpers/redis.js'
import { guardOf, loadYaml, makeCtx, makeDeps, ready, routeYaml, settle, type TestDeps } from './helpers.js'
import type { Guard, Outcome, Rejection, RequestContext } from '../../gateway/pipeline/types.js'
import type { Test } from 'tap'
import type { Config } from '../../conf/types.js'

const NOW = Date.UTC(2030, 0, 1, 12, 30)
const REJECTED: Outcome = { kind: 'rejected', rejection: { status: 409, code: 'X', body: Buffer.from('{}'), headers: null } as Rejection }

/** Quota 2 for c1/p1; the guards as given. */
function yaml (guards: string, store?: string): string {
  return routeYaml(guards, store === undefined ? {} : { store }).replace('{ id: p1, quota: 100 }', '{ id: p1, quota: 2 }')
}

/**
 * The route's guards as the gateway builds them (fused when it can), or built one by one (`apart`), and a
 * way to run one attempt through them.
 */
function pipeline (config: Config, deps: TestDeps, mode: 'gateway' | 'apart' = 'gateway'): { guards: readonly Guard[], attempt: (user: string, path?: string) => Promise<{ ctx: RequestContext, code: string | undefined }> } {
  let guards: readonly Guard[]
  if (mode === 'gateway') {
    guards = buildPipelines(config, { dedupe: dedupeGuard, quota: quotaGuard }, deps).routes[0]?.guards ?? []
  } else {
    const d = guardOf(config, 'dedupe')
    const q = guardOf(config, 'quota')
    guards = [dedupeGuard(d.cfg, d.route, deps), quotaGuard(q.cfg, q.route, deps)]
  }
  return {
    guards,
    async attempt (user, path = '/buy/c1/p1') {
      const ctx = makeCtx({ path, headers: { 'x-user-id': user }, now: deps.clock() })
      for (const g of guards) {
        const r = await g.check(ctx)
        if (r !== undefined) {
          // As the runner does: a rejection settles what earlier guards took.
          settle(ctx, { kind: 'rejected', rejection: r })
          await tick(); await tick()
          return { ctx, code: r.code }
        }
      }
      return { ctx, code: undefined }
    }
  }
}

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

t.test('the pipeline fuses dedupe + quota only when they are adjacent and neither is in shadow mode', async (t) => {
  const deps = (c: Config): TestDeps => makeDeps(c, { now: NOW })
  const fused = loadYaml(yaml('- dedupe: { ttl: 1h }\n- quota: {}'))
  t.same(pipeline(fused, deps(fused)).guards.map((g) => g.kind), ['dedupe+quota'])
  t.match(pipeline(fused, deps(fused)).guards[0]?.id, /^buy#0:dedupe\+buy#1:quota$/)
  const shadow = loadYaml(yaml('- dedupe: { ttl: 1h, shadow: true }\n- quota: {}'))
  t.same(pipeline(shadow, deps(shadow)).guards.map((g) => g.kind), ['dedupe', 'quota'], 'a shadow guard stays apart')
  const between = loadYaml(yaml('- dedupe: { ttl: 1h }\n- campaign_window: {}\n- quota: {}'))
  const { routes } = buildPipelines(between, { dedupe: dedupeGuard, quota: quotaGuard, campaign_window: () => ({ kind: 'campaign_window', id: 'w', check: () => undefined }) }, deps(between))
  t.same(routes[0]?.guards?.map((g) => g.kind), ['dedupe', 'campaign_window', 'quota'], 'not across another guard')
  const reversed = loadYaml(yaml('- quota: {}\n- dedupe: { ttl: 1h }'))
  t.same(pipeline(reversed, deps(reversed)).guards.map((g) => g.kind), ['quota', 'dedupe'], 'not in the other order')
  // On a Redis Cluster the mark and the product's counter are on different slots: kept apart.
  const cluster = loadYaml(yaml('- dedupe: { ttl: 1h }\n- quota: {}'))
  const d = deps(cluster)
  const clusterDeps: TestDeps = { ...d, store: new Proxy(d.store, { get: (s, k) => k === 'kind' ? 'redis-cluster' : Reflect.get(s, k) }) }
  t.same(pipeline(cluster, clusterDeps).guards.map((g) => g.kind), ['dedupe', 'quota'], 'not on redis-cluster')
})

/** The attempt table; `fused` says which answers differ. Returns nothing: asserts as it goes. */
async function table (t: Test, guards: 'apart' | 'fused', config: Config, deps: TestDeps): Promise<void> {
  const p = pipeline(config, deps, guards === 'fused' ? 'gateway' : 'apart')
  t.same(p.guards.map((g) => g.kind), guards === 'fused' ? ['dedupe+quota'] : ['dedupe', 'quota'])
  const store = deps.store
  const mark = async (user: string): Promise<boolean> => (await store.get(`dedupe:c1:p1:${user}`)) !== null
  const admitted = async (): Promise<number> => Number((await store.get('q:{c1:p1:0}')) ?? 0)

  t.equal((await p.attempt('u1', '/buy/c1/zz')).code, 'NOT_FOUND')
  const a = await p.attempt('u1')
  t.equal(a.code, undefined, 'u1 admitted')
  t.equal(a.ctx.settlers?.length, 2, 'two settlers: the unit and the mark')
  t.equal((await p.attempt('u1')).code, 'DUPLICATE', 'u1 again: DUPLICATE while units remain')
  t.equal(await admitted(), 1, 'a duplicate takes no unit')
  const b = await p.attempt('u2')
  t.equal(b.code, undefined, 'u2 admitted: the last unit')
  t.equal(await admitted(), 2)
  t.equal((await p.attempt('u3')).code, 'SOLD_OUT', 'u3: sold out')
  t.equal(await mark('u3'), false, 'a user refused for want of stock keeps no mark')
  t.equal((await p.attempt('u1')).code, guards === 'fused' ? 'SOLD_OUT' : 'DUPLICATE', 'u1 again once sold out: from the latch when fused')

  // u2's purchase fails upstream: unit and mark go back, u2 (and only one user) may try again.
  settle(b.ctx, { kind: 'upstream', status: 503 })
  await tick(); await tick()
  t.equal(await admitted(), 1, 'the unit went back')
  t.equal(await mark('u2'), false, 'the mark went back')
  const b2 = await p.attempt('u2')
  t.equal(b2.code, undefined, 'u2 admitted again')
  // u2's second attempt is rejected by a later step: same.
  settle(b2.ctx, REJECTED)
  await tick(); await tick()
  t.equal(await admitted(), 1)
  t.equal(await mark('u2'), false)
  // u4 buys: kept.
  const c = await p.attempt('u4')
  t.equal(c.code, undefined, 'u4 admitted')
  settle(c.ctx, { kind: 'upstream', status: 202 })
  await tick(); await tick()
  t.equal(await admitted(), 2, 'a sale keeps its unit')
  t.equal(await mark('u4'), true, 'and its mark')
  t.equal((await p.attempt('u5')).code, 'SOLD_OUT')
  t.equal((await p.attempt('u1', '/buy/c1/p2')).code, undefined, 'another product is another attempt')
}

for (const kind of ['memory', 'redis'] as const) {
  t.test(`the same answers apart and fused: ${kind} store`, async (t) => {
    let redisUrl: string | null = null
    if (kind === 'redis') {
      const redis = await startRedis()
      t.teardown(() => redis.stop())
      redisUrl = redis.url
    }
    for (const mode of ['apart', 'fused'] as const) {
      await t.test(mode, async (t) => {
        const store = redisUrl === null ? undefined : `store: { kind: redis, url: "${redisUrl}", timeout: 500ms, key_prefix: "${mode}:" }`
        const config = loadYaml(yaml('- dedupe: { ttl: 1h }\n- quota: {}', store))
        const deps = makeDeps(config, { now: NOW })
        t.teardown(() => deps.store.close())
        await ready(deps.store)
        await table(t, mode, config, deps)
      })
    }
  })
}

t.test('fused on a real Redis: two nodes at once, one attempt per user, never past the quota; store down → policies', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const cfgOf = (dedupe: string, quota: string): Config => loadYaml(yaml(`- dedupe: { ttl: 1h, on_error: ${dedupe} }\n- quota: { on_error: ${quota} }`, `store: { kind: redis, url: "${redis.url}", timeout: 200ms }`))
  const config = cfgOf('fail_closed', 'fail_closed')
  const n1 = makeDeps(config, { now: NOW })
  const n2 = makeDeps(config, { now: NOW })
  t.teardown(async () => { await n1.store.close(); await n2.store.close() })
  await ready(n1.store); await ready(n2.store)
  const p1 = pipeline(config, n1)
  const p2 = pipeline(config, n2)
  t.same(p1.guards.map((g) => g.kind), ['dedupe+quota'])
  // 20 concurrent attempts of one user on two nodes: one passes.
  const same = await Promise.all(Array.from({ length: 20 }, async (_, i) => (await (i % 2 === 0 ? p1 : p2).attempt('same-user')).code))
  t.equal(same.filter((c) => c === undefined).length, 1, 'exactly one of 20 concurrent attempts passes')
  t.equal(same.filter((c) => c === 'DUPLICATE').length, 19)
  // 40 users at once for the one unit left: one passes, 39 sold out, no marks for them.
  const crowd = await Promise.all(Array.from({ length: 40 }, async (_, i) => (await (i % 2 === 0 ? p1 : p2).attempt(`c${i}`)).code))
  t.equal(crowd.filter((c) => c === undefined).length, 1, 'the last unit to one user')
  t.equal(crowd.filter((c) => c === 'SOLD_OUT').length, 39)
  t.equal(n1.store.kind === 'redis' ? Number(await n1.store.get('q:{c1:p1:0}')) : -1, 2, 'the counter is at the quota')
  let marks = 0
  for (let i = 0; i < 40; i++) if ((await n1.store.get(`dedupe:c1:p1:c${i}`)) !== null) marks++
  t.equal(marks, 1, 'only the admitted user of the crowd holds a mark')
  const ops = await n1.registry.getSingleMetricAsString('flashgate_store_duration_seconds')
  t.match(ops, /flashgate_store_duration_seconds_count\{op="mark_and_add"\} [1-9]/, 'the fused store call')
  t.notMatch(ops, /flashgate_store_duration_seconds_count\{op="set_if_absent"\} [1-9]/, 'no separate dedupe call')

  redis.kill()
  const down = async (dedupe: string, quota: string, user: string): Promise<string | undefined> => {
    const c = cfgOf(dedupe, quota)
    // p2 is a product with stock left, so the quota's own fallback is what answers.
    return (await pipeline(c, n1).attempt(user, '/buy/c1/p2')).code
  }
  t.equal(await down('fail_closed', 'fail_closed', 'd1'), 'STORE_UNAVAILABLE', 'dedupe fail_closed answers 503')
  t.equal(await down('fail_open', 'fail_closed', 'd2'), 'STORE_UNAVAILABLE', 'dedupe fail_open, quota fail_closed: 503')
  t.equal(await down('local', 'fail_closed', 'd3'), 'STORE_UNAVAILABLE', 'dedupe local, quota fail_closed: 503 from the quota')
  t.throws(() => cfgOf('fail_open', 'fail_open'), /quota: on_error fail_open cannot bound/, 'fail_open is refused for a quota')
  const fallbacks = await n1.registry.getSingleMetricAsString('flashgate_store_fallbacks_total')
  t.match(fallbacks, /guard="buy#0:dedupe",policy="local"\} [1-9]/, 'the dedupe fallback is counted')
  t.match(fallbacks, /guard="buy#1:quota",policy="fail_closed"\} [1-9]/, 'and the quota fallback')
})

t.test('fused on a slow Redis (CLIENT PAUSE): a late "applied" for a request answered 503 gives back the unit and the mark', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const config = loadYaml(yaml('- dedupe: { ttl: 1h }\n- quota: {}', `store: { kind: redis, url: "${redis.url}", timeout: 50ms, breaker_failures: 3, breaker_backoff: 200ms }`).replace('{ id: p2, quota: 100 }', '{ id: p2, quota: 100000 }'))
  const deps = makeDeps(config, { now: Date.now() })
  t.teardown(() => deps.store.close())
  await ready(deps.store)
  const p = pipeline(config, deps)
  t.same(p.guards.map((g) => g.kind), ['dedupe+quota'])
  const answers = new Map<string, string | undefined>()
  let n = 0
  const one = async (): Promise<void> => {
    const user = `s${n++}`
    deps.setNow(Date.now())
    const r = await p.attempt(user, '/buy/c1/p2')
    answers.set(user, r.code)
    if (r.code === undefined) settle(r.ctx, { kind: 'upstream', status: 202 })
  }
  for (let i = 0; i < 5; i++) await Promise.all(Array.from({ length: 10 }, one))
  await redisCli(redis.port, 'client', 'pause', '400', 'ALL')
  const until = Date.now() + 1000
  while (Date.now() < until) { await Promise.all(Array.from({ length: 20 }, one)); await new Promise((resolve) => setTimeout(resolve, 10)) }
  const admitted = [...answers.values()].filter((c) => c === undefined).length
  const refused = [...answers.values()].filter((c) => c === 'STORE_UNAVAILABLE').length
  t.ok(refused > 0, `${refused} attempts answered 503 while Redis was paused`)
  t.equal(admitted + refused, answers.size, 'every attempt admitted or 503')
  // Late answers arrive after the pause: each applied call for a 503 is undone (unit and mark). A
  // give-back whose own call fails other than by the open breaker (a timeout on a machine busy enough)
  // is not repeated — it may have been applied — and is logged: such a unit stays counted, the safe
  // direction. So the counter settles between the admissions and the admissions + the logged failures.
  const failed = (msg: string): number => deps.logs.filter((l) => l.msg === msg).length
  let counter = -1
  let marks = -1
  const deadline = Date.now() + 10_000
  while (Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100))
    counter = Number(await deps.store.get('q:{c1:p2:0}').catch(() => -1))
    marks = Number(await redisCli(redis.port, 'eval', "return #redis.call('KEYS', ARGV[1])", '0', `${config.store.keyPrefix}dedupe:c1:p2:*`).catch(() => -1))
    if (counter >= admitted && counter - admitted <= failed('quota give-back failed') && marks >= admitted && marks - admitted <= failed('dedupe release failed')) break
  }
  const lostUnits = failed('quota give-back failed')
  const lostMarks = failed('dedupe release failed')
  t.ok(counter >= admitted && counter <= admitted + lostUnits, `the counter settles at the ${admitted} admissions (${counter}; ${lostUnits} give-backs failed and were logged)`)
  t.ok(marks >= admitted && marks <= admitted + lostMarks, `and only the admitted users hold a mark (${marks}; ${lostMarks} releases failed and were logged)`)
  t.ok(lostUnits < refused, `most late "applied" answers were undone (${lostUnits} give-backs failed of ${refused} refusals)`)
})
