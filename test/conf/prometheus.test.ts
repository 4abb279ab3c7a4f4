/**
 * The shipped Grafana dashboard (conf/grafana/flashgate.json) and alert rules
 * (conf/prometheus/alerts.yaml) on a real Prometheus (Debian's `prometheus`): it scrapes a real gateway
 * (Redis store) and a real origin every second under a small bounded load — with a Redis outage in it,
 * so the store panels have data — and evaluates every rule; then every dashboard query, evaluated
 * through /api/v1/query, must return data, and every rule must have evaluated cleanly.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { request } from 'undici'
import { parse as parseYaml } from 'yaml'
import { client, fetchText, startTestGateway } from '../helpers/gateway.js'
import { promtool } from '../helpers/prom.js'
import { freePort, redisCli, startRedis } from '../helpers/redis.js'
import { needTools } from '../helpers/tools.js'
import { configFile, originYaml, spawnOrigin } from '../origin-stub/helpers.js'

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const DASHBOARD = join(root, 'conf', 'grafana', 'flashgate.json')
const ALERTS = join(root, 'conf', 'prometheus', 'alerts.yaml')
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

interface Panel { title?: string, type?: string, targets?: Array<{ expr?: string }>, panels?: Panel[] }

/** Every (panel title, expr) of the dashboard, rows included. */
function dashboardQueries (): Array<{ title: string, expr: string }> {
  const d = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as { panels: Panel[] }
  const out: Array<{ title: string, expr: string }> = []
  const walk = (ps: readonly Panel[]): void => {
    for (const p of ps) {
      for (const tg of p.targets ?? []) if (typeof tg.expr === 'string') out.push({ title: p.title ?? '?', expr: tg.expr })
      walk(p.panels ?? [])
    }
  }
  walk(d.panels)
  return out
}

/** Grafana's variables as the dashboard is used on this test's Prometheus. */
function substitute (expr: string): string {
  return expr.replaceAll('$__rate_interval', '20s').replaceAll('$__interval', '5s').replaceAll('$__range', '1m').replaceAll('$job', 'flashgate')
}

t.test('promtool check rules passes on the shipped alert rules', async (t) => {
  if (!needTools(t, 'promtool')) return
  const r = await promtool(['check', 'rules', ALERTS])
  t.equal(r.code, 0, r.out)
  t.match(r.out, /SUCCESS: \d+ rules found/)
})

t.test('promtool test rules: the alerts fire on synthetic series when they should, not before', async (t) => {
  if (!needTools(t, 'promtool')) return
  const r = await promtool(['test', 'rules', join(root, 'conf', 'prometheus', 'alerts.test.yaml')])
  t.equal(r.code, 0, r.out)
  t.match(r.out, /SUCCESS/)
})

t.test('the dashboard is Grafana JSON whose panels all have a Prometheus query', async (t) => {
  const d = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as { title?: string, uid?: string, panels: Panel[] }
  t.equal(d.title, 'flashgate')
  t.equal(d.uid, 'flashgate')
  for (const p of d.panels) if (p.type !== 'row') t.ok((p.targets ?? []).length > 0, `panel "${p.title}" has a query`)
  t.ok(dashboardQueries().length >= 20, 'a dashboard, not a sketch')
})

t.test('a real Prometheus scrapes gateway and origin; every dashboard query returns data, every rule evaluates', { timeout: 120_000 }, async (t) => {
  if (!needTools(t, 'prometheus', 'redis-server')) return
  const deadline = Date.now() + 90_000
  const redis = await startRedis()
  t.teardown(async () => { await redis.stop() })
  const origin = await spawnOrigin(t, configFile(t, originYaml({ store: 'memory', products: [{ campaign: 'c', product: 'p', quota: 1000 }], orderRate: '500/s', paymentTimeout: '10m' })))

  const dir = mkdtempSync(join(tmpdir(), 'fg-prom-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const now = Date.now()
  const gwFile = join(dir, 'gw.yaml')
  writeFileSync(gwFile, `listen: 127.0.0.1:0
admin: 127.0.0.1:0
access_log: { enabled: false }
store: { kind: redis, url: "${redis.url}", timeout: 50ms, on_error: fail_closed }
identity: { user: header x-user-id }
upstreams:
  origin:
    targets: [{ url: "${origin.url}" }]
    retries: 0
campaigns:
  - id: c
    starts_at: ${new Date(now - 60_000).toISOString()}
    ends_at: ${new Date(now + 3_600_000).toISOString()}
    products:
      - { id: p, quota: 40 }
routes:
  - name: buy
    match: { path: /buy/:campaign/:product, methods: [POST] }
    guards:
      - rate_limit: { name: per-user, key: user, rate: 2/s, burst: 2 }
      - campaign_window: {}
      - dedupe: { ttl: 1h }
      - quota: {}
    upstream: origin
  - name: site
    match: { path_prefix: / }
    upstream: origin
    allow_bypass_of: [buy]
`)
  const gw = await startTestGateway(t, { configFile: gwFile })
  const adminHost = new URL(gw.adminUrl as string).host

  const port = await freePort()
  const promUrl = `http://127.0.0.1:${port}`
  writeFileSync(join(dir, 'prometheus.yml'), `global: { scrape_interval: 1s, evaluation_interval: 1s, scrape_timeout: 900ms }
rule_files: ["${ALERTS}"]
scrape_configs:
  - job_name: flashgate
    static_configs: [{ targets: ["${adminHost}"] }]
  - job_name: flashgate-origin
    static_configs: [{ targets: ["${new URL(origin.url).host}"] }]
`)
  const prom = spawn('prometheus', [
    `--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`,
    `--web.listen-address=127.0.0.1:${port}`, '--storage.tsdb.retention.time=1h', '--log.level=warn'
  ], { stdio: ['ignore', 'ignore', 'pipe'] })
  let promLog = ''
  prom.stderr.on('data', (c: Buffer) => { promLog = (promLog + c.toString()).slice(-5000) })
  const promExited = new Promise<void>((resolve) => { prom.once('exit', () => { resolve() }) })
  t.teardown(async () => { if (prom.exitCode === null) { prom.kill('SIGTERM'); await Promise.race([promExited, sleep(5000)]); prom.kill('SIGKILL') } })
  const http = client(t)
  const query = async (q: string): Promise<{ status: string, data?: { result: unknown[] }, error?: string }> => {
    const r = await request(`${promUrl}/api/v1/query?query=${encodeURIComponent(q)}`, { dispatcher: http })
    return await r.body.json() as { status: string, data?: { result: unknown[] }, error?: string }
  }
  for (;;) {
    try {
      const r = await request(`${promUrl}/-/ready`, { dispatcher: http })
      await r.body.text()
      if (r.statusCode === 200) break
    } catch {}
    if (prom.exitCode !== null || Date.now() > deadline) { t.fail(`prometheus did not get ready: ${promLog}`); return }
    await sleep(200)
  }

  // A small load for 8 s (bounded in time and count): buys by distinct users (the quota sells out),
  // repeated buys (dedupe, rate limit), pages through the site route to the origin, edge endpoints.
  // Redis stops answering from 1.5 s to 3 s (CLIENT PAUSE: its data, the sale's counters, survive, as
  // they would on a persistent Redis): store errors, 503 STORE_UNAVAILABLE by the fail_closed policy.
  const loadEnd = Date.now() + 8000
  let sent = 0
  let user = 0
  const outage = (async () => {
    await sleep(1500)
    await redisCli(redis.port, 'CLIENT', 'PAUSE', '1500', 'ALL')
    await sleep(1500)
  })()
  const worker = async (): Promise<void> => {
    while (Date.now() < loadEnd && sent < 20_000) {
      sent++
      const u = `u${user++ % 300}`
      const k = sent % 4
      if (k === 0) await fetchText(http, `${gw.url}/buy/c/p`, { method: 'POST', headers: { 'x-user-id': u } })
      else if (k === 1) await fetchText(http, `${gw.url}/stock/c/p`)
      else if (k === 2) await fetchText(http, `${gw.url}/_flashgate/time`, { method: sent % 8 === 2 ? 'POST' : 'GET' })
      else await fetchText(http, `${gw.url}/buy/c/p`, { method: 'POST', headers: { 'x-user-id': 'same-user' } })
      if (sent % 50 === 0) await sleep(5)
    }
  }
  await Promise.all([worker(), worker(), worker(), worker(), outage])
  t.ok(sent > 100, `load sent ${sent} requests`)
  // Let the last scrapes and rule evaluations land.
  for (;;) {
    const r = await query('count_over_time(up{job="flashgate"}[30s])')
    const v = Number((r.data?.result[0] as { value?: [number, string] } | undefined)?.value?.[1] ?? 0)
    if (v >= 8 || Date.now() > deadline) break
    await sleep(500)
  }
  await sleep(1500)

  const up = await query('up')
  t.equal((up.data?.result ?? []).length, 2, 'both targets scraped')
  for (const { title, expr } of dashboardQueries()) {
    const r = await query(substitute(expr))
    t.equal(r.status, 'success', `"${title}": ${expr} ${r.error ?? ''}`)
    t.ok((r.data?.result ?? []).length > 0, `"${title}" returns data: ${substitute(expr)}`)
  }

  const rules = await request(`${promUrl}/api/v1/rules`, { dispatcher: http })
  const body = await rules.body.json() as { data: { groups: Array<{ rules: Array<{ name: string, health: string, lastError?: string, state?: string }> }> } }
  const all = body.data.groups.flatMap((g) => g.rules)
  const shipped = (parseYaml(readFileSync(ALERTS, 'utf8')) as { groups: Array<{ rules: unknown[] }> }).groups.flatMap((g) => g.rules)
  t.equal(all.length, shipped.length, 'every shipped rule is loaded')
  for (const r of all) t.equal(r.health, 'ok', `rule ${r.name} evaluates cleanly ${r.lastError ?? ''}`)
  t.equal(all.find((r) => r.name === 'FlashgateSoldOut')?.state, 'firing', 'the sold-out alert fires once the quota is gone')
  // The counter itself (a series first scraped after its errors has no increase() to show).
  const errs = await query('sum(flashgate_store_errors_total{job="flashgate"})')
  t.ok(Number((errs.data?.result[0] as { value?: [number, string] } | undefined)?.value?.[1] ?? 0) > 0, 'the Redis outage shows as store errors')
  t.equal(all.find((r) => r.name === 'FlashgateUpstreamTargetDown')?.state, 'inactive', 'the origin was up all along')
})
