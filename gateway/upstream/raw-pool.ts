/**
 * `client: raw` — an HTTP/1.1 keep-alive client of flashgate's own on `node:net` sockets, a drop-in for
 * the undici `Pool` of one upstream target (gateway/upstream/index.ts's Exchange drives it through the
 * same `dispatch(opts, handler)` call and the same raw-header handler shape: onConnect, onHeaders,
 * onData, onComplete, onError), so retries, passive health, the connection wait queue, the balancer and
 * the 502/504 answers are the undici path's own code.
 *
 * Why: on the proxy path undici's per-request machinery (a Request object, header re-validation, the
 * llhttp wasm parser and its callbacks, a timer per socket) cost more than the rest of the exchange.
 * This client writes the request head in one string and parses the response head with byte tables.
 *
 * What it keeps of undici (so that the same bytes reach the upstream: test/gateway/upstream-raw.test.ts
 * sends one corpus through both):
 * - the request head: `METHOD path HTTP/1.1`, `host` first (the request's, else the target's
 *   `host[:port]`), `connection: keep-alive` (`close` for HEAD), the headers in order without host and
 *   content-length, then `content-length: N` (a Buffer body, a body stream already ended, or the
 *   request's Content-Length) or `transfer-encoding: chunked` (a stream of unknown length). No
 *   Content-Length for an empty body unless the method expects one (POST PUT PATCH QUERY PROPFIND
 *   PROPPATCH: `content-length: 0`). A body on a method that expects none closes the connection after.
 * - what it refuses as built (UND_ERR_INVALID_ARG, before any byte is sent): a path not starting with
 *   `/`, a byte outside 0x21-0xFF in the path, a method or header name that is no token, a header value
 *   with a control character other than HTAB, a second Host, a malformed Content-Length.
 * - the response: status line `HTTP/1.0|1.1 DDD [reason]`, fields as the strict listener reads them
 *   (token name, `:`, value bytes HTAB/SP..~/obs-text, no obs-fold, CRLF only; a value keeps its trailing
 *   whitespace, as undici passes it on), at most 16 KiB of head
 *   (HPE_HEADER_OVERFLOW); Content-Length digits only and once, not with Transfer-Encoding; chunked when
 *   Transfer-Encoding ends in `chunked` (sizes, extensions and trailers checked by the listener's
 *   ChunkedDecoder, trailers dropped), else read to the close; no body for HEAD, 1xx, 204, 304.
 *   One deliberate difference: a 304 (or 204) that carries its entity's Content-Length is relayed as
 *   the bodiless answer it is (RFC 9110 §8.6), where undici waits for that many bytes and fails the
 *   exchange (UND_ERR_RES_CONTENT_LENGTH_MISMATCH: the client's connection is cut).
 *   103 and other interim answers reach onHeaders (the Exchange skips them); 100 and 101 are errors
 *   (never asked for). A close before the end of a framed body is UND_ERR_SOCKET.
 * - keep-alive: reused while the upstream keeps it (`Connection: close` and HTTP/1.0 without
 *   keep-alive end it); idle for `keepalive_timeout`, or for the upstream's `Keep-Alive: timeout=N`
 *   less 2 s (undici's threshold); idle sockets are unref'd and dropped when the upstream closes them.
 * - timeouts: connect (UND_ERR_CONNECT_TIMEOUT), headers from the dispatch and refreshed while the body
 *   is written (UND_ERR_HEADERS_TIMEOUT), between body bytes (UND_ERR_BODY_TIMEOUT); one coarse 100 ms
 *   ticker for every connection of every pool, running only while connections exist.
 * - backpressure both ways: a false from onHeaders/onData pauses the socket until `resume`; the request
 *   body is paused while the socket's buffer is full.
 */
import { connect, type Socket } from 'node:net'
import type { Readable } from 'node:stream'
import { ChunkedDecoder, TOKEN, VALUE, latin1 } from '../http/raw-parser.js'

/** The handler shape the Exchange implements (undici's raw-header callbacks). */
export interface RawHandler {
  onConnect (abort: (err?: Error) => void): void
  onHeaders (statusCode: number, rawHeaders: Buffer[], resume: () => void, statusText: string): boolean
  /** When present, called instead of onHeaders with the head as parsed (no Buffer per header). */
  onHead? (statusCode: number, head: RawHead, resume: () => void, statusText: string): boolean
  onData (chunk: Buffer): boolean
  onComplete (trailers: string[] | null): void
  onError (err: Error): void
}

export interface RawDispatch {
  readonly path: string
  readonly method: string
  readonly headers: readonly string[]
  readonly body: Buffer | Readable | null
  readonly headersTimeout: number
  readonly bodyTimeout: number
}

export interface RawPoolOptions {
  readonly connections: number
  readonly connectTimeout: number
  readonly keepAliveTimeout: number
}

const NO_BYTES = Buffer.alloc(0)

/**
 * A response head as the connection parsed it, valid only during the handler's onHead call: header i's
 * name is `buf[at[4i], at[4i+1])`, its value `buf[at[4i+2], at[4i+3])` (leading whitespace dropped,
 * trailing kept, as undici hands it on). Names are tokens and values hold no CR, LF or NUL (checked).
 * One per connection, reused.
 */
export class RawHead {
  buf: Buffer = NO_BYTES
  count = 0
  readonly at: number[] = []
  /** The headers as undici's raw-header Buffers, for a handler that wants them. */
  rawHeaders (): Buffer[] {
    const out: Buffer[] = []
    const at = this.at
    for (let k = 0; k < 4 * this.count; k += 4) out.push(this.buf.subarray(at[k]!, at[k + 1]!), this.buf.subarray(at[k + 2]!, at[k + 3]!))
    return out
  }
}

/** The longest response head read (node's http.maxHeaderSize, undici's default). */
const MAX_HEAD = 16 * 1024
const KEEPALIVE_THRESHOLD_MS = 2000
const KEEPALIVE_MAX_MS = 600_000
const EXPECTS_PAYLOAD = new Set(['PUT', 'POST', 'PATCH', 'QUERY', 'PROPFIND', 'PROPPATCH'])
const BAD_VALUE = /[^\t\x20-\x7e\x80-\xff]/
const BAD_PATH = /[^\u0021-\u00ff]/
const KEEPALIVE_TIMEOUT = /timeout=(\d+)/

class CodedError extends Error {
  readonly code: string
  constructor (code: string, message: string, name = 'SocketError') {
    super(message)
    this.code = code
    this.name = name
  }
}
const invalid = (m: string): CodedError => new CodedError('UND_ERR_INVALID_ARG', m, 'InvalidArgumentError')
const socketError = (m: string): CodedError => new CodedError('UND_ERR_SOCKET', m)
const parseError = (code: string, m: string): CodedError => new CodedError(code, m, 'HTTPParserError')

const CR = 13
const LF = 10
const SP = 32
const HTAB = 9

// ---- one coarse ticker for every connection's deadline ---------------------------------------

const timed = new Set<Conn>()
let ticker: NodeJS.Timeout | null = null
function track (c: Conn): void {
  timed.add(c)
  if (ticker === null) {
    ticker = setInterval(tick, 100)
    ticker.unref()
  }
}
function untrack (c: Conn): void {
  timed.delete(c)
  if (timed.size === 0 && ticker !== null) { clearInterval(ticker); ticker = null }
}
function tick (): void {
  const now = Date.now()
  for (const c of timed) if (c.deadline !== 0 && now >= c.deadline) c.expire()
}

// ---- the request as built ---------------------------------------------------------------------

interface Job {
  readonly handler: RawHandler
  /** The head without its framing line(s) and final CRLF. */
  readonly head: string
  body: Buffer | Readable | null
  /** The request's own Content-Length, null when none. */
  readonly declared: number | null
  /** Bytes the body has (Content-Length sent), null when streamed chunked; settled when written (`frame`). */
  length: number | null
  readonly expectsPayload: boolean
  readonly isHead: boolean
  /** Close the connection after this exchange (HEAD, or a body on a method that expects none). */
  reset: boolean
  readonly headersTimeout: number
  readonly bodyTimeout: number
}

function isToken (s: string): boolean {
  if (s.length === 0) return false
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c > 255 || TOKEN[c] !== 1) return false
  }
  return true
}

/** Length of a body stream that has already ended (undici's util.bodyLength), else null. */
function endedLength (body: Readable): number | null {
  const st = (body as unknown as { _readableState?: { objectMode: boolean, ended: boolean, length: number } })._readableState
  return st !== undefined && !st.objectMode && st.ended && Number.isFinite(st.length) ? st.length : null
}

/** Build the request head or throw the InvalidArgumentError undici would. */
function build (opts: RawDispatch, handler: RawHandler, hostHeader: string): Job {
  const method = opts.method
  const path = opts.path
  if (!isToken(method)) throw invalid('invalid request method')
  if (path.charCodeAt(0) !== 47 && !path.startsWith('http://') && !path.startsWith('https://')) throw invalid('path must be an absolute URL or start with a slash')
  if (BAD_PATH.test(path)) throw invalid('invalid request path')
  const h = opts.headers
  let host: string | null = null
  let declared: number | null = null
  let fields = ''
  for (let i = 0; i + 1 < h.length; i += 2) {
    const name = h[i] as string
    const value = h[i + 1] as string
    if (!isToken(name)) throw invalid('invalid header key')
    if (BAD_VALUE.test(value)) throw invalid(`invalid ${name} header`)
    const n = name.length
    if (n === 4 && name.toLowerCase() === 'host') {
      if (host !== null) throw invalid('duplicate host header')
      host = value
      continue
    }
    if (n === 14 && name.toLowerCase() === 'content-length') {
      if (declared !== null) throw invalid('duplicate content-length header')
      if (!/^\d+$/.test(value)) throw invalid('invalid content-length header')
      declared = parseInt(value, 10)
      continue
    }
    if (n === 17 || n === 10 || n === 7) {
      const l = name.toLowerCase()
      if (l === 'transfer-encoding' || l === 'keep-alive' || l === 'upgrade') throw invalid(`invalid ${l} header`)
    }
    fields += name + ': ' + value + '\r\n'
  }
  const isHead = method === 'HEAD'
  const head = `${method} ${path} HTTP/1.1\r\n${host !== null ? `host: ${host}\r\n` : hostHeader}connection: ${isHead ? 'close' : 'keep-alive'}\r\n${fields}`
  return {
    handler,
    head,
    body: opts.body,
    declared,
    length: null,
    expectsPayload: EXPECTS_PAYLOAD.has(method),
    isHead,
    reset: isHead,
    headersTimeout: opts.headersTimeout,
    bodyTimeout: opts.bodyTimeout
  }
}

/**
 * Settle the body's framing as it is about to be written (as undici's writeH1, on the socket): a body
 * stream that has already ended is sent with its length, an empty one as no body; false (and the
 * error thrown) when a length it has contradicts the request's Content-Length.
 */
function frame (job: Job): void {
  const body = job.body
  let length: number | null
  if (body === null) length = 0
  else if (Buffer.isBuffer(body)) length = body.length
  else {
    body.read(0) // let a stream that has all its bytes see its end (undici does the same)
    length = endedLength(body)
    if (length !== null && length > 0 && job.declared !== null && job.declared !== length) {
      throw new CodedError('UND_ERR_REQ_CONTENT_LENGTH_MISMATCH', 'Request body length does not match content-length header', 'RequestContentLengthMismatchError')
    }
    length ??= job.declared
  }
  if (length === 0) {
    job.body = null
    if (!job.expectsPayload) length = null
  }
  job.length = length
  if (job.body !== null && !job.expectsPayload) job.reset = true
}

// ---- one connection ---------------------------------------------------------------------------

const enum Phase { Connecting, Idle, Head, Body, Closed }
const enum Framing { None, Length, Chunked, Close }
const enum Deadline { None, Connect, Headers, Body, Idle }

class Conn {
  readonly socket: Socket
  deadline = 0
  private deadlineKind = Deadline.None
  private phase = Phase.Connecting
  private job: Job | null = null
  private readonly pool: RawPool
  private buf: Buffer | null = null
  /** The response head being handed over (reused per response). */
  private readonly view = new RawHead()
  private scanFrom = 0
  private framing = Framing.None
  private left = 0
  private chunks: ChunkedDecoder | null = null
  private keepAlive = true
  private idleMs: number
  private paused = false
  private parsing = false
  /** The request body is still being written. */
  private writing = false
  private bodyCleanup: (() => void) | null = null
  private lastError: Error | null = null
  /** The current exchange's resume and abort (per exchange: a late call from a finished one is a no-op). */
  private resumeFn: () => void = () => {}
  private readonly onChunk = (c: Buffer): void => { this.deliver(c) }

  constructor (pool: RawPool, job: Job) {
    this.pool = pool
    this.job = job
    this.idleMs = pool.keepAliveTimeout
    this.socket = connect({ host: pool.hostname, port: pool.port, noDelay: true })
    this.setDeadline(Deadline.Connect, pool.connectTimeout)
    track(this)
    const s = this.socket
    s.on('connect', () => {
      if (this.phase !== Phase.Connecting) return
      const j = this.job
      this.job = null
      if (j !== null) this.run(j); else this.toIdle()
    })
    s.on('data', this.onChunk)
    s.on('error', (err: Error) => { this.lastError ??= err })
    s.on('close', () => { this.onClose() })
  }

  get busy (): boolean { return this.phase !== Phase.Idle && this.phase !== Phase.Closed }
  get usable (): boolean { return this.phase === Phase.Idle && !this.socket.destroyed && this.socket.readable }

  private setDeadline (kind: Deadline, ms: number): void {
    this.deadlineKind = kind
    this.deadline = kind === Deadline.None || ms <= 0 ? 0 : Date.now() + ms
  }

  /** Send `job` on this (connected, idle) socket. */
  run (job: Job): void {
    this.job = job
    this.phase = Phase.Head
    this.framing = Framing.None
    this.keepAlive = true
    this.socket.ref()
    this.setDeadline(Deadline.Headers, job.headersTimeout)
    try {
      frame(job)
    } catch (err) {
      // Refused before onConnect, as undici does (no byte was sent): the connection stays usable.
      this.job = null
      this.toIdle()
      job.handler.onError(err as Error)
      return
    }
    this.resumeFn = () => { if (this.job === job) this.resume() }
    job.handler.onConnect((err?: Error) => {
      if (this.job === job) this.fail(err ?? new CodedError('UND_ERR_ABORTED', 'Request aborted', 'RequestAbortedError'))
    })
    if (this.job !== job) return // aborted in onConnect
    const s = this.socket
    const body = job.body
    if (body === null) {
      s.write(job.length === 0 ? job.head + 'content-length: 0\r\n\r\n' : job.head + '\r\n', 'latin1')
    } else if (Buffer.isBuffer(body)) {
      s.cork()
      s.write(job.head + 'content-length: ' + String(body.length) + '\r\n\r\n', 'latin1')
      s.write(body)
      s.uncork()
    } else {
      this.stream(job, body)
    }
  }

  /** Stream a Readable body (undici's writeStream: framed by its length, else chunked). */
  private stream (job: Job, body: Readable): void {
    const s = this.socket
    this.writing = true
    let written = 0
    let finished = false
    const onData = (chunk: Buffer | string): void => {
      if (finished || s.destroyed) return
      const b = typeof chunk === 'string' ? Buffer.from(chunk) : chunk
      if (b.length === 0) return
      if (job.length !== null && written + b.length > job.length) { finish(new CodedError('UND_ERR_REQ_CONTENT_LENGTH_MISMATCH', 'Request body length does not match content-length header', 'RequestContentLengthMismatchError')); return }
      s.cork()
      if (written === 0) s.write(job.length === null ? job.head + 'transfer-encoding: chunked\r\n' : job.head + 'content-length: ' + String(job.length) + '\r\n\r\n', 'latin1')
      if (job.length === null) s.write('\r\n' + b.length.toString(16) + '\r\n', 'latin1')
      written += b.length
      const ok = s.write(b)
      s.uncork()
      if (this.deadlineKind === Deadline.Headers) this.setDeadline(Deadline.Headers, job.headersTimeout)
      if (!ok) body.pause()
    }
    const onDrain = (): void => { if (!finished) body.resume() }
    const onEnd = (): void => { finish(null) }
    const onError = (err: Error): void => { finish(err) }
    const onClose = (): void => { if (!finished) queueMicrotask(() => { finish(new CodedError('UND_ERR_ABORTED', 'Request aborted', 'RequestAbortedError')) }) }
    const cleanup = (): void => {
      finished = true
      this.writing = false
      this.bodyCleanup = null
      body.off('data', onData); body.off('end', onEnd); body.off('error', onError); body.off('close', onClose)
      s.off('drain', onDrain)
    }
    const finish = (err: Error | null): void => {
      if (finished) return
      cleanup()
      if (err !== null) { this.fail(err); return }
      if (s.destroyed) return
      if (written === 0) s.write(job.expectsPayload ? job.head + 'content-length: 0\r\n\r\n' : job.head + '\r\n', 'latin1')
      else if (job.length === null) s.write('\r\n0\r\n\r\n', 'latin1')
      if (job.length !== null && written !== job.length) { this.fail(new CodedError('UND_ERR_REQ_CONTENT_LENGTH_MISMATCH', 'Request body length does not match content-length header', 'RequestContentLengthMismatchError')); return }
      if (this.deadlineKind === Deadline.Headers) this.setDeadline(Deadline.Headers, job.headersTimeout)
    }
    this.bodyCleanup = () => {
      cleanup()
      // Stop reading a body nobody sends any more; the stream's owner decides what to do with it.
      body.pause()
    }
    body.on('data', onData).on('end', onEnd).on('error', onError).on('close', onClose)
    s.on('drain', onDrain)
    body.resume()
  }

  private deliver (c: Buffer): void {
    if (this.phase === Phase.Closed) return
    if (this.phase === Phase.Idle || this.phase === Phase.Connecting) {
      // Bytes nobody asked for: the connection cannot be trusted any more.
      this.destroy()
      return
    }
    this.buf = this.buf === null ? c : Buffer.concat([this.buf, c])
    this.parse()
  }

  /** Consume buffered response bytes as far as the handler lets us. */
  private parse (): void {
    if (this.parsing) return
    this.parsing = true
    try {
      while (this.buf !== null && !this.paused && this.job !== null) {
        if (this.phase === Phase.Head) {
          if (!this.head()) break
        } else if (this.phase === Phase.Body) {
          if (!this.bodyBytes()) break
        } else break
      }
    } finally {
      this.parsing = false
    }
  }

  /** Parse one response head if it is complete; false when more bytes are needed or the exchange ended. */
  private head (): boolean {
    const buf = this.buf as Buffer
    // Bare LF anywhere in the head is refused at once (llhttp, strict).
    let lf = buf.indexOf(LF, this.scanFrom)
    let end = -1
    while (lf !== -1) {
      if (lf === 0 || buf[lf - 1] !== CR) { this.fail(parseError('HPE_LF_EXPECTED', 'Missing expected CR after header value')); return false }
      if (lf >= 3 && buf[lf - 2] === LF && buf[lf - 3] === CR) { end = lf + 1; break }
      lf = buf.indexOf(LF, lf + 1)
    }
    if (end === -1) {
      if (buf.length > MAX_HEAD) { this.fail(parseError('HPE_HEADER_OVERFLOW', 'Header overflow')); return false }
      this.scanFrom = Math.max(0, buf.length - 1)
      return false
    }
    this.scanFrom = 0
    if (end > MAX_HEAD) { this.fail(parseError('HPE_HEADER_OVERFLOW', 'Header overflow')); return false }
    const job = this.job as Job
    // Status line: HTTP/1.x SP DDD [SP reason] CRLF
    const eol0 = buf.indexOf(CR)
    if (eol0 < 12 || buf[0] !== 0x48 || buf[1] !== 0x54 || buf[2] !== 0x54 || buf[3] !== 0x50 || buf[4] !== 0x2f || buf[5] !== 0x31 || buf[6] !== 0x2e ||
      (buf[7] !== 0x30 && buf[7] !== 0x31) || buf[8] !== SP) { this.fail(parseError('HPE_INVALID_CONSTANT', 'Expected HTTP/')); return false }
    const minor = (buf[7] as number) - 0x30
    const d0 = (buf[9] as number) - 0x30; const d1 = (buf[10] as number) - 0x30; const d2 = (buf[11] as number) - 0x30
    if (d0 < 1 || d0 > 9 || d1 < 0 || d1 > 9 || d2 < 0 || d2 > 9) { this.fail(parseError('HPE_INVALID_STATUS', 'Invalid status code')); return false }
    const status = d0 * 100 + d1 * 10 + d2
    let statusText = ''
    if (eol0 > 12) {
      if (buf[12] !== SP) { this.fail(parseError('HPE_INVALID_STATUS', 'Invalid status code')); return false }
      for (let i = 13; i < eol0; i++) if (VALUE[buf[i] as number] !== 1) { this.fail(parseError('HPE_INVALID_STATUS', 'Invalid response status')); return false }
      statusText = latin1(buf, 13, eol0)
    }
    const h = this.view
    h.at.length = 0
    h.count = 0
    let cl = -1
    let te: string | null = null
    let connection: string | null = null
    let keepAliveHint: string | null = null
    let pos = eol0 + 2
    while (pos < end - 2) {
      const eol = buf.indexOf(CR, pos)
      if (buf[eol + 1] !== LF) { this.fail(parseError('HPE_LF_EXPECTED', 'Missing expected LF after header value')); return false }
      let i = pos
      while (i < eol && TOKEN[buf[i] as number] === 1) i++
      if (i === pos || buf[i] !== 0x3a) { this.fail(parseError('HPE_INVALID_HEADER_TOKEN', 'Invalid header token')); return false }
      const n0 = pos; const n1 = i
      i++
      while (i < eol && (buf[i] === SP || buf[i] === HTAB)) i++
      const v0 = i
      let v1 = i
      for (; i < eol; i++) {
        const c = buf[i] as number
        if (VALUE[c] !== 1) { this.fail(parseError('HPE_INVALID_HEADER_TOKEN', 'Invalid header value char')); return false }
        if (c !== SP && c !== HTAB) v1 = i + 1
      }
      // The value as undici hands it on: leading whitespace dropped, trailing kept.
      h.at.push(n0, n1, v0, eol)
      h.count++
      const nl = n1 - n0
      // Only the framing fields are read as text (by length and first letter, case-insensitively).
      const c0 = (buf[n0] as number) | 0x20
      if (nl === 14 && c0 === 0x63 && latin1(buf, n0, n1).toLowerCase() === 'content-length') {
        if (cl !== -1) { this.fail(parseError('HPE_UNEXPECTED_CONTENT_LENGTH', 'Duplicate Content-Length')); return false }
        if (v1 === v0 || v1 - v0 > 15) { this.fail(parseError('HPE_INVALID_CONTENT_LENGTH', 'Invalid character in Content-Length')); return false }
        let v = 0
        for (let k = v0; k < v1; k++) {
          const d = (buf[k] as number) - 0x30
          if (d < 0 || d > 9) { this.fail(parseError('HPE_INVALID_CONTENT_LENGTH', 'Invalid character in Content-Length')); return false }
          v = v * 10 + d
        }
        cl = v
      } else if (nl === 17 && c0 === 0x74 && latin1(buf, n0, n1).toLowerCase() === 'transfer-encoding') {
        const v = latin1(buf, v0, v1)
        te = te === null ? v : te + ', ' + v
      } else if (nl === 10 && c0 === 0x63 && latin1(buf, n0, n1).toLowerCase() === 'connection') {
        const v = latin1(buf, v0, v1)
        connection = connection === null ? v : connection + ', ' + v
      } else if (nl === 10 && c0 === 0x6b && latin1(buf, n0, n1).toLowerCase() === 'keep-alive') {
        keepAliveHint = latin1(buf, v0, v1)
      }
      pos = eol + 2
    }
    if (te !== null && cl !== -1) { this.fail(parseError('HPE_UNEXPECTED_CONTENT_LENGTH', "Content-Length can't be present with Transfer-Encoding")); return false }
    this.buf = end === buf.length ? null : buf.subarray(end)
    if (status === 100 || status === 101) { this.fail(socketError(status === 100 ? 'bad response' : 'bad upgrade')); return false }
    if (status < 200) {
      // An interim answer (103): the final head follows.
      this.deliverHead(job, status, buf, statusText)
      return this.job === job
    }
    const conn = connection === null ? '' : connection.toLowerCase()
    this.keepAlive = minor === 1 ? !/(?:^|[\s,])close(?:$|[\s,])/.test(conn) : /(?:^|[\s,])keep-alive(?:$|[\s,])/.test(conn)
    if (this.keepAlive) {
      const m = keepAliveHint === null ? null : KEEPALIVE_TIMEOUT.exec(keepAliveHint)
      if (m !== null) {
        const ms = Math.min(parseInt(m[1] as string, 10) * 1000 - KEEPALIVE_THRESHOLD_MS, KEEPALIVE_MAX_MS)
        if (ms <= 0) this.keepAlive = false; else this.idleMs = ms
      } else this.idleMs = this.pool.keepAliveTimeout
    }
    if (job.isHead || status === 204 || status === 304) this.framing = Framing.None
    else if (te !== null) {
      const codings = te.toLowerCase().split(',')
      if ((codings[codings.length - 1] as string).trim() === 'chunked') {
        this.framing = Framing.Chunked
        this.chunks = new ChunkedDecoder(MAX_HEAD)
      } else {
        this.framing = Framing.Close
        this.keepAlive = false
      }
    } else if (cl !== -1) {
      this.framing = cl === 0 ? Framing.None : Framing.Length
      this.left = cl
    } else {
      this.framing = Framing.Close
      this.keepAlive = false
    }
    this.setDeadline(Deadline.Body, job.bodyTimeout)
    if (!this.deliverHead(job, status, buf, statusText)) this.pause()
    if (this.job !== job) return false
    if (this.framing === Framing.None) { this.complete(); return false }
    this.phase = Phase.Body
    return true
  }

  /** The parsed head (this.view over `buf`) to the handler; its answer (false: pause). */
  private deliverHead (job: Job, status: number, buf: Buffer, statusText: string): boolean {
    const h = this.view
    h.buf = buf
    try {
      return job.handler.onHead !== undefined
        ? job.handler.onHead(status, h, this.resumeFn, statusText)
        : job.handler.onHeaders(status, h.rawHeaders(), this.resumeFn, statusText)
    } finally {
      h.buf = NO_BYTES
    }
  }

  /** Hand body bytes to the handler; false when more are needed or the exchange ended. */
  private bodyBytes (): boolean {
    const buf = this.buf as Buffer
    const job = this.job as Job
    if (this.deadlineKind === Deadline.Body) this.setDeadline(Deadline.Body, job.bodyTimeout)
    if (this.framing === Framing.Close) {
      this.buf = null
      if (job.handler.onData(buf) === false) this.pause()
      return false
    }
    if (this.framing === Framing.Length) {
      const n = Math.min(this.left, buf.length)
      const part = n === buf.length ? buf : buf.subarray(0, n)
      this.buf = n === buf.length ? null : buf.subarray(n)
      this.left -= n
      if (job.handler.onData(part) === false) this.pause()
      if (this.job !== job) return false
      if (this.left === 0) { this.complete(); return false }
      return this.buf !== null
    }
    // Chunked: decode what is here; the handler's pause takes effect after this buffer.
    const dec = this.chunks as ChunkedDecoder
    let pauseAsked = false
    const p = dec.feed(buf, 0, buf.length, (b) => { if (this.job === job && job.handler.onData(b) === false) pauseAsked = true })
    if (this.job !== job) return false
    if (p < 0) { this.fail(parseError('HPE_INVALID_CHUNK_SIZE', 'Invalid chunked body')); return false }
    this.buf = p >= buf.length ? null : buf.subarray(p)
    if (pauseAsked) this.pause()
    if (dec.done) { this.complete(); return false }
    return false
  }

  private pause (): void {
    if (this.paused) return
    this.paused = true
    this.socket.pause()
  }

  private resume (): void {
    if (!this.paused || this.phase === Phase.Closed) return
    this.paused = false
    this.socket.resume()
    if (this.job !== null && this.deadlineKind === Deadline.Body) this.setDeadline(Deadline.Body, this.job.bodyTimeout)
    if (this.buf !== null) this.parse()
  }

  /** The response is complete: hand it over, then reuse or close the connection. */
  private complete (): void {
    const job = this.job as Job
    this.job = null
    this.chunks = null
    this.setDeadline(Deadline.None, 0)
    if (this.writing) {
      // Answered before the request body was all sent: the connection cannot be reused.
      this.bodyCleanup?.()
      this.keepAlive = false
    }
    // Reusable or not is settled before the handler runs, so that a request it lets go (the Exchange's
    // connection wait queue) may take this very connection.
    if (!this.keepAlive || job.reset || this.buf !== null || this.pool.closed) this.destroy()
    else this.toIdle()
    job.handler.onComplete(null)
  }

  private toIdle (): void {
    this.phase = Phase.Idle
    this.job = null
    this.paused = false
    this.socket.resume()
    this.setDeadline(Deadline.Idle, this.idleMs)
    this.socket.unref()
    this.pool.release(this)
  }

  /** The exchange failed: tell the handler once and drop the connection. */
  private fail (err: Error): void {
    const job = this.job
    this.job = null
    this.bodyCleanup?.()
    this.destroy()
    if (job !== null) job.handler.onError(err)
  }

  expire (): void {
    const kind = this.deadlineKind
    this.setDeadline(Deadline.None, 0)
    switch (kind) {
      case Deadline.Connect: this.fail(new CodedError('UND_ERR_CONNECT_TIMEOUT', 'Connect Timeout Error', 'ConnectTimeoutError')); break
      case Deadline.Headers:
        // As undici: no headers timeout while the request body is still flowing up.
        if (this.writing && !this.socket.writableNeedDrain && this.job !== null) { this.setDeadline(Deadline.Headers, this.job.headersTimeout); break }
        this.fail(new CodedError('UND_ERR_HEADERS_TIMEOUT', 'Headers Timeout Error', 'HeadersTimeoutError')); break
      case Deadline.Body:
        // No body timeout while the client holds the response back (paused).
        if (this.paused && this.job !== null) { this.setDeadline(Deadline.Body, this.job.bodyTimeout); break }
        this.fail(new CodedError('UND_ERR_BODY_TIMEOUT', 'Body Timeout Error', 'BodyTimeoutError')); break
      case Deadline.Idle: this.destroy(); break
      default: break
    }
  }

  destroy (): void {
    if (this.phase === Phase.Closed) return
    this.phase = Phase.Closed
    this.buf = null
    this.socket.destroy()
    // onClose follows and tells the pool.
  }

  private onClose (): void {
    const wasPhase = this.phase
    this.phase = Phase.Closed
    untrack(this)
    const job = this.job
    this.job = null
    if (job !== null) {
      this.bodyCleanup?.()
      if (wasPhase === Phase.Body && this.framing === Framing.Close && this.buf === null) {
        // A body delimited by the close: this is its end.
        job.handler.onComplete(null)
      } else {
        const e = this.lastError
        job.handler.onError(wasPhase === Phase.Connecting && e !== null ? e : socketError(wasPhase === Phase.Connecting ? 'connection closed' : 'other side closed'))
      }
    }
    this.buf = null
    this.pool.forget(this)
  }
}

// ---- the pool ---------------------------------------------------------------------------------

/** Keep-alive connections to one target, at most `connections` of them; more requests wait in order. */
export class RawPool {
  readonly hostname: string
  readonly port: number
  readonly connectTimeout: number
  readonly keepAliveTimeout: number
  closed = false
  private readonly hostHeader: string
  private readonly max: number
  private readonly idle: Conn[] = []
  private readonly conns = new Set<Conn>()
  private readonly queue: Job[] = []
  private closeWaiters: Array<() => void> = []

  constructor (url: string, opts: RawPoolOptions) {
    const u = new URL(url)
    if (u.protocol !== 'http:') throw new Error(`client: raw speaks http only (${url})`)
    this.hostname = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname
    this.port = u.port === '' ? 80 : Number(u.port)
    this.hostHeader = `host: ${u.hostname}${u.port !== '' ? `:${u.port}` : ''}\r\n`
    this.max = opts.connections
    this.connectTimeout = opts.connectTimeout
    this.keepAliveTimeout = opts.keepAliveTimeout
  }

  dispatch (opts: RawDispatch, handler: RawHandler): boolean {
    if (this.closed) {
      handler.onError(new CodedError('UND_ERR_CLOSED', 'The client is closed', 'ClientClosedError'))
      return false
    }
    let job: Job
    try {
      job = build(opts, handler, this.hostHeader)
    } catch (err) {
      handler.onError(err as Error)
      return false
    }
    for (;;) {
      const c = this.idle.pop()
      if (c === undefined) break
      if (c.usable) { c.run(job); return true }
    }
    if (this.conns.size < this.max) {
      this.conns.add(new Conn(this, job))
      return true
    }
    this.queue.push(job)
    return false
  }

  /** A connection finished its exchange and is idle: give it the next waiting request, or keep it. */
  release (c: Conn): void {
    const next = this.queue.shift()
    if (next !== undefined) { c.run(next); return }
    this.idle.push(c)
  }

  /** A connection closed. */
  forget (c: Conn): void {
    this.conns.delete(c)
    const i = this.idle.indexOf(c)
    if (i !== -1) this.idle.splice(i, 1)
    const next = this.queue.shift()
    if (next !== undefined) this.conns.add(new Conn(this, next))
    if (this.closed && this.conns.size === 0) for (const w of this.closeWaiters.splice(0)) w()
  }

  /** Refuse new requests, let those in flight and waiting finish, then close every connection. */
  async close (): Promise<void> {
    this.closed = true
    for (const c of this.idle.splice(0)) c.destroy()
    if (this.conns.size === 0 && this.queue.length === 0) return
    await new Promise<void>((resolve) => { this.closeWaiters.push(resolve) })
  }
}
