/**
 * Throughput targets measured in interleaved rounds (A B C A B C ...), so slow drift of the machine hits
 * every target alike and ratios are taken within a round (then the median over rounds), as the peers
 * kit does. Around every run: the server's CPU time (/proc/PID/stat, the whole process tree for
 * `--workers`), CPU-0 busy share, Redis `INFO commandstats`, and for flashgate its /metrics (answers by
 * outcome, store operations, and a per-second timeline while wrk runs).
 */
import { request } from 'undici'
import { runAutocannon } from './load/autocannon.js'
import type { LoadResult, RequestSpec, TimelinePoint } from './load/types.js'
import { GeneratorFailed, runWrk } from './load/wrk.js'
import { bucketPercentile, byOutcome, deltaMap, scrape } from './prom.js'
import type { GatewayCounters } from './prom.js'
import { cpuMicros, cpuTicks, sleep } from './proc.js'
import { commandDelta, scriptCalls, sumCommands } from './redis-stats.js'
import { watchGenerator } from './generator-health.js'
import type { GeneratorHealth } from './generator-health.js'
import { serverLatency } from './server-latency.js'
import type { ServerLatency } from './server-latency.js'
import type { RedisProbe } from './redis-stats.js'

export interface Target {
  readonly name: string
  readonly kind: 'flashgate' | 'peer'
  readonly role: string
  readonly baseUrl: string
  readonly requests: readonly RequestSpec[]
  readonly expectStatus: number
  readonly bodyFragment: string
  /** The measured server's PID (CPU per request), when known. */
  readonly pid: number | null
  /** flashgate's admin base URL, for /metrics. */
  readonly admin: string | null
  /** The Redis this target talks to, for commands per request. */
  readonly redis: RedisProbe | null
  /** Route name in flashgate's metrics (to pick this target's answers from /metrics). */
  readonly route: string | null
  /**
   * A request of the list may be sent again only after this many seconds (the dedupe TTL of the funnel
   * steps with dedupe); unset when repeats are harmless. The run checks its list lasted that long.
   */
  readonly repeatAfterS?: number
}

export interface Run {
  readonly round: number | 'warmup'
  readonly target: string
  readonly load: LoadResult
  /** Server CPU time per answered request, µs. */
  readonly cpuUsPerReq: number | null
  readonly cpu0BusyPct: number | null
  readonly redisCommands: Record<string, number> | null
  readonly redisCommandsPerReq: number | null
  /** Scripts (EVALSHA/EVAL/FCALL) per request: client round trips for a store made of scripts. */
  readonly redisScriptsPerReq: number | null
  /** Store operations per request, from flashgate's own metrics. */
  readonly storeOpsPerReq: number | null
  /** redis-server CPU per request (µs, INFO cpu), for the capacity model's shards. */
  readonly redisCpuUsPerReq?: number | null
  /** flashgate's answers by outcome during the run (passed or a reject code). */
  readonly outcomes: Record<string, number> | null
  readonly timeline: readonly TimelinePoint[] | null
  /** flashgate's own latency per outcome over the run (its histogram), beside the client's. */
  readonly serverLatency?: Record<string, ServerLatency> | null
  /** The generator's CPU (and event-loop lag when in process): was it the bottleneck? */
  readonly generatorHealth?: GeneratorHealth
}

export interface MeasureOptions {
  readonly generator: 'wrk' | 'autocannon'
  readonly connections: number
  readonly seconds: number
  readonly warmupS: number
  readonly rounds: number
  /** Pause after every run, ms, for the server to settle (connections closed, timers fired). */
  readonly pauseMs: number
  /** CPU list for wrk. */
  readonly loadCpus: string | null
  /** CPU whose busy share is reported (the server core), or null. */
  readonly serverCpu: number | null
  /** The load core, for the generator's health (its busy share), or null. */
  readonly loadCpu?: number | null
  readonly log: (line: string) => void
  readonly progress: (done: number, total: number, label: string) => void
}

/** Check a target answers as expected (a limiter may let its first requests through: 3 tries). */
export async function checkTarget (t: Target): Promise<string | null> {
  let last = ''
  for (let i = 0; i < 3; i++) {
    // From the end of the list: a run starts from its head, and a user checked here (dedupe mark) must
    // not be the run's first.
    const r = t.requests[Math.max(0, t.requests.length - 1 - i)]
    if (r === undefined) return 'no request'
    try {
      const res = await request(t.baseUrl + r.path, { method: r.method as 'GET', headers: r.headers ?? {}, body: r.body ?? null, headersTimeout: 5000, bodyTimeout: 5000 })
      const text = await res.body.text()
      if (res.statusCode === t.expectStatus && text.includes(t.bodyFragment)) return null
      last = `${res.statusCode} ${text.slice(0, 160)}`
    } catch (err) {
      last = (err as Error).message
    }
  }
  return `expected ${t.expectStatus} and "${t.bodyFragment}", got ${last}`
}

async function measureOnce (t: Target, o: MeasureOptions, round: number | 'warmup', seconds: number, onTick: (s: number) => void): Promise<Run> {
  const cpu0 = o.serverCpu === null ? null : cpuTicks(o.serverCpu)
  const cpuA = t.pid === null ? null : cpuMicros(t.pid)
  const redisA = t.redis === null ? null : await t.redis.commandStats()
  const redisCpuA = t.redis === null ? null : await t.redis.cpuMicros()
  const metA = t.admin === null ? null : await scrape(t.admin)
  // Per-second samples of flashgate's metrics while the load runs (wrk has no per-second output).
  const samples: Array<{ t: number, c: GatewayCounters }> = []
  let sampling = t.admin !== null && o.generator === 'wrk'
  // Ends the sampler's wait at once when the load is done (else a 1 s run would take 2 s).
  let wake = (): void => {}
  const done = new Promise<void>((resolve) => { wake = resolve })
  const t0 = performance.now()
  const sampler = (async () => {
    let prevTick = 0
    while (sampling) {
      let timer: NodeJS.Timeout | undefined
      await Promise.race([done, new Promise<void>((resolve) => { timer = setTimeout(resolve, 1000 - ((performance.now() - t0) % 1000)) })])
      clearTimeout(timer)
      if (!sampling || t.admin === null) break
      const c = await scrape(t.admin)
      const el = (performance.now() - t0) / 1000
      if (c !== null) samples.push({ t: Math.round(el * 10) / 10, c })
      if (Math.floor(el) > prevTick) { prevTick = Math.floor(el); onTick(prevTick) }
    }
  })()
  let load: LoadResult
  const watch = watchGenerator(o.generator, { inProcess: o.generator === 'autocannon', loadCpu: o.loadCpu ?? null })
  try {
    load = o.generator === 'wrk'
      ? await runWrk({ baseUrl: t.baseUrl, requests: t.requests, connections: o.connections, seconds, cpus: o.loadCpus })
      : await runAutocannon({ baseUrl: t.baseUrl, requests: t.requests, connections: o.connections, seconds, onTick })
  } finally {
    sampling = false
    wake()
    await sampler
  }
  const generatorHealth = watch.stop()
  const cpuB = t.pid === null ? null : cpuMicros(t.pid)
  const cpu0b = o.serverCpu === null ? null : cpuTicks(o.serverCpu)
  const redisB = t.redis === null ? null : await t.redis.commandStats()
  const redisCpuB = t.redis === null ? null : await t.redis.cpuMicros()
  const metB = t.admin === null ? null : await scrape(t.admin)
  const n = load.answered
  const cmds = commandDelta(redisA, redisB)
  const cmdSum = sumCommands(cmds)
  let outcomes: Record<string, number> | null = null
  let storeOps: number | null = null
  if (metA !== null && metB !== null) {
    const req = deltaMap(metA.requests, metB.requests)
    const mine = new Map([...req].filter(([k]) => t.route === null || k.startsWith(`${t.route}|`)))
    outcomes = byOutcome(mine)
    storeOps = [...deltaMap(metA.storeOps, metB.storeOps).values()].reduce((a, b) => a + b, 0)
  }
  let timeline = load.timeline
  if (timeline === null && metA !== null && samples.length > 0) {
    const tl: TimelinePoint[] = []
    timeline = tl
    let prev: GatewayCounters = metA
    for (const s of samples) {
      const outs: Record<string, { count: number, p99: number | null }> = {}
      const d = deltaMap(prev.requests, s.c.requests)
      for (const [k, v] of d) {
        if (t.route !== null && !k.startsWith(`${t.route}|`)) continue
        const outcome = k.slice(k.indexOf('|') + 1)
        const b = s.c.buckets.get(k)
        const p99 = b === undefined ? null : bucketPercentile(prev.buckets.get(k), b, 99)
        const cur = outs[outcome]
        outs[outcome] = { count: (cur?.count ?? 0) + v, p99: p99 === null ? (cur?.p99 ?? null) : Math.round(p99 * 1000) / 1000 }
      }
      tl.push({ t: s.t, outcomes: outs })
      prev = s.c
    }
  }
  return {
    round,
    target: t.name,
    load,
    cpuUsPerReq: cpuA !== null && cpuB !== null && n > 0 ? (cpuB - cpuA) / n : null,
    cpu0BusyPct: cpu0 !== null && cpu0b !== null && cpu0b.total > cpu0.total ? 100 * (1 - (cpu0b.idle - cpu0.idle) / (cpu0b.total - cpu0.total)) : null,
    redisCommands: cmds,
    redisCommandsPerReq: cmdSum !== null && n > 0 ? cmdSum / n : null,
    redisScriptsPerReq: cmds !== null && n > 0 ? scriptCalls(cmds) / n : null,
    storeOpsPerReq: storeOps !== null && n > 0 ? storeOps / n : null,
    redisCpuUsPerReq: redisCpuA !== null && redisCpuB !== null && n > 0 ? (redisCpuB - redisCpuA) / n : null,
    outcomes,
    timeline,
    serverLatency: serverLatency(metA, metB, t.route),
    generatorHealth
  }
}

/** Check every target, warm each up once, then `rounds` rounds over all of them in order. */
export async function measure (targets: readonly Target[], o: MeasureOptions): Promise<Run[]> {
  const failed: string[] = []
  for (const t of targets) {
    const err = await checkTarget(t)
    if (err !== null) failed.push(`${t.name} (${t.baseUrl}${t.requests[0]?.path ?? ''}): ${err}`)
    else o.log(`  ok    ${t.name}`)
  }
  if (failed.length > 0) throw new Error(`targets failed their check, nothing measured:\n  ${failed.join('\n  ')}`)
  const runs: Run[] = []
  const pauseS = o.pauseMs / 1000
  const total = targets.length * ((o.warmupS > 0 ? o.warmupS + pauseS : 0) + o.rounds * (o.seconds + pauseS))
  let done = 0
  const one = async (t: Target, round: number | 'warmup', secs: number): Promise<void> => {
    const base = done
    const label = `${round === 'warmup' ? 'warm-up' : `round ${round}/${o.rounds}`} ${t.name}`
    o.progress(base, total, label)
    let r: Run
    try {
      r = await measureOnce(t, o, round, secs, (s) => { o.progress(base + s, total, label) })
    } catch (err) {
      // Once more, from a clean start (bounded: a second failure ends the bench).
      if (!(err instanceof GeneratorFailed)) throw err
      o.log(`  ${String(round).padEnd(7)} ${t.name.padEnd(28)} ${err.message.trim()}; measuring this run once more`)
      await sleep(Math.max(o.pauseMs, 1000))
      r = await measureOnce(t, o, round, secs, (s) => { o.progress(base + s, total, label) })
    }
    runs.push(r)
    done = base + secs + pauseS
    o.progress(done, total, label)
    const f = (x: number | null, d = 1): string => x === null ? '–' : x.toFixed(d)
    o.log(`  ${String(round).padEnd(7)} ${t.name.padEnd(28)} ${r.load.rps.toFixed(0).padStart(7)} rps  p50 ${f(r.load.latencyMs.p50, 2).padStart(7)} ms  p99 ${f(r.load.latencyMs.p99, 2).padStart(7)} ms  non-2xx ${String(r.load.non2xx).padStart(8)}  lost ${r.load.lost}  cpu ${f(r.cpuUsPerReq)} µs/req${r.redisCommandsPerReq !== null ? `  redis ${f(r.redisCommandsPerReq, 3)} cmd/req` : ''}`)
    if (o.pauseMs > 0) await sleep(o.pauseMs) // let the server settle before the next target
  }
  if (o.warmupS > 0) for (const t of targets) await one(t, 'warmup', o.warmupS)
  for (let r = 1; r <= o.rounds; r++) for (const t of targets) await one(t, r, o.seconds)
  return runs
}

const median = (xs: ReadonlyArray<number | null>): number | null => {
  const s = xs.filter((x): x is number => x !== null && Number.isFinite(x)).sort((a, b) => a - b)
  if (s.length === 0) return null
  const m = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? (s[m] ?? null) : ((s[m - 1] ?? 0) + (s[m] ?? 0)) / 2
}

export interface TargetSummary {
  readonly target: string
  readonly kind: 'flashgate' | 'peer'
  readonly role: string
  readonly rounds: number
  readonly rps: number | null
  readonly rpsMin: number | null
  readonly rpsMax: number | null
  readonly p50: number | null
  readonly p99: number | null
  readonly p999: number | null
  readonly cpuUsPerReq: number | null
  readonly cpu0BusyPct: number | null
  readonly non2xxPct: number | null
  readonly lost: number
  readonly redisCommandsPerReq: number | null
  readonly redisScriptsPerReq: number | null
  readonly storeOpsPerReq: number | null
  readonly outcomes: Record<string, number> | null
  readonly redisCpuUsPerReq?: number | null
  /** Median over rounds of flashgate's own p99 (ms) per outcome. */
  readonly serverP99?: Record<string, number | null> | null
  /** Median over rounds of the generator's CPU (% of a core), and whether any run saturated it. */
  readonly generatorCpuPct?: number | null
  readonly generatorSaturated?: boolean
}

export function summarise (targets: readonly Target[], runs: readonly Run[]): TargetSummary[] {
  return targets.map((t) => {
    const rs = runs.filter((r) => r.target === t.name && r.round !== 'warmup')
    const rps = rs.map((r) => r.load.rps)
    const outcomes: Record<string, number> = {}
    let any = false
    for (const r of rs) for (const [k, v] of Object.entries(r.outcomes ?? {})) { any = true; outcomes[k] = (outcomes[k] ?? 0) + v }
    return {
      target: t.name,
      kind: t.kind,
      role: t.role,
      rounds: rs.length,
      rps: median(rps),
      rpsMin: rps.length > 0 ? Math.min(...rps) : null,
      rpsMax: rps.length > 0 ? Math.max(...rps) : null,
      p50: median(rs.map((r) => r.load.latencyMs.p50)),
      p99: median(rs.map((r) => r.load.latencyMs.p99)),
      p999: median(rs.map((r) => r.load.latencyMs.p999)),
      cpuUsPerReq: median(rs.map((r) => r.cpuUsPerReq)),
      cpu0BusyPct: median(rs.map((r) => r.cpu0BusyPct)),
      non2xxPct: median(rs.map((r) => r.load.answered > 0 ? (100 * r.load.non2xx) / r.load.answered : null)),
      lost: rs.reduce((a, r) => a + r.load.lost, 0),
      redisCommandsPerReq: median(rs.map((r) => r.redisCommandsPerReq)),
      redisScriptsPerReq: median(rs.map((r) => r.redisScriptsPerReq)),
      storeOpsPerReq: median(rs.map((r) => r.storeOpsPerReq)),
      outcomes: any ? outcomes : null,
      redisCpuUsPerReq: median(rs.map((r) => r.redisCpuUsPerReq ?? null)),
      serverP99: serverP99Of(rs),
      generatorCpuPct: median(rs.map((r) => r.generatorHealth?.cpuPct ?? null)),
      generatorSaturated: rs.some((r) => r.generatorHealth?.saturated === true)
    }
  })
}

function serverP99Of (rs: readonly Run[]): Record<string, number | null> | null {
  const keys = new Set(rs.flatMap((r) => Object.keys(r.serverLatency ?? {})))
  if (keys.size === 0) return null
  const out: Record<string, number | null> = {}
  for (const k of keys) out[k] = median(rs.map((r) => r.serverLatency?.[k]?.p99 ?? null))
  return out
}

/** rps(target) / rps(reference), taken within each round, then the median. */
export function ratio (runs: readonly Run[], target: string, reference: string): number | null {
  const out: number[] = []
  const rounds = new Set(runs.filter((r) => r.round !== 'warmup').map((r) => r.round))
  for (const round of rounds) {
    const a = runs.find((r) => r.round === round && r.target === target)
    const b = runs.find((r) => r.round === round && r.target === reference)
    if (a !== undefined && b !== undefined && b.load.rps > 0) out.push(a.load.rps / b.load.rps)
  }
  return median(out)
}
