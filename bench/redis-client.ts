/**
 * Client CPU per Redis command, side by side in one run: how the store sends commands matters more than
 * anything else on a store-backed request. Compares, at several numbers of commands in flight:
 *   - ioredis, one write per command (what a cluster connection does);
 *   - ioredis with enableAutoPipelining (a Pipeline object per event-loop turn);
 *   - ioredis with the socket corked for the turn (what RedisStore does on a standalone Redis);
 *   - RedisStore.setIfAbsent, the same command with the store's breaker, deadline and metrics.
 *
 * Usage: npx tsx bench/redis-client.ts [commands-per-case, default 100000]
 * Starts its own redis-server on a free loopback port (pinned to CPU 1, this process to CPU 0 when
 * taskset is available: run it as `taskset -c 0 npx tsx bench/redis-client.ts`). Bounded: every case
 * sends exactly N commands.
 */
import { Redis } from 'ioredis'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createMetrics } from '../gateway/metrics.js'
import { RedisStore } from '../limiter/redis-store.js'
import { startRedis } from './flashgate.js'
import { stop, which } from './proc.js'
import { numberArg, scriptOptions } from '../gateway/cli-args.js'

const N = scriptOptions({
  prog: 'bench/redis-client.ts',
  usage: 'Usage: npx tsx bench/redis-client.ts [COMMANDS]\n\n  COMMANDS   commands per case, 100..10000000 (default 100000)',
  flags: {},
  positionals: 1
}, ({ positionals }) => numberArg(positionals[0], 'COMMANDS', 100, 10_000_000) ?? 100_000)
const IN_FLIGHT = [2, 8, 64]

async function drive (inFlight: number, op: (i: number) => Promise<unknown>): Promise<number> {
  const u0 = process.cpuUsage()
  let i = 0
  await Promise.all(Array.from({ length: inFlight }, async () => { while (i < N) await op(i++) }))
  const u = process.cpuUsage(u0)
  return (u.user + u.system) / N
}

async function main (): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'fg-redis-client-'))
  const redis = await startRedis(dir, 'redis', which('taskset') === null ? null : '1')
  const plain = new Redis(redis.url)
  const auto = new Redis(redis.url, { enableAutoPipelining: true })
  const corked = new Redis(redis.url)
  let held = false
  const release = (): void => { held = false; corked.stream.uncork() }
  const corkedSet = (k: string): Promise<unknown> => {
    if (!held) { held = true; corked.stream.cork(); setImmediate(release) }
    return corked.set(k, '1', 'PX', 10_000, 'NX')
  }
  const store = new RedisStore({ kind: 'redis', url: redis.url, nodes: [], keyPrefix: 'fg:', timeoutMs: 1000, breakerFailures: 5, breakerBackoffMs: 1000, onError: 'fail_closed', maxKeys: 1000, gatewayNodes: 1 }, { metrics: createMetrics({ defaultMetrics: false }), clock: Date.now })
  await store.ready()
  const cases: Array<[string, (i: number) => Promise<unknown>]> = [
    ['ioredis, a write per command', (i) => plain.set(`a${i}`, '1', 'PX', 10_000, 'NX')],
    ['ioredis enableAutoPipelining', (i) => auto.set(`b${i}`, '1', 'PX', 10_000, 'NX')],
    ['ioredis, socket corked per turn', (i) => corkedSet(`c${i}`)],
    ['RedisStore.setIfAbsent', (i) => store.setIfAbsent(`d${i}`, '1', 10_000)]
  ]
  const rows: string[] = []
  try {
    for (const inFlight of IN_FLIGHT) {
      // Three interleaved rounds, the median per case.
      const got = new Map<string, number[]>()
      for (let round = 0; round < 3; round++) {
        for (const [name, op] of cases) {
          await plain.flushall()
          const us = await drive(inFlight, op)
          got.set(name, [...(got.get(name) ?? []), us])
        }
      }
      for (const [name] of cases) {
        const v = (got.get(name) ?? []).sort((a, b) => a - b)[1] ?? NaN
        rows.push(`| ${inFlight} | ${name} | ${v.toFixed(2)} |`)
      }
    }
  } finally {
    await store.close()
    plain.disconnect(); auto.disconnect(); corked.disconnect()
    await stop(redis.proc)
    rmSync(dir, { recursive: true, force: true })
  }
  console.log(`SET NX PX, ${N} commands per case, median of 3 rounds; client CPU (user + system) per command\n`)
  console.log('| in flight | client | µs CPU/command |\n|---:|:---|---:|')
  for (const r of rows) console.log(r)
}

main().then(() => process.exit(0), (err: unknown) => { console.error(err); process.exit(1) })
