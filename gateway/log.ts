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
 *
 * Repeats are collapsed: a line whose level and message were already written within the last
 * `repeatWindowMs` (default 5 s) is counted instead of written, and when the window closes one line
 * says how many there were: `{"msg":"store error in guard","repeated":93599,"window_s":5,...}` with
 * `"note":"… repeated 93599 times in the last 5 s"`. A store outage thus writes a few lines, not one per
 * request (it wrote 93,600 identical lines, 36 MB, in 3 s). One unref'd timer runs while counts are open.
 */
export function createLog (opts: { fd?: number, level?: LogLevel, base?: Record<string, unknown>, write?: (line: string) => void, repeatWindowMs?: number, now?: () => number } = {}): Log {
  const min = RANK[opts.level ?? (process.env.FLASHGATE_LOG_LEVEL as LogLevel | undefined) ?? 'info'] ?? RANK.info
  const fd = opts.fd ?? 2
  const base = opts.base ?? null
  const write = opts.write ?? ((line: string) => { try { writeSync(fd, line) } catch {} })
  const windowMs = opts.repeatWindowMs ?? 5000
  const now = opts.now ?? Date.now
  /** level + msg → the open window: when it started and how many were held back. */
  const seen = new Map<string, { level: LogLevel, msg: string, since: number, held: number }>()
  let timer: NodeJS.Timeout | null = null
  const emit = (level: LogLevel, msg: string, fields: Record<string, unknown> | undefined): void => {
    const obj = { time: new Date().toISOString(), level, msg, pid: process.pid, ...base, ...fields }
    write(JSON.stringify(obj, replacer) + '\n')
  }
  const summary = (w: { level: LogLevel, msg: string, since: number, held: number }, t: number): void => {
    const s = Math.max(1, Math.round((t - w.since) / 1000))
    emit(w.level, w.msg, { repeated: w.held, window_s: s, note: `… repeated ${w.held} times in the last ${s} s` })
  }
  /** Close the windows that are over: a summary for those that held lines back. */
  const sweep = (): void => {
    const t = now()
    for (const [k, w] of seen) {
      if (t - w.since < windowMs) continue
      if (w.held > 0) summary(w, t)
      seen.delete(k)
    }
    if (seen.size === 0 && timer !== null) { clearInterval(timer); timer = null }
  }
  return (level, msg, fields) => {
    if (RANK[level] < min) return
    const key = level + '\n' + msg
    const w = seen.get(key)
    const t = now()
    if (w !== undefined) {
      if (t - w.since < windowMs) { w.held++; return }
      if (w.held > 0) summary(w, t)
      seen.delete(key)
    }
    seen.set(key, { level, msg, since: t, held: 0 })
    if (timer === null && opts.repeatWindowMs !== 0) {
      timer = setInterval(sweep, Math.max(100, Math.min(windowMs, 1000)))
      timer.unref()
    }
    emit(level, msg, fields)
  }
}

/** A logger that drops everything (tests, benchmarks). */
export const silentLog: Log = () => {}
