/**
 * Exactness under concurrency, end to end: 20,000 purchase requests from 500 concurrent connections,
 * spread over TWO gateway processes (`flashgate serve --config FILE`, each a child process) that share one
 * store, for one product with quota 1,000. A real node:http upstream counts the buys it sees.
 *
 * - exactly 1,000 reach the upstream, exactly 1,000 answers are 200, every other answer is 409 SOLD_OUT
 *   (no 5xx, nothing else), and the admin API says admitted 1000 remaining 0;
 * - on one redis-server (segments: 1) and on a real 3-master Redis Cluster (segments: 3);
 * - Redis commands: the store's own count (INFO commandstats, summed over the masters) is compared with
 *   the gateways' count of quota calls (flashgate_store_duration_seconds_count{op="add_if_within"}):
 *   one EVALSHA per call and nothing else per request; the calls beyond the 1,000 admissions are the
 *   requests that were already in flight (or tried a full segment) when the product sold out, so they are
 *   bounded by the concurrency; and once the product is latched sold out, 2,000 further requests cost
 *   zero Redis commands (`latch_ttl: 30s` keeps the whole run within one latch period).
 *
 * Run alone: `npx tap test/limiter/exactness.test.ts` (about 40 s; the figures are printed as comments).
 */
import t, { type Test } from 'tap'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Pool } from 'undici'
import { tempDir } from '../helpers/config.js'
import { spawnCli } from '../helpers/process.js'
import { redisCli, startRedis, startRedisCluster } from '../helpers/redis.js'

const REQUESTS = 20_000
const CONNECTIONS = 500
const QUOTA = 1000
const AFTER = 2000
const RUN_DEADLINE_MS = 40_000
/**
 * The store timeout. With the default 50 ms, five busy processes on 2 cores (two gateways, Redis, the
 * client, the upstream — more under `tap` running files in parallel) sometimes wait longer than that for
 * a CPU, and fail_closed then answers 503 by design (observed: 11 of 20,000 on the cluster run). The count
 * upstream stayed exact even then (a late "applied" answer gives its unit back); this test asserts
 * "no 5xx" too, so it gives the store a budget this box can keep.
 */
const STORE_TIMEOUT = '1s'

interface Tally { statuses: Map<number, number>, codes: Map<string, number>, perGateway: number[], errors: string[] }

async function commandStats (ports: readonly number[]): Promise<Map<string, number>> {
  const m = new Map<string, number>()
  for (const port of ports) {
    const out = await redisCli(port, 'info', 'commandstats')
    for (const line of out.split('\n')) {
      const r = /^cmdstat_([^:]+):calls=(\d+)/.exec(line.trim())
      if (r !== null) m.set(r[1] as string, (m.get(r[1] as string) ?? 0) + Number(r[2]))
    }
  }
  return m
}
async function resetStats (ports: readonly number[]): Promise<void> {
  for (const port of ports) await redisCli(port, 'config', 'resetstat')
}

/** Sum of one metric series (matching `labels`) over the given Prometheus texts. */
function metricSum (texts: readonly string[], name: string, labels: RegExp = /.*/): number {
  let sum = 0
  for (const text of texts) {
    for (const line of text.split('\n')) {
      if (!line.startsWith(name)) continue
      const m = /^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$/.exec(line)
      if (m === null || m[1] !== name || !labels.test(m[2] ?? '')) continue
      sum += Number(m[3])
    }
  }
  return sum
}

/** `n` requests from `connections` workers over the pools (round robin), bounded in time. */
async function load (pools: readonly Pool[], n: number, connections: number, firstUser: number, tally: Tally): Promise<void> {
  let next = 0
  const deadline = Date.now() + RUN_DEADLINE_MS
  const worker = async (w: number): Promise<void> => {
    const gw = w % pools.length
    const pool = pools[gw] as Pool
    while (next < n && Date.now() < deadline) {
      const i = next++
      try {
        const r = await pool.request({
          method: 'POST',
          path: '/buy/c1/p1',
          headers: { 'x-user-id': `u${firstUser + i}`, 'content-type': 'application/json' },
          body: '{}',
          headersTimeout: 20_000,
          bodyTimeout: 20_000
        })
        const text = await r.body.text()
        tally.statuses.set(r.statusCode, (tally.statuses.get(r.statusCode) ?? 0) + 1)
        tally.perGateway[gw] = (tally.perGateway[gw] ?? 0) + 1
        if (r.statusCode !== 200) {
          let code = `status ${r.statusCode}`
          try { code = String((JSON.parse(text) as { code?: unknown }).code) } catch {}
          tally.codes.set(code, (tally.codes.get(code) ?? 0) + 1)
        }
      } catch (err) {
        if (tally.errors.length < 10) tally.errors.push(err instanceof Error ? err.message : String(err))
        else tally.errors.length++
      }
    }
  }
  await Promise.all(Array.from({ length: connections }, async (_, w) => { await worker(w) }))
}

const newTally = (): Tally => ({ statuses: new Map(), codes: new Map(), perGateway: [0, 0], errors: [] })

async function sale (t: Test, opts: { storeYaml: string, segments: number, redisPorts: readonly number[] }): Promise<void> {
  // The upstream: counts the buys it sees (and the distinct buyers).
  let bought = 0
  const buyers = new Set<string>()
  const upstream = createServer((req, res) => {
    req.resume()
    req.on('end', () => {
      if (req.method === 'POST' && req.url === '/buy/c1/p1') { bought++; buyers.add(String(req.headers['x-user-id'])) }
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': '11' })
      res.end('{"ok":true}')
    })
  })
  upstream.keepAliveTimeout = 60_000
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    upstream.closeAllConnections()
    await new Promise<void>((resolve) => upstream.close(() => { resolve() }))
  })

  const now = Date.now()
  const file = tempDir(t).write('flashgate.yaml', `listen: 127.0.0.1:0
admin: 127.0.0.1:0
access_log: { enabled: false }
${opts.storeYaml}
identity: { user: header x-user-id }
upstreams:
  purchase:
    targets:
      - { url: "http://127.0.0.1:${(upstream.address() as AddressInfo).port}" }
    retries: 0
    timeout: 20s
campaigns:
  - id: c1
    starts_at: ${new Date(now - 60_000).toISOString()}
    ends_at: ${new Date(now + 3_600_000).toISOString()}
    products:
      - { id: p1, quota: ${QUOTA}, segments: ${opts.segments} }
routes:
  - name: buy
    match: { path: /buy/:campaign/:product, methods: [POST] }
    guards:
      - quota: { latch_ttl: 30s }
    upstream: purchase
`)

  // Two gateway processes on the same store.
  const procs = [spawnCli(t, ['serve', '--config', file]), spawnCli(t, ['serve', '--config', file])]
  const listening = await Promise.all(procs.map(async (p) => await p.waitFor((l) => l.msg === 'listening', 60_000)))
  const urls = listening.map((l) => l.url as string)
  const admins = listening.map((l) => l.admin as string)
  const pools = urls.map((u) => new Pool(u, { connections: CONNECTIONS / 2, pipelining: 1, keepAliveTimeout: 30_000 }))
  const adminPool = admins.map((u) => new Pool(u, { connections: 2 }))
  t.teardown(async () => { await Promise.all([...pools, ...adminPool].map(async (p) => { await p.close() })) })
  const getText = async (i: number, path: string): Promise<{ status: number, text: string }> => {
    const r = await (adminPool[i] as Pool).request({ method: 'GET', path })
    return { status: r.statusCode, text: await r.body.text() }
  }
  for (let i = 0; i < 2; i++) {
    const deadline = Date.now() + 20_000
    while ((await getText(i, '/readyz')).status !== 200) {
      if (Date.now() > deadline) throw new Error(`gateway ${i} not ready`)
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  }
  const metricsText = async (): Promise<string[]> => await Promise.all([0, 1].map(async (i) => (await getText(i, '/metrics')).text))
  const quotaCalls = async (): Promise<number> => metricSum(await metricsText(), 'flashgate_store_duration_seconds_count', /op="add_if_within"/)

  // --- the sale ---
  await resetStats(opts.redisPorts)
  const calls0 = await quotaCalls()
  const tally = newTally()
  const t0 = performance.now()
  await load(pools, REQUESTS, CONNECTIONS, 0, tally)
  const ms = performance.now() - t0
  const stats = await commandStats(opts.redisPorts)
  const calls = (await quotaCalls()) - calls0

  const answered = [...tally.statuses.values()].reduce((a, b) => a + b, 0)
  t.equal(tally.errors.length, 0, `no client errors: ${tally.errors.join('; ')}`)
  t.equal(answered, REQUESTS, `all ${REQUESTS} requests answered`)
  t.equal(bought, QUOTA, `exactly ${QUOTA} buys reached the upstream`)
  t.equal(buyers.size, QUOTA, 'from as many distinct buyers')
  t.equal(tally.statuses.get(200), QUOTA, `exactly ${QUOTA} answers 200`)
  t.equal(tally.statuses.get(409), REQUESTS - QUOTA, 'every other answer 409')
  t.same([...tally.codes], [['SOLD_OUT', REQUESTS - QUOTA]], 'and every one of them SOLD_OUT')
  t.equal([...tally.statuses.keys()].filter((s) => s >= 500).length, 0, `no 5xx: ${JSON.stringify([...tally.statuses])}`)
  t.ok((tally.perGateway[0] ?? 0) >= REQUESTS / 4 && (tally.perGateway[1] ?? 0) >= REQUESTS / 4, `spread over both gateways: ${tally.perGateway.join(' / ')}`)

  const texts = await metricsText()
  const admittedPerGw = texts.map((x) => metricSum([x], 'flashgate_quota_admitted_total', /campaign="c1",product="p1"/))
  t.equal(admittedPerGw.reduce((a, b) => a + b, 0), QUOTA, `flashgate_quota_admitted_total over both gateways (${admittedPerGw.join(' + ')})`)
  t.ok(admittedPerGw.every((n) => n > 0), 'both gateways admitted some')

  // Redis commands: one EVALSHA per quota call (nothing else from the requests), and the calls beyond the
  // admissions are bounded by what can be in flight when the product (or a segment) fills.
  const evalsha = stats.get('evalsha') ?? 0
  const evals = stats.get('eval') ?? 0
  const inScript = new Set(['get', 'incrby', 'evalsha', 'eval'])
  const housekeeping = new Set(['info', 'config|resetstat', 'config', 'ping', 'cluster|slots', 'cluster|nodes', 'cluster|info', 'cluster', 'client|setname', 'client|info', 'subscribe', 'select', 'command', 'command|docs', 'hello'])
  const other = [...stats].filter(([k]) => !inScript.has(k) && !housekeeping.has(k))
  t.equal(evalsha + evals, calls, `Redis saw exactly the gateways' quota calls as scripts (EVALSHA ${evalsha} + EVAL ${evals} = ${calls} calls)`)
  t.ok(evals <= 2 * opts.redisPorts.length * 2, `EVAL only when a server's script cache was cold (${evals})`)
  // GET outside scripts: the admin quota override read, once per process per product at start.
  t.same(other, [], `no other Redis command on the request path: ${JSON.stringify(other)}`)
  t.ok(calls >= QUOTA, 'at least one call per admission')
  const bound = QUOTA + CONNECTIONS * opts.segments
  t.ok(calls <= bound, `calls beyond the admissions bounded by the in-flight requests at sell-out: ${calls} ≤ ${bound}`)
  const perAdmitted = calls / QUOTA

  // --- after sell-out, within the latch period: zero Redis commands ---
  await resetStats(opts.redisPorts)
  const after = newTally()
  await load(pools, AFTER, 100, REQUESTS, after)
  const afterStats = await commandStats(opts.redisPorts)
  const afterCmds = [...afterStats].filter(([k]) => !housekeeping.has(k)).reduce((a, [, v]) => a + v, 0)
  t.same([...after.codes], [['SOLD_OUT', AFTER]], `${AFTER} more requests: all SOLD_OUT`)
  t.equal(afterCmds, 0, `zero Redis commands for ${AFTER} requests after sell-out: ${JSON.stringify([...afterStats])}`)
  t.equal(bought, QUOTA, 'still exactly the quota upstream')

  // --- the admin API's view (reads the counters from the store) ---
  for (let i = 0; i < 2; i++) {
    const q = await getText(i, '/admin/quota/c1/p1')
    t.equal(q.status, 200)
    t.same(JSON.parse(q.text), { quota: QUOTA, admitted: QUOTA, remaining: 0 }, `gateway ${i}: admin GET /admin/quota/c1/p1`)
  }

  t.comment(`${opts.segments} segment(s): ${REQUESTS} requests in ${(ms / 1000).toFixed(1)} s (${Math.round(REQUESTS / (ms / 1000))} req/s over 2 gateways, ${CONNECTIONS} connections); ` +
    `${calls} quota store calls = ${evalsha} EVALSHA + ${evals} EVAL for ${QUOTA} admissions (${perAdmitted.toFixed(3)} per admitted request, ` +
    `${((calls - QUOTA) / (REQUESTS - QUOTA)).toFixed(4)} per rejected request); after sell-out ${afterCmds} commands for ${AFTER} requests`)

  const warnings: Array<Record<string, unknown>> = procs.flatMap((p, i) => p.lines.filter((l) => l.level === 'warn' || l.level === 'error').map((l) => ({ gw: i, ...l })))
  if (warnings.length > 0) t.comment(`gateway warnings: ${JSON.stringify(warnings.slice(0, 20))}`)
  // store warm-up, breaker, give-back: none of it should have been needed
  t.same(warnings.filter((w) => /store|quota/.test(String(w.msg))), [], 'no store or quota warning in either gateway log')
  for (const p of procs) p.child.kill('SIGTERM')
  const codes = await Promise.all(procs.map(async (p) => await p.exited))
  t.same(codes, [0, 0], 'both gateways drained and exited 0')
}

t.test('two gateways, one redis-server: exactly the quota upstream', async (t) => {
  const r = await startRedis()
  t.teardown(async () => { await r.stop() })
  await sale(t, { storeYaml: `store: { kind: redis, url: "${r.url}", timeout: ${STORE_TIMEOUT} }`, segments: 1, redisPorts: [r.port] })
})

t.test('two gateways, a 3-master Redis Cluster, segments: 3: exactly the quota upstream', async (t) => {
  const c = await startRedisCluster()
  t.teardown(async () => { await c.stop() })
  await sale(t, {
    storeYaml: `store:\n  kind: redis-cluster\n  timeout: ${STORE_TIMEOUT}\n  nodes: [${c.nodes.map((n) => `"${n}"`).join(', ')}]`,
    segments: 3,
    redisPorts: c.ports
  })
})
