/**
 * `--scenario spike`: arrivals at a fixed rate (h2load when installed, bench/load/h2load.ts: a C
 * generator on the load core; else the in-process open loop, bench/load/open-loop.ts), stepped up from
 * `--rate-start` by `--rate-factor` per step until the client's p99 (from each request's intended send
 * time) exceeds `--p99-ms` (50), requests are lost, or the generator saturates — for each target in
 * turn (flashgate's sold-out and quota-on-Redis paths, and with `--peers` the OpenResty configuration
 * of the peers kit doing the same). The answer per target is the highest arrival rate that held the
 * bound on the one server core. Every step is bounded: `--duration` seconds of arrivals, at most
 * rate × duration requests, 2 s of drain.
 */
import { runOpenLoop } from './load/open-loop.js'
import type { OpenLoopOptions } from './load/open-loop.js'
import { KEPT_UP, h2loadCannot, runH2loadOpenLoop } from './load/h2load.js'
import { which } from './proc.js'
import type { OpenLoopResult } from './load/open-loop.js'
import { watchGenerator } from './generator-health.js'
import type { GeneratorHealth } from './generator-health.js'
import { scrape } from './prom.js'
import { cpuMicros, sleep } from './proc.js'
import { serverLatency } from './server-latency.js'
import type { ServerLatency } from './server-latency.js'
import type { Target } from './measure.js'
import { checkTarget } from './measure.js'

export interface SpikeOptions {
  readonly rateStart: number
  readonly rateFactor: number
  readonly rateMax: number
  readonly stepSeconds: number
  readonly p99Ms: number
  readonly connections: number
  readonly warmupS: number
  readonly pauseMs: number
  readonly loadCpu: number | null
  readonly log: (line: string) => void
  readonly progress: (done: number, total: number, label: string) => void
  /** `h2load` (default when installed) or `node` (the in-process open loop). */
  readonly generator?: 'h2load' | 'node'
}

export interface SpikeStep {
  readonly rate: number
  readonly load: OpenLoopResult
  /** Server CPU per answered request (µs) and the server's share of its core (%). */
  readonly cpuUsPerReq: number | null
  readonly serverCorePct: number | null
  /** flashgate's own latency per outcome over the step (null for peers). */
  readonly serverLatency: Record<string, ServerLatency> | null
  readonly generatorHealth: GeneratorHealth
  /** p99 ≤ bound, nothing lost, every answer the expected status, generator not saturated. */
  readonly held: boolean
  readonly why: string | null
}

export interface SpikeTarget {
  readonly target: string
  readonly kind: 'flashgate' | 'peer'
  readonly role: string
  readonly steps: readonly SpikeStep[]
  /** Highest arrival rate that held the bound (null: not even the first step). */
  readonly bestRate: number | null
  /** Why the stepping stopped. */
  readonly stoppedBy: string
  /** The stop was the generator's, not the server's: bestRate is a lower bound. */
  readonly generatorBound: boolean
  /** Answers with a status other than the target's expected one, over every step. */
  readonly unexpected: number
}

export interface SpikeResult {
  /** What made the arrivals (h2load on the load core, or the bench's own open loop). */
  readonly generator?: string
  readonly p99Ms: number
  readonly stepSeconds: number
  readonly connections: number
  readonly targets: readonly SpikeTarget[]
}

/** The rates stepped through: start, start × factor, … up to max (rounded to 10/s). */
export function spikeRates (start: number, factor: number, max: number): number[] {
  const out: number[] = []
  for (let r = start; r <= max * 1.0001 && out.length < 100; r *= factor) {
    const v = Math.max(1, Math.round(r / 10) * 10)
    if (out[out.length - 1] !== v) out.push(v)
  }
  return out
}

/** Whether a step held the bound, and if not, why (pure: the tests use it). */
export function judgeStep (load: OpenLoopResult, expectStatus: number, p99Ms: number, gen: GeneratorHealth, lostAllowed = 0): { held: boolean, why: string | null, generator: boolean } {
  const unexpected = Object.entries(load.statuses).filter(([s]) => Number(s) !== expectStatus).reduce((a, [, n]) => a + n, 0)
  if (gen.saturated) return { held: false, why: `generator saturated: ${gen.why ?? ''}`, generator: true }
  if (load.lost > lostAllowed) return { held: false, why: `${load.lost} of ${load.intended} requests unanswered`, generator: false }
  if (unexpected > 0) return { held: false, why: `${unexpected} answers other than ${expectStatus}`, generator: false }
  if (load.latencyMs.p99 > p99Ms) return { held: false, why: `p99 ${load.latencyMs.p99.toFixed(1)} ms > ${p99Ms} ms`, generator: false }
  return { held: true, why: null, generator: false }
}

/** Use h2load for this run: asked for (or by default) when installed and the requests suit it. */
function h2load (o: SpikeOptions, lo: OpenLoopOptions): boolean {
  return (o.generator ?? 'h2load') === 'h2load' && which('h2load') !== null && h2loadCannot(lo) === null
}

async function step (t: Target, rate: number, o: SpikeOptions): Promise<SpikeStep> {
  const metA = t.admin === null ? null : await scrape(t.admin)
  const cpuA = t.pid === null ? null : cpuMicros(t.pid)
  const w0 = performance.now()
  const lo: OpenLoopOptions = { baseUrl: t.baseUrl, requests: t.requests, rate, seconds: o.stepSeconds, connections: o.connections }
  const c = h2load(o, lo)
  const watch = watchGenerator(c ? 'h2load (C, reaped child)' : 'open loop (net)', { inProcess: !c, loadCpu: o.loadCpu })
  const load = c ? await runH2loadOpenLoop(lo, o.loadCpu === null ? null : String(o.loadCpu)) : await runOpenLoop(lo)
  const gen = watch.stop()
  const wallUs = (performance.now() - w0) * 1000
  const cpuB = t.pid === null ? null : cpuMicros(t.pid)
  const metB = t.admin === null ? null : await scrape(t.admin)
  // h2load's clients start a little late (bench/load/h2load.ts): up to 2 % of what was due may be missing.
  const j = judgeStep(load, t.expectStatus, o.p99Ms, gen, c ? Math.floor(load.intended * (1 - KEPT_UP)) : 0)
  return {
    rate,
    load,
    cpuUsPerReq: cpuA !== null && cpuB !== null && load.answered > 0 ? (cpuB - cpuA) / load.answered : null,
    serverCorePct: cpuA !== null && cpuB !== null && wallUs > 0 ? Math.round(1000 * (cpuB - cpuA) / wallUs) / 10 : null,
    serverLatency: serverLatency(metA, metB, t.route),
    generatorHealth: gen,
    held: j.held,
    why: j.why
  }
}

export async function runSpike (targets: readonly Target[], o: SpikeOptions): Promise<SpikeResult> {
  const failed: string[] = []
  for (const t of targets) {
    const err = await checkTarget(t)
    if (err !== null) failed.push(`${t.name}: ${err}`)
  }
  if (failed.length > 0) throw new Error(`targets failed their check, nothing measured:\n  ${failed.join('\n  ')}`)
  const rates = spikeRates(o.rateStart, o.rateFactor, o.rateMax)
  const out: SpikeTarget[] = []
  let done = 0
  const total = targets.length * (o.warmupS + rates.length * o.stepSeconds)
  for (const t of targets) {
    if (o.warmupS > 0) {
      o.progress(done, total, `spike warm-up ${t.name}`)
      const lo: OpenLoopOptions = { baseUrl: t.baseUrl, requests: t.requests, rate: rates[0] ?? o.rateStart, seconds: o.warmupS, connections: o.connections }
      if (h2load(o, lo)) await runH2loadOpenLoop(lo, o.loadCpu === null ? null : String(o.loadCpu)); else await runOpenLoop(lo)
      done += o.warmupS
      if (o.pauseMs > 0) await sleep(o.pauseMs)
    }
    const steps: SpikeStep[] = []
    let stoppedBy = `reached --rate-max ${o.rateMax}/s`
    let generatorBound = false
    for (const rate of rates) {
      o.progress(done, total, `spike ${t.name} ${rate}/s`)
      const s = await step(t, rate, o)
      steps.push(s)
      done += o.stepSeconds
      const sp = s.serverLatency === null ? '' : `  gateway p99 ${Object.entries(s.serverLatency).map(([k, v]) => `${k} ${v.p99?.toFixed(2) ?? '–'}`).join(', ')} ms`
      o.log(`  spike   ${t.name.padEnd(22)} ${String(rate).padStart(7)}/s  answered ${String(s.load.answered).padStart(7)}/${s.load.intended}  p50 ${s.load.latencyMs.p50.toFixed(2)} p99 ${s.load.latencyMs.p99.toFixed(2)} ms (service p99 ${s.load.serviceMs.p99.toFixed(2)})${sp}  server ${s.serverCorePct?.toFixed(0) ?? '–'} %  gen ${s.generatorHealth.cpuPct?.toFixed(0) ?? '–'} %  ${s.held ? 'held' : `NOT held: ${s.why ?? ''}`}`)
      if (o.pauseMs > 0) await sleep(o.pauseMs)
      if (!s.held) {
        stoppedBy = s.why ?? 'not held'
        generatorBound = s.generatorHealth.saturated
        break
      }
    }
    const held = steps.filter((s) => s.held)
    const unexpected = steps.reduce((a, s) => a + Object.entries(s.load.statuses).filter(([st]) => Number(st) !== t.expectStatus).reduce((x, [, n]) => x + n, 0), 0)
    out.push({ target: t.name, kind: t.kind, role: t.role, steps, bestRate: held.length > 0 ? (held[held.length - 1]?.rate ?? null) : null, stoppedBy, generatorBound, unexpected })
  }
  const gen = out.flatMap((t) => t.steps.map((s) => s.generatorHealth.generator))
  const generator = [...new Set(gen)].join(' / ') || 'none'
  return { generator, p99Ms: o.p99Ms, stepSeconds: o.stepSeconds, connections: o.connections, targets: out }
}
