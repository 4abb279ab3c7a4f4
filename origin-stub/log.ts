/**
 * The origin's process log: one JSON object per line on stderr, the gateway's format (`time`, `level`,
 * `msg`, `pid`, fields), written synchronously (lines are rare: start, stop, errors; the loops that can
 * fail repeatedly rate-limit their own lines). A copy of nothing: the origin stands alone (it imports
 * conf/ only), so it has its own few lines rather than the gateway's logger.
 */
import { writeSync } from 'node:fs'
import type { LogFn } from './origin.js'

const RANK = { info: 20, warn: 30, error: 40 } as const

function replacer (this: unknown, _key: string, value: unknown): unknown {
  if (value instanceof Error) return { name: value.name, code: (value as { code?: unknown }).code, message: value.message }
  if (typeof value === 'bigint') return value.toString()
  return value
}

/** Lines at `level` (default `FLASHGATE_LOG_LEVEL` or info) and above, with `base` fields on each. */
export function createOriginLog (opts: { base?: Record<string, unknown>, level?: string, fd?: number } = {}): LogFn {
  const want = opts.level ?? process.env.FLASHGATE_LOG_LEVEL ?? 'info'
  const min = want === 'debug' ? 0 : RANK[want as keyof typeof RANK] ?? RANK.info
  const fd = opts.fd ?? 2
  return (level, msg, fields) => {
    if (RANK[level] < min) return
    const line = JSON.stringify({ time: new Date().toISOString(), level, msg, pid: process.pid, ...opts.base, ...fields }, replacer) + '\n'
    try { writeSync(fd, line) } catch {}
  }
}
