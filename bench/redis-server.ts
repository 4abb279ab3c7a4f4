/**
 * A standalone redis-server for the bench's fault phases, on bench/proc.ts (free loopback port, the
 * process recorded and stopped on exit, its output in a log file): start, crash it (SIGKILL), start it
 * again on the same port and data directory (with AOF it comes back with its data), stop. The bench
 * does not import test/ helpers.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort, start, stop, waitPort, type Managed } from './proc.js'

export interface BenchRedis {
  readonly port: number
  /** `redis://127.0.0.1:<port>` */
  readonly url: string
  /** SIGKILL now (a crash); the port stays this server's for restart(). */
  kill(): void
  /** Start again on the same port and directory; resolves once it accepts connections. */
  restart(): Promise<void>
  /** TERM (KILL after 2 s), directory removed. */
  stop(): Promise<void>
}

export async function startBenchRedis (opts: { args?: readonly string[] } = {}): Promise<BenchRedis> {
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), `fg-bench-redis-${port}-`))
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--protected-mode', 'no', '--loglevel', 'warning', ...(opts.args ?? [])]
  let proc: Managed | null = null
  const launch = async (): Promise<void> => {
    proc = start({ name: `redis-${port}`, cmd: 'redis-server', args, cpus: null, logFile: join(dir, 'redis.log') })
    await waitPort(port, 'redis-server', proc, 10_000)
  }
  await launch()
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    kill () { try { if (proc !== null) process.kill(proc.pid, 'SIGKILL') } catch {} },
    async restart () {
      if (proc !== null) { try { process.kill(proc.pid, 'SIGKILL') } catch {} await proc.exited; await stop(proc, 0) }
      await launch()
    },
    async stop () {
      if (proc !== null) await stop(proc, 2000)
      proc = null
      rmSync(dir, { recursive: true, force: true })
    }
  }
}
