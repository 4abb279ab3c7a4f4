/**
 * `--scenario capacity`, second half: the model checked against a measured run. After the scenario has
 * priced each outcome on one worker (fg-soldout, fg-reject-429, fg-quota-redis, closed loop), a gateway
 * with `--workers 2` (default; `--server-cpus` says where it runs) is driven with one request list in
 * the plan's outcome mix, and the model's prediction for the rate that run reached — gateway cores =
 * rate × Σ share × µs, Redis cores likewise — is set beside the CPU the gateway's process tree and
 * redis-server actually used. The shares are the ones the gateway's metrics counted in that run.
 */
import { join } from 'node:path'
import { CAMPAIGN, newSecrets, startGateway, startRedis, throughputConfig } from './flashgate.js'
import type { OutcomeCost } from './capacity.js'
import { watchGenerator } from './generator-health.js'
import type { GeneratorHealth } from './generator-health.js'
import { runAutocannon } from './load/autocannon.js'
import type { RequestSpec } from './load/types.js'
import { runWrk } from './load/wrk.js'
import { byOutcome, deltaMap, scrape } from './prom.js'
import { cpuMicros, freePort, stop } from './proc.js'
import { RedisProbe } from './redis-stats.js'
import { startUpstream } from './upstream.js'

export interface CapacityCheck {
  readonly workers: number
  readonly serverCpus: string | null
  readonly seconds: number
  readonly requestsPerSec: number
  /**
   * The rate the model predicts for this mix on the CPU the gateway actually had in the run (its
   * measured cores × 1e6 ÷ the predicted µs per request): on a machine it shares, a core's share is what
   * it gets, so this is the prediction a measured rate can be held to.
   */
  readonly requestsPerSecPredicted: number | null
  /** (measured − predicted) / predicted rate, %. */
  readonly rateErrorPct: number | null
  readonly answered: number
  readonly lost: number
  /** Shares by outcome as the gateway counted them in this run. */
  readonly measuredMix: Record<string, number>
  readonly gatewayUsPerReqPredicted: number | null
  readonly gatewayUsPerReqMeasured: number | null
  readonly gatewayCoresPredicted: number | null
  readonly gatewayCoresMeasured: number | null
  /** (measured − predicted) / predicted, %. */
  readonly gatewayErrorPct: number | null
  /** The prediction with the process's cost at rest added (idle cores + rate × µs), and its error, %. */
  readonly gatewayCoresPredictedWithIdle?: number | null
  readonly gatewayWithIdleErrorPct?: number | null
  /** The gateway's CPU at rest (cores, 2 s without load, after the warm-up): the fixed cost the model leaves out. */
  readonly gatewayIdleCores: number | null
  readonly redisCoresPredicted: number | null
  readonly redisCoresMeasured: number | null
  readonly redisErrorPct: number | null
  readonly generatorHealth: GeneratorHealth
  readonly notes: readonly string[]
}

/** Paths of the throughput config per outcome. */
const PATH_OF: Readonly<Record<string, string>> = {
  SOLD_OUT: `/soldout/${CAMPAIGN}/soldout`,
  RATE_LIMITED: '/deny',
  passed: `/quota/${CAMPAIGN}/big`
}

/** A list of `n` requests in the mix, interleaved evenly (largest remainder first at every slot). */
export function mixList (mix: Readonly<Record<string, number>>, n = 100): RequestSpec[] {
  const out: RequestSpec[] = []
  const owed = new Map(Object.keys(mix).map((k) => [k, 0]))
  for (let i = 0; i < n; i++) {
    let best = ''
    let bestV = -Infinity
    for (const [k, share] of Object.entries(mix)) {
      const v = (owed.get(k) ?? 0) + share
      owed.set(k, v)
      if (v > bestV) { best = k; bestV = v }
    }
    owed.set(best, (owed.get(best) ?? 0) - 1)
    const path = PATH_OF[best]
    if (path === undefined) throw new Error(`capacity: no request for outcome ${best} (known: ${Object.keys(PATH_OF).join(', ')})`)
    out.push({ method: 'GET', path })
  }
  return out
}

const err = (m: number | null, p: number | null): number | null => m === null || p === null || p <= 0 ? null : Math.round(1000 * (m - p) / p) / 10

export async function capacityCheck (o: {
  readonly dir: string
  readonly mix: Readonly<Record<string, number>>
  readonly costs: readonly OutcomeCost[]
  readonly workers: number
  /** The listener and upstream client the one-worker runs were priced on (bench --parser, --client). */
  readonly parser: 'node' | 'strict'
  readonly client: 'undici' | 'raw'
  readonly seconds: number
  readonly warmupS: number
  readonly connections: number
  readonly generator: 'wrk' | 'autocannon'
  readonly cpus: { server: string | null, load: string | null }
  readonly loadCpu: number | null
  readonly redis: boolean
  readonly log: (m: string) => void
}): Promise<CapacityCheck> {
  const notes: string[] = []
  const up = await startUpstream(join(o.dir, 'upstream-capacity'), o.cpus.load)
  const redis = o.redis ? await startRedis(o.dir, 'redis-capacity', o.cpus.load) : null
  const [listen, admin] = [await freePort(), await freePort()]
  const yaml = throughputConfig({ listen, admin, upstream: up.url, store: redis === null ? { kind: 'memory', url: null } : { kind: 'redis', url: redis.url }, secrets: newSecrets(), verifyUrl: 'http://127.0.0.1:9/never-called', workers: o.workers, funnelSteps: 0, parser: o.parser, client: o.client })
  const gw = await startGateway({ dir: o.dir, name: 'gateway-capacity', yaml, listen, admin, workers: o.workers, cpus: o.cpus.server })
  o.log(`bench: capacity check, gateway ${gw.url} with ${o.workers} workers${o.cpus.server !== null ? ` on CPU ${o.cpus.server}` : ''}, the mix ${Object.entries(o.mix).map(([k, v]) => `${k} ${(v * 100).toFixed(1)} %`).join(', ')}`)
  const probe = redis === null ? null : new RedisProbe(redis.url)
  const requests = mixList(o.mix)
  const drive = async (seconds: number): Promise<{ answered: number, lost: number, rps: number }> => {
    const r = o.generator === 'wrk'
      ? await runWrk({ baseUrl: gw.url, requests, connections: o.connections, seconds, cpus: null })
      : await runAutocannon({ baseUrl: gw.url, requests, connections: o.connections, seconds, onTick: () => {} })
    return { answered: r.answered, lost: r.lost, rps: r.rps }
  }
  try {
    if (o.warmupS > 0) await drive(o.warmupS)
    // At rest: timers, metrics, the cluster primary — what a process costs with no request at all.
    const idleA = cpuMicros(gw.proc.pid)
    const i0 = performance.now()
    await new Promise((resolve) => setTimeout(resolve, 2000))
    const idleCores = (cpuMicros(gw.proc.pid) - idleA) / ((performance.now() - i0) * 1000)
    const metA = await scrape(gw.admin)
    const cpuA = cpuMicros(gw.proc.pid)
    const rA = probe === null ? null : await probe.cpuMicros()
    const t0 = performance.now()
    const watch = watchGenerator(o.generator, { inProcess: o.generator === 'autocannon', loadCpu: o.loadCpu })
    const load = await drive(o.seconds)
    const gen = watch.stop()
    const wallUs = (performance.now() - t0) * 1000
    const cpuB = cpuMicros(gw.proc.pid)
    const rB = probe === null ? null : await probe.cpuMicros()
    const metB = await scrape(gw.admin)
    const outcomes = metA !== null && metB !== null ? byOutcome(deltaMap(metA.requests, metB.requests)) : {}
    const counted = Object.values(outcomes).reduce((a, b) => a + b, 0)
    const measuredMix: Record<string, number> = {}
    for (const [k, v] of Object.entries(outcomes)) measuredMix[k] = counted > 0 ? v / counted : 0
    // Predicted per request: the measured shares × the one-worker costs (outcomes the model does not
    // price, e.g. CLIENT_ABORTED at the end of a run, are left out and said).
    let us = 0
    let rus: number | null = 0
    let priced = 0
    for (const [k, share] of Object.entries(measuredMix)) {
      const c = o.costs.find((x) => x.outcome === k)
      if (c === undefined) { if (share > 0.001) notes.push(`${k}: ${(share * 100).toFixed(2)} % of the answers, not priced by the model`); continue }
      priced += share
      us += share * c.gatewayUsPerReq
      rus = rus === null || c.redisUsPerReq === null ? null : rus + share * c.redisUsPerReq
    }
    const usPred = priced > 0 ? us / priced : null
    const rusPred = priced > 0 && rus !== null ? rus / priced : null
    const rate = load.rps
    const coresPred = usPred === null ? null : rate * usPred / 1e6
    const coresMeas = wallUs > 0 ? (cpuB - cpuA) / wallUs : null
    const redisPred = rusPred === null ? null : rate * rusPred / 1e6
    const redisMeas = rA !== null && rB !== null && wallUs > 0 ? (rB - rA) / wallUs : null
    if (coresPred !== null && coresMeas !== null && coresMeas > coresPred * 1.25) notes.push(`measured is above predicted: the model prices requests only (cores ∝ rate), while a process also costs ${idleCores.toFixed(3)} cores at rest here; at low rates (a loaded machine) that fixed cost, and time the kernel spends on a CPU shared with other work, weigh in both the one-worker µs and this run`)
    if (gen.saturated) notes.push(`the generator saturated (${gen.why ?? ''}): the rate is the generator's bound; the CPU comparison still holds at that rate`)
    const round = (x: number | null, d = 3): number | null => x === null ? null : Math.round(x * 10 ** d) / 10 ** d
    return {
      workers: o.workers,
      serverCpus: o.cpus.server,
      seconds: o.seconds,
      requestsPerSec: Math.round(rate),
      requestsPerSecPredicted: usPred === null || coresMeas === null || usPred <= 0 ? null : Math.round(coresMeas * 1e6 / usPred),
      rateErrorPct: usPred === null || coresMeas === null || usPred <= 0 ? null : err(rate, coresMeas * 1e6 / usPred),
      answered: load.answered,
      lost: load.lost,
      measuredMix,
      gatewayUsPerReqPredicted: round(usPred, 1),
      gatewayUsPerReqMeasured: round(load.answered > 0 ? (cpuB - cpuA) / load.answered : null, 1),
      gatewayCoresPredicted: round(coresPred),
      gatewayCoresMeasured: round(coresMeas),
      gatewayErrorPct: err(coresMeas, coresPred),
      gatewayCoresPredictedWithIdle: coresPred === null ? null : round(coresPred + idleCores),
      gatewayWithIdleErrorPct: coresPred === null ? null : err(coresMeas, coresPred + idleCores),
      gatewayIdleCores: round(idleCores),
      redisCoresPredicted: round(redisPred),
      redisCoresMeasured: round(redisMeas),
      redisErrorPct: err(redisMeas, redisPred),
      generatorHealth: gen,
      notes
    }
  } finally {
    await probe?.close()
    await stop(gw.proc)
    if (redis !== null) await stop(redis.proc)
    await stop(up.proc)
  }
}
