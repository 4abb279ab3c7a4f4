/**
 * wrk as the load generator for the throughput scenarios: a C event loop that drives 100k+ requests/s
 * from one core, so it never becomes the bottleneck of a Node server pinned to the other core, and it is
 * the same tool the peers kit measures with (same numbers, same way). One thread (`-t1`), like the kit.
 * A generated Lua script prints the figures as JSON in `done()` (p99.9 included, which `--latency` lacks)
 * and, when several request shapes are given, cycles through them (pre-formatted once at init).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { run } from '../proc.js'
import type { LoadResult, RequestSpec } from './types.js'

export interface WrkOptions {
  readonly baseUrl: string
  readonly requests: readonly RequestSpec[]
  readonly connections: number
  readonly seconds: number
  /** CPU list for wrk (null = inherit). */
  readonly cpus: string | null
  /** Per-request timeout in seconds (wrk default 2). */
  readonly timeoutS?: number
}

const luaString = (s: string): string => `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n').replace(/\r/g, '\\r')}"`

/**
 * One request per line for the Lua side: method, path, then header name/value pairs, tab-separated
 * (a list inline in the script would hit Lua's 65536-constants limit per function).
 */
export function wrkRequestLines (requests: readonly RequestSpec[]): string {
  const clean = (x: string): string => x.replace(/[\t\r\n]/g, ' ')
  return requests.map((r) => [r.method, r.path, ...Object.entries(r.headers ?? {}).flat()].map(clean).join('\t')).join('\n') + '\n'
}

/** The Lua script: static request (fast path) or a cycled list read from a file; figures as one JSON line at the end. */
export function wrkScript (requests: readonly RequestSpec[], listFile: string | null): string {
  const lines: string[] = []
  const first = requests[0]
  if (first === undefined) throw new Error('wrk: no request')
  if (requests.length === 1 || listFile === null) {
    // Static request: wrk builds it once and never calls into Lua per request.
    lines.push(`wrk.method = ${luaString(first.method)}`, `wrk.path = ${luaString(first.path)}`)
    for (const [k, v] of Object.entries(first.headers ?? {})) lines.push(`wrk.headers[${luaString(k)}] = ${luaString(v)}`)
    if (first.body !== undefined) lines.push(`wrk.body = ${luaString(first.body)}`)
  } else {
    // Bodies are not supported in lists (the bench's lists are GETs); each request is formatted once here.
    lines.push('local reqs = {}', 'local n = 0', 'local i = 0',
      'init = function(args)',
      `  for line in io.lines(${luaString(listFile)}) do`,
      '    local f = {}',
      '    for x in string.gmatch(line, "[^\t]+") do f[#f + 1] = x end',
      '    local h = {}',
      '    for j = 3, #f - 1, 2 do h[f[j]] = f[j + 1] end',
      '    reqs[#reqs + 1] = wrk.format(f[1], f[2], h, nil)',
      '  end',
      '  n = #reqs',
      'end',
      'request = function()', '  i = i % n + 1', '  return reqs[i]', 'end')
  }
  lines.push(
    'done = function(summary, latency, requests)',
    '  local e = summary.errors',
    '  io.write(string.format(\'WRKJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50":%.1f,"p90":%.1f,"p99":%.1f,"p999":%.1f,"max":%.1f,"mean":%.1f}\\n\',',
    '    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,',
    '    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9), latency.max, latency.mean))',
    'end')
  return lines.join('\n') + '\n'
}

/**
 * The load generator itself failed (no result line): it crashed or hung, which says nothing about the
 * server measured. Rare (three times in two days of bench runs with wrk 4.1.0 on this machine, each on
 * the funnel's request-list target; a CPU profile of the gateway during one such run shows it idle for
 * the whole 34 s: wrk never sent a request); the measuring loop runs such a run once more.
 */
export class GeneratorFailed extends Error {}

/** One folder per bench process for the scripts and request lists, removed when the process exits. */
let workDir: string | null = null
let scripts = 0
/** A list is written once and reused by every run of its target (warm-up, rounds). */
const listFiles = new WeakMap<readonly RequestSpec[], string>()

function wrkDir (): string {
  if (workDir === null) {
    const dir = mkdtempSync(join(tmpdir(), 'fg-wrk-'))
    workDir = dir
    process.once('exit', () => { rmSync(dir, { recursive: true, force: true }) })
  }
  return workDir
}

interface WrkJson { requests: number, duration_us: number, connect: number, read: number, write: number, status: number, timeout: number, p50: number, p90: number, p99: number, p999: number, max: number, mean: number }

export async function runWrk (o: WrkOptions): Promise<LoadResult> {
  const dir = wrkDir()
  const n = ++scripts
  const script = join(dir, `script-${n}.lua`)
  let list: string | null = null
  if (o.requests.length > 1) {
    list = listFiles.get(o.requests) ?? null
    if (list === null) {
      list = join(dir, `requests-${n}.tsv`)
      writeFileSync(list, wrkRequestLines(o.requests))
      listFiles.set(o.requests, list)
    }
  }
  writeFileSync(script, wrkScript(o.requests, list))
  const first = o.requests[0]
  const url = o.baseUrl + (first?.path ?? '/')
  const args = ['-t1', `-c${o.connections}`, `-d${o.seconds}s`, `--timeout`, `${o.timeoutS ?? 2}s`, '-s', script, url]
  const r = await run('wrk', args, { cpus: o.cpus, timeoutMs: (o.seconds + 30) * 1000 })
  const line = r.stdout.split('\n').find((l) => l.startsWith('WRKJSON '))
  if (line === undefined) {
    const how = r.timedOut === true ? `killed after ${o.seconds + 30} s` : r.signal != null ? `killed by ${r.signal}` : `exit ${String(r.code)}`
    throw new GeneratorFailed(`wrk gave no result (${how}): ${r.stderr.slice(0, 500)} ${r.stdout.slice(0, 500)}`)
  }
  const j = JSON.parse(line.slice(8)) as WrkJson
  const seconds = j.duration_us / 1e6
  const socketErrors = j.connect + j.read + j.write + j.timeout
  const ms = (us: number): number => Math.round(us) / 1000
  return {
    generator: 'wrk',
    seconds,
    sent: j.requests + socketErrors,
    answered: j.requests,
    lost: socketErrors,
    rps: j.requests / seconds,
    latencyMs: { p50: ms(j.p50), p90: ms(j.p90), p99: ms(j.p99), p999: ms(j.p999), max: ms(j.max), mean: ms(j.mean) },
    statuses: null,
    non2xx: j.status,
    timeline: null
  }
}
