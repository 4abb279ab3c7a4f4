/**
 * The process log: one JSON object per line on stderr (the access log is separate, see access-log.ts).
 * Lines are rare (start, reload, errors), so a plain synchronous write is fine here.
 */
import { writeSync } from 'node:fs'

export type LogLevel = 'debug' | 'info' | 'warn' | 'error'
export type Log = (level: LogLevel, msg: string, fields?: Record<string, unknown>) => void

const RANK: Readonly<Record<LogLevel, number>> = { debug: 10, info: 20, warn: 30, error: 40 }

/** Error objects become `{name, code, message}`; stacks only at debug level. */
function replacer (this: unknown, _key: string, value: unknown): unknown {
  if (value instanceof Error) {
    const e = value as Error & { code?: unknown }
    return { name: e.name, code: e.code, message: e.message }
  }
  if (typeof value === 'bigint') return value.toString()
  return value
}

/**
 * A logger writing JSON lines to `fd` (default 2, stderr). `level` is the minimum level written
 * (default `FLASHGATE_LOG_LEVEL` or `info`). `base` fields (e.g. `{worker: 1}`) go on every line.
 */
export function createLog (opts: { fd?: number, level?: LogLevel, base?: Record<string, unknown>, write?: (line: string) => void } = {}): Log {
  const min = RANK[opts.level ?? (process.env.FLASHGATE_LOG_LEVEL as LogLevel | undefined) ?? 'info'] ?? RANK.info
  const fd = opts.fd ?? 2
  const base = opts.base ?? null
  const write = opts.write ?? ((line: string) => { try { writeSync(fd, line) } catch {} })
  return (level, msg, fields) => {
    if (RANK[level] < min) return
    const obj = { time: new Date().toISOString(), level, msg, pid: process.pid, ...base, ...fields }
    write(JSON.stringify(obj, replacer) + '\n')
  }
}

/** A logger that drops everything (tests, benchmarks). */
export const silentLog: Log = () => {}
