/**
 * Process management for the bench: every process it starts is recorded here and stopped by PID (TERM,
 * then KILL after a grace period) on exit, on error and on Ctrl-C. Loopback only; free ports are taken
 * from the kernel (port 0) and checked against the ports the peers kit reserves.
 */
import { spawn, spawnSync } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { createWriteStream, readFileSync, readdirSync } from 'node:fs'
import { createServer, connect } from 'node:net'

/** Ports the peers kit uses (redis 16379, servers 18080-18091): never handed out for our own servers. */
const RESERVED = new Set([16379, ...Array.from({ length: 12 }, (_, i) => 18080 + i)])

export interface Managed {
  readonly name: string
  readonly child: ChildProcess
  readonly pid: number
  /** Resolves with the exit code (or signal name) once the process is gone. */
  readonly exited: Promise<number | string>
  readonly logFile: string
}

const managed: Managed[] = []
let hooksInstalled = false

/** True when `taskset` can pin to CPU 1 (i.e. it exists and the machine has at least 2 CPUs). */
export const canPin: boolean = (() => {
  const r = spawnSync('taskset', ['-c', '1', 'true'], { stdio: 'ignore' })
  return r.status === 0
})()

/** Whether an executable is on the PATH. */
export function which (bin: string): string | null {
  const r = spawnSync('sh', ['-c', `command -v ${bin}`], { encoding: 'utf8' })
  return r.status === 0 ? r.stdout.trim() : null
}

/** Pin this process (all its threads) and so every child it starts to a CPU list, when taskset exists. */
export function pinSelf (cpus: string): boolean {
  if (!canPin) return false
  return spawnSync('taskset', ['-a', '-cp', cpus, String(process.pid)], { stdio: 'ignore' }).status === 0
}

/** A free loopback TCP port, never one of the peers kit's. */
export async function freePort (): Promise<number> {
  for (let i = 0; i < 20; i++) {
    const port = await new Promise<number>((resolve, reject) => {
      const srv = createServer()
      srv.once('error', reject)
      srv.listen(0, '127.0.0.1', () => {
        const addr = srv.address()
        const p = typeof addr === 'object' && addr !== null ? addr.port : 0
        srv.close(() => resolve(p))
      })
    })
    if (!RESERVED.has(port)) return port
  }
  throw new Error('no free port found')
}

/** True when something accepts TCP connections on 127.0.0.1:port. */
export async function portOpen (port: number, host = '127.0.0.1'): Promise<boolean> {
  return await new Promise((resolve) => {
    const s = connect({ port, host })
    s.once('connect', () => { s.destroy(); resolve(true) })
    s.once('error', () => { s.destroy(); resolve(false) })
    s.setTimeout(1000, () => { s.destroy(); resolve(false) })
  })
}

/** Wait (bounded) until a port accepts connections; fail early when the process exits first. */
export async function waitPort (port: number, what: string, proc: Managed | null, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  let exited: number | string | null = null
  void proc?.exited.then((c) => { exited = c })
  while (Date.now() < deadline) {
    if (await portOpen(port)) return
    if (exited !== null) throw new Error(`${what} exited (${String(exited)}) before listening on ${port}; log: ${proc?.logFile ?? '-'}\n${tail(proc?.logFile)}`)
    await sleep(50)
  }
  throw new Error(`${what}: nothing listens on 127.0.0.1:${port} after ${timeoutMs} ms; log: ${proc?.logFile ?? '-'}\n${tail(proc?.logFile)}`)
}

function tail (file: string | undefined, lines = 15): string {
  if (file === undefined) return ''
  try { return readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n') } catch { return '' }
}

export const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

export interface StartOptions {
  readonly name: string
  readonly cmd: string
  readonly args: readonly string[]
  /** CPU list for taskset (e.g. "0"); null = inherit this process's affinity. */
  readonly cpus: string | null
  readonly logFile: string
  readonly cwd?: string
  readonly env?: NodeJS.ProcessEnv
}

/** Start a long-running server process, pinned when asked and possible; output goes to its log file. */
export function start (o: StartOptions): Managed {
  installHooks()
  const pinned = o.cpus !== null && canPin
  const cmd = pinned ? 'taskset' : o.cmd
  const args = pinned ? ['-c', o.cpus ?? '0', o.cmd, ...o.args] : [...o.args]
  const log = createWriteStream(o.logFile, { flags: 'a' })
  log.write(`# ${new Date().toISOString()} ${cmd} ${args.join(' ')}\n`)
  const child = spawn(cmd, args, { cwd: o.cwd, env: o.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] })
  child.stdout?.pipe(log, { end: false })
  child.stderr?.pipe(log, { end: false })
  const exited = new Promise<number | string>((resolve) => {
    child.once('exit', (code, signal) => { resolve(code ?? signal ?? 'unknown') })
    child.once('error', (err) => { log.write(`spawn error: ${err.message}\n`); resolve(`error: ${err.message}`) })
  })
  void exited.then(() => { log.end() })
  if (child.pid === undefined) throw new Error(`could not start ${o.name}: ${o.cmd}`)
  const m: Managed = { name: o.name, child, pid: child.pid, exited, logFile: o.logFile }
  managed.push(m)
  return m
}

/** Stop one managed process: TERM, then KILL after graceMs. */
export async function stop (m: Managed, graceMs = 5000): Promise<void> {
  const i = managed.indexOf(m)
  if (i >= 0) managed.splice(i, 1)
  if (m.child.exitCode !== null || m.child.signalCode !== null) return
  try { process.kill(m.pid, 'SIGTERM') } catch { return }
  const t = setTimeout(() => { try { process.kill(m.pid, 'SIGKILL') } catch {} }, graceMs)
  await m.exited
  clearTimeout(t)
}

/** Stop everything started here, newest first (the gateway before the origin before redis). */
export async function stopAll (): Promise<void> {
  const all = managed.slice().reverse()
  await Promise.all(all.map(async (m) => { await stop(m) }))
}

function killAllSync (): void {
  for (const m of managed) {
    try { process.kill(m.pid, 'SIGKILL') } catch {}
  }
  managed.length = 0
}

function installHooks (): void {
  if (hooksInstalled) return
  hooksInstalled = true
  // Last resort: a crash or process.exit() must not leave servers behind.
  process.once('exit', killAllSync)
}

/** Run a short command to completion (bounded), returning its stdout. */
export async function run (cmd: string, args: readonly string[], opts: { cpus?: string | null, timeoutMs: number, cwd?: string, env?: NodeJS.ProcessEnv }): Promise<{ code: number | null, stdout: string, stderr: string, signal?: string | null, timedOut?: boolean }> {
  const pinned = opts.cpus !== undefined && opts.cpus !== null && canPin
  const c = pinned ? 'taskset' : cmd
  const a = pinned ? ['-c', opts.cpus ?? '1', cmd, ...args] : [...args]
  return await new Promise((resolve) => {
    const child = spawn(c, a, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString('utf8') })
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString('utf8') })
    let timedOut = false
    const t = setTimeout(() => { timedOut = true; child.kill('SIGKILL') }, opts.timeoutMs)
    child.once('error', (err) => { clearTimeout(t); resolve({ code: null, stdout, stderr: stderr + err.message }) })
    child.once('close', (code, signal) => { clearTimeout(t); resolve({ code, stdout, stderr, signal, timedOut }) })
    // A managed-like record so Ctrl-C kills a running load generator too.
    if (child.pid !== undefined) {
      const m: Managed = { name: cmd, child, pid: child.pid, exited: new Promise((resolve) => child.once('exit', (code, sig) => { resolve(code ?? sig ?? 'unknown') })), logFile: '' }
      managed.push(m)
      void m.exited.then(() => { const i = managed.indexOf(m); if (i >= 0) managed.splice(i, 1) })
    }
  })
}

const TICKS = (() => {
  const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' })
  const n = Number(r.stdout?.trim())
  return Number.isFinite(n) && n > 0 ? n : 100
})()

/** PIDs of a process and all its descendants (from /proc). */
export function processTree (root: number): number[] {
  const parent = new Map<number, number>()
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8')
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      parent.set(Number(d), Number(rest[1]))
    } catch {}
  }
  const out = [root]
  for (let i = 0; i < out.length; i++) {
    for (const [pid, ppid] of parent) if (ppid === out[i]) out.push(pid)
  }
  return out
}

/**
 * CPU time (user + system, in µs) used so far by a process and its descendants, from /proc/PID/stat.
 * Children that already exited and were reaped are in the parent's cutime/cstime, which are included.
 */
export function cpuMicros (root: number): number {
  let ticks = 0
  for (const pid of processTree(root)) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      // fields after the comm: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
      ticks += Number(f[11]) + Number(f[12]) + (pid === root ? Number(f[13]) + Number(f[14]) : 0)
    } catch {}
  }
  return (ticks * 1e6) / TICKS
}

/** Busy share (0..1) of one CPU between two /proc/stat samples. */
export function cpuTicks (cpu: number): { total: number, idle: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n').find((l) => l.startsWith(`cpu${cpu} `))
  if (line === undefined) return { total: 0, idle: 0 }
  const f = line.trim().split(/\s+/).slice(1).map(Number)
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0)
  return { total, idle: (f[3] ?? 0) + (f[4] ?? 0) }
}
