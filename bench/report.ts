/**
 * The bench report: one JSON document for machines (everything measured, every run), and a markdown
 * rendering for people (the table printed at the end and kept in bench/results/).
 */
import { spawnSync } from 'node:child_process'
import { cpus, hostname, release, totalmem } from 'node:os'
import type { Run, TargetSummary } from './measure.js'
import type { SaleResult } from './sale.js'
import type { TimelinePoint } from './load/types.js'
import type { SpikeResult } from './spike.js'
import { planMarkdown } from './capacity.js'
import type { Plan } from './capacity.js'
import type { CapacityCheck } from './capacity-run.js'

export interface ComparisonRow { readonly target: string, readonly reference: string, readonly ratio: number | null, readonly goal: number | null, readonly met: boolean | null, readonly what: string }
export interface FunnelCost { readonly step: string, readonly guard: string, readonly rps: number | null, readonly cpuUsPerReq: number | null, readonly addedUs: number | null }

export interface Report {
  readonly tool: 'flashgate bench'
  readonly schema: 1
  readonly scenario: string
  readonly date: string
  readonly command: string
  readonly machine: Record<string, string | number>
  readonly versions: Record<string, string>
  readonly settings: Record<string, unknown>
  readonly generator: string
  readonly sale: Omit<SaleResult, 'users'> & { users: Omit<SaleResult['users'], 'orders'> & { orders: number } } | null
  readonly targets: readonly TargetSummary[] | null
  readonly comparisons: readonly ComparisonRow[]
  readonly funnel: readonly FunnelCost[] | null
  /** Figures that could not be measured in this run, and why. */
  readonly missing: readonly string[]
  readonly correctness: { readonly ok: boolean, readonly checks: ReadonlyArray<{ name: string, value: number | string | boolean | null, ok: boolean | null }> }
  readonly runs: readonly Run[]
  /** The timeline shown in the chart (per second, by outcome). */
  readonly timeline: readonly TimelinePoint[] | null
  readonly timelineOf: string | null
  /** `--scenario spike`: the open-loop steps per target. */
  readonly spike?: SpikeResult | null
  /** `--scenario capacity`: the plan for `--peak` and `--mix`, and the model checked on a multi-worker run. */
  readonly capacity?: { readonly plan: Plan | null, readonly planError: string | null, readonly check: CapacityCheck | null } | null
}

function version (cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 5000 })
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n')[0] ?? ''
  return r.status === null || out === '' ? 'not installed' : out
}

export function machineInfo (): { machine: Record<string, string | number>, versions: Record<string, string> } {
  const c = cpus()
  return {
    machine: { host: hostname(), kernel: release(), cpus: c.length, cpuModel: c[0]?.model ?? 'unknown', memGiB: Math.round(totalmem() / 2 ** 30 * 10) / 10 },
    versions: {
      node: process.version,
      wrk: version('wrk', ['-v']),
      nginx: version('nginx', ['-v']),
      redis: version('redis-server', ['--version']),
      undici: pkgVersion('undici'),
      autocannon: pkgVersion('autocannon'),
      ioredis: pkgVersion('ioredis')
    }
  }
}

function pkgVersion (name: string): string {
  const r = spawnSync(process.execPath, ['-p', `require('${name}/package.json').version`], { encoding: 'utf8', cwd: new URL('..', import.meta.url).pathname })
  return r.status === 0 ? r.stdout.trim() : 'not installed'
}

const f = (x: number | null | undefined, d = 0): string => x === null || x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(d)
const fInt = (x: number | null | undefined): string => x === null || x === undefined || !Number.isFinite(x) ? '–' : Math.round(x).toLocaleString('en-US')

function outcomesCell (o: Record<string, number> | null | undefined): string {
  if (o === null || o === undefined) return '–'
  return Object.entries(o).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${fInt(v)}`).join(', ')
}

export function markdown (r: Report): string {
  const L: string[] = []
  L.push(`## flashgate bench — \`${r.scenario}\``, '')
  L.push(`${r.date} · ${r.machine.cpus} × ${String(r.machine.cpuModel)} · Linux ${String(r.machine.kernel)} · Node ${r.versions.node ?? ''} · ${r.versions.wrk ?? ''} · ${r.versions.nginx ?? ''} · ${r.versions.redis ?? ''} · undici ${r.versions.undici ?? ''}`, '')
  L.push(`Command: \`${r.command}\``, '')
  if (typeof r.settings.flashgate === 'string') L.push(`flashgate ran as: \`${r.settings.flashgate}\`; the Node peers with the same Node flags (bench/peers.ts serverCommand)`, '')
  L.push(`Load generator: ${r.generator}. Server under test pinned to CPU ${String(r.settings.serverCpus ?? '–')}, load generator, Redis and origins to CPU ${String(r.settings.loadCpus ?? '–')}.`, '')
  L.push(`**Correctness: ${r.correctness.ok ? 'OK' : 'FAILED'}**`, '', '| check | value | ok |', '|:---|---:|:---:|')
  for (const c of r.correctness.checks) L.push(`| ${c.name} | ${c.value === null ? '–' : String(c.value)} | ${c.ok === null ? '–' : c.ok ? '✓' : '✗'} |`)
  L.push('')
  if (r.sale !== null) {
    const s = r.sale
    const u = s.users
    L.push('### Flash sale', '')
    L.push(`${fInt(Number(r.settings.users))} users (${fInt(u.bots)} bots), ${String(r.settings.connections)} connections, ${f(u.seconds, 1)} s; products ${s.products.map((p) => `${p.product} (quota ${p.quota})`).join(', ')}.`, '')
    L.push('| requests/s | p50 ms | p99 ms | p99.9 ms | answers | lost | gateway CPU µs/req | Redis cmds/req | Redis round trips/req |', '|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
    L.push(`| ${fInt(u.rps)} | ${f(u.latencyMs.p50, 2)} | ${f(u.latencyMs.p99, 2)} | ${f(u.latencyMs.p999, 2)} | ${fInt(u.answered)} | ${u.lost} | ${f(s.cpuUsPerReq, 1)} | ${f(s.redisCommandsPerReq, 3)} | ${f(s.storeOpsPerReq ?? s.redisScriptsPerReq, 3)} |`, '')
    L.push('Latency per outcome where it happens: the client\'s (the crowd, from sending to the last byte) beside the gateway\'s own (its `flashgate_request_duration_seconds` histogram for the buy route, scraped before and after; bucket bounds 0.5, 1, 2.5, 5, 10, 25, 50 ms …, interpolated). The gap is time the gateway does not see: its accept queue, its event loop before a request is parsed, the network stack, the generator.', '')
    L.push('| buy answers by outcome | count | client p50 ms | client p99 ms | gateway count | gateway p50 ms | gateway p99 ms | gateway ≤ 0.5 ms | gateway ≤ 50 ms |', '|:---|---:|---:|---:|---:|---:|---:|---:|---:|')
    const sl = s.serverBuyLatency ?? {}
    const buyKeys = [...new Set([...Object.keys(u.buyOutcomes), ...Object.keys(sl)])].sort((a, b) => (u.buyOutcomes[b] ?? sl[b]?.count ?? 0) - (u.buyOutcomes[a] ?? sl[a]?.count ?? 0))
    for (const k of buyKeys) {
      const g = sl[k]
      L.push(`| ${k} | ${fInt(u.buyOutcomes[k] ?? 0)} | ${f(u.buyLatencyMs[k]?.p50, 2)} | ${f(u.buyLatencyMs[k]?.p99, 2)} | ${fInt(g?.count)} | ${f(g?.p50, 2)} | ${f(g?.p99, 2)} | ${g?.within05msPct == null ? '–' : `${f(g.within05msPct, 1)} %`} | ${g?.within50msPct == null ? '–' : `${f(g.within50msPct, 1)} %`} |`)
    }
    const gh = s.generatorHealth
    if (gh !== undefined) L.push('', `Generator (${gh.generator}, in the bench process on the load core): CPU ${f(gh.cpuPct, 0)} % of a core, event-loop lag p99 ${f(gh.lagP99Ms, 1)} ms (max ${f(gh.lagMaxMs, 1)} ms), load core busy ${f(gh.loadCpuBusyPct, 0)} % (shared with Redis and the origin). ${gh.saturated ? `**Generator saturated — the client-side latencies above are the generator's, not the gateway's: ${gh.why ?? ''}.**` : 'Not saturated (< 90 % of a core, lag p99 < 20 ms).'}`)
    L.push('', `All answers by outcome (gateway metrics): ${outcomesCell(s.gatewayOutcomes)}`, '')
    L.push('| product | quota | orders seen | edge admitted | oversold | origin stock/sale/locked/sold | invariant |', '|:---|---:|---:|---:|---:|---:|:---:|')
    for (const p of s.products) L.push(`| ${p.product} | ${p.quota} | ${p.orders} | ${p.edgeAdmitted ?? '–'} | ${p.oversold} | ${p.origin === null ? '–' : `${p.origin.stock}/${p.origin.sale}/${p.origin.locked}/${p.origin.sold}`} | ${p.invariantOk === null ? '–' : p.invariantOk && p.originMatchesOrders === true ? '✓' : '✗'} |`)
    L.push('')
  }
  if (r.targets !== null && r.targets.length > 0) {
    L.push('### Throughput (one core for the server under test; medians over rounds)', '')
    L.push('| target | what | requests/s | min–max | p50 ms | p99 ms | p99.9 ms | gateway p99 ms by outcome | CPU µs/req | Redis cmds/req | store ops/req | non-2xx % | lost | generator CPU % | answers (flashgate metrics) |', '|:---|:---|---:|---:|---:|---:|---:|:---|---:|---:|---:|---:|---:|---:|:---|')
    for (const t of r.targets) {
      const sp = t.serverP99 == null ? '–' : Object.entries(t.serverP99).map(([k, v]) => `${k} ${f(v, 2)}`).join(', ')
      L.push(`| ${t.kind === 'flashgate' ? `**${t.target}**` : t.target} | ${t.role} | ${fInt(t.rps)}${t.generatorSaturated === true ? ' (generator saturated)' : ''} | ${fInt(t.rpsMin)}–${fInt(t.rpsMax)} | ${f(t.p50, 2)} | ${f(t.p99, 2)} | ${f(t.p999, 2)} | ${sp} | ${f(t.cpuUsPerReq, 1)} | ${f(t.redisCommandsPerReq, 3)} | ${f(t.storeOpsPerReq, 3)} | ${f(t.non2xxPct, 1)} | ${t.lost} | ${f(t.generatorCpuPct, 0)} | ${outcomesCell(t.outcomes)} |`)
    }
    L.push('', 'p50/p99 are the client\'s (the generator\'s); *gateway p99* is flashgate\'s own histogram over the same run (coarse buckets). *Generator CPU* is the load generator\'s share of one core (wrk as a child of the bench; autocannon in the bench process): at ≥ 90 % the row is marked *generator saturated* and its requests/s is a bound on the generator, not the server.', '')
  }
  if (r.comparisons.length > 0) {
    L.push('### Ratios (requests/s, within each round, median)', '', '| flashgate target | × reference | ratio | goal | met | what |', '|:---|:---|---:|---:|:---:|:---|')
    for (const c of r.comparisons) L.push(`| ${c.target} | ${c.reference} | ${f(c.ratio, 2)} | ${c.goal === null ? '–' : `≥ ${c.goal}`} | ${c.met === null ? '–' : c.met ? '✓' : '✗'} | ${c.what} |`)
    L.push('')
  }
  if (r.funnel !== null) {
    L.push('### Cost per guard (funnel pass path, added one at a time)', '', '| step | guard added | requests/s | CPU µs/req | added µs/req |', '|:---|:---|---:|---:|---:|')
    for (const c of r.funnel) L.push(`| ${c.step} | ${c.guard} | ${fInt(c.rps)} | ${f(c.cpuUsPerReq, 1)} | ${f(c.addedUs, 1)} |`)
    L.push('')
  }
  if (r.spike != null) spikeSection(L, r.spike)
  if (r.capacity != null) capacitySection(L, r.capacity)
  if (r.missing.length > 0) {
    L.push('### Not measured in this run', '')
    for (const m of r.missing) L.push(`- ${m}`)
    L.push('')
  }
  return L.join('\n')
}

function spikeSection (L: string[], s: SpikeResult): void {
  L.push(`### Open-loop spike: the highest arrival rate holding p99 ≤ ${s.p99Ms} ms on one server core`, '')
  if (s.generator !== undefined && s.generator.startsWith('h2load')) {
    L.push(`Arrivals at a fixed rate made by h2load on the load core (${s.connections} keep-alive HTTP/1.1 clients, each at rate ÷ clients, their starts spread over one interval between a client's sends so that the arrivals do not come as bursts of one per client, bench/load/h2load.ts), ${s.stepSeconds} s per step. h2load times a request from when it was sent, and a client with a request in flight sends late: what was due and not answered within the step is lost, and a step holds only when at most 2 % was lost. *Generator CPU* is h2load's own (a reaped child).`, '')
  } else {
    L.push(`Arrivals at a fixed rate (open loop, raw sockets, ${s.connections} keep-alive connections, one request in flight each), ${s.stepSeconds} s per step; latency from each request's intended send time, so a stall is charged to every request due during it. *Service p99* is from the moment the request was written (what a closed-loop generator would report).`, '')
  }
  L.push('| target | what | highest rate held | stopped by |', '|:---|:---|---:|:---|')
  for (const t of s.targets) L.push(`| ${t.kind === 'flashgate' ? `**${t.target}**` : t.target} | ${t.role} | ${t.bestRate === null ? 'none' : `${fInt(t.bestRate)}/s`}${t.generatorBound ? ' (≥: generator bound)' : ''} | ${t.stoppedBy} |`)
  L.push('', '| target | rate/s | answered/s | p50 ms | p99 ms | p99.9 ms | service p99 ms | gateway p99 ms by outcome | server core % | server µs/req | generator CPU % | generator lag p99 ms | held |', '|:---|---:|---:|---:|---:|---:|---:|:---|---:|---:|---:|---:|:---|')
  for (const t of s.targets) {
    for (const st of t.steps) {
      const sp = st.serverLatency === null ? '–' : Object.entries(st.serverLatency).map(([k, v]) => `${k} ${f(v.p99, 2)}`).join(', ')
      L.push(`| ${t.target} | ${fInt(st.rate)} | ${fInt(st.load.rps)} | ${f(st.load.latencyMs.p50, 2)} | ${f(st.load.latencyMs.p99, 2)} | ${f(st.load.latencyMs.p999, 2)} | ${f(st.load.serviceMs.p99, 2)} | ${sp} | ${f(st.serverCorePct, 0)} | ${f(st.cpuUsPerReq, 1)} | ${f(st.generatorHealth.cpuPct, 0)} | ${f(st.generatorHealth.lagP99Ms, 1)} | ${st.held ? '✓' : `✗ ${st.why ?? ''}`} |`)
    }
  }
  L.push('')
}

function capacitySection (L: string[], c: NonNullable<Report['capacity']>): void {
  L.push('### Capacity model', '')
  L.push('Costs per outcome from the one-worker runs above (gateway CPU of its process tree, store round trips and Redis commands per request, redis-server CPU from INFO cpu), turned into cores and shards (`flashgate capacity --from THIS.json --peak N --mix …` gives the same for other figures).', '')
  L.push(c.plan !== null ? planMarkdown(c.plan) : `No plan: ${c.planError ?? ''}`, '')
  const k = c.check
  if (k !== null) {
    L.push(`#### Predicted vs measured: ${k.workers} workers${k.serverCpus !== null ? ` on CPU ${k.serverCpus}` : ''}, ${k.seconds} s, the mix ${Object.entries(k.measuredMix).sort((a, b) => b[1] - a[1]).map(([o, v]) => `${o} ${f(v * 100, 1)} %`).join(', ')} (as counted by the gateway)`, '')
    L.push('| at the measured rate | predicted | measured | error |', '|:---|---:|---:|---:|')
    L.push(`| requests/s (predicted: for the CPU the gateway had) | ${k.requestsPerSecPredicted == null ? '' : fInt(k.requestsPerSecPredicted)} | ${fInt(k.requestsPerSec)} | ${k.rateErrorPct == null ? '' : `${f(k.rateErrorPct, 1)} %`} |`)
    L.push(`| gateway µs/req | ${f(k.gatewayUsPerReqPredicted, 1)} | ${f(k.gatewayUsPerReqMeasured, 1)} | ${k.gatewayErrorPct === null ? '–' : `${f(k.gatewayErrorPct, 1)} %`} |`)
    L.push(`| gateway cores busy | ${f(k.gatewayCoresPredicted, 3)} | ${f(k.gatewayCoresMeasured, 3)} | ${k.gatewayErrorPct === null ? '–' : `${f(k.gatewayErrorPct, 1)} %`} |`)
    L.push(`| gateway cores at rest (no load, 2 s) | | ${f(k.gatewayIdleCores, 3)} | |`)
    if (k.gatewayCoresPredictedWithIdle != null) L.push(`| gateway cores busy, the cost at rest added to the prediction | ${f(k.gatewayCoresPredictedWithIdle, 3)} | ${f(k.gatewayCoresMeasured, 3)} | ${k.gatewayWithIdleErrorPct == null ? '–' : `${f(k.gatewayWithIdleErrorPct, 1)} %`} |`)
    L.push(`| redis-server cores busy | ${f(k.redisCoresPredicted, 3)} | ${f(k.redisCoresMeasured, 3)} | ${k.redisErrorPct === null ? '–' : `${f(k.redisErrorPct, 1)} %`} |`)
    L.push('', `Generator: ${k.generatorHealth.generator}, CPU ${f(k.generatorHealth.cpuPct, 0)} % of a core${k.generatorHealth.saturated ? ' — **saturated**' : ''}; load core busy ${f(k.generatorHealth.loadCpuBusyPct, 0)} %.`)
    for (const n of k.notes) L.push(`- ${n}`)
    L.push('')
  }
}
