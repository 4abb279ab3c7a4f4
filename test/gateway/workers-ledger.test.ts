/**
 * `flashgate serve --workers 2` on the embedded store, spawned for real: one ledger in the primary, so
 * quota, dedupe, cluster-scope limits and single-use links are exact across the two workers; admin
 * answers and gauges are for the whole node; a sold-out product is answered by each worker's latch with
 * no IPC message; an admin quota change clears the latch in every worker. On Redis, the remaining gauge is
 * the store's, not a sum of the workers' views.
 */
import t from 'tap'
import { Agent } from 'undici'
import { baseYaml, tempDir } from '../helpers/config.js'
import { fetchText, startOrigin, type Answer } from '../helpers/gateway.js'
import { spawnCli } from '../helpers/process.js'
import { startRedis } from '../helpers/redis.js'
import { needTools } from '../helpers/tools.js'

const LINK_KEY = 'k1-link-key-0123456789abcdef'
const SESSION_KEY = 'session-key-0123456789abcdef'

const ROUTES = `  - name: buy
    match: { path: /buy/:campaign/:product, methods: [POST] }
    guards:
      - quota: { latch_ttl: 60s }
    upstream: origin
  - name: fused
    match: { path: /fused/:campaign/:product, methods: [POST] }
    guards:
      - dedupe: { ttl: 1h }
      - quota: { latch_ttl: 60s }
    upstream: origin
  - name: once
    match: { path: /once/:campaign/:product, methods: [POST] }
    guards:
      - dedupe: { ttl: 1h }
    upstream: origin
  - name: limited
    match: { path: /limited, methods: [POST] }
    guards:
      - rate_limit: { name: per-user, key: user, rate: 5/m, burst: 5, scope: cluster }
    upstream: origin
  - name: link
    match: { path: /link/:campaign/:product, methods: [POST] }
    guards:
      - signed_link: { single_use: true }
    upstream: origin
`

const tally = (rs: Answer[]): Record<string, number> => {
  const out: Record<string, number> = {}
  for (const r of rs) { const k = `${r.status} ${String(r.json?.code ?? '')}`; out[k] = (out[k] ?? 0) + 1 }
  return out
}

/** A metric's value from Prometheus text (labels as written, in order); NaN when absent. */
function metric (text: string, name: string, labels = ''): number {
  const line = text.split('\n').find((l) => l.startsWith(labels === '' ? `${name} ` : `${name}{${labels}} `))
  return line === undefined ? NaN : Number(line.slice(line.lastIndexOf(' ') + 1))
}

t.test('serve --workers 2, memory store: one ledger for the node', async (t) => {
  const origin = await startOrigin(t)
  const files = tempDir(t)
  const now = Date.now()
  // A store timeout far above the 50 ms default: this tests exactness, and on this shared 2-core machine
  // (load average 15-25 while other suites run) processes go unscheduled for longer than 50 ms, which
  // turned some admissions into 503 STORE_UNAVAILABLE (fail_closed; never an oversell). The deadline
  // itself is tested in test/limiter/ledger.test.ts.
  const file = files.write('gw.yaml', baseYaml(origin.url, ROUTES, `store: { kind: memory, timeout: 2s }
identity: { user: header x-user-id }
secrets:
  link_keys: { k1: "\${FG_LINK_K1}" }
  session: "\${FG_SESSION}"
campaigns:
  - id: c1
    starts_at: ${new Date(now - 60_000).toISOString()}
    ends_at: ${new Date(now + 3_600_000).toISOString()}
    products:
      - { id: p1, quota: 10 }
      - { id: p2, quota: 10 }
      - { id: p3, quota: 1000 }
`))
  const p = spawnCli(t, ['serve', '--config', file, '--workers', '2'], { FG_LINK_K1: LINK_KEY, FG_SESSION: SESSION_KEY })
  const listening = await p.waitFor((l) => l.msg === 'listening' && l.workers === 2, 60_000)
  const url = listening.url as string
  const adminUrl = listening.admin as string
  // Fresh connections (connection: close): the primary hands them to the two workers in turn.
  const agent = new Agent({ connections: 512, pipelining: 0 })
  t.teardown(async () => { await agent.close() })
  const post = async (path: string, user: string): Promise<Answer> => await fetchText(agent, url + path, { method: 'POST', headers: { 'x-user-id': user, connection: 'close' } })
  const admin = async (path: string, opts: { method?: string, body?: string } = {}): Promise<Answer> => await fetchText(agent, adminUrl + path, opts)
  const metrics = async (): Promise<string> => (await admin('/metrics')).text
  const upstreamUsers = (prefix: string): string[] => origin.seen.filter((s) => s.url.startsWith(prefix)).map((s) => String(s.headers['x-user-id']))

  t.test('quota 10, 300 distinct buyers at once: exactly 10 reach the upstream', async (t) => {
    const rs = await Promise.all(Array.from({ length: 300 }, async (_, i) => await post('/buy/c1/p1', `buyer${i}`)))
    t.comment(JSON.stringify(tally(rs)))
    t.equal(rs.filter((r) => r.status === 200).length, 10, '10 answered 200')
    t.equal(rs.filter((r) => r.status === 409 && r.json?.code === 'SOLD_OUT').length, 290, 'the rest SOLD_OUT')
    const users = upstreamUsers('/buy/')
    t.equal(users.length, 10, 'exactly 10 at the upstream')
    t.equal(new Set(users).size, 10, 'no user twice')
    const m = await metrics()
    t.equal(metric(m, 'flashgate_quota_admitted_total', 'campaign="c1",product="p1"'), 10, 'admitted_total 10 (summed over the workers)')
    t.equal(metric(m, 'flashgate_quota_remaining', 'campaign="c1",product="p1"'), 0, 'remaining 0, not a sum')
    t.equal(metric(m, 'flashgate_quota_remaining', 'campaign="c1",product="p3"'), 1000, 'an untouched product: its quota, not 2×')
    t.ok(metric(m, 'flashgate_ledger_messages_total', 'worker="0"') > 0 && metric(m, 'flashgate_ledger_messages_total', 'worker="1"') > 0, 'both workers sold through the ledger')
    const q = await admin('/admin/quota/c1/p1')
    t.same(q.json, { quota: 10, admitted: 10, remaining: 0 }, 'GET /admin/quota is the node\'s')
  })

  t.test('sold out: each worker\'s latch answers, with no IPC message', async (t) => {
    const before = await metrics()
    const rs = await Promise.all(Array.from({ length: 100 }, async (_, i) => await post('/buy/c1/p1', `late${i}`)))
    t.equal(rs.filter((r) => r.json?.code === 'SOLD_OUT').length, 100, 'all SOLD_OUT')
    const after = await metrics()
    for (const w of ['0', '1']) {
      t.equal(metric(after, 'flashgate_ledger_messages_total', `worker="${w}"`), metric(before, 'flashgate_ledger_messages_total', `worker="${w}"`), `worker ${w} sent nothing`)
    }
    t.equal(metric(after, 'flashgate_ledger_calls_total'), metric(before, 'flashgate_ledger_calls_total'), 'the ledger answered no call')
    t.equal(metric(after, 'flashgate_requests_total', 'route="buy",outcome="SOLD_OUT"') - metric(before, 'flashgate_requests_total', 'route="buy",outcome="SOLD_OUT"'), 100, 'and the workers did answer them')
  })

  t.test('an admin quota change reaches every worker\'s latch', async (t) => {
    const r = await admin('/admin/quota/c1/p1', { method: 'PUT', body: '{"quota": 12}' })
    t.same(r.json, { quota: 12, admitted: 10, remaining: 2 })
    const rs = await Promise.all(Array.from({ length: 60 }, async (_, i) => await post('/buy/c1/p1', `more${i}`)))
    t.equal(rs.filter((x) => x.status === 200).length, 2, 'exactly the 2 new units sold')
    t.equal(upstreamUsers('/buy/').length, 12)
    t.same((await admin('/admin/quota/c1/p1')).json, { quota: 12, admitted: 12, remaining: 0 })
    // Both workers must have let the new units through: neither latch is stale for the whole latch_ttl.
    const fresh = await Promise.all(Array.from({ length: 20 }, async (_, i) => await post('/buy/c1/p1', `after${i}`)))
    t.equal(fresh.filter((x) => x.json?.code === 'SOLD_OUT').length, 20)
    const reset = await admin('/admin/quota/c1/p1/reset', { method: 'POST' })
    t.same(reset.json, { quota: 12, admitted: 0, remaining: 12 }, 'reset on the ledger')
    const again = await Promise.all(Array.from({ length: 40 }, async (_, i) => await post('/buy/c1/p1', `again${i}`)))
    t.equal(again.filter((x) => x.status === 200).length, 12, 'both latches cleared by the reset: the 12 units sell again, no more')
  })

  t.test('dedupe + quota (fused): 100 users × 3 attempts, quota 10', async (t) => {
    const rs = await Promise.all(Array.from({ length: 300 }, async (_, i) => await post('/fused/c1/p2', `fu${i % 100}`)))
    t.equal(rs.filter((r) => r.status === 200).length, 10, 'exactly 10 admitted')
    const users = upstreamUsers('/fused/')
    t.equal(users.length, 10)
    t.equal(new Set(users).size, 10, 'no user twice')
    t.same((await admin('/admin/quota/c1/p2')).json, { quota: 10, admitted: 10, remaining: 0 })
  })

  t.test('dedupe alone: one user, 30 attempts at once over both workers → one passes', async (t) => {
    const rs = await Promise.all(Array.from({ length: 30 }, async () => await post('/once/c1/p3', 'same-user')))
    t.comment(JSON.stringify(tally(rs)))
    t.equal(rs.filter((r) => r.status === 200).length, 1)
    t.equal(rs.filter((r) => r.json?.code === 'DUPLICATE').length, 29)
    t.equal(upstreamUsers('/once/').length, 1)
  })

  t.test('a cluster-scope limit (5/min, burst 5) is one bucket for the node', async (t) => {
    const rs = await Promise.all(Array.from({ length: 40 }, async () => await post('/limited', 'rl-user')))
    t.comment(JSON.stringify(tally(rs)))
    t.equal(rs.filter((r) => r.status === 200).length, 5, 'burst 5, not 5 per worker')
    t.equal(rs.filter((r) => r.status === 429).length, 35)
  })

  t.test('a single-use link used 20 times at once over both workers → one passes', async (t) => {
    const l = await fetchText(agent, `${url}/_flashgate/link?campaign=c1&product=p1`, { headers: { 'x-user-id': 'linker', connection: 'close' } })
    t.equal(l.status, 200)
    const link = l.json.url as string
    const rs = await Promise.all(Array.from({ length: 20 }, async () => await post(link, 'linker')))
    t.comment(JSON.stringify(tally(rs)))
    t.equal(rs.filter((r) => r.status === 200).length, 1, 'used once')
    t.equal(rs.filter((r) => r.status === 403 && r.json?.code === 'LINK_INVALID').length, 19, 'replays refused on either worker')
    t.equal(upstreamUsers('/link/').length, 1)
  })

  t.test('SIGTERM exits 0', async (t) => {
    p.child.kill('SIGTERM')
    t.equal(await p.exited, 0)
  })
})

t.test('serve --workers 2 on Redis: flashgate_quota_remaining is the store\'s, not a sum of the workers\' views', async (t) => {
  if (!needTools(t, 'redis-server')) return
  const r = await startRedis()
  t.teardown(async () => { await r.stop() })
  const origin = await startOrigin(t)
  const files = tempDir(t)
  const now = Date.now()
  const file = files.write('gw.yaml', baseYaml(origin.url, ROUTES, `store: { kind: redis, url: "${r.url}", timeout: 2s }
identity: { user: header x-user-id }
secrets:
  link_keys: { k1: "\${FG_LINK_K1}" }
  session: "\${FG_SESSION}"
campaigns:
  - id: c1
    starts_at: ${new Date(now - 60_000).toISOString()}
    ends_at: ${new Date(now + 3_600_000).toISOString()}
    products:
      - { id: p1, quota: 10 }
      - { id: p2, quota: 10 }
      - { id: p3, quota: 1000 }
`))
  const p = spawnCli(t, ['serve', '--config', file, '--workers', '2'], { FG_LINK_K1: LINK_KEY, FG_SESSION: SESSION_KEY })
  const listening = await p.waitFor((l) => l.msg === 'listening' && l.workers === 2, 60_000)
  const agent = new Agent({ connections: 64, pipelining: 0 })
  t.teardown(async () => { await agent.close() })
  const rs = await Promise.all(Array.from({ length: 20 }, async (_, i) => await fetchText(agent, `${String(listening.url)}/buy/c1/p1`, { method: 'POST', headers: { 'x-user-id': `r${i}`, connection: 'close' } })))
  t.equal(rs.filter((x) => x.status === 200).length, 10)
  const m = (await fetchText(agent, `${String(listening.admin)}/metrics`)).text
  t.equal(metric(m, 'flashgate_quota_remaining', 'campaign="c1",product="p1"'), 0)
  t.equal(metric(m, 'flashgate_quota_remaining', 'campaign="c1",product="p3"'), 1000, 'not 2 × 1000')
  t.notMatch(m, /flashgate_ledger_messages_total/, 'no ledger on Redis')
  p.child.kill('SIGTERM')
  t.equal(await p.exited, 0)
})
