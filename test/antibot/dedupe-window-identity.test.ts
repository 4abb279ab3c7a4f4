import t from 'tap'
import { campaignWindowGuard } from '../../gateway/guards/campaign-window.js'
import { createIdentity, signSession, verifySession } from '../../gateway/guards/identity.js'
import { dedupeGuard, releasesMark } from '../../gateway/guards/dedupe.js'
import { startRedis } from '../helpers/redis.js'
import { SESSION_KEY, codeOf, guardOf, loadYaml, makeCtx, makeDeps, ready, routeYaml, settle } from './helpers.js'
import type { Rejection } from '../../gateway/pipeline/types.js'

const START = Date.UTC(2030, 0, 1, 12)
const END = Date.UTC(2030, 0, 1, 13)
const NOW = Date.UTC(2030, 0, 1, 12, 30)
const SOLD_OUT: Rejection = { status: 409, code: 'SOLD_OUT', body: Buffer.from('{}'), headers: null }

t.test('dedupe: one attempt per user per campaign × product; release on later rejection / upstream failure', async (t) => {
  const config = loadYaml(routeYaml('- dedupe: { ttl: 1h }'))
  const deps = makeDeps(config, { now: NOW })
  const { route, cfg } = guardOf(config, 'dedupe')
  const guard = dedupeGuard(cfg, route, deps)
  const attempt = async (user: string | null, path = '/buy/c1/p1', now = NOW) => {
    const ctx = makeCtx({ path, headers: user === null ? {} : { 'x-user-id': user }, now })
    return { ctx, code: await codeOf(guard.check(ctx)) }
  }
  t.equal((await attempt(null)).code, 'UNAUTHENTICATED')
  t.equal((await attempt('u1', '/buy/c1/zz')).code, 'NOT_FOUND', 'unknown product: no store key made')
  t.equal((await attempt('u1', '/buy/cX/p1')).code, 'NOT_FOUND', 'unknown campaign')
  const a = await attempt('u1')
  t.equal(a.code, undefined, 'first attempt')
  t.equal(a.ctx.settlers?.length, 1, 'a release settler is registered')
  t.equal((await attempt('u1')).code, 'DUPLICATE', 'second attempt')
  t.equal((await attempt('u1', '/buy/c1/p2')).code, undefined, 'another product is another attempt')
  t.equal((await attempt('u2')).code, undefined, 'another user')

  // a later guard rejects: released
  const b = await attempt('u3')
  settle(b.ctx, { kind: 'rejected', rejection: SOLD_OUT })
  await new Promise((resolve) => setImmediate(resolve))
  t.equal((await attempt('u3')).code, undefined, 'released after a later rejection')
  // upstream 5xx / timeout: released; 2xx and 409: kept
  for (const [outcome, released] of [
    [{ kind: 'upstream', status: 503 }, true],
    [{ kind: 'upstream', status: 429 }, true],
    [{ kind: 'failed', code: 'UPSTREAM_TIMEOUT' }, true],
    [{ kind: 'upstream', status: 202 }, false],
    [{ kind: 'upstream', status: 409 }, false]
  ] as const) {
    const user = `u-${JSON.stringify(outcome)}`
    const first = await attempt(user)
    t.equal(first.code, undefined)
    settle(first.ctx, outcome)
    await new Promise((resolve) => setImmediate(resolve))
    t.equal((await attempt(user)).code, released ? undefined : 'DUPLICATE', `${JSON.stringify(outcome)} → ${released ? 'released' : 'kept'}`)
    t.equal(releasesMark(outcome), released)
  }
  // TTL (the memory store keeps time with the deps clock)
  deps.setNow(NOW + 3_600_000)
  t.equal((await attempt('u1', '/buy/c1/p1', NOW + 3_600_000)).code, undefined, 'the mark expires after ttl')
})

t.test('dedupe on a real Redis: two nodes, store down → policy', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const yaml = (policy: string): string => routeYaml(`- dedupe: { ttl: 1h, on_error: ${policy} }`, { store: `store: { kind: redis, url: "${redis.url}", timeout: 200ms }` })
  const config = loadYaml(yaml('fail_closed'))
  const n1 = makeDeps(config, { now: NOW })
  const n2 = makeDeps(config, { now: NOW })
  t.teardown(async () => { await n1.store.close(); await n2.store.close() })
  await ready(n1.store); await ready(n2.store)
  const { route, cfg } = guardOf(config, 'dedupe')
  const g1 = dedupeGuard(cfg, route, n1)
  const g2 = dedupeGuard(cfg, route, n2)
  const run = (g: typeof g1, user: string): Promise<string | undefined> => codeOf(g.check(makeCtx({ headers: { 'x-user-id': user }, now: NOW })))
  const results = await Promise.all(Array.from({ length: 20 }, (_, i) => run(i % 2 === 0 ? g1 : g2, 'same-user')))
  t.equal(results.filter((r) => r === undefined).length, 1, 'exactly one of 20 concurrent attempts on two nodes passes')
  t.equal(results.filter((r) => r === 'DUPLICATE').length, 19)
  redis.kill()
  t.equal(await run(g1, 'x'), 'STORE_UNAVAILABLE', 'fail_closed')
  const local = loadYaml(yaml('local'))
  const gl = dedupeGuard(guardOf(local, 'dedupe').cfg, route, n1)
  t.equal(await run(gl, 'y'), undefined, 'local: first attempt passes on the node-local mark')
  t.equal(await run(gl, 'y'), 'DUPLICATE', 'local: second refused by the node-local mark')
  const open = loadYaml(yaml('fail_open'))
  const go = dedupeGuard(guardOf(open, 'dedupe').cfg, route, n1)
  t.equal(await run(go, 'z'), undefined)
  t.equal(await run(go, 'z'), undefined, 'fail_open passes every attempt')
})

t.test('campaign_window: edges, body, unknown campaign, override', async (t) => {
  const config = loadYaml(routeYaml('- campaign_window: {}'))
  const deps = makeDeps(config)
  const { route, cfg } = guardOf(config, 'campaign_window')
  const guard = campaignWindowGuard(cfg, route, deps)
  const at = (now: number, path = '/buy/c1/p1') => guard.check(makeCtx({ path, now })) as Rejection | undefined
  const before = at(START - 1500)
  t.equal(before?.code, 'NOT_STARTED')
  t.equal(before?.status, 409)
  t.same(JSON.parse(before?.body.toString() ?? ''), { code: 'NOT_STARTED', message: 'campaign has not started', campaign: 'c1', now: START - 1500, starts_at: START, starts_in: 2 })
  t.same(before?.headers, ['retry-after', '2'])
  t.equal(at(START - 1)?.code, 'NOT_STARTED', 'one ms before starts_at')
  t.equal(at(START), undefined, 'at starts_at')
  t.equal(at(END - 1), undefined, 'one ms before ends_at')
  t.equal(at(END)?.code, 'ENDED', 'at ends_at')
  t.equal(at(NOW, '/buy/nope/p1')?.code, 'NOT_FOUND')
  const o = loadYaml(routeYaml('- campaign_window: { reject: { status: 425 } }'))
  const og = campaignWindowGuard(guardOf(o, 'campaign_window').cfg, route, makeDeps(o))
  t.equal((og.check(makeCtx({ now: START - 1 })) as Rejection).status, 425)
})

t.test('identity: header trusted as given; signed session cookie', async (t) => {
  const header = createIdentity(loadYaml(routeYaml('- campaign_window: {}')))
  const c1 = makeCtx({ headers: { 'x-user-id': 'alice' } })
  t.equal(header(c1), 'alice')
  t.equal(c1.user, 'alice', 'cached on ctx.user')
  t.equal(header(makeCtx({})), null)
  const cookieCfg = loadYaml(routeYaml('- campaign_window: {}', { identity: 'cookie sid' }))
  const id = createIdentity(cookieCfg)
  const key = Buffer.from(SESSION_KEY)
  const tok = signSession(key, 'bob:42', NOW + 60_000)
  t.equal(id(makeCtx({ headers: { cookie: `x=1; sid=${tok}; y=2` }, now: NOW })), 'bob:42')
  t.equal(id(makeCtx({ headers: { cookie: `sid="${tok}"` }, now: NOW })), 'bob:42', 'quoted cookie value')
  t.equal(id(makeCtx({ headers: { cookie: `sid=${tok}` }, now: NOW + 60_000 })), null, 'expired at expiresAt')
  t.equal(id(makeCtx({ headers: { cookie: `sid=${signSession(Buffer.from('other-key-0123456789'), 'bob:42', NOW + 60_000)}` }, now: NOW })), null, 'another key')
  const parts = tok.split('.')
  parts[1] = Buffer.from('admin').toString('base64url')
  t.equal(id(makeCtx({ headers: { cookie: `sid=${parts.join('.')}` }, now: NOW })), null, 'user swapped')
  const p2 = tok.split('.'); p2[2] = String(NOW + 1e9)
  t.equal(id(makeCtx({ headers: { cookie: `sid=${p2.join('.')}` }, now: NOW })), null, 'expiry extended')
  t.equal(id(makeCtx({ headers: { 'x-user-id': 'alice' }, now: NOW })), null, 'the header is not trusted in cookie mode')
  t.equal(id(makeCtx({ headers: { cookie: 'sid=garbage' }, now: NOW })), null)
  t.equal(verifySession(key, tok + 'A', NOW), null, 'padded MAC')
  t.throws(() => signSession(key, '', NOW))
})
