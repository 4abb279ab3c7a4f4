/**
 * The access log: one JSON line per request, appended to a buffer and written in batches (one write
 * per ~50 ms or per 64 KiB), never a synchronous write per request. Only fields safe to keep are
 * written: no query string, no cookies, no tokens; of the headers only Host and User-Agent.
 *
 * `reopen()` (SIGUSR1, as nginx's `-s reopen`): a file log is opened again at its path, so a rotated
 * (renamed) file is left behind and the next lines go to a new file. Lines buffered before the signal
 * go to the old file, lines after it to the new one.
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
  /** X-Request-Id; the rest are null (or absent) when not known. */
  readonly requestId?: string
  readonly host?: string | null
  readonly userAgent?: string | null
  /** Request body bytes (Content-Length, or counted for a chunked / h2 body). */
  readonly bytesIn?: number
  /** Response body bytes written. */
  readonly bytesOut?: number
  readonly upstreamStatus?: number | null
  /** From the first byte sent upstream to the last byte relayed (all attempts), ms. */
  readonly upstreamMs?: number | null
  readonly traceId?: string | null
  /** `1.1` or `2.0`. */
  readonly protocol?: string
}

export interface AccessLog {
  readonly enabled: boolean
  log (e: AccessEntry): void
  /** Write what is buffered now (synchronously). */
  flushSync (): void
  /** Open a file log again at its path (after rotation); stdout/stderr: nothing to do. */
  reopen? (): void
  close (): void
}

const FLUSH_BYTES = 64 * 1024
const FLUSH_MS = 50

/** An access log that does nothing (`access_log.enabled: false`). */
const NO_ACCESS_LOG: AccessLog = { enabled: false, log () {}, flushSync () {}, reopen () {}, close () {} }

function strOrNull (v: string | null | undefined): string {
  return v === null || v === undefined ? 'null' : JSON.stringify(v)
}

function numOrNull (v: number | null | undefined): string {
  return v === null || v === undefined ? 'null' : String(Math.round(v * 1000) / 1000)
}

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
    ',"duration_ms":' + (Math.round(e.durationMs * 1000) / 1000) + ',"ip":' + JSON.stringify(e.ip) +
    ',"request_id":' + strOrNull(e.requestId) + ',"host":' + strOrNull(e.host) + ',"user_agent":' + strOrNull(e.userAgent) +
    ',"bytes_in":' + numOrNull(e.bytesIn) + ',"bytes_out":' + numOrNull(e.bytesOut) +
    ',"upstream_status":' + numOrNull(e.upstreamStatus) + ',"upstream_ms":' + numOrNull(e.upstreamMs) +
    ',"trace_id":' + strOrNull(e.traceId) + ',"protocol":' + strOrNull(e.protocol) + '}\n'
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
  /** Descriptors replaced by reopen(), closed once no write on them is in flight. */
  let retired: number[] = []

  function openFile (): void {
    opening = true
    open(cfg.path, 'a', (err, f) => {
      opening = false
      if (err !== null) { onError(err); return }
      if (closed) { try { closeSync(f) } catch {} return }
      fd = f
      flush()
    })
  }

  function closeRetired (): void {
    if (writing) return
    for (const f of retired) { try { closeSync(f) } catch {} }
    retired = []
  }

  if (ownsFd) openFile()

  function flush (): void {
    if (timer !== null) { clearTimeout(timer); timer = null }
    if (writing || opening || buf === '' || fd === -1) return
    const data = buf
    buf = ''
    writing = true
    write(fd, data, null, 'utf8', (err) => {
      writing = false
      if (err !== null) onError(err)
      if (retired.length > 0) closeRetired()
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
    reopen () {
      if (!ownsFd || closed || opening) return
      // What is buffered was logged before the signal: it goes to the old file.
      this.flushSync()
      if (fd !== -1) { retired.push(fd); fd = -1 }
      closeRetired()
      openFile()
    },
    close () {
      if (closed) return
      this.flushSync()
      closed = true
      if (ownsFd && fd !== -1) {
        const f = fd
        fd = -1
        // Let an in-flight async write finish before closing the descriptor.
        const tryClose = (): void => { if (writing) setTimeout(tryClose, 5); else { try { closeSync(f) } catch {} closeRetired() } }
        tryClose()
      }
    }
  }
}
