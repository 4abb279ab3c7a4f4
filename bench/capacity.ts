/**
 * The capacity model: measured cost per request of each outcome — gateway CPU µs (its whole process
 * tree), store round trips, Redis commands and redis-server CPU µs — turned into gateway cores and Redis
 * shards for a peak and an outcome mix (say 1,000,000 requests/s, 95 % SOLD_OUT):
 *
 *   gateway cores = peak × Σ share(o) × µs(o) / 1e6 / headroom
 *   Redis shards  = peak × Σ share(o) × redis µs(o) / 1e6 / headroom   (Redis runs commands on one core)
 *
 * and the limit sharding cannot lift: one product's quota counter lives on one shard, so the admitted
 * share of the peak for the hottest product must fit one shard by itself. `flashgate capacity` prints a
 * plan from a bench JSON (`--from`, any run that measured fg-soldout / fg-reject-429 / fg-quota-redis /
 * fg-funnel; `--scenario capacity` measures them and checks the model against a `--workers 2` run).
 * The costs are measured on one machine at one moment; on a shared machine they are noisy, and the
 * plan is only as good as them.
 */
import { readFileSync } from 'node:fs'
import { UsageError, command, numberFlag } from '../gateway/cli-args.js'
import { parseMix } from './options.js'

/** What one outcome costs, per request. */
export interface OutcomeCost {
  readonly outcome: string
  /** The bench target it was measured on. */
  readonly target: string
  readonly gatewayUsPerReq: number
  readonly redisUsPerReq: number | null
  readonly redisCmdsPerReq: number | null
  readonly storeOpsPerReq: number | null
}

/** Which measured target prices which outcome (first found wins). */
export const OUTCOME_TARGETS: Readonly<Record<string, readonly string[]>> = {
  SOLD_OUT: ['fg-soldout'],
  RATE_LIMITED: ['fg-reject-429'],
  passed: ['fg-quota-redis', 'fg-funnel']
}

export interface PlanRow extends OutcomeCost {
  readonly share: number
  readonly rate: number
  readonly gatewayCores: number
  readonly redisCores: number | null
  readonly redisCmdsPerSec: number | null
}

export interface Plan {
  readonly peak: number
  readonly headroom: number
  readonly rows: readonly PlanRow[]
  /** Mix-weighted costs per request. */
  readonly gatewayUsPerReq: number
  readonly redisUsPerReq: number | null
  /** Busy cores at the peak (no headroom), and what to provision (with headroom, rounded up). */
  readonly gatewayCoresBusy: number
  readonly gatewayCores: number
  readonly redisCoresBusy: number | null
  readonly redisShards: number | null
  readonly redisCmdsPerSec: number | null
  /** One hot product's quota key: the admitted share of the peak, in cores of the one shard it lives on. */
  readonly hotKeyShardLoad: number | null
  readonly notes: readonly string[]
}

/** Outcome costs from a bench report's target summaries (JSON as `flashgate bench` writes it). */
export function costsFromReport (report: unknown): OutcomeCost[] {
  const targets = (report as { targets?: unknown }).targets
  if (!Array.isArray(targets)) throw new Error('no throughput targets in this report (run `flashgate bench --scenario capacity` or reject/flash-sale --peers)')
  const by = new Map<string, Record<string, unknown>>()
  for (const t of targets as Array<Record<string, unknown>>) if (typeof t.target === 'string') by.set(t.target, t)
  const out: OutcomeCost[] = []
  for (const [outcome, names] of Object.entries(OUTCOME_TARGETS)) {
    for (const name of names) {
      const t = by.get(name)
      const us = t?.cpuUsPerReq
      if (t === undefined || typeof us !== 'number') continue
      const num = (k: string): number | null => typeof t[k] === 'number' ? t[k] : null
      out.push({ outcome, target: name, gatewayUsPerReq: us, redisUsPerReq: num('redisCpuUsPerReq'), redisCmdsPerReq: num('redisCommandsPerReq'), storeOpsPerReq: num('storeOpsPerReq') })
      break
    }
  }
  return out
}

/** The plan (pure). Every outcome of the mix must have a cost. */
export function plan (peak: number, mix: Readonly<Record<string, number>>, costs: readonly OutcomeCost[], headroom = 0.7): Plan {
  const notes: string[] = []
  const rows: PlanRow[] = []
  for (const [outcome, share] of Object.entries(mix)) {
    const c = costs.find((x) => x.outcome === outcome)
    if (c === undefined) throw new Error(`no measured cost for outcome ${outcome} (measured: ${costs.map((x) => x.outcome).join(', ') || 'none'})`)
    const rate = peak * share
    rows.push({ ...c, share, rate, gatewayCores: rate * c.gatewayUsPerReq / 1e6, redisCores: c.redisUsPerReq === null ? null : rate * c.redisUsPerReq / 1e6, redisCmdsPerSec: c.redisCmdsPerReq === null ? null : rate * c.redisCmdsPerReq })
  }
  const sum = (f: (r: PlanRow) => number | null): number | null => rows.some((r) => f(r) === null) ? null : rows.reduce((a, r) => a + (f(r) ?? 0), 0)
  const gatewayCoresBusy = sum((r) => r.gatewayCores) ?? 0
  const redisCoresBusy = sum((r) => r.redisCores)
  if (redisCoresBusy === null) notes.push('Redis: no redis-server CPU measured for some outcome (the memory store, or a report from before the bench measured it): no shard count')
  const passed = rows.find((r) => r.outcome === 'passed')
  const hotKeyShardLoad = passed?.redisCores ?? null
  if (hotKeyShardLoad !== null && hotKeyShardLoad > headroom) notes.push(`one product's quota counter lives on one shard: its ${Math.round(passed?.rate ?? 0).toLocaleString('en-US')} admitted requests/s need ${hotKeyShardLoad.toFixed(2)} cores of that shard, more than one can give (${headroom}): more shards do not help; spread the product over several quota keys or lower the admitted rate (waiting room)`)
  notes.push('SOLD_OUT is priced from the node-local latch (no store call); a node answers from it only after its first Redis answer said sold out')
  return {
    peak,
    headroom,
    rows,
    gatewayUsPerReq: rows.reduce((a, r) => a + r.share * r.gatewayUsPerReq, 0),
    redisUsPerReq: redisCoresBusy === null ? null : rows.reduce((a, r) => a + r.share * (r.redisUsPerReq ?? 0), 0),
    gatewayCoresBusy,
    gatewayCores: Math.ceil(gatewayCoresBusy / headroom),
    redisCoresBusy,
    redisShards: redisCoresBusy === null ? null : Math.max(1, Math.ceil(redisCoresBusy / headroom)),
    redisCmdsPerSec: sum((r) => r.redisCmdsPerSec),
    hotKeyShardLoad,
    notes
  }
}

const f = (x: number | null | undefined, d = 0): string => x === null || x === undefined || !Number.isFinite(x) ? '–' : x.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d })

export function planMarkdown (p: Plan): string {
  const L: string[] = []
  L.push(`Plan for ${f(p.peak)} requests/s, a core used up to ${Math.round(p.headroom * 100)} %:`, '')
  L.push('| outcome | share | requests/s | priced on | gateway µs/req | store ops/req | Redis cmds/req | redis µs/req | gateway cores | Redis cores | Redis cmds/s |', '|:---|---:|---:|:---|---:|---:|---:|---:|---:|---:|---:|')
  for (const r of p.rows) L.push(`| ${r.outcome} | ${f(r.share * 100, 1)} % | ${f(r.rate)} | ${r.target} | ${f(r.gatewayUsPerReq, 1)} | ${f(r.storeOpsPerReq, 2)} | ${f(r.redisCmdsPerReq, 2)} | ${f(r.redisUsPerReq, 1)} | ${f(r.gatewayCores, 1)} | ${f(r.redisCores, 2)} | ${f(r.redisCmdsPerSec)} |`)
  L.push(`| **total** | 100 % | ${f(p.peak)} | | ${f(p.gatewayUsPerReq, 1)} | | | ${f(p.redisUsPerReq, 1)} | ${f(p.gatewayCoresBusy, 1)} | ${f(p.redisCoresBusy, 2)} | ${f(p.redisCmdsPerSec)} |`, '')
  L.push(`**Gateway: ${f(p.gatewayCores)} cores** (${f(p.gatewayCoresBusy, 1)} busy at the peak). **Redis: ${p.redisShards === null ? '–' : f(p.redisShards)} shard(s)** (${f(p.redisCoresBusy, 2)} cores busy, ${f(p.redisCmdsPerSec)} commands/s).`, '')
  for (const n of p.notes) L.push(`- ${n}`)
  return L.join('\n')
}

export const USAGE = `Usage: flashgate capacity --from FILE.json [--peak N] [--mix LIST] [--headroom X] [--json]

Turns the costs a bench run measured per outcome (gateway CPU µs, store round trips, Redis commands and
redis-server CPU per request) into gateway cores and Redis shards for a peak and an outcome mix.

  --from FILE     a \`flashgate bench\` JSON report that measured fg-soldout / fg-reject-429 /
                  fg-quota-redis (or fg-funnel): --scenario capacity, reject, or flash-sale --peers
  --peak N        requests/s to plan for (default 1000000)
  --mix LIST      outcome shares, e.g. SOLD_OUT:95,passed:4,RATE_LIMITED:1 (the default)
  --headroom X    share of a core the plan may use, 0.1..1 (default 0.7)
  --json          print the plan as JSON instead of markdown
  --help          this text
`

/** `flashgate capacity ARGS`; resolves with the exit code. */
export async function main (args: string[]): Promise<number> {
  const flags = { from: 'string', peak: 'string', mix: 'string', headroom: 'string', json: 'boolean' } as const
  return await command({ prog: 'flashgate capacity', usage: USAGE, flags }, args, ({ values }) => {
    const from = values.from
    if (from === undefined) throw new UsageError('--from FILE.json is required')
    const peak = numberFlag(values.peak, 'peak', 1, 1e10, false) ?? 1_000_000
    const headroom = numberFlag(values.headroom, 'headroom', 0.1, 1, false) ?? 0.7
    const shares = parseMix(values.mix ?? 'SOLD_OUT:95,passed:4,RATE_LIMITED:1')
    let report: unknown
    try { report = JSON.parse(readFileSync(from, 'utf8')) } catch (err) { process.stderr.write(`flashgate capacity: ${from}: ${(err as Error).message}\n`); return 1 }
    try {
      const p = plan(peak, shares, costsFromReport(report), headroom)
      process.stdout.write(values.json === true ? JSON.stringify(p, null, 2) + '\n' : planMarkdown(p) + '\n')
      return 0
    } catch (err) {
      process.stderr.write(`flashgate capacity: ${(err as Error).message}\n`)
      return 1
    }
  }) ?? 0
}
