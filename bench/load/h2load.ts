/**
 * The open-loop spike's generator in C: h2load (nghttp2) over HTTP/1.1 (`--h1`), `-c` keep-alive clients
 * each sending at a fixed rate (`--rps`, rate ÷ clients), for `-D` seconds, on the load core, with every
 * request's status and time written to a log (`--log-file`) that gives the percentiles. It drives far
 * more than the bench's in-process generator (bench/load/open-loop.ts), whose own event loop was what
 * the spike measured on a 2-core machine; its CPU is measured as a reaped child (bench/generator-health.ts).
 *
 * What it measures differs from open-loop.ts in one way: h2load times a request from when it was sent,
 * and a client with a request in flight sends its next one late rather than queueing it (HTTP/1.1, no
 * pipelining) — the coordinated omission an open-loop generator avoids. So a step is judged on the
 * rate too: what was due (rate × seconds) and not answered is lost, and a step holds only when at most
 * 2 % was lost (h2load's timers start clients a little late; spike.ts judgeStep). Within that, latency is
 * the service time.
 *
 * Bounded: `-D` seconds plus h2load's own timeouts, killed 20 s past that; 127.0.0.1 only (the caller's
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

/** h2load's arguments for one run (pure: for the tests). */
export function h2loadArgs (o: OpenLoopOptions, logFile: string): string[] {
  const clients = Math.max(1, Math.min(o.connections, Math.ceil(o.rate)))
  const perClient = o.rate / clients
  const args = ['--h1', '-t', '1', '-c', String(clients), `--rps=${perClient.toFixed(3)}`, '-D', String(o.seconds), `--log-file=${logFile}`]
  for (const [k, v] of Object.entries(o.requests[0]?.headers ?? {})) args.push('-H', `${k}: ${v}`)
  for (const r of o.requests) args.push(o.baseUrl + r.path)
  return args
}

/** The per-request log: `start µs \t status \t µs to end of response` per line. */
export function parseH2loadLog (text: string): { statuses: Record<string, number>, latency: Histogram, answered: number, failed: number } {
  const statuses: Record<string, number> = {}
  const latency = new Histogram()
  let answered = 0
  let failed = 0
  for (const line of text.split('\n')) {
    if (line === '') continue
    const f = line.split('\t')
    const status = Number(f[1])
    const us = Number(f[2])
    if (!Number.isFinite(status) || !Number.isFinite(us)) continue
    if (status <= 0) { failed++; continue }
    answered++
    statuses[String(status)] = (statuses[String(status)] ?? 0) + 1
    latency.record(us)
  }
  return { statuses, latency, answered, failed }
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
    const p = parseH2loadLog(text)
    const intended = Math.round(o.rate * o.seconds)
    // h2load may send a few past the window: counted up to what was due, so due = answered + lost.
    const answered = Math.min(p.answered, intended)
    const lat = latencyOf(p.latency)
    return {
      rate: o.rate,
      seconds: o.seconds,
      intended,
      sent: p.answered + p.failed,
      answered,
      lost: intended - answered,
      rps: o.seconds > 0 ? Math.round(p.answered / o.seconds) : 0,
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
