/**
 * Real redis-server processes for tests: one standalone server (`startRedis`) or a 3-master cluster
 * (`startRedisCluster`), each on free loopback ports, with no persistence, in a private temp dir.
 *
 * Everything started here is stopped by `stop()`; as a safety net every child still running is
 * SIGKILLed when the test process exits (normally or on SIGINT/SIGTERM/SIGHUP).
 *
 * Ports: found by binding port 0 on 127.0.0.1; 16379 and 18080–18091 (the peers kit's) are never used.
 * A cluster node also needs its bus port (port + 10000) free and ≤ 65535.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer, connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export interface RedisHandle {
  readonly port: number
  /** `redis://127.0.0.1:<port>` */
  readonly url: string
  /** Graceful stop (SIGTERM, SIGKILL after 2 s), temp dir removed. Idempotent. */
  stop(): Promise<void>
  /** Crash it now (SIGKILL), keeping the port reserved for restart(). */
  kill(): void
  /** Start again on the same port (killing the current process first if it still runs); resolves once PING answers. */
  restart(): Promise<void>
  /** Freeze it (SIGSTOP): connections stay open, nothing is answered — a hung server. */
  pause(): void
  /** Thaw it (SIGCONT). */
  resume(): void
}

export interface RedisClusterHandle {
  /** Seed URLs, `redis://127.0.0.1:<port>`, one per node (masters first, then replicas). */
  readonly nodes: string[]
  readonly ports: number[]
  /** Per-node handles (kill/restart one master to simulate a node failure). */
  readonly servers: RedisHandle[]
  stop(): Promise<void>
}

const AVOID = (p: number): boolean => p === 16379 || (p >= 18080 && p <= 18091) || p === 6379
const reserved = new Set<number>()
const live = new Set<ChildProcess>()
let exitHooked = false

function killAllSync (): void {
  for (const c of live) {
    try { c.kill('SIGKILL') } catch {}
  }
  live.clear()
}

function hookExit (): void {
  if (exitHooked) return
  exitHooked = true
  process.on('exit', killAllSync)
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSig = (): void => {
      killAllSync()
      process.removeListener(sig, onSig)
      // Nobody else handles it: restore the default behaviour (die by the signal).
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig)
    }
    process.on(sig, onSig)
  }
}

function canBind (port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer()
    s.once('error', () => resolve(false))
    s.listen({ port, host: '127.0.0.1', exclusive: true }, () => s.close(() => resolve(true)))
  })
}

function ephemeralPort (): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen({ port: 0, host: '127.0.0.1', exclusive: true }, () => {
      const addr = s.address()
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0
      s.close(() => resolve(port))
    })
  })
}

/** A free loopback port (also its bus port + 10000 when `withBus`), reserved for this process. */
export async function freePort (withBus = false): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const p = await ephemeralPort()
    if (AVOID(p) || reserved.has(p)) continue
    if (withBus) {
      const bus = p + 10000
      if (bus > 65535 || AVOID(bus) || reserved.has(bus) || !(await canBind(bus))) continue
      reserved.add(bus)
    }
    reserved.add(p)
    return p
  }
  throw new Error('no free port found')
}

/** One RESP PING on a fresh socket; true on +PONG. */
function ping (port: number, timeoutMs = 250): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect({ port, host: '127.0.0.1' })
    let buf = ''
    const done = (ok: boolean): void => {
      clearTimeout(timer)
      sock.destroy()
      resolve(ok)
    }
    const timer = setTimeout(() => done(false), timeoutMs)
    sock.setEncoding('utf8')
    sock.once('error', () => done(false))
    sock.on('data', (d: string) => {
      buf += d
      if (buf.includes('\r\n')) done(buf.startsWith('+PONG'))
    })
    sock.once('connect', () => sock.write('PING\r\n'))
  })
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** Run redis-cli with these arguments against 127.0.0.1:port; resolves stdout. */
export function redisCli (port: number, ...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { timeout: 20_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`redis-cli ${args.join(' ')}: ${err.message} ${stderr}`))
      else resolve(stdout)
    })
  })
}

interface ServerOpts {
  cluster?: boolean
  args?: readonly string[]
  /** A cluster node keeps its nodes.conf across restart() (with AOF it comes back as the same master). */
  keepClusterState?: boolean
  /** cluster-node-timeout (default 5000 ms): how long before a silent master counts as failed. */
  nodeTimeoutMs?: number
}

async function startServer (port: number, opts: ServerOpts): Promise<RedisHandle> {
  hookExit()
  const dir = mkdtempSync(join(tmpdir(), `fg-redis-${port}-`))
  const args = [
    '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
    '--dir', dir, '--protected-mode', 'no', '--loglevel', 'warning', '--daemonize', 'no'
  ]
  if (opts.cluster === true) {
    args.push('--cluster-enabled', 'yes', '--cluster-config-file', join(dir, 'nodes.conf'), '--cluster-node-timeout', String(opts.nodeTimeoutMs ?? 5000))
  }
  if (opts.args) args.push(...opts.args)

  let child: ChildProcess | null = null
  let output = ''
  let stopped = false

  let launches = 0
  const launch = async (): Promise<void> => {
    if (opts.cluster === true && (launches++ === 0 || opts.keepClusterState !== true)) rmSync(join(dir, 'nodes.conf'), { force: true })
    output = ''
    const c = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] })
    child = c
    live.add(c)
    const keep = (d: Buffer): void => { output = (output + d.toString()).slice(-4000) }
    c.stdout?.on('data', keep)
    c.stderr?.on('data', keep)
    let exited = false
    c.once('exit', () => { exited = true; live.delete(c) })
    c.once('error', (e) => { exited = true; output += String(e) })
    const deadline = Date.now() + 10_000
    while (Date.now() < deadline) {
      if (exited) throw new Error(`redis-server on port ${port} exited at start: ${output}`)
      if (await ping(port)) return
      await sleep(20)
    }
    c.kill('SIGKILL')
    throw new Error(`redis-server on port ${port} did not answer PING within 10 s: ${output}`)
  }

  const waitExit = (c: ChildProcess, ms: number): Promise<boolean> => new Promise((resolve) => {
    if (c.exitCode !== null || c.signalCode !== null) { resolve(true); return }
    const timer = setTimeout(() => resolve(false), ms)
    c.once('exit', () => { clearTimeout(timer); resolve(true) })
  })

  await launch()

  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    kill () {
      const c = child
      if (c && c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
    },
    pause () {
      const c = child
      if (c && c.exitCode === null && c.signalCode === null) c.kill('SIGSTOP')
    },
    resume () {
      const c = child
      if (c && c.exitCode === null && c.signalCode === null) c.kill('SIGCONT')
    },
    async restart () {
      if (stopped) throw new Error('restart after stop')
      const c = child
      if (c && c.exitCode === null && c.signalCode === null) {
        c.kill('SIGKILL')
        await waitExit(c, 5000)
      }
      await launch()
    },
    async stop () {
      if (stopped) return
      stopped = true
      const c = child
      if (c && c.exitCode === null && c.signalCode === null) {
        c.kill('SIGTERM')
        if (!(await waitExit(c, 2000))) {
          c.kill('SIGKILL')
          await waitExit(c, 2000)
        }
      }
      rmSync(dir, { recursive: true, force: true })
      reserved.delete(port)
      reserved.delete(port + 10000)
    }
  }
}

/** A standalone redis-server on a free loopback port, ready (PING answers) when this resolves. */
export async function startRedis (opts: { args?: readonly string[] } = {}): Promise<RedisHandle> {
  const port = await freePort()
  return await startServer(port, opts.args ? { args: opts.args } : {})
}

/**
 * A Redis Cluster of 3 masters (and `replicas` replicas each, none by default) on free loopback ports, created with
 * `redis-cli --cluster create`; resolves once every node reports `cluster_state:ok` and knows all slots.
 * `aof: true`: AOF with `appendfsync always` on every node, and restart() keeps the node's cluster state.
 */
export async function startRedisCluster (opts: { masters?: number, aof?: boolean, replicas?: number, nodeTimeoutMs?: number } = {}): Promise<RedisClusterHandle> {
  const masters = opts.masters ?? 3
  // `replicas` per master (default 0): redis-cli --cluster create makes the first `masters` nodes masters
  // and the others their replicas; the setup resolves once every replica's link to its master is up.
  const replicas = opts.replicas ?? 0
  const n = masters * (1 + replicas)
  const ports: number[] = []
  for (let i = 0; i < n; i++) ports.push(await freePort(true))
  const servers: RedisHandle[] = []
  try {
    // aof: every write fsynced (a SIGKILL loses nothing acknowledged), and a restarted master keeps its slots.
    const persist: ServerOpts = opts.aof === true ? { args: ['--appendonly', 'yes', '--appendfsync', 'always'], keepClusterState: true } : {}
    const timeout: ServerOpts = opts.nodeTimeoutMs !== undefined ? { nodeTimeoutMs: opts.nodeTimeoutMs } : {}
    for (const p of ports) servers.push(await startServer(p, { cluster: true, ...persist, ...timeout }))
    await redisCli(ports[0] ?? 0, '--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', String(replicas), '--cluster-yes')
    const deadline = Date.now() + 30_000
    for (;;) {
      const infos = await Promise.all(ports.map(async (p) => await redisCli(p, 'cluster', 'info')))
      const links = replicas === 0 ? [] : await Promise.all(ports.map(async (p) => await redisCli(p, 'info', 'replication')))
      const linked = links.every((r) => !r.includes('role:slave') || r.includes('master_link_status:up'))
      const slaves = links.filter((r) => r.includes('role:slave')).length
      if (linked && slaves === masters * replicas && infos.every((s) => s.includes('cluster_state:ok') && s.includes('cluster_slots_assigned:16384') && s.includes(`cluster_known_nodes:${n}`))) break
      if (Date.now() > deadline) throw new Error(`cluster not ok after 30 s: ${infos.join('\n')}`)
      await sleep(100)
    }
  } catch (err) {
    await Promise.all(servers.map(async (s) => await s.stop()))
    throw err
  }
  return {
    nodes: ports.map((p) => `redis://127.0.0.1:${p}`),
    ports,
    servers,
    async stop () { await Promise.all(servers.map(async (s) => await s.stop())) }
  }
}

/** The port of the master serving `key`'s slot (from `CLUSTER NODES` as `port` sees it). */
export async function slotOwner (port: number, key: string): Promise<number> {
  const slot = Number((await redisCli(port, 'cluster', 'keyslot', key)).trim())
  for (const line of (await redisCli(port, 'cluster', 'nodes')).split('\n')) {
    const f = line.trim().split(' ')
    if (f.length < 9 || !(f[2] ?? '').includes('master') || (f[2] ?? '').includes('fail')) continue
    for (const r of f.slice(8)) {
      if (r.startsWith('[')) continue
      const [a, b] = r.split('-').map(Number)
      if (a !== undefined && slot >= a && slot <= (b ?? a)) return Number(/:(\d+)@/.exec(f[1] ?? '')?.[1] ?? NaN)
    }
  }
  throw new Error(`no master serves slot ${slot} (${key})`)
}
