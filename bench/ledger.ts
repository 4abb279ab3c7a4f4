/**
 * What the node's one ledger costs (`--workers 2` on the embedded store: every store call goes from a
 * worker to the primary over a socketpair), beside one process on the embedded store (no IPC at all) and
 * `--workers 2` on Redis (the other way to make workers exact). Three paths:
 *
 * - admitted: a quota that never runs out, then the proxy (one store call per request);
 * - sold out: a product with quota 0, answered by each worker's latch (no store call, no message);
 * - 429 from the store: a cluster-scope limit (1/min per IP) that rejects every request after a store call.
 *
 * The figure is CPU per request: user + system time of the gateway's whole process tree (primary and
 * workers; redis-server's own CPU beside it) divided by the requests wrk completed, in interleaved rounds.
 * Nothing is pinned: the machine may be shared, so read ratios within a round, not absolute figures.
 *
 *   node --import tsx bench/ledger.ts [--seconds 4] [--rounds 2] [--connections 32]
 *   (or, after `npm run build`, node dist/bench/ledger.js: on a busy machine three gateways started
 *   from the sources through tsx can take longer than the 30 s the bench waits for each)
 *
 * Writes bench/results/ledger-<time>.md and .json.
 */
import { mkdtempSync, writeFileSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { ROOT, flashgateCommand, startGateway, startRedis, type Gateway } from './flashgate.js'
import { runWrk } from './load/wrk.js'
import { cpuMicros, freePort, stopAll, which } from './proc.js'
import { startUpstream } from './upstream.js'
import { numberFlag, scriptOptions } from '../gateway/cli-args.js'

const { SECONDS, ROUNDS, CONNECTIONS } = scriptOptions({
  prog: 'bench/ledger.ts',
  usage: `Usage: node --import tsx bench/ledger.ts [--seconds S] [--rounds N] [--connections N]

  --seconds S       seconds of wrk load per path and setup, 1..60 (default 4)
  --rounds N        interleaved rounds, 1..20 (default 2)
  --connections N   wrk connections, 1..1000 (default 32)`,
  flags: { seconds: 'string', rounds: 'string', connections: 'string' }
}, ({ values }) => ({
  SECONDS: numberFlag(values.seconds, 'seconds', 1, 60) ?? 4,
  ROUNDS: numberFlag(values.rounds, 'rounds', 1, 20) ?? 2,
  CONNECTIONS: numberFlag(values.connections, 'connections', 1, 1000) ?? 32
}))
const INVOKED = process.argv[1]?.endsWith('.js') === true ? 'node dist/bench/ledger.js' : 'node --import tsx bench/ledger.ts'
const LOAD_AT_START = loadavg().map((x) => x.toFixed(1)).join(' ')

const PATHS = [
  { id: 'admitted', what: 'quota admits, then proxy', path: '/adm/c/p1' },
  { id: 'sold_out', what: 'sold out, answered from the latch', path: '/sold/c/p2' },
  { id: 'limited', what: '429 after a store call (cluster-scope limit)', path: '/lim' }
] as const

function yaml (listen: number, admin: number, upstream: string, store: string): string {
  return `listen: 127.0.0.1:${listen}
admin: 127.0.0.1:${admin}
access_log: { enabled: false }
store: ${store}
upstreams:
  origin:
    targets: [{ url: ${upstream} }]
    retries: 0
campaigns:
  - id: c
    starts_at: 2020-01-01T00:00:00Z
    ends_at: 2099-01-01T00:00:00Z
    products:
      - { id: p1, quota: 1000000000 }
      - { id: p2, quota: 0 }
routes:
  - name: adm
    match: { path: /adm/:campaign/:product }
    guards: [{ quota: {} }]
    upstream: origin
  - name: sold
    match: { path: /sold/:campaign/:product }
    guards: [{ quota: { latch_ttl: 1h } }]
    upstream: origin
  - name: lim
    match: { path: /lim }
    guards: [{ rate_limit: { name: per-ip, key: ip, rate: 1/m, burst: 1, scope: cluster } }]
    upstream: origin
`
}

interface Subject { readonly id: string, readonly what: string, readonly gw: Gateway, readonly redisPid: number | null }
interface Sample { round: number, subject: string, path: string, rps: number, requests: number, gatewayUs: number, redisUs: number | null, ledgerMessages: number | null, ledgerCalls: number | null, non2xx: number }

async function metricSum (admin: string, name: string): Promise<number | null> {
  const text = await (await fetch(admin + '/metrics')).text()
  let sum = 0
  let seen = false
  for (const l of text.split('\n')) {
    if (l.startsWith(name + ' ') || l.startsWith(name + '{')) { sum += Number(l.slice(l.lastIndexOf(' ') + 1)); seen = true }
  }
  return seen ? sum : null
}

async function main (): Promise<void> {
  if (which('wrk') === null) throw new Error('wrk is not installed (see scripts/tools.mjs)')
  if (which('redis-server') === null) throw new Error('redis-server is not installed (see scripts/tools.mjs)')
  const dir = mkdtempSync(join(tmpdir(), 'flashgate-ledger-bench-'))
  const upstream = await startUpstream(join(dir, 'upstream'), null)
  const redis = await startRedis(dir, 'redis', null)
  const subjects: Subject[] = []
  const make = async (id: string, what: string, workers: number, store: string, redisPid: number | null): Promise<void> => {
    const listen = await freePort()
    const admin = await freePort()
    const gw = await startGateway({ dir, name: id, yaml: yaml(listen, admin, upstream.url, store), listen, admin, workers, cpus: null })
    subjects.push({ id, what, gw, redisPid })
  }
  // A store timeout of 1 s, not the 50 ms default: this measures cost, and on a shared machine a 50 ms
  // deadline turns some calls into 503s (then the breaker's fast 503s), which cost less and skew the figure.
  await make('memory-1', 'one process, embedded store', 1, '{ kind: memory, timeout: 1s }', null)
  await make('ledger-2', '--workers 2, embedded store: the primary\'s ledger over IPC', 2, '{ kind: memory, timeout: 1s }', null)
  await make('redis-2', '--workers 2, Redis', 2, `{ kind: redis, url: "${redis.url}", timeout: 1s }`, redis.proc.pid)

  const samples: Sample[] = []
  for (let round = 1; round <= ROUNDS; round++) {
    for (const p of PATHS) {
      for (const s of subjects) {
        // Warm up (JIT, connections, the latch and the limit's first admission), then measure.
        await runWrk({ baseUrl: s.gw.url, requests: [{ method: 'GET', path: p.path }], connections: CONNECTIONS, seconds: 1, cpus: null })
        const m0 = await metricSum(s.gw.admin, 'flashgate_ledger_messages_total')
        const c0 = await metricSum(s.gw.admin, 'flashgate_ledger_calls_total')
        const g0 = cpuMicros(s.gw.proc.pid)
        const r0 = s.redisPid === null ? 0 : cpuMicros(s.redisPid)
        const r = await runWrk({ baseUrl: s.gw.url, requests: [{ method: 'GET', path: p.path }], connections: CONNECTIONS, seconds: SECONDS, cpus: null })
        const g1 = cpuMicros(s.gw.proc.pid)
        const r1 = s.redisPid === null ? 0 : cpuMicros(s.redisPid)
        const m1 = await metricSum(s.gw.admin, 'flashgate_ledger_messages_total')
        const c1 = await metricSum(s.gw.admin, 'flashgate_ledger_calls_total')
        const n = Math.max(1, r.answered)
        const sample: Sample = {
          round,
          subject: s.id,
          path: p.id,
          rps: Math.round(r.rps),
          requests: r.answered,
          gatewayUs: Math.round((g1 - g0) / n * 10) / 10,
          redisUs: s.redisPid === null ? null : Math.round((r1 - r0) / n * 10) / 10,
          ledgerMessages: m0 === null || m1 === null ? null : Math.round((m1 - m0) / n * 1000) / 1000,
          ledgerCalls: c0 === null || c1 === null ? null : Math.round((c1 - c0) / n * 1000) / 1000,
          non2xx: r.non2xx
        }
        samples.push(sample)
        console.log(JSON.stringify(sample))
      }
    }
  }
  await stopAll()

  const at = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, '').replace(/^(\d{8})T/, (_, d: string) => `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6, 8)}T`)
  const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s.length === 0 ? NaN : s.length % 2 === 1 ? s[(s.length - 1) / 2] as number : ((s[s.length / 2 - 1] as number) + (s[s.length / 2] as number)) / 2 }
  const pick = (subject: string, path: string, f: (s: Sample) => number | null): number[] => samples.filter((s) => s.subject === subject && s.path === path).map(f).filter((v): v is number => v !== null)
  const lines: string[] = [
    `# The node's ledger: cost per request (${at})`,
    '',
    `\`${INVOKED} --seconds ${SECONDS} --rounds ${ROUNDS} --connections ${CONNECTIONS}\` (gateway: ${flashgateCommand().how}): wrk -t1 -c${CONNECTIONS}, ${SECONDS} s per sample, ${ROUNDS} interleaved rounds, nothing pinned; the`,
    'machine was shared with other work, so absolute figures are noisy: compare within a row. CPU is user + system of',
    'the gateway\'s process tree (primary + workers) per completed request; Redis\'s own CPU is separate. Medians of the rounds.',
    `Load average when the run started: ${LOAD_AT_START}.`,
    '',
    'Store timeout 1 s in all three (the bench measures cost; see bench/ledger.ts). "unexpected": answers other than',
    'the path\'s own (admitted: not 2xx; the others: 2xx).',
    '',
    '| path | subject | req/s | gateway CPU µs/req | redis-server µs/req | ledger messages/req | ledger calls/req | unexpected |',
    '|---|---|---:|---:|---:|---:|---:|---:|'
  ]
  for (const p of PATHS) {
    for (const s of subjects) {
      const f = (g: (x: Sample) => number | null): string => { const v = pick(s.id, p.id, g); return v.length === 0 ? '–' : String(Math.round(median(v) * 1000) / 1000) }
      const unexpected = samples.filter((x) => x.subject === s.id && x.path === p.id).reduce((a, x) => a + (p.id === 'admitted' ? x.non2xx : x.requests - x.non2xx), 0)
      lines.push(`| ${p.what} | ${s.what} | ${f((x) => x.rps)} | ${f((x) => x.gatewayUs)} | ${f((x) => x.redisUs)} | ${f((x) => x.ledgerMessages)} | ${f((x) => x.ledgerCalls)} | ${unexpected} |`)
    }
  }
  lines.push('', 'Every sample:', '', '```', ...samples.map((s) => JSON.stringify(s)), '```', '')
  const base = join(ROOT, 'bench', 'results', `ledger-${at}`)
  writeFileSync(base + '.md', lines.join('\n'))
  writeFileSync(base + '.json', JSON.stringify({ at, seconds: SECONDS, rounds: ROUNDS, connections: CONNECTIONS, samples }, null, 2) + '\n')
  console.log(lines.join('\n'))
  console.log(`written: ${base}.md`)
}

main().catch(async (err: unknown) => {
  console.error(err)
  await stopAll()
  process.exit(1)
})
