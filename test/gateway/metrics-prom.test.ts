/**
 * The metrics an SRE alerts on, checked on real gateways with Debian's promtool: the exposition of a
 * single process, of a `--workers 2` node (gauges merged by their aggregator, not summed) and of the
 * origin passes `promtool check metrics`; upstream latency, guard rejections, build info, the reload
 * time and result, and edge outcomes as codes.
 */
import t, { type Test } from 'tap'
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createMetrics, SUMMED_GAUGES } from '../../gateway/metrics.js'
import { VERSION } from '../../gateway/version.js'
import { DROPPED_DEFAULT_METRICS } from '../../conf/default-metrics.js'
import { baseYaml, tempDir } from '../helpers/config.js'
import { client, fetchText, startOrigin, startTestGateway } from '../helpers/gateway.js'
import { spawnCli } from '../helpers/process.js'
import { parseSamples, promtool, samples } from '../helpers/prom.js'
import { needTools } from '../helpers/tools.js'
import { configFile, originYaml, spawnOrigin } from '../origin-stub/helpers.js'

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }

const ROUTES = `  - name: limited
    match: { path_prefix: /limited/ }
    guards:
      - deny: { ips: [203.0.113.0/24] }
      - rate_limit: { name: tiny, rate: 1/m, burst: 1 }
    upstream: origin
  - name: site
    match: { path_prefix: / }
    upstream: origin
`

async function checkMetrics (t: Test, text: string, what: string): Promise<void> {
  const r = await promtool(['check', 'metrics'], text)
  t.equal(r.code, 0, `promtool check metrics passes on ${what}`)
  t.equal(r.out.trim(), '', `promtool has no lint remark on ${what}`)
}

t.test('VERSION is package.json\'s', async (t) => {
  t.equal(VERSION, pkg.version)
})

t.test('every flashgate gauge says how workers merge it; counters and histograms add up', async (t) => {
  const m = createMetrics()
  for (const j of await m.registry.getMetricsAsJSON()) {
    const agg = (j as { aggregator?: string }).aggregator
    const type = String(j.type)
    if (type === 'gauge' && j.name.startsWith('flashgate_') && !SUMMED_GAUGES.includes(j.name)) {
      t.not(agg, 'sum', `${j.name} is not summed over workers`)
    } else if (type === 'counter' || type === 'histogram') {
      t.equal(agg, 'sum', `${j.name} adds up`)
    }
  }
  for (const name of DROPPED_DEFAULT_METRICS) t.equal(m.registry.getSingleMetric(name), undefined, `${name} is not registered`)
})

t.test('one process: promtool clean; upstream latency, guard, build, reload and edge metrics', async (t) => {
  if (!needTools(t, 'promtool')) return
  const origin = await startOrigin(t)
  const files = tempDir(t)
  const file = files.write('gw.yaml', baseYaml(origin.url, ROUTES))
  const before = Date.now() / 1000
  const gw = await startTestGateway(t, { configFile: file, admin: { host: '127.0.0.1', port: 0 } })
  const d = client(t)
  const statuses: number[] = []
  for (let i = 0; i < 3; i++) statuses.push((await fetchText(d, gw.url + '/limited/a')).status)
  t.same(statuses, [200, 429, 429])
  t.equal((await fetchText(d, gw.url + '/x')).status, 200)
  t.equal((await fetchText(d, gw.url + '/_flashgate/time', { method: 'POST' })).status, 405)
  t.equal((await fetchText(d, gw.url + '/_flashgate/time')).status, 200)

  const text = (await fetchText(d, gw.adminUrl + '/metrics')).text
  await checkMetrics(t, text, 'the gateway')
  const all = parseSamples(text)
  t.same(samples(all, 'flashgate_guard_rejections_total').map((s) => [s.labels, s.value]),
    [[{ route: 'limited', guard: '1:rate_limit', code: 'RATE_LIMITED' }, 2]], 'which guard rejected, and how often')
  t.equal(samples(all, 'flashgate_upstream_duration_seconds_count', { upstream: 'origin', target: origin.url })[0]?.value, 2, 'one upstream latency observation per attempt')
  const sum = samples(all, 'flashgate_upstream_duration_seconds_sum', { upstream: 'origin', target: origin.url })[0]?.value ?? -1
  t.ok(sum > 0 && sum < 5, `upstream time is a plausible duration (${sum} s)`)
  t.same(samples(all, 'flashgate_build_info').map((s) => [s.labels, s.value]), [[{ version: pkg.version, node: process.versions.node }, 1]])
  t.equal(samples(all, 'flashgate_config_last_reload_successful')[0]?.value, 1)
  const loaded = samples(all, 'flashgate_config_last_reload_timestamp_seconds')[0]?.value ?? 0
  t.ok(loaded >= before - 1 && loaded <= Date.now() / 1000 + 1, 'the start counts as the last load')
  t.equal(samples(all, 'flashgate_requests_total', { route: '_flashgate', outcome: 'METHOD_NOT_ALLOWED' })[0]?.value, 1, 'an edge refusal is counted by its code')
  t.equal(samples(all, 'flashgate_requests_total', { route: '_flashgate', outcome: 'passed' })[0]?.value, 1)
  t.notOk(all.some((s) => s.labels.route === '_flashgate' && /^\d+$/.test(s.labels.outcome ?? '')), 'no bare status as an edge outcome')
  for (const name of DROPPED_DEFAULT_METRICS) t.notOk(text.includes(`\n${name} `), `${name} is not exposed`)
  t.ok(samples(all, 'nodejs_active_handles').length > 0, 'the per-type active handles stay')

  // A failed reload: the result gauge drops to 0, the time moves, the old config keeps serving.
  files.write('gw.yaml', baseYaml(origin.url, ROUTES) + 'nonsense_key: 1\n')
  await new Promise((resolve) => setTimeout(resolve, 20))
  const bad = await fetchText(d, gw.adminUrl + '/admin/reload', { method: 'POST' })
  t.equal(bad.status, 400)
  let m = parseSamples((await fetchText(d, gw.adminUrl + '/metrics')).text)
  t.equal(samples(m, 'flashgate_config_last_reload_successful')[0]?.value, 0, 'the last reload failed')
  t.equal(samples(m, 'flashgate_config_reloads_total', { result: 'failure' })[0]?.value, 1)
  t.ok((samples(m, 'flashgate_config_last_reload_timestamp_seconds')[0]?.value ?? 0) > loaded, 'the failed attempt\'s time')
  t.equal((await fetchText(d, gw.url + '/x')).status, 200, 'the old config serves')
  files.write('gw.yaml', baseYaml(origin.url, ROUTES))
  t.equal((await fetchText(d, gw.adminUrl + '/admin/reload', { method: 'POST' })).status, 200)
  m = parseSamples((await fetchText(d, gw.adminUrl + '/metrics')).text)
  t.equal(samples(m, 'flashgate_config_last_reload_successful')[0]?.value, 1, 'a good reload sets it back')
  t.equal(samples(m, 'flashgate_config_reloads_total', { result: 'success' })[0]?.value, 1)
})

t.test('--workers 2: promtool clean; gauges merged by aggregator, counters summed', async (t) => {
  if (!needTools(t, 'promtool')) return
  const origin = await startOrigin(t)
  const files = tempDir(t)
  const file = files.write('gw.yaml', baseYaml(origin.url, ROUTES))
  const p = spawnCli(t, ['serve', '--config', file, '--workers', '2'])
  const listening = await p.waitFor((l) => l.msg === 'listening' && l.workers === 2, 60_000)
  const url = listening.url as string
  const adminUrl = listening.admin as string
  const N = 20
  for (let i = 0; i < N; i++) {
    t.equal((await fetchText(client(t, { pipelining: 0 }), url + '/x', { headers: { connection: 'close' } })).status, 200)
  }
  const text = (await fetchText(client(t), adminUrl + '/metrics')).text
  await checkMetrics(t, text, 'the primary\'s aggregate')
  const all = parseSamples(text)
  t.equal(samples(all, 'flashgate_requests_total', { route: 'site', outcome: 'passed' })[0]?.value, N, 'counters add up over workers')
  t.equal(samples(all, 'flashgate_upstream_duration_seconds_count', { upstream: 'origin' })[0]?.value, N, 'histograms add up over workers')
  t.same(samples(all, 'flashgate_build_info').map((s) => s.value), [1], 'build info is 1, not one per process')
  t.same(samples(all, 'flashgate_upstream_up', { upstream: 'origin', target: origin.url }).map((s) => s.value), [1], 'a target up on every worker is 1, not 2')
  t.same(samples(all, 'flashgate_config_last_reload_successful').map((s) => s.value), [1], 'reload result is 1, not 3')
  const ts = samples(all, 'flashgate_config_last_reload_timestamp_seconds')[0]?.value ?? 0
  t.ok(Math.abs(ts - Date.now() / 1000) < 120, 'reload time is a time, not a sum of times')
  t.same(samples(all, 'flashgate_store_breaker_open').map((s) => s.value), [0])
  p.child.kill('SIGTERM')
  t.equal(await p.exited, 0)
})

t.test('the origin: promtool clean', async (t) => {
  if (!needTools(t, 'promtool')) return
  const file = configFile(t, originYaml({ store: 'memory', products: [{ campaign: 'c', product: 'p', quota: 5 }], orderRate: '100/s', paymentTimeout: '10s' }))
  const o = await spawnOrigin(t, file)
  const r = await fetchText(client(t), o.url + '/buy/c/p', { method: 'POST', headers: { 'x-user-id': 'u1' } })
  t.equal(r.status, 202)
  const text = (await fetchText(client(t), o.url + '/metrics')).text
  t.match(text, /flashgate_origin_buys_total\{result="queued"\} 1/)
  await checkMetrics(t, text, 'the origin')
  t.equal(await o.stop(), 0)
})
