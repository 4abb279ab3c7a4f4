/**
 * Redis commands per request from `INFO commandstats` deltas. Commands run inside a Lua script are
 * counted by Redis too (EVALSHA → evalsha:1 plus e.g. incrby:1); so both figures are reported: every
 * command, and the client round trips (top-level commands: everything except commands that scripts run,
 * which we tell apart by the gateway's own store-operation counter when it has metrics).
 * Housekeeping commands (our INFO, pings, client setup, script loading) are left out.
 */
import { Redis } from 'ioredis'

const HOUSEKEEPING = new Set(['info', 'ping', 'client', 'config', 'hello', 'command', 'select', 'auth', 'script', 'cluster', 'readonly', 'subscribe', 'psubscribe', 'unsubscribe', 'punsubscribe', 'quit'])

export type CommandStats = Map<string, number>

export function parseCommandStats (info: string): CommandStats {
  const out: CommandStats = new Map()
  for (const line of info.split('\n')) {
    const m = /^cmdstat_([^:]+):calls=(\d+)/.exec(line.trim())
    if (m !== null) out.set((m[1] ?? '').toLowerCase(), Number(m[2]))
  }
  return out
}

/** A read-only probe on one redis-server. */
export class RedisProbe {
  private readonly client: Redis
  constructor (readonly url: string) {
    this.client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1, enableOfflineQueue: true, connectTimeout: 2000 })
    // A probe must never crash or spam the bench: failures show as missing figures (null).
    this.client.on('error', () => {})
  }

  async commandStats (): Promise<CommandStats | null> {
    try {
      return parseCommandStats(await this.client.info('commandstats'))
    } catch {
      return null
    }
  }

  /** CPU time redis-server has used (user + system, µs, from INFO cpu; Redis runs commands on one thread). */
  async cpuMicros (): Promise<number | null> {
    try {
      const info = await this.client.info('cpu')
      const v = (k: string): number => Number(new RegExp(`^${k}:([\\d.]+)`, 'm').exec(info)?.[1] ?? NaN)
      const us = (v('used_cpu_sys') + v('used_cpu_user')) * 1e6
      return Number.isFinite(us) ? us : null
    } catch {
      return null
    }
  }

  async hgetall (key: string): Promise<Record<string, string>> { return await this.client.hgetall(key) }
  async get (key: string): Promise<string | null> { return await this.client.get(key) }

  async close (): Promise<void> {
    this.client.disconnect()
  }
}

/** Work commands between two snapshots, housekeeping excluded: command → calls. */
export function commandDelta (a: CommandStats | null, b: CommandStats | null): Record<string, number> | null {
  if (a === null || b === null) return null
  const out: Record<string, number> = {}
  for (const [cmd, calls] of b) {
    if (HOUSEKEEPING.has(cmd) || cmd.startsWith('client|') || cmd.startsWith('config|') || cmd.startsWith('script|') || cmd.startsWith('cluster|')) continue
    const d = calls - (a.get(cmd) ?? 0)
    if (d > 0) out[cmd] = d
  }
  return out
}

export function sumCommands (d: Record<string, number> | null): number | null {
  if (d === null) return null
  return Object.values(d).reduce((a, b) => a + b, 0)
}

/** Top-level commands: scripts (eval/evalsha/fcall) count once; other commands are assumed top-level unless a script ran. */
export function scriptCalls (d: Record<string, number> | null): number {
  if (d === null) return 0
  return (d.evalsha ?? 0) + (d.eval ?? 0) + (d.fcall ?? 0) + (d.evalsha_ro ?? 0) + (d.eval_ro ?? 0) + (d.fcall_ro ?? 0)
}
