/**
 * Bench `faults`, phase `redis-kill-journal` (issue 17): the redis-kill phase with `store.on_error:
 * journal`, through a real HTTP gateway (`flashgate serve` as its own process) in front of a real origin
 * (an HTTP server in this process that takes every buy and counts it per user).
 *
 * redis-server (AOF, appendfsync always) is SIGKILLed 3 s into the sale and restarted on the same port 2 s
 * later. Buyers arrive at `rate`/s over HTTP (route: dedupe → quota); each one keeps going until a final
 * answer: 200 (admitted), 409 SOLD_OUT / DUPLICATE, or a 202 PENDING ticket polled every 100 ms
 * (`GET /_flashgate/pending/:ticket`) until it is ADMITTED / SOLD_OUT / DUPLICATE / FAILED; a 503 is
 * retried after 100 ms. Every loop is bounded (the phase gives up `seconds + 20` s after the start).
 *
 * Reported: oversold (buys the origin took beyond the quota, plus any user it saw twice; must be 0), lost
 * (buyers with no final answer when the phase ends, 202 tickets never final included; must be 0), each
 * buyer's wait from its first request to its final answer (p50/p99/max), buys answered per second
 * during the outage (202 PENDING: acknowledged on disk) beside admissions per second before it.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Agent, request } from 'undici'
import { flashgateCommand, ROOT } from './flashgate.js'
import { freePort, sleep, start, stop, waitPort, type Managed } from './proc.js'
import type { PhaseResult } from './faults.js'

const pct = (xs: number[], p: number): number => {
  if (xs.length === 0) return 0
  const s = [...xs].sort((a, b) => a - b)
  return Math.round(s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] as number)
}

interface Answer { status: number, json: any }

async function call (d: Agent, url: string, method: 'GET' | 'POST', user: string): Promise<Answer | null> {
  try {
    const r = await request(url, { dispatcher: d, method, headers: { 'x-user-id': user, 'content-type': 'application/json' }, body: method === 'POST' ? '{}' : null, headersTimeout: 5000, bodyTimeout: 5000 })
    const text = await r.body.text()
    let json: any = null
    try { json = JSON.parse(text) } catch {}
    return { status: r.statusCode, json }
  } catch { return null }
}

export async function redisKillJournal (log: (l: string) => void, o: { quota?: number, rate?: number, seconds?: number } = {}): Promise<PhaseResult> {
  const quota = o.quota ?? 400
  const rate = o.rate ?? 60
  const seconds = o.seconds ?? 10
  const dir = mkdtempSync(join(tmpdir(), 'fg-faults-journal-'))
  const procs: Managed[] = []
  const bought = new Map<string, number>()
  let buys = 0
  const origin = createServer((req: IncomingMessage, res: ServerResponse) => {
    req.resume()
    req.on('end', () => {
      const u = String(req.headers['x-user-id'])
      bought.set(u, (bought.get(u) ?? 0) + 1)
      buys++
      const body = JSON.stringify({ status: 'QUEUED', order: buys })
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
      res.end(body)
    })
  })
  const d = new Agent({ connections: 64, keepAliveTimeout: 10_000 })
  try {
    await new Promise<void>((resolve) => origin.listen(0, '127.0.0.1', resolve))
    const originUrl = `http://127.0.0.1:${(origin.address() as AddressInfo).port}`
    const redisPort = await freePort()
    const redisArgs = ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'yes', '--appendfsync', 'always', '--daemonize', 'no', '--dir', dir]
    const startRedis = async (): Promise<Managed> => {
      const m = start({ name: 'redis-journal', cmd: 'redis-server', args: redisArgs, cpus: null, logFile: join(dir, 'redis.log') })
      procs.push(m)
      await waitPort(redisPort, 'redis-server', m)
      return m
    }
    let redis = await startRedis()
    const listen = await freePort()
    const admin = await freePort()
    const file = join(dir, 'gateway.yaml')
    writeFileSync(file, `listen: 127.0.0.1:${listen}
admin: 127.0.0.1:${admin}
access_log: { enabled: false }
store:
  kind: redis
  url: redis://127.0.0.1:${redisPort}
  timeout: 300ms
  breaker_failures: 3
  breaker_backoff: 200ms
  on_error: journal
  journal: { path: ${join(dir, 'journal')} }
identity: { user: header x-user-id }
upstreams:
  origin:
    targets: [{ url: ${originUrl} }]
    retries: 0
campaigns:
  - id: c1
    starts_at: 2020-01-01T00:00:00Z
    ends_at: 2099-01-01T00:00:00Z
    products:
      - { id: p1, quota: ${quota} }
routes:
  - name: buy
    match: { path: /buy/:campaign/:product, methods: [POST] }
    guards:
      - dedupe: { ttl: 1h }
      - quota: { latch_ttl: 100ms }
    upstream: origin
`)
    const fg = flashgateCommand()
    const gw = start({ name: 'gateway-journal', cmd: fg.cmd, args: [...fg.pre, 'serve', '--config', file], cpus: null, logFile: join(dir, 'gateway.log'), cwd: ROOT })
    procs.push(gw)
    await waitPort(listen, 'gateway (journal)', gw, 30_000)
    const base = `http://127.0.0.1:${listen}`

    const t0 = Date.now()
    const giveUp = t0 + (seconds + 20) * 1000
    let downAt = -1
    let upAt = -1
    const admittedAt: number[] = []
    const pendingAt: number[] = []
    const journalFinalAt: number[] = []
    const waits: number[] = []
    const finals = new Map<string, number>()
    let answers503 = 0
    let noAnswer = 0
    const final = (s: string): void => { finals.set(s, (finals.get(s) ?? 0) + 1) }
    const buyer = async (i: number): Promise<void> => {
      const user = `j-${i}`
      const s0 = Date.now()
      while (Date.now() < giveUp) {
        const a = await call(d, `${base}/buy/c1/p1`, 'POST', user)
        if (a === null) { noAnswer++; await sleep(100); continue }
        if (a.status === 200) { admittedAt.push(Date.now() - t0); final('ADMITTED'); waits.push(Date.now() - s0); return }
        if (a.status === 409) { final(String(a.json?.code)); waits.push(Date.now() - s0); return }
        if (a.status === 202 && typeof a.json?.ticket === 'string') {
          pendingAt.push(Date.now() - t0)
          while (Date.now() < giveUp) {
            await sleep(100)
            const p = await call(d, `${base}/_flashgate/pending/${a.json.ticket as string}`, 'GET', user)
            if (p === null || p.status !== 200) { noAnswer++; continue }
            if (p.json?.status === 'PENDING') continue
            if (p.json?.status === 'ADMITTED') admittedAt.push(Date.now() - t0)
            journalFinalAt.push(Date.now() - t0)
            final(`journal ${String(p.json?.status)}`)
            waits.push(Date.now() - s0)
            return
          }
          return
        }
        answers503++
        await sleep(100)
      }
    }
    const fault = (async () => {
      await sleep(3000)
      log('faults: SIGKILL redis-server (journal on, through the gateway)')
      redis.child.kill('SIGKILL'); downAt = Date.now() - t0
      await redis.exited
      await sleep(2000)
      redis = await startRedis(); upAt = Date.now() - t0
      log('faults: redis-server restarted; the gateway replays its journal')
    })()
    const all: Array<Promise<void>> = []
    let n = 0
    while (Date.now() - t0 < seconds * 1000) {
      const due = Math.floor(((Date.now() - t0) / 1000) * rate)
      for (; n < due; n++) all.push(buyer(n))
      await sleep(10)
    }
    await Promise.all(all)
    await fault
    const down = downAt >= 0 ? downAt : 0
    const up = upAt >= 0 ? upAt : down
    const twice = [...bought.values()].filter((k) => k > 1).length
    const before = admittedAt.filter((a) => a < down).length
    const ackedDuring = pendingAt.filter((a) => a >= down && a < up).length
    const after = admittedAt.filter((a) => a >= down).sort((a, b) => a - b)
    const finalCount = [...finals.values()].reduce((a, b) => a + b, 0)
    const liveAfterUp = admittedAt.length - (finals.get('journal ADMITTED') ?? 0) - before
    const drained = journalFinalAt.length > 0 ? Math.max(...journalFinalAt) - up : -1
    return {
      phase: 'redis-kill-journal',
      quota,
      buyers: n,
      admitted: buys,
      oversold: Math.max(0, buys - quota) + twice,
      lost: n - finalCount,
      waitMs: { p50: pct(waits, 50), p99: pct(waits, 99), max: pct(waits, 100) },
      outageMs: up - down,
      admittedPerSecOutage: up > down ? Math.round(ackedDuring / ((up - down) / 1000)) : 0,
      admittedPerSecBefore: down > 0 ? Math.round(before / (down / 1000)) : 0,
      answers503,
      recoveryMs: after[0] !== undefined ? after[0] - down : -1,
      notes: `store.on_error: journal through \`flashgate serve\` (its own process) and HTTP buyers (dedupe → quota); AOF appendfsync always; "during outage" counts buys answered 202 PENDING per second (on disk, replayed after the restart), "admitted" counts buys the origin took; finals: ${JSON.stringify(Object.fromEntries(finals))}; ${pendingAt.length} buys journaled, the last one final ${drained} ms after the restart (polled every 100 ms); ${liveAfterUp} buyers admitted live after the outage; ${twice} users bought twice; ${noAnswer} requests got no HTTP answer and were retried`
    }
  } finally {
    await d.close()
    for (const m of procs.reverse()) await stop(m, 3000)
    origin.closeAllConnections()
    await new Promise<void>((resolve) => origin.close(() => resolve()))
    if (process.env.FLASHGATE_BENCH_KEEP === undefined) rmSync(dir, { recursive: true, force: true }); else log(`faults: kept ${dir}`)
  }
}
