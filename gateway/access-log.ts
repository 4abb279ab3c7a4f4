/**
 * The access log: one JSON line per request, appended to a buffer and written in batches (one write
 * per ~50 ms or per 64 KiB), never a synchronous write per request. Only fields safe to keep are
 * written: no query string, no headers, no cookies, no tokens.
 */
import { open, write, writeSync, closeSync } from 'node:fs'
import type { AccessLogConfig } from '../conf/types.js'

export interface AccessEntry {
  readonly route: string
  readonly method: string
  /** Path without the query string. */
  readonly path: string
  readonly status: number
  /** `passed` or the reject / failure code. */
  readonly outcome: string
  readonly upstream: string | null
  readonly target: string | null
  readonly durationMs: number
  readonly ip: string
  /** Epoch ms of arrival. */
  readonly time: number
}

export interface AccessLog {
  readonly enabled: boolean
  log (e: AccessEntry): void
  /** Write what is buffered now (synchronously). */
  flushSync (): void
  close (): void
}

const FLUSH_BYTES = 64 * 1024
const FLUSH_MS = 50

/** An access log that does nothing (`access_log.enabled: false`). */
export const NO_ACCESS_LOG: AccessLog = { enabled: false, log () {}, flushSync () {}, close () {} }

let lastTime = 0
let lastIso = ''
function iso (ms: number): string {
  if (ms !== lastTime) { lastTime = ms; lastIso = new Date(ms).toISOString() }
  return lastIso
}

/** Format one line (exported for tests). */
export function formatEntry (e: AccessEntry): string {
  return '{"time":"' + iso(e.time) + '","route":' + JSON.stringify(e.route) + ',"method":' + JSON.stringify(e.method) +
    ',"path":' + JSON.stringify(e.path) + ',"status":' + e.status + ',"outcome":' + JSON.stringify(e.outcome) +
    ',"upstream":' + (e.upstream === null ? 'null' : JSON.stringify(e.upstream)) +
    ',"target":' + (e.target === null ? 'null' : JSON.stringify(e.target)) +
    ',"duration_ms":' + (Math.round(e.durationMs * 1000) / 1000) + ',"ip":' + JSON.stringify(e.ip) + '}\n'
}

/**
 * Open the access log per config: `stdout`, `stderr` or a file path (appended). Writes are async and
 * batched; at most one write is in flight, later lines wait in the buffer.
 */
export function createAccessLog (cfg: AccessLogConfig, onError: (err: Error) => void = () => {}): AccessLog {
  if (!cfg.enabled) return NO_ACCESS_LOG
  let fd = cfg.path === 'stdout' ? 1 : cfg.path === 'stderr' ? 2 : -1
  const ownsFd = fd === -1
  let buf = ''
  let writing = false
  let timer: NodeJS.Timeout | null = null
  let closed = false
  const pendingOpen = ownsFd
  let opening = pendingOpen

  if (ownsFd) {
    open(cfg.path, 'a', (err, f) => {
      opening = false
      if (err !== null) { onError(err); return }
      if (closed) { try { closeSync(f) } catch {} return }
      fd = f
      flush()
    })
  }

  function flush (): void {
    if (timer !== null) { clearTimeout(timer); timer = null }
    if (writing || opening || buf === '' || fd === -1) return
    const data = buf
    buf = ''
    writing = true
    write(fd, data, null, 'utf8', (err) => {
      writing = false
      if (err !== null) onError(err)
      if (buf !== '') schedule()
    })
  }

  function schedule (): void {
    if (buf.length >= FLUSH_BYTES) { flush(); return }
    if (timer === null) {
      timer = setTimeout(flush, FLUSH_MS)
      timer.unref()
    }
  }

  return {
    enabled: true,
    log (e) {
      if (closed) return
      buf += formatEntry(e)
      schedule()
    },
    flushSync () {
      if (timer !== null) { clearTimeout(timer); timer = null }
      if (buf === '' || fd === -1) return
      // An async write may still be in flight: its bytes land before or after ours; lines stay whole.
      const data = buf
      buf = ''
      try { writeSync(fd, data) } catch (err) { onError(err as Error) }
    },
    close () {
      if (closed) return
      this.flushSync()
      closed = true
      if (ownsFd && fd !== -1) {
        const f = fd
        fd = -1
        // Let an in-flight async write finish before closing the descriptor.
        const tryClose = (): void => { if (writing) setTimeout(tryClose, 5); else try { closeSync(f) } catch {} }
        tryClose()
      }
    }
  }
}
