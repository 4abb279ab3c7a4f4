/**
 * `flashgate bench` options: from flags, or from a small YAML file (`--file`) with the same names
 * (flags win). Unknown flags and keys are errors (exit 2).
 */
import { readFileSync } from 'node:fs'
import { parse } from 'yaml'
import { UsageError, numberFlag, oneOfFlag, parseFlags, type Flags } from '../gateway/cli-args.js'
import { SCENARIOS } from './targets.js'
import type { Scenario } from './targets.js'
import type { ProductSpec } from './flashgate.js'

export interface BenchOptions {
  scenario: Scenario
  json: string | null
  out: string
  duration: number
  /** Seconds per throughput run in flash-sale --peers (the crowd uses --duration). */
  runDuration: number
  warmup: number
  /** Seconds between two runs, for the server to settle (default 1; 0 for smoke runs). */
  pause: number
  rounds: number
  /**
   * Funnel steps with per-user guards (f4 … f9): distinct users, i.e. signed requests pre-generated
   * per step and cycled by the load generator. Must outlast the dedupe TTL at the measured rate.
   */
  requestsPerStep: number
  connections: number
  users: number
  ramp: number
  products: ProductSpec[]
  bots: number
  captcha: boolean
  globalRate: number
  workers: number
  store: 'memory' | 'redis' | 'auto'
  generator: 'wrk' | 'autocannon' | 'auto'
  target: string | null
  admin: string | null
  origin: string | null
  peers: boolean
  peersDir: string | null
  /** Measure only these targets (names as in the report); null = all of the scenario's. */
  only: readonly string[] | null
  config: string | null
  path: string
  serverCpus: string
  loadCpus: string
  quiet: boolean
  help: boolean
  /** waiting-room: admissions per second (default 100). */
  admit: number
  /** server.parser of the gateway the throughput scenarios start (default node). */
  parser: 'node' | 'strict'
  /** upstreams.origin.client of the gateway the throughput scenarios start (default undici). */
  client: 'undici' | 'raw'
  /** spike: the open-loop rate steps (arrivals/s) and the latency bound. */
  rateStart: number
  rateFactor: number
  rateMax: number
  p99Ms: number
  /** capacity: the peak (requests/s) and outcome mix (outcome → share, sums to 1) to plan for. */
  peak: number
  mix: Record<string, number>
  /** capacity: the share of a core a plan may use (0.7 leaves 30 % headroom). */
  headroom: number
}

export const USAGE = `flashgate bench — load scenarios with correctness checks, peers side by side

usage: flashgate bench [options]

  --scenario NAME     flash-sale (default) | proxy | reject | funnel | waiting-room | spike | capacity | faults
  --json FILE         write the JSON report there (the SVG chart and markdown go next to it);
                      default: bench/results/<scenario>-<date>.{json,svg,md}
  --out DIR           folder for the default file names (default bench/results)
  --duration S        seconds: the whole flash sale, or each throughput run
                      (defaults: flash-sale 20, proxy 8, reject 5, funnel 2)
  --run-duration S    flash-sale --peers: seconds per throughput run after the crowd (default 5)
  --warmup S          warm-up seconds per throughput target (default 5: V8 needs it to reach steady state; funnel 1)
  --pause S           seconds between two runs, for the server to settle (default 1; may be 0 or 0.2)
  --rounds N          interleaved rounds (default 1; 3 with --peers)
  --connections N     client connections (default 64)
  --users N           flash-sale crowd size (default 2000); waiting-room: virtual users (default 20000)
  --admit N           waiting-room: admissions per second (default 100; the product has 30 × N units)
  --requests-per-step N
                      funnel steps f4 … f9 (and fg-funnel with flash-sale --peers): distinct users,
                      each a signed request generated before the run (default 60000). A user may come
                      back only after the dedupe TTL (1 s): N must exceed requests/s × 1 s, which the
                      run checks; a short run on a small machine needs far fewer (e.g. 20000)
  --ramp S            flash-sale: seconds over which users arrive before the sale opens (default 4)
  --products LIST     flash-sale products and quotas, e.g. hot:100,cold:400 (default hot:100,cold:400)
  --bots SHARE        flash-sale: share of bots (no link / replayed token / hammering), 0..1 (default 0.1)
  --no-captcha        flash-sale: no captcha guard
  --global-rate N     flash-sale: global token bucket, requests/s per node (default 20000)
  --workers N         gateway workers (default 1: one pinned core)
  --store KIND        memory | redis (default redis when redis-server is installed)
  --generator NAME    wrk | autocannon (default wrk when installed) for throughput runs
  --target URL        measure a running gateway instead of starting one: throughput scenarios
                      GET URL as is; flash-sale plays the crowd against it (campaign "bench", x-user-id)
  --admin URL         the running gateway's admin listener (metrics, quota) with --target
  --origin URL        the running origin (stock invariant) with --target
  --config FILE       start \`flashgate serve --config FILE\` (pinned) and measure GET --path on it
  --path PATH         path for --config (default /)
  --peers             also measure the peers kit (nginx, nginx+Lua, fastify, node) in the same rounds
  --peers-dir DIR     the peers kit (default bench/peers-kit, part of the project; or $FLASHGATE_PEERS_DIR)
  --server-cpus LIST  CPUs for the server under test (default 0)
  --load-cpus LIST    CPUs for the bench, load generator, Redis and origins (default 1)
  --only LIST         measure only these targets, e.g. fg-proxy,fg-funnel (names as in the report);
                      ratios whose two sides did not both run are left out
  --rate-start N      spike: first open-loop arrival rate, requests/s (default 2000)
  --rate-factor X     spike: each step's rate is the previous × X (default 1.25)
  --rate-max N        spike: last rate tried (default 200000)
  --p99-ms MS         spike: the bound a step must hold, client p99 from the intended send time (default 50)
  --peak N            capacity: requests/s to plan for (default 1000000)
  --mix LIST          capacity: outcome shares, e.g. SOLD_OUT:95,passed:4,RATE_LIMITED:1 (default that)
  --headroom X        capacity: share of a core a plan may use, 0.1..1 (default 0.7)
  --file FILE         read any of these options from a YAML file (keys as above without --)
  --parser NAME       node (default) | strict: server.parser of the gateway the bench starts (crowd and throughput)
  --client NAME       undici (default) | raw: the upstream client (upstreams.NAME.client) of that gateway
  --quiet             no progress output
  -h, --help          this text

Exit status: 0 when every correctness check holds, 1 when one fails or the run errs, 2 on bad usage.
Needs the dev dependencies (autocannon, tsx): run it from a checkout after \`npm ci\`.
`

const NUM = new Set(['duration', 'run-duration', 'warmup', 'pause', 'rounds', 'connections', 'users', 'requests-per-step', 'ramp', 'bots', 'global-rate', 'workers', 'admit', 'rate-start', 'rate-factor', 'rate-max', 'p99-ms', 'peak', 'headroom'])
const STR = new Set(['parser', 'client', 'scenario', 'json', 'out', 'products', 'store', 'generator', 'target', 'admin', 'origin', 'peers-dir', 'only', 'config', 'path', 'server-cpus', 'load-cpus', 'file', 'mix'])
const BOOL = new Set(['peers', 'no-captcha', 'quiet', 'help'])

function defaultsFor (scenario: Scenario): { duration: number, warmup: number } {
  switch (scenario) {
    case 'flash-sale': return { duration: 20, warmup: 5 }
    case 'proxy': return { duration: 8, warmup: 5 }
    case 'reject': return { duration: 5, warmup: 5 }
    case 'funnel': return { duration: 2, warmup: 1 }
    case 'waiting-room': return { duration: 5, warmup: 0 }
    case 'spike': return { duration: 3, warmup: 2 }
    case 'capacity': return { duration: 5, warmup: 3 }
    case 'faults': return { duration: 35, warmup: 0 }
  }
}

function parseProducts (s: string): ProductSpec[] {
  const out: ProductSpec[] = []
  for (const part of s.split(',').map((x) => x.trim()).filter((x) => x !== '')) {
    const m = /^([A-Za-z0-9_-]{1,64}):(\d{1,12})$/.exec(part)
    if (m === null) throw new UsageError(`--products: expected id:quota[,id:quota...], got "${part}"`)
    out.push({ id: m[1] ?? '', quota: Number(m[2]) })
  }
  if (out.length === 0) throw new UsageError('--products: at least one product')
  return out
}

/** The flags parseArgs is given: every value option takes a string (numbers are judged below). */
const FLAGS: Flags = Object.fromEntries([...[...NUM, ...STR].map((n) => [n, 'string'] as const), ...[...BOOL].filter((n) => n !== 'help').map((n) => [n, 'boolean'] as const)])

/** Raw values (strings / booleans) by option name, flags over file. */
function collect (args: readonly string[]): Map<string, string | boolean> {
  const flags = new Map<string, string | boolean>()
  for (const [k, v] of Object.entries(parseFlags(args, FLAGS).values)) if (v !== undefined) flags.set(k, v)
  const file = flags.get('file')
  if (typeof file !== 'string') return flags
  let doc: unknown
  try { doc = parse(readFileSync(file, 'utf8')) } catch (err) { throw new UsageError(`--file ${file}: ${(err as Error).message}`) }
  if (doc === null || doc === undefined) return flags
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new UsageError(`--file ${file}: expected a map of options`)
  const merged = new Map<string, string | boolean>()
  for (const [k, v] of Object.entries(doc as Record<string, unknown>)) {
    const name = k.replace(/_/g, '-')
    if (name === 'file') throw new UsageError(`--file ${file}: "file" cannot be nested`)
    if (name === 'captcha' && typeof v === 'boolean') { if (!v) merged.set('no-captcha', true); continue }
    if (BOOL.has(name)) {
      if (typeof v !== 'boolean') throw new UsageError(`--file ${file}: ${k} must be true or false`)
      if (v) merged.set(name, true)
    } else if (NUM.has(name) || STR.has(name)) {
      if (name === 'products' && Array.isArray(v)) { merged.set(name, v.map((p: { id?: unknown, quota?: unknown }) => `${String(p.id)}:${String(p.quota)}`).join(',')); continue }
      if (typeof v !== 'string' && typeof v !== 'number') throw new UsageError(`--file ${file}: ${k} must be a string or number`)
      merged.set(name, String(v))
    } else {
      throw new UsageError(`--file ${file}: unknown key "${k}"`)
    }
  }
  for (const [k, v] of flags) merged.set(k, v)
  return merged
}

function num (m: Map<string, string | boolean>, name: string, min: number, max: number, integer = true): number | undefined {
  const v = m.get(name)
  return numberFlag(v === undefined ? undefined : String(v), name, min, max, integer)
}

function oneOf<T extends string> (m: Map<string, string | boolean>, name: string, allowed: readonly T[]): T | undefined {
  const v = m.get(name)
  return oneOfFlag(v === undefined ? undefined : String(v), name, allowed)
}

function url (m: Map<string, string | boolean>, name: string): string | null {
  const v = m.get(name)
  if (typeof v !== 'string') return null
  let u: URL
  try { u = new URL(v) } catch { throw new UsageError(`--${name}: not a URL: "${v}"`) }
  if (u.protocol !== 'http:') throw new UsageError(`--${name}: only http:// URLs`)
  if (!['127.0.0.1', 'localhost', '[::1]'].includes(u.hostname)) throw new UsageError(`--${name}: loopback only (127.0.0.1, ::1, localhost)`)
  return v.replace(/\/$/, u.pathname === '/' && u.search === '' ? '' : '/')
}

function onlyList (v: string | null): string[] | null {
  if (v === null) return null
  const names = v.split(',').map((x) => x.trim()).filter((x) => x !== '')
  if (names.length === 0 || names.some((x) => !/^[\w.-]+$/.test(x))) throw new UsageError(`--only: expected target names like fg-proxy,fg-funnel, got "${v}"`)
  return names
}

export function parseOptions (args: readonly string[]): BenchOptions {
  const m = collect(args)
  const scenario = oneOf(m, 'scenario', SCENARIOS) ?? 'flash-sale'
  const d = defaultsFor(scenario)
  const peers = m.get('peers') === true
  const cpuList = (name: string, def: string): string => {
    const v = m.get(name)
    if (v === undefined) return def
    if (typeof v !== 'string' || !/^\d+([-,]\d+)*$/.test(v)) throw new UsageError(`--${name}: expected a CPU list like 0 or 0-1, got "${String(v)}"`)
    return v
  }
  const str = (name: string): string | null => { const v = m.get(name); return typeof v === 'string' ? v : null }
  return {
    scenario,
    json: str('json'),
    out: str('out') ?? 'bench/results',
    duration: num(m, 'duration', 1, 600) ?? d.duration,
    runDuration: num(m, 'run-duration', 1, 600) ?? 5,
    warmup: num(m, 'warmup', 0, 60) ?? d.warmup,
    pause: num(m, 'pause', 0, 60, false) ?? 1,
    rounds: num(m, 'rounds', 1, 20) ?? (peers ? 3 : 1),
    connections: num(m, 'connections', 1, 10_000) ?? 64,
    users: num(m, 'users', 1, 200_000) ?? (scenario === 'waiting-room' ? 20_000 : 2000),
    requestsPerStep: num(m, 'requests-per-step', 10, 1_000_000) ?? 60_000,
    ramp: num(m, 'ramp', 0, 120) ?? 4,
    products: parseProducts(str('products') ?? 'hot:100,cold:400'),
    bots: num(m, 'bots', 0, 1, false) ?? 0.1,
    captcha: m.get('no-captcha') !== true,
    globalRate: num(m, 'global-rate', 1, 10_000_000) ?? 20_000,
    workers: num(m, 'workers', 1, 64) ?? 1,
    store: oneOf(m, 'store', ['memory', 'redis'] as const) ?? 'auto',
    generator: oneOf(m, 'generator', ['wrk', 'autocannon'] as const) ?? 'auto',
    target: url(m, 'target'),
    admin: url(m, 'admin'),
    origin: url(m, 'origin'),
    peers,
    peersDir: str('peers-dir'),
    only: onlyList(str('only')),
    config: str('config'),
    path: str('path') ?? '/',
    serverCpus: cpuList('server-cpus', '0'),
    loadCpus: cpuList('load-cpus', '1'),
    quiet: m.get('quiet') === true,
    help: m.get('help') === true,
    admit: num(m, 'admit', 1, 100_000) ?? 100,
    parser: oneOf(m, 'parser', ['node', 'strict'] as const) ?? 'node',
    client: oneOf(m, 'client', ['undici', 'raw'] as const) ?? 'undici',
    rateStart: num(m, 'rate-start', 1, 10_000_000) ?? 2000,
    rateFactor: num(m, 'rate-factor', 1.01, 10, false) ?? 1.25,
    rateMax: num(m, 'rate-max', 1, 10_000_000) ?? 200_000,
    p99Ms: num(m, 'p99-ms', 0.1, 10_000, false) ?? 50,
    peak: num(m, 'peak', 1, 1e9) ?? 1_000_000,
    mix: parseMix(str('mix') ?? 'SOLD_OUT:95,passed:4,RATE_LIMITED:1'),
    headroom: num(m, 'headroom', 0.1, 1, false) ?? 0.7
  }
}

/** `SOLD_OUT:95,passed:5` → shares summing to 1 (the numbers are weights: percentages or fractions). */
export function parseMix (s: string): Record<string, number> {
  const out: Record<string, number> = {}
  let sum = 0
  for (const part of s.split(',').map((x) => x.trim()).filter((x) => x !== '')) {
    const m = /^([A-Za-z_][A-Za-z0-9_]{0,63})[:=](\d+(?:\.\d+)?)$/.exec(part)
    if (m === null) throw new UsageError(`--mix: expected outcome:weight[,outcome:weight...], got "${part}"`)
    const k = m[1] ?? ''
    if (out[k] !== undefined) throw new UsageError(`--mix: ${k} given twice`)
    out[k] = Number(m[2])
    sum += out[k] ?? 0
  }
  if (sum <= 0) throw new UsageError('--mix: the weights must add up to more than 0')
  for (const k of Object.keys(out)) out[k] = (out[k] ?? 0) / sum
  return out
}
