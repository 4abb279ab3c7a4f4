import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { denyGuard, DENY_CACHE_MS } from '../../gateway/guards/deny.js'
import { createStore } from '../../limiter/index.js'
import { startRedis } from '../helpers/redis.js'
import { codeOf, guardOf, loadYaml, makeCtx, makeDeps, ready, routeYaml } from './helpers.js'

const NOW = Date.UTC(2030, 0, 1, 12, 30)

t.test('IPv4, IPv6, CIDRs, mapped addresses, files and literal users', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fg-deny-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'bad.txt'), '# scrapers\n192.0.2.0/25   # range\n\n2001:db8:bad::/48\n 198.18.0.1 \n')
  const config = loadYaml(routeYaml(`- deny: { ips: [203.0.113.0/24, 10.1.2.3, "2001:db8::/32"], ip_files: [${join(dir, 'bad.txt')}], users: [mallory] }`))
  // The loader read the file; the guard is built from what it handed over, with the file gone.
  rmSync(join(dir, 'bad.txt'))
  const deps = makeDeps(config)
  const { route, cfg } = guardOf(config, 'deny')
  const guard = denyGuard(cfg, route, deps)
  const rows: Array<[string, string | null, string | undefined]> = [
    ['203.0.113.9', null, 'BLOCKED'],
    ['203.0.114.1', null, undefined],
    ['10.1.2.3', null, 'BLOCKED'],
    ['10.1.2.4', null, undefined],
    ['::ffff:203.0.113.200', null, 'BLOCKED'],
    ['2001:db8:1::1', null, 'BLOCKED'],
    ['2001:db9::1', null, undefined],
    ['192.0.2.127', null, 'BLOCKED'],
    ['192.0.2.128', null, undefined],
    ['2001:db8:bad:ffff::1', null, 'BLOCKED'],
    ['198.18.0.1', null, 'BLOCKED'],
    ['127.0.0.1', 'mallory', 'BLOCKED'],
    ['127.0.0.1', 'alice', undefined],
    ['not-an-ip', null, undefined]
  ]
  for (const [ip, user, want] of rows) {
    const v = guard.check(makeCtx({ clientIp: ip, headers: user === null ? {} : { 'x-user-id': user } }))
    t.notOk(v instanceof Promise, `${ip} answered synchronously`)
    t.equal(await codeOf(v), want, `${ip} ${user ?? ''}`)
  }
  const r = await guard.check(makeCtx({ clientIp: '10.1.2.3' }))
  t.equal(r?.status, 403)
  t.same(JSON.parse(r?.body.toString() ?? '{}'), { code: 'BLOCKED', message: 'blocked' })
})

t.test('reject override', async (t) => {
  const config = loadYaml(routeYaml('- deny: { ips: [10.0.0.0/8], reject: { status: 451, body: { go: away } } }'))
  const { route, cfg } = guardOf(config, 'deny')
  const r = await denyGuard(cfg, route, makeDeps(config)).check(makeCtx({ clientIp: '10.9.9.9' }))
  t.equal(r?.status, 451)
  t.same(JSON.parse(r?.body.toString() ?? ''), { go: 'away' })
})

t.test('users_set on the store: SADD at run time, local cache, store down', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const config = loadYaml(routeYaml('- deny: { users_set: denied-users, on_error: fail_open }', { store: `store: { kind: redis, url: "${redis.url}", timeout: 200ms }` }))
  const deps = makeDeps(config, { now: NOW })
  t.teardown(() => deps.store.close())
  await ready(deps.store)
  const { route, cfg } = guardOf(config, 'deny')
  const guard = denyGuard(cfg, route, deps)
  const run = (user: string | null, now = NOW): Promise<string | undefined> => codeOf(guard.check(makeCtx({ headers: user === null ? {} : { 'x-user-id': user }, now })))
  t.equal(await run('eve'), undefined)
  t.equal(await run(null), undefined, 'no user: nothing to look up')
  // an operator blocks eve (SADD through another client)
  const admin = createStore(config.store, { metrics: deps.metrics, clock: deps.clock })
  t.teardown(() => admin.close())
  await ready(admin)
  await admin.setAdd('denied-users', ['eve'])
  t.equal(await run('eve', NOW + 10), undefined, 'the cached answer stands within the cache window')
  t.equal(await run('eve', NOW + DENY_CACHE_MS), 'BLOCKED', 'picked up after the cache window')
  const cached = guard.check(makeCtx({ headers: { 'x-user-id': 'eve' }, now: NOW + DENY_CACHE_MS + 1 }))
  t.notOk(cached instanceof Promise, 'a cached answer costs no store call')
  t.equal(await codeOf(cached), 'BLOCKED')
  await admin.setRemove('denied-users', ['eve'])
  t.equal(await run('eve', NOW + 3 * DENY_CACHE_MS), undefined, 'unblocked')
  redis.kill()
  t.equal(await run('zed', NOW + 10 * DENY_CACHE_MS), undefined, 'store down + fail_open: pass')
  const closedCfg = { ...cfg, onError: 'fail_closed' as const, policy: 'fail_closed' as const }
  const closed = denyGuard(closedCfg, route, deps)
  t.equal(await codeOf(closed.check(makeCtx({ headers: { 'x-user-id': 'zed' }, now: NOW }))), 'STORE_UNAVAILABLE', 'store down + fail_closed: 503')
  t.match(await deps.registry.getSingleMetricAsString('flashgate_store_fallbacks_total'), /policy="fail_open"\} 1/)
})
