/**
 * The open-loop spike's generator in C: h2load (nghttp2) over HTTP/1.1 (`--h1`), `-c` keep-alive clients
 * each sending at a fixed rate (`--rps`, rate ÷ clients), rate × seconds requests in all (`-n`), on the
 * load core, with every request's status and time written to a log (`--log-file`) that gives the
 * percentiles. It drives far more than the bench's in-process generator (bench/load/open-loop.ts), whose
 * own event loop was what the spike measured on a 2-core machine; its CPU is measured as a reaped child
 * (bench/generator-health.ts).
 *
 * The clients are started a few at a time (`-r`, `--rate-period`) so that their send timers are spread
 * over one interval between a client's requests. Started together (h2load's default), every client's
 * timer fires at the same instant: the arrivals come as bursts of one request per client every
 * clients ÷ rate seconds, and the p99 measures the burst (64 requests queued behind each other), not
 * the server. Measured on a plain flashgate proxy at 2,000/s, 64 clients: p50 2.23 ms and p99 8.28 ms
 * with the clients started together, 0.12 ms and 0.24 ms staggered.
 *
 * What it measures differs from open-loop.ts in one way: h2load times a request from when it was sent,
 * and a client with a request in flight sends its next one late rather than queueing it (HTTP/1.1, no
 * pipelining) — the coordinated omission an open-loop generator avoids. So a step is judged on the
 * rate too: a request due within the step's window and not answered by its end is lost, and a step
 * holds only when at most 2 % was lost (spike.ts judgeStep). Within that, latency is the service time.
 *
 * Bounded: rate × seconds requests, killed 20 s past the step's length; 127.0.0.1 only (the caller's
 * URL, checked by the bench's options). One URI per request spec, cycled; one method (GET) and one set
 * of headers for all (the spike's targets are single GETs).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Histogram, latencyOf } from '../hist.js'
import { run } from '../proc.js'
import type { OpenLoopOptions, OpenLoopResult } from './open-loop.js'

/** Share of the requests due that must be answered for a step to count as keeping up. */
export const KEPT_UP = 0.98

/** Can h2load send these requests (GET only, one shared header set)? null when it can, else why not. */
export function h2loadCannot (o: OpenLoopOptions): string | null {
  const first = o.requests[0]
  if (first === undefined) return 'no request'
  const h = JSON.stringify(first.headers ?? {})
  for (const r of o.requests) {
    if (r.method !== 'GET' || (r.body ?? '') !== '') return 'h2load here sends GETs without a body only'
    if (JSON.stringify(r.headers ?? {}) !== h) return 'h2load sends one header set for all requests'
  }
  return null
}

/**
 * How the clients are started so that their send timers are evenly spread: `perPeriod` clients every
 * `periodMs` ms, which takes one interval between a client's requests (clients ÷ rate seconds), at 1 ms
 * granularity (h2load's --rate-period takes whole milliseconds). `rampMs` is how long the starts take.
 */
export function h2loadStagger (rate: number, clients: number): { perPeriod: number, periodMs: number, rampMs: number } {
  const perPeriod = rate > 1000 ? Math.min(clients, Math.round(rate / 1000)) : 1
  const periodMs = rate > 1000 ? 1 : Math.max(1, Math.round(1000 / rate))
  return { perPeriod, periodMs, rampMs: Math.ceil(clients / perPeriod) * periodMs }
}

function clientsFor (o: OpenLoopOptions): number {
  return Math.max(1, Math.min(o.connections, Math.ceil(o.rate)))
}

/** h2load's arguments for one run (pure: for the tests). */
export function h2loadArgs (o: OpenLoopOptions, logFile: string): string[] {
  const clients = clientsFor(o)
  const perClient = o.rate / clients
  const s = h2loadStagger(o.rate, clients)
  const n = Math.max(clients, Math.round(o.rate * o.seconds))
  const args = ['--h1', '-t', '1', '-c', String(clients), `--rps=${perClient.toFixed(3)}`, '-n', String(n), '-r', String(s.perPeriod), `--rate-period=${s.periodMs}ms`, `--log-file=${logFile}`]
  for (const [k, v] of Object.entries(o.requests[0]?.headers ?? {})) args.push('-H', `${k}: ${v}`)
  for (const r of o.requests) args.push(o.baseUrl + r.path)
  return args
}

/**
 * The per-request log: `start µs \t status \t µs to end of response` per line. `windowUs`: how long
 * after the first send an answer still counts as in time (`inTime`); every answer when absent.
 */
export function parseH2loadLog (text: string, windowUs = Infinity): { statuses: Record<string, number>, latency: Histogram, answered: number, failed: number, inTime: number } {
  const statuses: Record<string, number> = {}
  const latency = new Histogram()
  let answered = 0
  let failed = 0
  const ends: number[] = []
  let first = Infinity
  for (const line of text.split('\n')) {
    if (line === '') continue
    const f = line.split('\t')
    const start = Number(f[0])
    const status = Number(f[1])
    const us = Number(f[2])
    if (!Number.isFinite(status) || !Number.isFinite(us)) continue
    if (Number.isFinite(start) && start < first) first = start
    if (status <= 0) { failed++; continue }
    answered++
    statuses[String(status)] = (statuses[String(status)] ?? 0) + 1
    latency.record(us)
    ends.push(start + us)
  }
  let inTime = 0
  for (const e of ends) if (!(e - first > windowUs)) inTime++
  return { statuses, latency, answered, failed, inTime }
}

/** One bounded h2load run at `o.rate` arrivals per second; on CPU `cpus` when pinning is possible. */
export async function runH2loadOpenLoop (o: OpenLoopOptions, cpus: string | null): Promise<OpenLoopResult> {
  const dir = mkdtempSync(join(tmpdir(), 'flashgate-h2load-'))
  const log = join(dir, 'requests.tsv')
  try {
    const r = await run('h2load', h2loadArgs(o, log), { cpus, timeoutMs: (o.seconds + 20) * 1000 })
    if (r.code !== 0) throw new Error(`h2load failed (${String(r.code ?? r.signal)}): ${(r.stderr || r.stdout).slice(0, 400)}`)
    let text = ''
    try { text = readFileSync(log, 'latin1') } catch {}
    // In time: answered before the starts' ramp plus the step's seconds have passed since the first send.
    const p = parseH2loadLog(text, (o.seconds * 1000 + h2loadStagger(o.rate, clientsFor(o)).rampMs) * 1000)
    const intended = Math.round(o.rate * o.seconds)
    // Counted up to what was due, so due = answered + lost.
    const answered = Math.min(p.inTime, intended)
    const lat = latencyOf(p.latency)
    return {
      rate: o.rate,
      seconds: o.seconds,
      intended,
      sent: p.answered + p.failed,
      answered,
      lost: intended - answered,
      rps: o.seconds > 0 ? Math.round(answered / o.seconds) : 0,
      latencyMs: lat,
      serviceMs: lat,
      maxQueued: 0,
      statuses: p.statuses,
      socketErrors: p.failed
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}
