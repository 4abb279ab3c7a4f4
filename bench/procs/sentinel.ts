/**
 * A real Redis Sentinel setup for the failover bench phase and tests: a primary, replicas (two by default)
 * whose replication links run through TCP relays this process owns (so a caller can make them lag:
 * `link.pause()` holds back what the primary sends; `link.cut()` drops it for good), and three
 * `redis-sentinel` processes with quorum 2. The first replica has the lowest replica-priority: Sentinel
 * promotes it, and points the others at it directly (no relay), so a promoted primary has replicas again.
 * All on free loopback ports, started on bench/proc.ts (recorded, SIGKILLed at process exit, output in a
 * log file in the setup's directory), gone at `stop()`.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, connect, type Server, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort, run, sleep, start, stop, waitPort, type Managed } from '../proc.js'
import { startBenchRedis, type BenchRedis } from '../redis-server.js'

export interface ReplicationLink {
  /** Hold back everything the primary sends the replica from now on (the replica lags; its acks stay old). */
  pause(): void
  /** Forward again, first what was held back. */
  resume(): void
  /** Close both sides and drop what was held back (it never reaches the replica). */
  cut(): void
}

export interface SentinelSetup {
  readonly name: string
  readonly primary: BenchRedis
  /** The replica Sentinel will promote (replicas[0]). */
  readonly replica: BenchRedis
  readonly replicas: BenchRedis[]
  /** All the relays at once. */
  readonly link: ReplicationLink
  /** `{ host, port }` of each sentinel. */
  readonly sentinels: Array<{ host: string, port: number }>
  /** The port the sentinels now name as the master (asks the first one that answers). */
  masterPort(): Promise<number>
  stop(): Promise<void>
}

/** redis-cli against 127.0.0.1:port (bounded); resolves stdout, rejects when it fails. */
async function redisCli (port: number, ...args: string[]): Promise<string> {
  const r = await run('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { timeoutMs: 20_000 })
  if (r.code !== 0) throw new Error(`redis-cli ${args.join(' ')}: exit ${String(r.code ?? r.signal)} ${r.stderr}`)
  return r.stdout
}

/**
 * A relay 127.0.0.1:port → 127.0.0.1:target whose target→client direction can be paused and cut.
 * `pausable` picks the client connections pause() and cut() apply to (default: all); the others are
 * forwarded throughout (a cluster master's relay carries its clients too, and holds back only its
 * replicas, told apart by their source address).
 */
export async function relay (target: number, pausable: (client: Socket) => boolean = () => true): Promise<{ port: number, link: ReplicationLink, close(): void }> {
  const pairs: Array<{ a: Socket, b: Socket, hold: boolean, held: Buffer[] }> = []
  let paused = false
  const server: Server = createServer((a) => {
    const b = connect({ port: target, host: '127.0.0.1' })
    const pair = { a, b, hold: pausable(a), held: [] as Buffer[] }
    pairs.push(pair)
    a.on('data', (d: Buffer) => { b.write(d) })
    b.on('data', (d: Buffer) => { if (paused && pair.hold) pair.held.push(d); else a.write(d) })
    const end = (): void => { a.destroy(); b.destroy() }
    a.on('error', end); b.on('error', end); a.on('close', end); b.on('close', end)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const addr = server.address()
  const port = typeof addr === 'object' && addr !== null ? addr.port : 0
  const link: ReplicationLink = {
    pause () { paused = true },
    resume () {
      paused = false
      for (const p of pairs) { for (const d of p.held) p.a.write(d); p.held = [] }
    },
    cut () {
      server.close()
      for (const p of pairs) { p.held = []; if (p.hold) { p.a.destroy(); p.b.destroy() } }
    }
  }
  return { port, link, close () { link.cut(); for (const p of pairs) { p.a.destroy(); p.b.destroy() } } }
}

async function info (port: number, section: string): Promise<string> {
  try { return await redisCli(port, 'info', section) } catch { return '' }
}

async function until (what: string, ms: number, fn: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    if (await fn()) return
    await sleep(100)
  }
  throw new Error(`${what} not within ${ms} ms`)
}

export async function startSentinelSetup (opts: { name?: string, downAfterMs?: number, replicas?: number } = {}): Promise<SentinelSetup> {
  const name = opts.name ?? 'fgmaster'
  const downAfter = opts.downAfterMs ?? 1000
  const n = opts.replicas ?? 2
  const primary = await startBenchRedis()
  const relays: Array<Awaited<ReturnType<typeof relay>>> = []
  const replicas: BenchRedis[] = []
  for (let i = 0; i < n; i++) {
    const r = await relay(primary.port)
    relays.push(r)
    replicas.push(await startBenchRedis({ args: ['--replicaof', '127.0.0.1', String(r.port), '--replica-priority', String(10 + i * 10)] }))
  }
  for (const rep of replicas) await until('replica in sync', 10_000, async () => /master_link_status:up/.test(await info(rep.port, 'replication')))
  const r = {
    link: {
      pause () { for (const x of relays) x.link.pause() },
      resume () { for (const x of relays) x.link.resume() },
      cut () { for (const x of relays) x.link.cut() }
    } satisfies ReplicationLink,
    close () { for (const x of relays) x.close() }
  }
  const replica = replicas[0] as BenchRedis
  const dir = mkdtempSync(join(tmpdir(), 'fg-sentinel-'))
  const procs: Managed[] = []
  const sentinels: Array<{ host: string, port: number }> = []
  try {
    for (let i = 0; i < 3; i++) {
      const port = await freePort()
      const file = join(dir, `sentinel-${i}.conf`)
      writeFileSync(file, [
        `port ${port}`, 'bind 127.0.0.1', 'protected-mode no', 'daemonize no', `dir ${dir}`, 'loglevel warning',
        `sentinel monitor ${name} 127.0.0.1 ${primary.port} 2`,
        `sentinel down-after-milliseconds ${name} ${downAfter}`,
        `sentinel failover-timeout ${name} ${downAfter * 4}`,
        `sentinel parallel-syncs ${name} 1`, ''
      ].join('\n'))
      const c = start({ name: `redis-sentinel-${port}`, cmd: 'redis-sentinel', args: [file], cpus: null, logFile: join(dir, `sentinel-${i}.log`) })
      procs.push(c)
      await waitPort(port, 'redis-sentinel', c, 10_000)
      sentinels.push({ host: '127.0.0.1', port })
    }
    // Each sentinel knows the other two (hello messages every 2 s) and the replica.
    await until('sentinels know each other and the replica', 20_000, async () => {
      for (const s of sentinels) {
        let m: string
        try { m = await redisCli(s.port, 'sentinel', 'master', name) } catch { return false }
        const lines = m.split('\n').map((x) => x.trim())
        const field = (k: string): string => lines[lines.indexOf(k) + 1] ?? ''
        if (field('num-other-sentinels') !== '2' || field('num-slaves') !== String(n)) return false
      }
      return true
    })
  } catch (err) {
    await Promise.all(procs.map(async (c) => { await stop(c, 0) }))
    r.close()
    await Promise.all([...replicas.map(async (x) => { await x.stop() }), primary.stop()])
    rmSync(dir, { recursive: true, force: true })
    throw err
  }
  return {
    name,
    primary,
    replica,
    replicas,
    link: r.link,
    sentinels,
    async masterPort () {
      for (const s of sentinels) {
        try {
          const out = (await redisCli(s.port, 'sentinel', 'get-master-addr-by-name', name)).trim().split('\n')
          const p = Number(out[1])
          if (Number.isInteger(p) && p > 0) return p
        } catch {}
      }
      return 0
    },
    async stop () {
      await Promise.all(procs.map(async (c) => { await stop(c, 0) }))
      r.close()
      await Promise.all([...replicas.map(async (x) => { await x.stop() }), primary.stop()])
      rmSync(dir, { recursive: true, force: true })
    }
  }
}
