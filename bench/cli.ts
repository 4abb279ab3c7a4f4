/**
 * `flashgate bench`: runs a scenario against a self-started (or running) stack, checks correctness,
 * optionally measures the peers kit in the same interleaved rounds, prints a table and writes
 * JSON + SVG + markdown. `gateway/cli.ts` imports this module and calls `main(args)`.
 */
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, isAbsolute, join, resolve } from 'node:path'
import { loadConfigFile, formatErrors } from '../conf/load.js'
import { ROOT, flashgateCommand, newSecrets, startGateway, startRedis, throughputConfig } from './flashgate.js'
import { measure, ratio, summarise } from './measure.js'
import type { Run, Target, TargetSummary } from './measure.js'
import { KIT_ORIGIN, KIT_REDIS, PEER_TARGETS, kitMissing, prepareKit, startKit } from './peers.js'
import { USAGE, parseOptions } from './options.js'
import { UsageError } from '../gateway/cli-args.js'
import type { BenchOptions } from './options.js'
import { canPin, freePort, pinSelf, start, stopAll, waitPort, which } from './proc.js'
import { createProgress } from './progress.js'
import type { Progress } from './progress.js'
import { RedisProbe } from './redis-stats.js'
import { machineInfo, markdown } from './report.js'
import type { ComparisonRow, FunnelCost, Report } from './report.js'
import { runSale } from './sale.js'
import type { SaleResult } from './sale.js'
import { startUpstream } from './upstream.js'
import { COMPARISONS, FUNNEL_STEPS, PEERS_OF, flashgateTargets, peerTargets } from './targets.js'
import { faultsTable, runFaults } from './faults.js'
import { chart } from './svg.js'
import { runWaitingRoom, waitingRoomChecks, waitingRoomTable } from './waiting-room.js'
import type { TimelinePoint } from './load/types.js'
import { runSpike } from './spike.js'
import { costsFromReport, plan } from './capacity.js'
import type { Plan } from './capacity.js'
import { capacityCheck } from './capacity-run.js'
import type { CapacityCheck } from './capacity-run.js'
import type { SpikeResult } from './spike.js'

interface Ctx {
  readonly o: BenchOptions
  readonly dir: string
  readonly p: Progress
  readonly missing: string[]
  readonly cpus: { server: string | null, load: string | null }
  readonly serverCpu: number | null
  readonly loadCpu: number | null
  generator: 'wrk' | 'autocannon'
}

/** Entry point; resolves with the exit code. */
export async function main (args: string[]): Promise<number> {
  let o: BenchOptions
  try {
    o = parseOptions(args)
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`flashgate bench: ${err.message} (see flashgate bench --help)\n`)
      return 2
    }
    throw err
  }
  if (o.help) {
    process.stdout.write(USAGE)
    return 0
  }
  const p = createProgress(process.stderr, o.quiet)
  const onSignal = (sig: NodeJS.Signals): void => {
    p.end()
    process.stderr.write(`flashgate bench: ${sig}, stopping everything it started\n`)
    void stopAll().finally(() => process.exit(sig === 'SIGINT' ? 130 : 143))
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  try {
    return await benchmark(o, p, args)
  } catch (err) {
    p.end()
    process.stderr.write(`flashgate bench: ${(err as Error).message}\n`)
    return 1
  } finally {
    p.end()
    await stopAll()
    process.removeListener('SIGINT', onSignal)
    process.removeListener('SIGTERM', onSignal)
  }
}

async function benchmark (o: BenchOptions, p: Progress, args: readonly string[]): Promise<number> {
  const started = new Date()
  // The bench, its load generators, Redis and the origins run on the load core; the server under test
  // is started on the server core. Children inherit this process's affinity.
  const pinned = canPin && pinSelf(o.loadCpus)
  const cpus = { server: pinned ? o.serverCpus : null, load: null }
  const serverCpu = pinned && /^\d+$/.test(o.serverCpus) ? Number(o.serverCpus) : null
  const loadCpu = pinned && /^\d+$/.test(o.loadCpus) ? Number(o.loadCpus) : null
  const dir = mkdtempSync(join(tmpdir(), 'flashgate-bench-'))
  const missing: string[] = []
  if (!pinned) missing.push('CPU pinning: taskset missing or fewer than 2 CPUs; server and load generator share the cores, so figures are not comparable with the peers kit\'s')
  let generator: 'wrk' | 'autocannon' = o.generator === 'auto' ? (which('wrk') !== null ? 'wrk' : 'autocannon') : o.generator
  if (generator === 'wrk' && which('wrk') === null) { missing.push('wrk is not installed (apt-get install -y wrk): autocannon used instead'); generator = 'autocannon' }
  const ctx: Ctx = { o, dir, p, missing, cpus, serverCpu, loadCpu, generator }
  p.line(`bench: scenario ${o.scenario}, logs and configs in ${dir}, flashgate via ${flashgateCommand().how}${pinned ? `, server on CPU ${o.serverCpus}, load on CPU ${o.loadCpus}` : ''}`)

  if (o.scenario === 'waiting-room') return await waitingRoomScenario(ctx, started, args)
  if (o.scenario === 'faults') return await faultsScenario(ctx, started, args)

  let sale: SaleResult | null = null
  let runs: Run[] = []
  let targets: Target[] = []
  let timeline: readonly TimelinePoint[] | null = null
  let timelineOf: string | null = null
  let spike: SpikeResult | null = null

  if (o.scenario === 'flash-sale' && o.config === null) {
    sale = await runSaleScenario(ctx)
    timeline = sale.users.timeline
    timelineOf = 'flash-sale crowd, client side'
    await stopAll()
  }
  if (o.scenario !== 'flash-sale' || o.peers || o.config !== null) {
    const m = await runThroughput(ctx)
    runs = m.runs
    targets = m.spike === null ? m.targets : []
    spike = m.spike
    if (timeline === null) {
      const main = targets.find((t) => t.kind === 'flashgate')
      const last = [...runs].reverse().find((r) => r.target === main?.name && r.round !== 'warmup')
      timeline = last?.timeline ?? null
      timelineOf = last === undefined ? null : `${last.target}, ${generator === 'wrk' ? 'from the gateway\'s metrics' : 'client side'}`
    }
    await stopAll()
  }

  const summaries = summarise(targets, runs)
  let capacity: { plan: Plan | null, planError: string | null, check: CapacityCheck | null } | null = null
  if (o.scenario === 'capacity') capacity = await capacityScenario(ctx, summaries)
  const names = new Set(targets.map((t) => t.name))
  const comparisons: ComparisonRow[] = COMPARISONS.filter((c) => names.has(c.target) && names.has(c.reference)).map((c) => {
    const r = ratio(runs, c.target, c.reference)
    return { ...c, ratio: r, met: c.goal === null || r === null ? null : r >= c.goal }
  })
  const funnel = o.scenario === 'funnel' ? funnelCosts(summaries) : null
  if (o.scenario === 'flash-sale' && !o.peers && o.config === null) missing.push('peer ratios: run with --peers to measure flashgate\'s throughput paths beside the peers kit in the same run')

  const checks: Array<{ name: string, value: number | string | boolean | null, ok: boolean | null }> = []
  if (sale !== null) {
    checks.push({ name: 'oversold units (must be 0)', value: sale.correctness.oversold, ok: sale.correctness.oversold === 0 })
    checks.push({ name: 'users with more than one order (must be 0)', value: sale.correctness.usersWithSeveralOrders, ok: sale.correctness.usersWithSeveralOrders === 0 })
    checks.push({ name: 'flash-sale requests lost, sent − answered (must be 0)', value: sale.correctness.lost, ok: sale.correctness.lost === 0 })
    checks.push({ name: `unpaid orders (${Math.round((1 - sale.unpaid.payShare) * 100)} % of buyers never pay; payment_timeout ${sale.unpaid.paymentTimeoutMs} ms): units released by the origin`, value: sale.correctness.released, ok: null })
    checks.push({ name: 'released units resold to late buyers', value: sale.correctness.resold, ok: null })
    const ls = sale.ledgerSamples
    if (ls !== null) checks.push({ name: `ledger at every sample (every 250 ms while the sale ran): 0 ≤ edge admitted − origin (locked + sold) − released-not-yet-handed-back ≤ buys in flight (≤ ${ls.connections} connections), ± what moved during the sample`, value: `${ls.samples} samples (${ls.skipped} unreadable), gap ${ls.minGap ?? '–'}..${ls.maxGap ?? '–'}, ${ls.violations} outside`, ok: ls.samples === 0 ? null : ls.violations === 0 })
    for (const pr of sale.products) {
      checks.push({ name: `${pr.product}: orders − released ≤ quota ${pr.quota}`, value: `${pr.orders} − ${pr.released ?? '?'}`, ok: pr.orders - (pr.released ?? 0) <= pr.quota })
      if (pr.ledgerOk !== null && pr.origin !== null) checks.push({ name: `${pr.product}: ledger at rest, edge admitted == origin locked + sold, edge remaining == origin sale`, value: `${pr.edgeAdmitted ?? '?'} == ${pr.origin.locked}+${pr.origin.sold}`, ok: pr.ledgerOk })
      if (pr.edgeAdmitted !== null) checks.push({ name: `${pr.product}: edge admitted ≤ quota ${pr.quota}`, value: pr.edgeAdmitted, ok: pr.edgeAdmitted <= pr.quota })
      if (pr.origin !== null) {
        checks.push({ name: `${pr.product}: origin sale+locked+sold == stock`, value: `${pr.origin.sale}+${pr.origin.locked}+${pr.origin.sold} = ${pr.origin.stock}`, ok: pr.invariantOk })
        checks.push({ name: `${pr.product}: origin units held == orders seen − released`, value: `${pr.origin.locked + pr.origin.sold} / ${pr.orders} − ${pr.released ?? '?'}`, ok: pr.originMatchesOrders })
      }
    }
  }
  if (runs.length > 0) {
    const lost = runs.reduce((a, r) => a + r.load.lost, 0)
    checks.push({ name: 'throughput runs: requests lost (socket errors, timeouts; must be 0)', value: lost, ok: lost === 0 })
    for (const t of targets.filter((x) => x.kind === 'flashgate')) {
      const rs = runs.filter((r) => r.target === t.name)
      if (t.expectStatus === 200) {
        const bad = rs.reduce((a, r) => a + r.load.non2xx, 0)
        checks.push({ name: `${t.name}: answers other than 2xx (must be 0)`, value: bad, ok: bad === 0 })
        if (t.repeatAfterS !== undefined) {
          // A run that answered more requests than its list came back to its first users after about
          // n / rps seconds: dedupe refuses them if that is sooner than its TTL.
          const n = t.requests.length
          const back = rs.filter((r) => r.load.answered > n && r.load.rps > 0).map((r) => n / r.load.rps)
          const soonest = back.length > 0 ? Math.min(...back) : null
          checks.push({
            name: `${t.name}: its ${n} users come back no sooner than the dedupe TTL, ${t.repeatAfterS} s (else raise --requests-per-step)`,
            value: soonest === null ? 'never' : `after ${soonest.toFixed(2)} s`,
            ok: soonest === null || soonest >= t.repeatAfterS
          })
        }
      } else {
        // Rejection targets: every answer is the expected rejection, except what the limit lets through
        // (the 1/s bucket: about one per second of load; the sold-out product: its quota of 1, once; a
        // forged link: never). The expected code is the target's body fragment.
        const code = t.bodyFragment
        const outs = rs.flatMap((r) => Object.entries(r.outcomes ?? {}))
        if (outs.length > 0) {
          // A request the limit let through is proxied; when the generator closes its connections at the
          // end of a run while one is, the gateway counts it CLIENT_ABORTED: let through all the same.
          const through = (k: string): boolean => k === 'passed' || k === 'CLIENT_ABORTED'
          const other = outs.filter(([k]) => k !== code && !through(k)).reduce((a, [, v]) => a + v, 0)
          const passed = outs.filter(([k]) => through(k)).reduce((a, [, v]) => a + v, 0)
          const allowed = t.expectStatus === 429 ? rs.reduce((a, r) => a + Math.ceil(r.load.seconds) + 2, 0) : code === 'SOLD_OUT' ? 1 : 0
          checks.push({ name: `${t.name}: answers other than ${code} or passed (must be 0)`, value: other, ok: other === 0 })
          checks.push({ name: `${t.name}: passed, or proxied when the client hung up (≤ ${allowed}, what the limit allows)`, value: passed, ok: passed <= allowed })
        }
      }
    }
  }
  if (capacity?.check != null) {
    const ch = capacity.check
    checks.push({ name: `capacity check (${ch.workers} workers): requests lost (must be 0)`, value: ch.lost, ok: ch.lost === 0 })
    const off = Object.entries(o.mix).map(([k, v]) => Math.abs((ch.measuredMix[k] ?? 0) - v)).reduce((a, b) => Math.max(a, b), 0)
    // Besides 2 points: what the 1/s bucket of the 429 path lets through (about one a second, answered
    // passed) and the requests in flight when the generator hangs up (CLIENT_ABORTED), weigh in a small run.
    const slack = 0.02 + (Math.ceil(ch.seconds) + 2 + o.connections) / Math.max(1, ch.answered)
    checks.push({ name: `capacity check: the gateway answered the planned mix (each outcome within ${(slack * 100).toFixed(1)} points)`, value: `${(off * 100).toFixed(2)} points off`, ok: off <= slack })
  }
  if (capacity !== null && capacity.plan === null) checks.push({ name: 'capacity: a plan from the measured costs', value: capacity.planError, ok: false })
  if (spike !== null) {
    for (const st of spike.targets) checks.push({ name: `spike ${st.target}: answers other than the expected status (must be 0)`, value: st.unexpected, ok: st.unexpected === 0 })
  }
  const ok = checks.every((c) => c.ok !== false)
  const { machine, versions } = machineInfo()
  const report: Report = {
    tool: 'flashgate bench',
    schema: 1,
    scenario: o.scenario,
    date: started.toISOString(),
    command: `flashgate bench ${args.join(' ')}`.trim(),
    machine,
    versions,
    settings: { ...o, products: o.products, serverCpus: pinned ? o.serverCpus : null, loadCpus: pinned ? o.loadCpus : null, flashgate: flashgateCommand().how },
    generator: sale !== null ? `virtual users (undici)${runs.length > 0 ? ` + ${generator}` : ''}` : spike !== null ? `open loop at fixed arrival rates: ${spike.generator ?? 'raw sockets, bench/load/open-loop.ts, in the bench process'}` : generator,
    sale: sale === null ? null : { ...sale, users: { ...sale.users, orders: sale.users.orders.length } },
    targets: summaries.length > 0 ? summaries : null,
    comparisons,
    funnel,
    missing,
    correctness: { ok, checks },
    runs,
    timeline,
    timelineOf,
    spike,
    capacity
  }
  const files = writeReport(report, o)
  p.end()
  process.stdout.write(`${markdown(report)}\n`)
  process.stdout.write(`files: ${files.join(' ')}\n`)
  return ok ? 0 : 1
}

/** `--scenario faults` (bench/faults.ts): redis killed, a Sentinel failover, the order system down; oversold and lost must be 0. */
async function faultsScenario (ctx: Ctx, started: Date, args: readonly string[]): Promise<number> {
  const { o, p } = ctx
  const rs = await runFaults((l) => { p.line(l) })
  const ok = rs.every((r) => r.oversold === 0 && r.lost === 0)
  const { machine, versions } = machineInfo()
  const text = [`# flashgate bench — faults, ${started.toISOString()}`, '', `\`flashgate bench ${args.join(' ')}\`; the machine is shared, so times and rates are noisy (oversold and lost are exact).`, '', faultsTable(rs), '', `correctness: ${ok ? 'ok (0 oversold, 0 lost in every phase)' : 'FAILED'}`].join('\n')
  const stamp = started.toISOString().replace(/[:]/g, '').replace(/\..*$/, '')
  const json = o.json !== null ? resolve(o.json) : join(isAbsolute(o.out) ? o.out : join(ROOT, o.out), `faults-${stamp}.json`)
  mkdirSync(dirname(json), { recursive: true })
  writeFileSync(json, JSON.stringify({ tool: 'flashgate bench', schema: 1, scenario: 'faults', date: started.toISOString(), command: `flashgate bench ${args.join(' ')}`.trim(), machine, versions, phases: rs, correctness: { ok } }, null, 2) + '\n')
  writeFileSync(json.replace(/\.json$/, '.md'), text + '\n')
  p.end()
  process.stdout.write(text + '\n\n' + `written: ${json}\n`)
  return ok ? 0 : 1
}

/** `--scenario waiting-room` (bench/waiting-room.ts): its own run, a table, JSON and markdown. */
async function waitingRoomScenario (ctx: Ctx, started: Date, args: readonly string[]): Promise<number> {
  const { o, p } = ctx
  const store = o.store === 'memory' ? 'memory' : 'redis'
  const r = await runWaitingRoom({ dir: ctx.dir, users: o.users, admit: o.admit, quota: 30 * o.admit, steady: o.duration, store, serverCpus: ctx.cpus.server, log: (l) => { p.line(l) } })
  await stopAll()
  const checks = waitingRoomChecks(r)
  const ok = checks.every((c) => c.ok !== false)
  const { machine, versions } = machineInfo()
  const table = waitingRoomTable(r)
  const text = [`# flashgate bench — waiting-room, ${started.toISOString()}`, '', `\`flashgate bench ${args.join(' ')}\`, store ${store}; the machine is shared, so CPU figures are noisy.`, '', table, '',
    '| check | value | ok |', '|---|---:|:---:|', ...checks.map((c) => `| ${c.name} | ${String(c.value)} | ${c.ok === null ? '–' : c.ok ? 'yes' : 'NO'} |`)].join('\n')
  const stamp = started.toISOString().replace(/[:]/g, '').replace(/\..*$/, '')
  const json = o.json !== null ? resolve(o.json) : join(isAbsolute(o.out) ? o.out : join(ROOT, o.out), `waiting-room-${stamp}.json`)
  mkdirSync(dirname(json), { recursive: true })
  writeFileSync(json, JSON.stringify({ tool: 'flashgate bench', schema: 1, scenario: 'waiting-room', date: started.toISOString(), command: `flashgate bench ${args.join(' ')}`.trim(), machine, versions, store, waitingRoom: r, correctness: { ok, checks } }, null, 2) + '\n')
  writeFileSync(json.replace(/\.json$/, '.md'), text + '\n')
  p.end()
  process.stdout.write(text + '\n\n' + `written: ${json}\n`)
  return ok ? 0 : 1
}

function writeReport (r: Report, o: BenchOptions): string[] {
  const stamp = r.date.replace(/[:]/g, '').replace(/\..*$/, '')
  const json = o.json !== null ? resolve(o.json) : join(isAbsolute(o.out) ? o.out : join(ROOT, o.out), `${r.scenario}-${stamp}.json`)
  mkdirSync(dirname(json), { recursive: true })
  const base = json.replace(/\.json$/, '')
  writeFileSync(json, JSON.stringify(r, null, 2) + '\n')
  writeFileSync(`${base}.svg`, chart(r))
  writeFileSync(`${base}.md`, markdown(r) + '\n')
  return [json, `${base}.svg`, `${base}.md`]
}

function funnelCosts (s: readonly TargetSummary[]): FunnelCost[] {
  const out: FunnelCost[] = []
  let prev: TargetSummary | undefined
  const steps = s.filter((t) => /^fg-f\d+$/.test(t.target) || t.target === 'fg-funnel')
  steps.forEach((t) => {
    // fg-fN has the first N guards; fg-funnel all of them. With --only, steps may be missing: the added
    // cost is then that of every guard since the previous step measured.
    const n = t.target === 'fg-funnel' ? FUNNEL_STEPS.length : Number(t.target.slice(4))
    const from = prev === undefined ? n : (prev.target === 'fg-funnel' ? FUNNEL_STEPS.length : Number(prev.target.slice(4)))
    out.push({
      step: t.target,
      guard: n === 0 ? '(route, no guard)' : FUNNEL_STEPS.slice(prev === undefined ? n - 1 : from, n).join(' + '),
      rps: t.rps,
      cpuUsPerReq: t.cpuUsPerReq,
      addedUs: prev?.cpuUsPerReq != null && t.cpuUsPerReq !== null ? t.cpuUsPerReq - prev.cpuUsPerReq : null
    })
    prev = t
  })
  return out
}

async function runSaleScenario (c: Ctx): Promise<SaleResult> {
  const { o, p } = c
  let store: 'memory' | 'redis' = o.store === 'auto' ? (which('redis-server') !== null ? 'redis' : 'memory') : o.store
  if (store === 'redis' && which('redis-server') === null) { c.missing.push('redis-server is not installed: flash sale ran on the memory store'); store = 'memory' }
  if (store === 'memory') c.missing.push('Redis commands per request: the flash sale ran on the memory store')
  const total = o.duration
  const target = o.target === null ? null : { url: o.target, admin: o.admin, origin: o.origin }
  p.line(`bench: flash sale, ${o.users} users, ${o.connections} connections, ${o.duration}s, store ${store}`)
  const r = await runSale({
    dir: c.dir,
    users: o.users,
    connections: o.connections,
    durationS: o.duration,
    rampS: Math.min(o.ramp, Math.max(0, o.duration - 2)),
    products: o.products,
    store,
    workers: o.workers,
    parser: o.parser,
    client: o.client,
    captcha: o.captcha,
    botShare: o.bots,
    globalRate: o.globalRate,
    secrets: newSecrets(),
    cpus: c.cpus,
    loadCpu: c.loadCpu,
    target,
    onTick: (s, totals) => {
      const t = Object.entries(totals).sort((a, b) => b[1] - a[1]).slice(0, 4).map(([k, v]) => `${k} ${v}`).join(' ')
      p.update(s, total, `flash sale ${s}/${total}s`, t)
    },
    log: (m) => { p.line(m) }
  })
  return r
}

async function runThroughput (c: Ctx): Promise<{ runs: Run[], targets: Target[], spike: SpikeResult | null }> {
  const { o, p } = c
  const targets: Target[] = []
  const scenario = o.scenario
  if (o.target !== null || o.config !== null) {
    // One custom target: a running gateway's URL, or a gateway started from the user's config.
    let url: string
    let pid: number | null = null
    let admin: string | null = o.admin
    if (o.config !== null) {
      const loaded = loadConfigFile(o.config)
      if (!loaded.ok) throw new Error(`--config ${o.config}:\n${formatErrors(loaded)}`)
      const cfg = loaded.config
      const fg = flashgateCommand()
      const proc = start({ name: 'gateway', cmd: fg.cmd, args: [...fg.pre, 'serve', '--config', resolve(o.config), '--workers', String(o.workers)], cpus: c.cpus.server, logFile: join(c.dir, 'gateway.log'), cwd: ROOT })
      await waitPort(cfg.listen.port, 'gateway', proc, 30_000)
      url = `http://127.0.0.1:${cfg.listen.port}${o.path}`
      pid = proc.pid
      if (cfg.admin !== null) admin = `http://127.0.0.1:${cfg.admin.port}`
    } else {
      url = o.target ?? ''
    }
    const u = new URL(url)
    targets.push({ name: 'target', kind: 'flashgate', role: url, baseUrl: u.origin, requests: [{ method: 'GET', path: u.pathname + u.search }], expectStatus: 200, bodyFragment: '', pid, admin, redis: null, route: null })
    c.missing.push('custom target: only requests/s, latency and answers are measured; the expected status is not checked')
  } else {
    let upstream = ''
    let redisUrl: string | null = null
    let kitPid: (server: string) => number | null = () => null
    let peers = false
    if (o.peers) {
      const miss = kitMissing()
      if (miss.length > 0) {
        c.missing.push(`peers: prerequisites missing, install with: ${miss.join('; ')}`)
      } else {
        const source = o.peersDir ?? process.env.FLASHGATE_PEERS_DIR ?? join(ROOT, 'bench', 'peers-kit')
        const dir = await prepareKit(source, (m) => { p.line(m) })
        const wanted = PEER_TARGETS.filter((t) => PEERS_OF[scenario].includes(t.name))
        p.line(`bench: starting the peers kit from ${dir} (${wanted.map((t) => t.name).join(', ')})`)
        const kit = await startKit(dir, wanted, c.cpus)
        kitPid = (s) => kit.servers.get(s)?.pid ?? null
        upstream = KIT_ORIGIN
        redisUrl = KIT_REDIS
        peers = true
      }
    }
    if (!peers) {
      const up = await startUpstream(join(c.dir, 'upstream'), c.cpus.load)
      upstream = up.url
      const wantRedis = o.store !== 'memory' && which('redis-server') !== null
      if (wantRedis) redisUrl = (await startRedis(c.dir, 'redis-edge', c.cpus.load)).url
      else c.missing.push('Redis commands per request: no redis-server, the gateway ran on the memory store')
    }
    const redis = redisUrl === null ? null : new RedisProbe(redisUrl)
    const [listen, admin] = [await freePort(), await freePort()]
    const secrets = newSecrets()
    const yaml = throughputConfig({
      listen,
      admin,
      upstream,
      store: redisUrl === null ? { kind: 'memory', url: null } : { kind: 'redis', url: redisUrl },
      secrets,
      verifyUrl: 'http://127.0.0.1:9/never-called',
      workers: o.workers,
      funnelSteps: FUNNEL_STEPS.length,
      parser: o.parser,
      client: o.client
    })
    // The gateway process is spawned here and loads its code on the server core while this process
    // builds the request lists on the load core (the funnel's are tens of thousands of signed requests).
    const starting = startGateway({ dir: c.dir, name: 'gateway', yaml, listen, admin, workers: o.workers, cpus: c.cpus.server })
    // More users than requests/s × the dedupe TTL (1 s) on the funnel pass path (checked after the run).
    const funnelUsers = scenario === 'funnel' || scenario === 'flash-sale' ? o.requestsPerStep : 1
    const mine = flashgateTargets(scenario, { baseUrl: `http://127.0.0.1:${listen}`, admin: `http://127.0.0.1:${admin}`, pid: null, redis, secrets, funnelUsers })
    const gw = await starting
    p.line(`bench: gateway ${gw.url} (admin ${gw.admin}, config ${gw.configFile})`)
    targets.push(...mine.map((t) => ({ ...t, baseUrl: gw.url, admin: gw.admin, pid: gw.proc.pid })))
    if (peers) targets.push(...peerTargets(scenario, kitPid, redis))
  }
  if (o.only !== null) {
    const names = new Set(targets.map((t) => t.name))
    const unknown = o.only.filter((n) => !names.has(n))
    if (unknown.length > 0) throw new Error(`--only: no target ${unknown.join(', ')} in this run (targets: ${[...names].join(', ')})`)
    const keep = new Set(o.only)
    targets.splice(0, targets.length, ...targets.filter((t) => keep.has(t.name)))
  }
  if (scenario === 'spike') {
    p.line(`bench: open-loop spike, ${o.rateStart}/s × ${o.rateFactor} per ${o.duration} s step up to ${o.rateMax}/s, bound p99 ≤ ${o.p99Ms} ms, ${o.connections} connections, ${targets.length} targets`)
    const spike = await runSpike(targets, { rateStart: o.rateStart, rateFactor: o.rateFactor, rateMax: o.rateMax, stepSeconds: o.duration, p99Ms: o.p99Ms, connections: o.connections, warmupS: o.warmup, pauseMs: Math.round(o.pause * 1000), loadCpu: c.loadCpu, log: (l) => { p.line(l) }, progress: (d, t, label) => { p.update(d, t, label) } })
    for (const t of targets) await t.redis?.close()
    return { runs: [], targets, spike }
  }
  const seconds = scenario === 'flash-sale' ? o.runDuration : o.duration
  p.line(`bench: checks, then ${o.warmup > 0 ? `${o.warmup}s warm-up per target and ` : ''}${o.rounds} round(s) of ${seconds}s per target (${targets.length} targets), ${c.generator}, ${o.connections} connections`)
  const runs = await measure(targets, {
    generator: c.generator,
    connections: o.connections,
    seconds,
    warmupS: o.warmup,
    rounds: o.rounds,
    pauseMs: Math.round(o.pause * 1000),
    loadCpus: null,
    serverCpu: c.serverCpu,
    loadCpu: c.loadCpu,
    log: (l) => { p.line(l) },
    progress: (d, t, label) => { p.update(d, t, label) }
  })
  for (const t of targets) await t.redis?.close()
  return { runs, targets, spike: null }
}

/** `--scenario capacity`: price each outcome from the one-worker runs, plan the peak, check the model on a `--workers 2` run. */
async function capacityScenario (c: Ctx, summaries: readonly TargetSummary[]): Promise<{ plan: Plan | null, planError: string | null, check: CapacityCheck | null }> {
  const { o, p } = c
  const costs = costsFromReport({ targets: summaries })
  let pl: Plan | null = null
  let planError: string | null = null
  try { pl = plan(o.peak, o.mix, costs, o.headroom) } catch (err) { planError = (err as Error).message }
  const check = await capacityCheck({
    dir: c.dir,
    mix: o.mix,
    costs,
    workers: Math.max(2, o.workers),
    parser: o.parser,
    client: o.client,
    seconds: o.duration,
    warmupS: o.warmup,
    connections: o.connections,
    generator: c.generator,
    cpus: c.cpus,
    loadCpu: c.loadCpu,
    redis: o.store !== 'memory' && which('redis-server') !== null,
    log: (m) => { p.line(m) }
  })
  return { plan: pl, planError, check }
}
