/**
 * The `server.parser: strict` public listener: HTTP/1.1 on raw `node:net` sockets with flashgate's own
 * strict parser (gateway/http/raw-parser.ts), in front of the unchanged `Frontend.handle`.
 *
 * An adapter, not a second pipeline: each request is a `RawRequest` (a Readable with the fields of
 * node:http's IncomingMessage the gateway reads: method, url, headers, rawHeaders, httpVersion*,
 * socket, complete, setTimeout) and a `RawResponse` (writeHead/setHeader/write/end/destroy,
 * headersSent, statusCode, destroyed, writableFinished, 'drain'/'finish'/'close' events, so the proxy,
 * the static file server and the edge endpoints write to it as to a ServerResponse).
 *
 * What node:http did and this keeps (issue 14): headers_timeout and request_timeout (408, checked by
 * one shared sweep every 500 ms, as node:http's connectionsCheckingInterval), keepalive_timeout, 431 for
 * a head over max_header_size, 505 for other versions, 400 for every malformed head or chunked body,
 * max_connections, keep-alive and pipelining (answers in order; the heads and synchronous answers of one
 * read are coalesced into one write), Expect: 100-continue (417 for other expectations), a request body
 * not read by the answer is read and dropped before the next request.
 *
 * Performance: rejections the gateway answers itself (`writeRejection` → `rejectFast`) are written as
 * one latin1 string built from per-Rejection pre-encoded parts plus the request id and a per-second
 * Date; no header array, no object. Responses with a body go out as head + body in one corked write.
 */
import { EventEmitter } from 'node:events'
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http'
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net'
import { Readable } from 'node:stream'
import type { Config } from '../../conf/types.js'
import type { Log } from '../log.js'
import type { Metrics } from '../metrics.js'
import type { RejectCode, Rejection } from '../pipeline/types.js'
import { rejection } from '../pipeline/reject.js'
import { rejectionHead } from './json.js'
import { ChunkedDecoder, HeadParser, TOKEN, latin1, type Head } from './raw-parser.js'

/**
 * The request handler (Frontend.handle). Bodiless requests reach it as a LaneRequest/LaneResponse pair
 * (unless FLASHGATE_STRICT_LANE=off), which it upgrades with `laneUpgrade()` before anything but a
 * rejection is written.
 */
export type Handler = (req: IncomingMessage, res: ServerResponse) => void

/** What the flush queue holds: an answer told when its bytes reached the kernel or the socket closed. */
interface Flushable { onFlushed (err: Error | null | undefined): void, onSocketClose (): void }

// ---- pre-encoded answers ----------------------------------------------------------------------

function rawAnswer (status: number, code: RejectCode, message: string): Buffer {
  const r = { ...rejection(code, message), status }
  return Buffer.from(rejectionHead(r) + 'connection: close\r\n\r\n' + r.body.toString(), 'latin1')
}
// The same bytes node:http's clientError handler answers (gateway/http/server.ts RAW_*).
const RAW_400 = rawAnswer(400, 'BAD_REQUEST', 'malformed request')
const RAW_408 = rawAnswer(408, 'REQUEST_TIMEOUT', 'request not received in time')
const RAW_431 = rawAnswer(431, 'BAD_REQUEST', 'request headers too large')
const RAW_505 = rawAnswer(505, 'UNSUPPORTED_VERSION', 'HTTP version not supported')
const CONTINUE = Buffer.from('HTTP/1.1 100 Continue\r\n\r\n', 'latin1')

function answerFor (status: number): Buffer {
  return status === 431 ? RAW_431 : status === 505 ? RAW_505 : RAW_400
}

/** `date:` value, rebuilt at most once a second. */
let dateText = ''
let dateAt = 0
function httpDate (): string {
  const now = Date.now()
  if (now - dateAt >= 1000 || dateText === '') {
    dateAt = now - (now % 1000)
    dateText = new Date(dateAt).toUTCString()
  }
  return dateText
}

/** The `date:` value as bytes, refreshed with dateText (the in-place answers copy it). */
let dateBytes = Buffer.alloc(29)
let dateBytesAt = -1
function httpDateBytes (): Buffer {
  const text = httpDate()
  if (dateBytesAt !== dateAt) {
    dateBytes = Buffer.from(text, 'latin1')
    dateBytesAt = dateAt
  }
  return dateBytes
}

/** Header values node:http refuses to write (response splitting). */
const BAD_VALUE = /[^\t\x20-\x7e\x80-\xff]/
function checkName (name: string): void {
  if (name.length === 0) throw headerError('ERR_INVALID_HTTP_TOKEN', `Header name must be a valid HTTP token ["${name}"]`)
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i)
    if (c > 255 || TOKEN[c] !== 1) throw headerError('ERR_INVALID_HTTP_TOKEN', `Header name must be a valid HTTP token ["${name}"]`)
  }
}
function checkValue (name: string, value: string): void {
  if (BAD_VALUE.test(value)) throw headerError('ERR_INVALID_CHAR', `Invalid character in header content ["${name}"]`)
}
function headerError (code: string, message: string): Error {
  return Object.assign(new TypeError(message), { code })
}

interface Encoded { readonly line: string, readonly body: string | null, readonly bodyBuf: Buffer, readonly lineBuf: Buffer }
const encodedCache = new WeakMap<Rejection, Encoded>()
/** The status line and fixed headers of a rejection, and its body as latin1 text when it is ASCII. */
function encoded (r: Rejection): Encoded {
  let e = encodedCache.get(r)
  if (e !== undefined) return e
  let line = rejectionHead(r)
  const h = r.headers
  if (h !== null) {
    for (let i = 0; i + 1 < h.length; i += 2) {
      checkName(h[i] as string)
      checkValue(h[i] as string, h[i + 1] as string)
      line += `${h[i] as string}: ${h[i + 1] as string}\r\n`
    }
  }
  let ascii = true
  for (let i = 0; i < r.body.length; i++) if ((r.body[i] as number) >= 0x80) { ascii = false; break }
  e = { line, body: ascii ? latin1(r.body, 0, r.body.length) : null, bodyBuf: r.body, lineBuf: Buffer.from(line, 'latin1') }
  encodedCache.set(r, e)
  return e
}

const XRID = Buffer.from('x-request-id: ', 'latin1')
const DATE = Buffer.from('date: ', 'latin1')
const CLOSE_END = Buffer.from('connection: close\r\n\r\n', 'latin1')
const KEEP_END = Buffer.from('connection: keep-alive\r\n\r\n', 'latin1')
const END = Buffer.from('\r\n', 'latin1')

/**
 * A rejection's whole answer in one Buffer: its pre-encoded status line, fixed headers and body copied
 * in, the request id and the per-second Date written in place (Buffer#write latin1: no string built).
 * One small pooled Buffer is the only allocation (the socket needs bytes that outlive this call), or
 * none when `into` (a Buffer the socket is done with) has the answer's length.
 * `mode`: 0 keep-alive HTTP/1.1, 1 keep-alive HTTP/1.0, 2 close.
 */
function rejectBytes (r: Rejection, extra: readonly string[] | null, mode: 0 | 1 | 2, requestId: string | null, head: boolean, into: Buffer | null = null): Buffer {
  const e = encoded(r)
  let n = e.lineBuf.length + DATE.length + 31 + (mode === 2 ? CLOSE_END.length : mode === 1 ? KEEP_END.length : END.length)
  if (requestId !== null) n += XRID.length + requestId.length + 2
  if (extra !== null) {
    for (let i = 0; i + 1 < extra.length; i += 2) {
      checkName(extra[i] as string)
      checkValue(extra[i] as string, extra[i + 1] as string)
      n += (extra[i] as string).length + (extra[i + 1] as string).length + 4
    }
  }
  if (!head) n += e.bodyBuf.length
  const b = into !== null && into.length === n ? into : Buffer.allocUnsafe(n)
  b.set(e.lineBuf, 0)
  let o = e.lineBuf.length
  if (extra !== null) {
    for (let i = 0; i + 1 < extra.length; i += 2) {
      o += b.write(extra[i] as string, o, 'latin1')
      b[o++] = 0x3a; b[o++] = 0x20
      o += b.write(extra[i + 1] as string, o, 'latin1')
      b[o++] = 0x0d; b[o++] = 0x0a
    }
  }
  if (requestId !== null) {
    b.set(XRID, o); o += XRID.length
    o += b.write(requestId, o, 'latin1')
    b[o++] = 0x0d; b[o++] = 0x0a
  }
  b.set(DATE, o); o += DATE.length
  b.set(httpDateBytes(), o); o += 29
  b[o++] = 0x0d; b[o++] = 0x0a
  const tail = mode === 2 ? CLOSE_END : mode === 1 ? KEEP_END : END
  b.set(tail, o); o += tail.length
  if (!head) { b.set(e.bodyBuf, o); o += e.bodyBuf.length }
  return o === n ? b : b.subarray(0, o)
}

// ---- the in-place lane: a request answered without a request or response object ----------------

/**
 * What the lane hands the Frontend as `req` (gateway/http/server.ts checks `laneUpgrade`): the fields
 * of IncomingMessage its routing, guards, metrics and access log read, one object per connection
 * reused for each of its bodiless requests. A request that needs more (it passes the guards, an edge
 * endpoint, a guard awaiting the store) is upgraded to a RawRequest/RawResponse pair first.
 */
export class LaneRequest {
  method = ''
  url = ''
  headers: Record<string, string | string[]> = {}
  rawHeaders: string[] = []
  httpVersion = '1.1'
  readonly httpVersionMajor = 1
  httpVersionMinor = 1
  readonly socket: Socket
  readonly complete = true
  readonly readableEnded = true
  /** @internal */ readonly conn: Connection
  /**
   * The Frontend's request context kept for this connection's next lane request (gateway/http/server.ts
   * `route`: only one a synchronous rejection left unreferenced); opaque here.
   */
  spare: unknown = null
  constructor (conn: Connection) { this.conn = conn; this.socket = conn.socket }
  /** The real request and response for this exchange (made once; the lane is then out of the way). */
  laneUpgrade (): [IncomingMessage, ServerResponse] { return this.conn.upgradeLane() }
}

/**
 * The lane's `res`: a rejection (writeRejection → rejectFast) written as bytes; nothing else. Once the
 * exchange is upgraded, what still holds this object (Frontend.handle's error path) reaches the real
 * response through it.
 */
export class LaneResponse {
  statusCode = 200
  shouldKeepAlive = true
  /** @internal the upgraded exchange's response, null while the lane serves it */
  real: RawResponse | null = null
  private sent = false
  private gone = false
  /** @internal */ readonly conn: Connection
  constructor (conn: Connection) { this.conn = conn }

  get headersSent (): boolean { return this.real !== null ? this.real.headersSent : this.sent }
  get writableEnded (): boolean { return this.real !== null ? this.real.writableEnded : this.sent }
  get destroyed (): boolean { return this.real !== null ? this.real.destroyed : this.gone }

  /** @internal a new lane request */
  reset (): void {
    this.statusCode = 200
    this.shouldKeepAlive = true
    this.real = null
    this.sent = false
    this.gone = false
  }

  rejectFast (r: Rejection, extra: readonly string[] | null, close: boolean, requestId: string | null): void {
    if (this.real !== null) { this.real.rejectFast(r, extra, close, requestId); return }
    if (this.sent || this.gone) return
    const conn = this.conn
    const req = conn.lane as LaneRequest
    const shut = close || !this.shouldKeepAlive || !conn.laneKeepAlive || conn.closing
    const bytes = rejectBytes(r, extra, shut ? 2 : req.httpVersionMinor === 0 ? 1 : 0, requestId, req.method === 'HEAD', conn.answerBuf)
    this.statusCode = r.status
    this.sent = true
    // No place in the flush queue: nothing waits for this answer's 'finish' (the callbacks of the
    // answers that do still arrive in their order).
    const socket = conn.socket
    if (socket.writableCorked === 1 && !conn.hasMore) {
      // The last request of this read (the common case: one request per read): written at once rather
      // than buffered under the drive's cork and flushed as a writev (an entry, an array and a chunk
      // list per answer). Whatever earlier answers the cork held go first.
      socket.uncork()
      socket.write(bytes)
      socket.cork()
    } else socket.write(bytes)
    // Nothing left in the socket's buffer: the kernel took these bytes during write(), so the next
    // answer of the same length (the usual case: the same rejection, the same id length) is written
    // into the same Buffer. Otherwise the socket still holds them: never touch them again.
    conn.answerBuf = socket.writableLength === 0 ? bytes : null
    conn.laneEnded(shut)
  }

  destroy (): this {
    if (this.real !== null) { this.real.destroy(); return this }
    if (!this.gone) { this.gone = true; this.conn.destroy() }
    return this
  }

  /** @internal */ onSocketClose (): void { if (!this.sent) this.gone = true }
}


// ---- the request ------------------------------------------------------------------------------

/** The request as the gateway reads it (IncomingMessage's fields). */
export class RawRequest extends Readable {
  method: string
  url: string
  readonly headers: Record<string, string | string[]>
  readonly rawHeaders: string[]
  readonly httpVersion: string
  readonly httpVersionMajor = 1
  readonly httpVersionMinor: number
  readonly socket: Socket
  complete = false
  aborted = false
  readonly trailers: Record<string, string> = {}
  readonly rawTrailers: string[] = []
  readonly upgrade = false
  /** @internal */ readonly conn: Connection
  /** @internal the connection stays open after this exchange */
  readonly keepAlive: boolean

  constructor (conn: Connection, head: Head) {
    super()
    this.conn = conn
    this.socket = conn.socket
    this.method = head.method
    this.url = head.url
    this.headers = head.headers
    this.rawHeaders = head.rawHeaders
    this.httpVersionMinor = head.minor
    this.httpVersion = head.minor === 1 ? '1.1' : '1.0'
    this.keepAlive = head.keepAlive
  }

  override _read (): void { this.conn.resumeBody() }

  override _destroy (err: Error | null, cb: (err?: Error | null) => void): void {
    // As node:http: destroying a request whose body has not all arrived closes the connection.
    if (!this.complete && !this.conn.discarding) this.conn.abort()
    cb(err)
  }

  /** As IncomingMessage.setTimeout: the socket's idle timer; 'timeout' is emitted here while the body arrives. */
  setTimeout (ms: number, cb?: () => void): this {
    if (cb !== undefined) this.on('timeout', cb)
    this.socket.setTimeout(ms)
    return this
  }
}

// ---- the response -----------------------------------------------------------------------------

type HeaderValue = string | number | readonly string[]

/** The response as the gateway writes it (ServerResponse's methods and fields). */
export class RawResponse extends EventEmitter {
  statusCode = 200
  statusMessage = ''
  headersSent = false
  destroyed = false
  writableEnded = false
  writableFinished = false
  finished = false
  shouldKeepAlive = true
  sendDate = true
  readonly req: RawRequest
  readonly socket: Socket
  /** @internal */ closed = false
  private fields: Map<string, [string, HeaderValue]> | null = null
  private head = ''
  // The head being written (startHead … finishHead).
  private lines = ''
  private hasLength = false
  private hasTe = false
  private hasDate = false
  private connClose = false
  private chunked = false
  private noBody = false
  private close = false
  private waitingDrain = false
  private readonly conn: Connection

  constructor (conn: Connection, req: RawRequest) {
    super()
    this.conn = conn
    this.req = req
    this.socket = conn.socket
  }

  get writable (): boolean { return !this.writableEnded && !this.destroyed }
  get writableNeedDrain (): boolean { return this.waitingDrain }

  setHeader (name: string, value: HeaderValue): this {
    if (this.headersSent) throw headerError('ERR_HTTP_HEADERS_SENT', 'Cannot set headers after they are sent to the client')
    checkName(name)
    if (Array.isArray(value)) for (const v of value) checkValue(name, String(v)); else checkValue(name, String(value))
    ;(this.fields ??= new Map()).set(name.toLowerCase(), [name, value])
    return this
  }

  getHeader (name: string): HeaderValue | undefined { return this.fields?.get(name.toLowerCase())?.[1] }
  hasHeader (name: string): boolean { return this.fields?.has(name.toLowerCase()) ?? false }
  removeHeader (name: string): void { this.fields?.delete(name.toLowerCase()) }
  getHeaderNames (): string[] { return this.fields === null ? [] : [...this.fields.keys()] }
  getHeaders (): Record<string, HeaderValue> {
    const o: Record<string, HeaderValue> = {}
    if (this.fields !== null) for (const [k, [, v]] of this.fields) o[k] = v
    return o
  }

  writeHead (status: number, a?: unknown, b?: unknown): this {
    let headers: unknown
    if (typeof a === 'string') { this.startHead(status, a); headers = b } else { this.startHead(status, null); headers = a }
    // Header lines: the fields set by setHeader unless the writeHead list names them again, then the list.
    let given: Set<string> | null = null
    if (this.fields !== null && headers !== undefined && headers !== null) {
      given = new Set()
      if (Array.isArray(headers)) {
        if (Array.isArray(headers[0])) for (const p of headers as unknown[][]) given.add(String(p[0]).toLowerCase())
        else for (let i = 0; i < headers.length; i += 2) given.add(String(headers[i]).toLowerCase())
      } else for (const k of Object.keys(headers as object)) given.add(k.toLowerCase())
    }
    if (this.fields !== null) {
      for (const [k, [name, v]] of this.fields) {
        if (given !== null && given.has(k)) continue
        if (Array.isArray(v)) for (const x of v as readonly string[]) this.addLine(name, String(x)); else this.addLine(name, String(v))
      }
    }
    if (headers !== undefined && headers !== null) {
      if (Array.isArray(headers)) {
        if (headers.length > 0 && Array.isArray(headers[0])) {
          for (const p of headers as unknown[][]) {
            const v = p[1]
            if (Array.isArray(v)) for (const x of v) this.addLine(String(p[0]), String(x)); else this.addLine(String(p[0]), String(v))
          }
        } else {
          for (let i = 0; i + 1 < headers.length; i += 2) {
            const v: unknown = headers[i + 1]
            if (Array.isArray(v)) for (const x of v) this.addLine(String(headers[i]), String(x)); else this.addLine(String(headers[i]), String(v))
          }
        }
      } else {
        for (const [k, v] of Object.entries(headers as Record<string, unknown>)) {
          if (v === undefined) continue
          if (Array.isArray(v)) for (const x of v) this.addLine(k, String(x)); else this.addLine(k, String(v))
        }
      }
    }
    return this.finishHead(status)
  }

  /**
   * The proxy's head (gateway/upstream/index.ts, with the raw client): `lines` are header lines already
   * formatted and checked (`Name: value\r\n`…, names tokens, values without CR/LF/NUL: the raw client's
   * parser refused anything else), the upstream's `Content-Length`/`Date` flagged by the caller; then
   * the guards' `extra` pairs and `requestId`, checked here. Writes what writeHead(status, [those
   * fields]) would. False, writing nothing, when setHeader was used (then writeHead merges the fields).
   */
  writeHeadLines (status: number, statusText: string, lines: string, hasLength: boolean, hasDate: boolean, extra: readonly string[] | null, requestId: string | null): boolean {
    if (this.fields !== null) return false
    this.startHead(status, statusText === '' ? null : statusText)
    this.lines = lines
    this.hasLength = hasLength
    this.hasDate = hasDate
    if (extra !== null) for (let i = 0; i + 1 < extra.length; i += 2) this.addLine(extra[i]!, extra[i + 1]!)
    if (requestId !== null) this.addLine('x-request-id', requestId)
    this.finishHead(status)
    return true
  }

  private startHead (status: number, message: string | null): void {
    if (this.headersSent) throw headerError('ERR_HTTP_HEADERS_SENT', 'Cannot write headers after they are sent to the client')
    if (!Number.isInteger(status) || status < 100 || status > 999) throw Object.assign(new RangeError(`Invalid status code: ${String(status)}`), { code: 'ERR_HTTP_INVALID_STATUS_CODE' })
    this.statusCode = status
    this.statusMessage = message ?? STATUS_CODES[status] ?? 'unknown'
    if (BAD_VALUE.test(this.statusMessage) || this.statusMessage.includes('\r') || this.statusMessage.includes('\n')) throw headerError('ERR_INVALID_CHAR', 'Invalid character in statusMessage')
    this.lines = ''
    this.hasLength = false
    this.hasTe = false
    this.hasDate = false
    this.connClose = false
  }

  /** One header line of the head being written, checked as node:http checks it. */
  private addLine (name: string, value: string): void {
    checkName(name)
    checkValue(name, value)
    const n = name.length
    if (n === 14 && name.toLowerCase() === 'content-length') this.hasLength = true
    else if (n === 17 && name.toLowerCase() === 'transfer-encoding') this.hasTe = true
    else if (n === 4 && name.toLowerCase() === 'date') this.hasDate = true
    else if (n === 10 && name.toLowerCase() === 'connection') { if (/(^|[\s,])close($|[\s,])/i.test(value)) this.connClose = true }
    this.lines += name + ': ' + value + '\r\n'
  }

  /** The framing node:http adds (chunked, Date, Connection), then the head is ready to go. */
  private finishHead (status: number): this {
    let lines = this.lines
    this.lines = ''
    const req = this.req
    this.noBody = req.method === 'HEAD' || status === 204 || status === 304 || status < 200
    if (!this.hasLength && !this.hasTe && !this.noBody) {
      if (req.httpVersionMinor === 1) { this.chunked = true; lines += 'transfer-encoding: chunked\r\n' } else this.close = true
    } else if (this.hasTe && !this.noBody) {
      this.chunked = true // a handler that framed its own body
    }
    if (this.connClose || !this.shouldKeepAlive || !req.keepAlive || this.conn.closing) this.close = true
    if (this.sendDate && !this.hasDate) lines += 'date: ' + httpDate() + '\r\n'
    if (this.close) lines += this.connClose ? '' : 'connection: close\r\n'
    else if (req.httpVersionMinor === 0) lines += 'connection: keep-alive\r\n'
    this.head = `HTTP/1.1 ${status} ${this.statusMessage}\r\n${lines}\r\n`
    this.headersSent = true
    return this
  }

  /** Send the head now (node:http's flushHeaders). */
  flushHeaders (): void {
    if (!this.headersSent) this.writeHead(this.statusCode)
    if (this.head !== '' && !this.destroyed) { this.socket.write(this.head, 'latin1'); this.head = '' }
  }

  writeContinue (): void { if (!this.destroyed) this.socket.write(CONTINUE) }

  write (chunk: unknown, encoding?: unknown, cb?: unknown): boolean {
    if (typeof encoding === 'function') { cb = encoding; encoding = undefined }
    if (this.writableEnded) { if (typeof cb === 'function') process.nextTick(cb as () => void, new Error('write after end')); return false }
    if (this.destroyed) return false
    if (!this.headersSent) this.writeHead(this.statusCode)
    const ok = this.out(chunk, encoding as BufferEncoding | undefined, false, typeof cb === 'function' ? cb as (err?: Error | null) => void : undefined)
    if (!ok && !this.waitingDrain) {
      this.waitingDrain = true
      this.socket.once('drain', () => { this.waitingDrain = false; if (!this.destroyed) this.emit('drain') })
    }
    return ok
  }

  end (chunk?: unknown, encoding?: unknown, cb?: unknown): this {
    if (typeof chunk === 'function') { cb = chunk; chunk = undefined } else if (typeof encoding === 'function') { cb = encoding; encoding = undefined }
    if (this.writableEnded) return this
    if (this.destroyed) return this
    if (!this.headersSent) {
      if (chunk !== undefined && chunk !== null && !this.hasHeader('content-length') && !this.hasHeader('transfer-encoding')) {
        this.setHeader('content-length', typeof chunk === 'string' ? Buffer.byteLength(chunk, encoding as BufferEncoding | undefined) : (chunk as Uint8Array).length)
      } else if ((chunk === undefined || chunk === null) && !this.hasHeader('content-length') && !this.hasHeader('transfer-encoding')) {
        this.setHeader('content-length', 0)
      }
      this.writeHead(this.statusCode)
    }
    this.writableEnded = true
    this.finished = true
    if (typeof cb === 'function') this.once('finish', cb as () => void)
    this.conn.flushing.push(this)
    this.out(chunk, encoding as BufferEncoding | undefined, true, this.conn.onFlushed)
    this.conn.responseEnded(this, this.close)
    return this
  }

  /**
   * Write a gateway rejection from its pre-encoded parts (gateway/http/server.ts writeRejection): the same
   * head writeRejection's header list gives, in one write.
   */
  rejectFast (r: Rejection, extra: readonly string[] | null, close: boolean, requestId: string | null): void {
    if (this.headersSent || this.destroyed) return
    this.close = close || !this.shouldKeepAlive || !this.req.keepAlive || this.conn.closing
    const bytes = rejectBytes(r, extra, this.close ? 2 : this.req.httpVersionMinor === 0 ? 1 : 0, requestId, this.req.method === 'HEAD')
    this.statusCode = r.status
    this.statusMessage = STATUS_CODES[r.status] ?? 'unknown'
    this.headersSent = true
    this.writableEnded = true
    this.finished = true
    this.conn.flushing.push(this)
    this.socket.write(bytes, this.conn.onFlushed)
    this.conn.responseEnded(this, this.close)
  }

  /** Write a chunk (framed when chunked) and, with `last`, the end of the body; the head goes first. */
  private out (chunk: unknown, encoding: BufferEncoding | undefined, last: boolean, cb: ((err?: Error | null) => void) | undefined): boolean {
    const socket = this.socket
    const hasData = chunk !== undefined && chunk !== null && !this.noBody &&
      (typeof chunk === 'string' ? chunk.length > 0 : (chunk as Uint8Array).length > 0)
    const head = this.head
    this.head = ''
    if (!hasData) {
      const tail = this.chunked && last ? '0\r\n\r\n' : ''
      if (head === '' && tail === '') {
        if (cb !== undefined) { if (socket.writableLength === 0 || socket.destroyed) process.nextTick(cb); else socket.write('', 'latin1', cb) }
        return !socket.writableNeedDrain
      }
      return socket.write(head + tail, 'latin1', cb)
    }
    if (typeof chunk === 'string' && (encoding === undefined || encoding === 'latin1' || encoding === 'binary') && !this.chunked && isLatin1Safe(chunk)) {
      return socket.write(head + chunk, 'latin1', cb)
    }
    const data = typeof chunk === 'string' ? Buffer.from(chunk, encoding ?? 'utf8') : chunk as Uint8Array
    // Performance (the proxy path): a small body chunk behind the head goes out with it as one latin1
    // string (latin1 maps bytes 1:1), one write instead of a corked writev of two buffers.
    if (head !== '' && !this.chunked && data.length <= 1024 && Buffer.isBuffer(data)) {
      return socket.write(head + latin1(data, 0, data.length), 'latin1', cb)
    }
    socket.cork()
    if (this.chunked) {
      socket.write(head + data.length.toString(16) + '\r\n', 'latin1')
      socket.write(data)
      const ok = socket.write(last ? '\r\n0\r\n\r\n' : '\r\n', 'latin1', cb)
      socket.uncork()
      return ok
    }
    if (head !== '') socket.write(head, 'latin1')
    const ok = socket.write(data, cb)
    socket.uncork()
    return ok
  }

  destroy (err?: Error): this {
    void err
    if (this.destroyed) return this
    this.destroyed = true
    this.conn.destroy()
    return this
  }

  setTimeout (ms: number, cb?: () => void): this {
    if (cb !== undefined) this.socket.once('timeout', cb)
    this.socket.setTimeout(ms)
    return this
  }

  cork (): void { this.socket.cork() }
  uncork (): void { this.socket.uncork() }

  /** @internal the connection closed before or after this answer was flushed. */
  onSocketClose (): void {
    if (this.closed) return
    this.closed = true
    if (!this.writableFinished) this.destroyed = true
    this.emit('close')
  }

  /** @internal the answer was handed to the kernel. */
  onFlushed (err: Error | null | undefined): void {
    if (this.closed) return
    if (err == null) {
      this.writableFinished = true
      this.emit('finish')
    }
    this.closed = true
    if (err != null) this.destroyed = true
    this.emit('close')
  }
}

/** ASCII text (latin1 and utf8 agree), short enough to check. */
function isLatin1Safe (s: string): boolean {
  if (s.length > 4096) return false
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) >= 0x80) return false
  return true
}

// ---- connections ------------------------------------------------------------------------------

const enum State { Head, Body, Wait, Discard, Closed }
const enum Deadline { None, Idle, Headers, Request, Linger }

/** The limits a connection reads (swapped on reload by `applyLimits`). */
interface Limits { headersTimeoutMs: number, requestTimeoutMs: number, keepAliveTimeoutMs: number, maxHeaderSize: number }

/** One client connection: parse heads, feed bodies, answer in order. */
export class Connection {
  readonly socket: Socket
  /** Answers written but not yet flushed, in order (their write callbacks arrive in the same order). */
  readonly flushing: Flushable[] = []
  readonly onFlushed = (err?: Error | null): void => { this.flushing.shift()?.onFlushed(err) }
  /** The connection is being shut (draining or a `close` answer): answers carry `connection: close`. */
  closing = false
  /** A request body no answer needs any more is being read and dropped. */
  discarding = false
  deadline = 0
  deadlineKind = Deadline.None
  private state = State.Head
  private buf: Buffer | null = null
  private pos = 0
  private readonly parser: HeadParser
  private req: RawRequest | null = null
  private res: RawResponse | null = null
  private bodyLeft = 0
  private chunks: ChunkedDecoder | null = null
  private requestDeadline = 0
  private driving = false
  private paused = false
  private peerEnded = false
  private readonly server: RawServer
  /** The in-place lane's objects (made on the first bodiless request, reused for each), and its request in flight. */
  lane: LaneRequest | null = null
  private laneRes: LaneResponse | null = null
  private laneHead: Head | null = null
  private laneActive = false
  /** @internal keep-alive of the lane request in flight */
  laneKeepAlive = true
  /** @internal the lane's last answer, when the socket was done with it as it was written (LaneResponse.rejectFast) */
  answerBuf: Buffer | null = null
  private readonly pushBody = (b: Buffer): void => {
    if (this.discarding) return
    const req = this.req as RawRequest
    if (!req.destroyed && !req.push(b) && !this.paused) { this.paused = true; this.socket.pause() }
  }

  constructor (server: RawServer, socket: Socket) {
    this.server = server
    this.socket = socket
    this.parser = new HeadParser(server.limits.maxHeaderSize)
    socket.setNoDelay(true)
    socket.on('data', (c: Buffer) => { this.onData(c) })
    socket.on('error', () => {})
    socket.on('timeout', () => { this.onTimeout() })
    socket.on('close', () => { this.onClose() })
    // node:http's servers are half-open: a client that ends its side still gets the answer in flight.
    socket.on('end', () => {
      this.peerEnded = true
      if (this.state === State.Head) this.destroySoon()
    })
    this.setDeadline(Deadline.Headers, server.limits.headersTimeoutMs)
  }

  /** Bytes of a further request are buffered after the one being handled (pipelining). */
  get hasMore (): boolean { return this.buf !== null }

  /** Idle between requests, nothing buffered, nothing in flight: safe to close (closeIdleConnections). */
  get idle (): boolean { return this.state === State.Head && this.parser.idle && this.buf === null && this.flushing.length === 0 && this.socket.writableLength === 0 }

  private setDeadline (kind: Deadline, ms: number): void {
    if (ms <= 0) { this.deadlineKind = Deadline.None; this.deadline = 0; return }
    this.deadlineKind = kind
    this.deadline = Date.now() + ms
  }

  private onData (c: Buffer): void {
    if (this.state === State.Closed) return
    if (this.buf === null) { this.buf = c; this.pos = 0 } else {
      this.buf = Buffer.concat([this.buf.subarray(this.pos), c])
      this.pos = 0
    }
    if (this.state === State.Head && this.deadlineKind === Deadline.Idle) {
      this.setDeadline(Deadline.Headers, this.server.limits.headersTimeoutMs)
    }
    this.drive()
  }

  /** Consume buffered bytes as far as the current request allows. */
  private drive (): void {
    if (this.driving) return
    this.driving = true
    const socket = this.socket
    socket.cork()
    try {
      for (;;) {
        const buf = this.buf
        if (buf === null || this.state === State.Closed || this.state === State.Wait) break
        if (this.state === State.Head) {
          const r = this.parser.feed(buf, this.pos, buf.length)
          if (r === null) { this.pos = this.parser.end; this.compact(); break }
          if (typeof r === 'number') { this.refuse(answerFor(r)); break }
          this.pos = this.parser.end
          this.compact()
          this.start(r)
          continue
        }
        // Body or Discard
        if (this.chunks !== null) {
          const p = this.chunks.feed(buf, this.pos, buf.length, this.pushBody)
          if (p < 0) { this.bodyError(-p); break }
          this.pos = p
          this.compact()
          if (this.chunks.done) this.bodyDone()
          else break
        } else {
          const n = Math.min(this.bodyLeft, buf.length - this.pos)
          if (n > 0) {
            const part = this.pos === 0 && n === buf.length ? buf : buf.subarray(this.pos, this.pos + n)
            this.pos += n
            this.bodyLeft -= n
            this.compact()
            this.pushBody(part)
          }
          if (this.bodyLeft === 0) this.bodyDone()
          else break
        }
      }
    } finally {
      this.driving = false
      socket.uncork()
    }
    // Pipelined bytes waiting behind an answer: stop reading past a bound (node:http does the same).
    if (this.state === State.Wait && this.buf !== null && this.buf.length - this.pos > this.server.limits.maxHeaderSize && !this.paused) {
      this.paused = true
      socket.pause()
    }
  }

  private compact (): void {
    if (this.buf !== null && this.pos >= this.buf.length) { this.buf = null; this.pos = 0 }
  }

  private start (head: Head): void {
    if (this.server.lane && !head.chunked && head.contentLength <= 0 && head.expect === null) { this.startLane(head); return }
    this.parser.shareable = false
    const req = new RawRequest(this, head)
    const res = new RawResponse(this, req)
    this.req = req
    this.res = res
    const limits = this.server.limits
    if (limits.requestTimeoutMs > 0) this.requestDeadline = Date.now() + limits.requestTimeoutMs
    this.discarding = false
    if (head.chunked) {
      this.chunks = new ChunkedDecoder(limits.maxHeaderSize)
      this.state = State.Body
    } else if (head.contentLength > 0) {
      this.chunks = null
      this.bodyLeft = head.contentLength
      this.state = State.Body
    } else {
      this.chunks = null
      this.state = State.Wait
      req.complete = true
      req.push(null)
    }
    if (this.state === State.Body && this.requestDeadline > 0) { this.deadlineKind = Deadline.Request; this.deadline = this.requestDeadline } else this.setDeadline(Deadline.None, 0)
    if (this.server.draining) this.closing = true
    if (head.expect !== null) {
      if (head.minor === 1 && /(?:^|\W)100-continue(?:$|\W)/i.test(head.expect)) {
        this.socket.write(CONTINUE)
      } else {
        res.writeHead(417, ['content-length', '0'])
        res.end()
        return
      }
    }
    this.server.handle(req as unknown as IncomingMessage, res as unknown as ServerResponse)
  }

  /**
   * A bodiless request goes to the handler as the connection's reused LaneRequest/LaneResponse: a
   * rejection is written as bytes (LaneResponse.rejectFast) and no per-request object is made here;
   * anything else upgrades it (upgradeLane) to the RawRequest/RawResponse pair `start` makes.
   */
  private startLane (head: Head): void {
    if (this.server.draining) this.closing = true
    this.discarding = false
    this.chunks = null
    this.state = State.Wait
    this.setDeadline(Deadline.None, 0)
    const lane = this.lane ??= new LaneRequest(this)
    const res = this.laneRes ??= new LaneResponse(this)
    lane.method = head.method
    lane.url = head.url
    lane.headers = head.headers
    lane.rawHeaders = head.rawHeaders
    lane.httpVersionMinor = head.minor
    lane.httpVersion = head.minor === 1 ? '1.1' : '1.0'
    res.reset()
    this.laneHead = head
    this.laneKeepAlive = head.keepAlive
    this.laneActive = true
    this.server.handle(lane as unknown as IncomingMessage, res as unknown as ServerResponse)
  }

  /** The lane request in flight becomes a RawRequest/RawResponse pair (what `start` would have made). */
  upgradeLane (): [IncomingMessage, ServerResponse] {
    if (!this.laneActive) throw new Error('no lane request to upgrade')
    const head = this.laneHead as Head
    const lane = this.lane as LaneRequest
    const lres = this.laneRes as LaneResponse
    this.laneActive = false
    this.laneHead = null
    this.parser.shareable = false
    // The handler may have rewritten the target (normalised path, origin-form) before upgrading.
    head.url = lane.url
    const req = new RawRequest(this, head)
    const res = new RawResponse(this, req)
    res.shouldKeepAlive = lres.shouldKeepAlive
    this.req = req
    this.res = res
    req.complete = true
    req.push(null)
    if (this.state === State.Closed || lres.destroyed) { res.destroyed = true; res.closed = true; req.aborted = true }
    lres.real = res
    return [req as unknown as IncomingMessage, res as unknown as ServerResponse]
  }

  /** Called by LaneResponse.rejectFast: its answer is written; the next request or close. */
  laneEnded (close: boolean): void {
    this.laneActive = false
    this.laneHead = null
    // Its head was only read: the same head next on this connection may be answered with the same object.
    this.parser.shareable = true
    if (close || this.peerEnded || this.state === State.Closed) {
      this.state = State.Closed
      this.buf = null
      this.socket.end()
      this.setDeadline(Deadline.Linger, 2000)
      return
    }
    this.next()
  }

  private bodyDone (): void {
    const req = this.req as RawRequest
    this.chunks = null
    if (this.discarding) {
      this.discarding = false
      this.next()
      return
    }
    this.state = State.Wait
    this.setDeadline(Deadline.None, 0)
    req.complete = true
    if (!req.destroyed) req.push(null)
  }

  /** A malformed chunked body: 400 unless an answer was started (then the connection is cut). */
  private bodyError (status: number): void {
    const req = this.req as RawRequest
    const res = this.res as RawResponse
    req.aborted = true
    if (!res.headersSent && !res.destroyed) this.refuse(answerFor(status))
    else this.destroy()
    if (!req.destroyed) req.destroy()
  }

  /** Answer a malformed or timed-out request with fixed bytes and close. */
  private refuse (bytes: Buffer): void {
    this.state = State.Closed
    this.buf = null
    if (this.res !== null && !this.res.headersSent) { this.res.headersSent = true; this.res.writableEnded = true }
    this.socket.end(bytes)
    this.setDeadline(Deadline.Linger, 2000)
  }

  /** Called by RawResponse.end: the answer is written; go on with the next request or close. */
  responseEnded (res: RawResponse, close: boolean): void {
    if (res !== this.res) return
    this.socket.setTimeout(0)
    if (close || this.peerEnded || this.state === State.Closed) {
      this.state = State.Closed
      this.buf = null
      this.socket.end()
      this.setDeadline(Deadline.Linger, 2000)
      return
    }
    if (this.state === State.Body) {
      // The answer did not need the rest of the body: read it and drop it (node:http's _dump).
      this.discarding = true
      this.state = State.Discard
      // An unread body may have filled the request stream and paused the socket: read on, dropping.
      if (this.paused) { this.paused = false; this.socket.resume() }
      if (!this.driving) this.drive()
      return
    }
    this.next()
  }

  /** Ready for the next request on this connection. */
  private next (): void {
    this.state = State.Head
    this.req = null
    this.res = null
    this.parser.reset()
    if (this.paused) { this.paused = false; this.socket.resume() }
    if (this.buf !== null) {
      this.setDeadline(Deadline.Headers, this.server.limits.headersTimeoutMs)
      if (!this.driving) this.drive()
    } else {
      this.setDeadline(Deadline.Idle, this.server.limits.keepAliveTimeoutMs)
    }
  }

  /** The request stream wants more body. */
  resumeBody (): void {
    if (this.paused && this.state === State.Body) { this.paused = false; this.socket.resume() }
  }

  /** End our side once what is written is flushed. */
  private destroySoon (): void {
    this.state = State.Closed
    this.buf = null
    this.socket.end()
    this.setDeadline(Deadline.Linger, 2000)
  }

  /** The request was destroyed before its body arrived: close the connection. */
  abort (): void { this.destroy() }

  destroy (): void {
    this.state = State.Closed
    this.buf = null
    this.socket.destroy()
  }

  /** The shared sweep found this connection's deadline passed. */
  expire (): void {
    const kind = this.deadlineKind
    this.deadlineKind = Deadline.None
    this.deadline = 0
    switch (kind) {
      case Deadline.Idle: case Deadline.Linger: this.destroy(); break
      case Deadline.Headers: this.refuse(RAW_408); break
      case Deadline.Request: {
        const res = this.res
        if (res !== null && (res.headersSent || res.destroyed)) this.destroy()
        else this.refuse(RAW_408)
        if (this.req !== null && !this.req.complete && !this.req.destroyed) { this.req.aborted = true; this.req.destroy() }
        break
      }
      default: break
    }
  }

  /** The socket's own idle timer (set through req.setTimeout: the body timeout). */
  private onTimeout (): void {
    const req = this.req
    if (req !== null && !req.complete && req.listenerCount('timeout') > 0) { req.emit('timeout', this.socket); return }
    if (req !== null && this.res !== null && this.res.listenerCount('timeout') > 0) return
    this.destroy()
  }

  private onClose (): void {
    this.state = State.Closed
    this.buf = null
    this.server.forget(this)
    const req = this.req
    if (req !== null && !req.complete && !req.destroyed) {
      req.aborted = true
      req.emit('aborted')
      req.destroy()
    }
    for (const r of this.flushing.splice(0)) r.onSocketClose()
    if (this.res !== null) this.res.onSocketClose()
    if (this.laneActive) (this.laneRes as LaneResponse).onSocketClose()
  }
}

// ---- the server -------------------------------------------------------------------------------

/** The raw listener: a net.Server with node:http's Server methods main.ts and listeners.ts use. */
export class RawServer {
  readonly net: NetServer
  limits: Limits
  draining = false
  /** Bodiless requests take the in-place lane (Connection.startLane); FLASHGATE_STRICT_LANE=off turns it off (to measure it). */
  readonly lane = process.env.FLASHGATE_STRICT_LANE !== 'off'
  readonly handle: Handler
  private readonly conns = new Set<Connection>()
  private sweep: NodeJS.Timeout | null = null

  constructor (config: Config, handler: Handler, metrics: Metrics, log: Log) {
    this.handle = handler
    this.limits = limitsOf(config)
    this.net = createNetServer({ noDelay: true, allowHalfOpen: true }, (socket) => {
      metrics.connections.inc()
      socket.once('close', () => { metrics.connections.dec() })
      this.conns.add(new Connection(this, socket))
      if (this.sweep === null) this.startSweep()
    })
    this.net.maxConnections = config.server.maxConnections
    this.net.on('close', () => { if (this.sweep !== null) { clearInterval(this.sweep); this.sweep = null } })
    void log
  }

  private startSweep (): void {
    // One coarse timer for every connection's deadline (as node:http's connectionsCheckingInterval).
    this.sweep = setInterval(() => {
      if (this.conns.size === 0) { clearInterval(this.sweep as NodeJS.Timeout); this.sweep = null; return }
      const now = Date.now()
      for (const c of this.conns) if (c.deadline !== 0 && now >= c.deadline) c.expire()
    }, 500)
    this.sweep.unref()
  }

  forget (c: Connection): void { this.conns.delete(c) }

  applyLimits (config: Config): void {
    this.limits = limitsOf(config)
    this.net.maxConnections = config.server.maxConnections
  }

  closeIdleConnections (): void {
    this.draining = true
    for (const c of this.conns) if (c.idle) c.destroy(); else c.closing = true
  }

  closeAllConnections (): void {
    for (const c of this.conns) c.destroy()
  }
}

function limitsOf (config: Config): Limits {
  const s = config.server
  return { headersTimeoutMs: s.headersTimeoutMs, requestTimeoutMs: s.requestTimeoutMs, keepAliveTimeoutMs: s.keepAliveTimeoutMs, maxHeaderSize: s.maxHeaderSize }
}
