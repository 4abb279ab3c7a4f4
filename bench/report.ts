/**
 * The bench report: one JSON document for machines (everything measured, every run), and a markdown
 * rendering for people (the table printed at the end and kept in bench/results/).
 */
import { spawnSync } from 'node:child_process'
import { cpus, hostname, release, totalmem } from 'node:os'
import type { Run, TargetSummary } from './measure.js'
import type { SaleResult } from './sale.js'
import type { TimelinePoint } from './load/types.js'

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
  if (typeof r.settings.flashgate === 'string') L.push(`flashgate ran as: \`${r.settings.flashgate}\``, '')
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
    L.push('| buy answers by outcome | count | p50 ms | p99 ms |', '|:---|---:|---:|---:|')
    for (const [k, v] of Object.entries(u.buyOutcomes).sort((a, b) => b[1] - a[1])) L.push(`| ${k} | ${fInt(v)} | ${f(u.buyLatencyMs[k]?.p50, 2)} | ${f(u.buyLatencyMs[k]?.p99, 2)} |`)
    L.push('', `All answers by outcome (gateway metrics): ${outcomesCell(s.gatewayOutcomes)}`, '')
    L.push('| product | quota | orders seen | edge admitted | oversold | origin stock/sale/locked/sold | invariant |', '|:---|---:|---:|---:|---:|---:|:---:|')
    for (const p of s.products) L.push(`| ${p.product} | ${p.quota} | ${p.orders} | ${p.edgeAdmitted ?? '–'} | ${p.oversold} | ${p.origin === null ? '–' : `${p.origin.stock}/${p.origin.sale}/${p.origin.locked}/${p.origin.sold}`} | ${p.invariantOk === null ? '–' : p.invariantOk && p.originMatchesOrders === true ? '✓' : '✗'} |`)
    L.push('')
  }
  if (r.targets !== null && r.targets.length > 0) {
    L.push('### Throughput (one core for the server under test; medians over rounds)', '')
    L.push('| target | what | requests/s | min–max | p50 ms | p99 ms | p99.9 ms | CPU µs/req | Redis cmds/req | store ops/req | non-2xx % | lost | answers (flashgate metrics) |', '|:---|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---|')
    for (const t of r.targets) {
      L.push(`| ${t.kind === 'flashgate' ? `**${t.target}**` : t.target} | ${t.role} | ${fInt(t.rps)} | ${fInt(t.rpsMin)}–${fInt(t.rpsMax)} | ${f(t.p50, 2)} | ${f(t.p99, 2)} | ${f(t.p999, 2)} | ${f(t.cpuUsPerReq, 1)} | ${f(t.redisCommandsPerReq, 3)} | ${f(t.storeOpsPerReq, 3)} | ${f(t.non2xxPct, 1)} | ${t.lost} | ${outcomesCell(t.outcomes)} |`)
    }
    L.push('')
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
  if (r.missing.length > 0) {
    L.push('### Not measured in this run', '')
    for (const m of r.missing) L.push(`- ${m}`)
    L.push('')
  }
  return L.join('\n')
}
