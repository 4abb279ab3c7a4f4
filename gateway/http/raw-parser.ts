/**
 * A strict HTTP/1.1 request-head and body-framing parser for the raw-socket listener
 * (gateway/http/raw-server.ts). It refuses what node:http (llhttp, non-lenient) refuses; the
 * differential test (test/gateway/raw-differential.test.ts) sends one corpus to both and holds them to
 * the same accept/reject and the same request at the upstream.
 *
 * The rules (RFC 9112, and llhttp where it is stricter):
 * - request line: `METHOD SP target SP HTTP/D.D CRLF`, one space each; the method one of node:http's
 *   (`http.METHODS`, case-sensitive); target bytes visible ASCII only. No version (HTTP/0.9 style), a
 *   malformed version or a version other than 1.0/1.1: 505. Empty lines before a request are skipped.
 * - every line ends in CRLF: a bare LF or a bare CR is refused (400).
 * - header field: token name, `:` right after it (no space), optional whitespace, value bytes HTAB,
 *   SP..~ or obs-text (0x80-0xFF); obs-fold (a line starting with SP/HTAB) refused.
 * - the head (request line and fields) at most `maxHeaderSize` bytes: 431.
 * - Content-Length: digits only, at most one field; with Transfer-Encoding: 400. Transfer-Encoding must
 *   end in `chunked`. HTTP/1.1 needs a Host (node:http `requireHostHeader`).
 * - chunked bodies: hex sizes (no sign, no spaces, at most 15 digits), extensions `;name[=value]`, CRLF
 *   after each chunk's data, trailer fields with the header rules; bare LF anywhere is refused.
 *
 * Performance: byte tables, `indexOf` for line ends, header strings sliced once (latin1, as node:http).
 * The parser is resumable at line granularity, so a head sent a byte at a time costs O(n), not O(n²).
 */
import { METHODS } from 'node:http'

function table (pred: (c: number) => boolean): Uint8Array {
  const t = new Uint8Array(256)
  for (let c = 0; c < 256; c++) t[c] = pred(c) ? 1 : 0
  return t
}
const TCHAR_EXTRA = "!#$%&'*+-.^_`|~"
/** RFC 9110 token characters. */
export const TOKEN = table((c) => (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || TCHAR_EXTRA.includes(String.fromCharCode(c)))
/** Field-value characters: HTAB, SP..~, obs-text. */
export const VALUE = table((c) => c === 9 || (c >= 0x20 && c <= 0x7e) || c >= 0x80)
/** Request-target characters: visible ASCII (no SP, no controls, no DEL, no obs-text). */
const TARGET = table((c) => c > 0x20 && c < 0x7f)
const HEX = table((c) => (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66))

/** Methods node:http accepts (CONNECT is refused by the gateway: it is no forward proxy). */
const METHOD_SET = new Set(METHODS.filter((m) => m !== 'CONNECT'))

/** Buffer#latin1Slice (what toString('latin1') calls, without its argument checks). */
type Latin1 = { latin1Slice: (start: number, end: number) => string }
export function latin1 (b: Buffer, start: number, end: number): string {
  return (b as unknown as Latin1).latin1Slice(start, end)
}

const CR = 13
const LF = 10
const SP = 32
const HTAB = 9

/** A parse failure: the status to answer (400, 431, 505). */
export type ParseStatus = 400 | 431 | 505

/** Fields node:http keeps only once (the first wins), as IncomingMessage._addHeaderLine. */
const SINGLE = new Set(['content-type', 'content-length', 'user-agent', 'referer', 'host', 'authorization', 'proxy-authorization',
  'if-modified-since', 'if-unmodified-since', 'from', 'location', 'max-forwards', 'retry-after', 'etag', 'last-modified', 'server', 'age', 'expires'])

/** The head of one request, as the adapter presents it (node:http's shapes). */
export interface Head {
  method: string
  url: string
  /** 0 or 1 (the major is always 1). */
  minor: number
  rawHeaders: string[]
  headers: Record<string, string | string[]>
  /** Declared Content-Length, -1 when none. */
  contentLength: number
  chunked: boolean
  /** Persistent connection after this exchange (HTTP/1.1 unless `close`; HTTP/1.0 with `keep-alive`). */
  keepAlive: boolean
  /** `Expect` field value, null when absent. */
  expect: string | null
}

/** Lower-case a header name without allocating when it already is (the common case for clients like wrk and undici). */
function lower (s: string): string {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c >= 0x41 && c <= 0x5a) return s.toLowerCase()
  }
  return s
}

/** Add one field to node:http's `headers` object: single fields keep the first, set-cookie is a list, cookie joins with '; ', others with ', '. */
function addHeader (headers: Record<string, string | string[]>, name: string, value: string): void {
  const prev = headers[name]
  if (prev === undefined) {
    headers[name] = name === 'set-cookie' ? [value] : value
    return
  }
  if (SINGLE.has(name)) return
  if (name === 'set-cookie') (prev as string[]).push(value)
  else headers[name] = prev + (name === 'cookie' ? '; ' : ', ') + value
}

/** Has the comma-separated list `v` the token `tok` (lower-case), case-insensitively? */
function hasToken (v: string, tok: string): boolean {
  const l = v.toLowerCase()
  let i = 0
  while (i <= l.length) {
    let j = l.indexOf(',', i)
    if (j === -1) j = l.length
    if (l.slice(i, j).trim() === tok) return true
    i = j + 1
  }
  return false
}

/** `chunked` is the last coding of the Transfer-Encoding list, and only there (llhttp refuses `chunked, chunked`). */
function endsChunked (v: string): boolean {
  const codings = v.toLowerCase().split(',')
  for (let i = 0; i < codings.length; i++) {
    const c = (codings[i] as string).trim()
    if ((c === 'chunked') !== (i === codings.length - 1)) return false
  }
  return true
}

/** Do the bytes `buf[start, end)` spell `s` (latin1)? Lets a repeated head reuse its strings instead of slicing new ones. */
function same (buf: Buffer, start: number, end: number, s: string | undefined): s is string {
  if (s === undefined || s.length !== end - start) return false
  for (let i = 0; i < s.length; i++) if (buf[start + i] !== s.charCodeAt(i)) return false
  return true
}

const enum Phase { Start, Fields }

/**
 * Per-connection head parser. `feed(buf, pos)` parses from `pos`; it answers a Head (the bytes used are
 * up to `this.end`), a ParseStatus, or null (more bytes needed; `this.end` is where to resume).
 */
export class HeadParser {
  /** Offset after the last byte consumed by the last `feed` (resume point, or the head's end). */
  end = 0
  private phase = Phase.Start
  private size = 0
  private method = ''
  private url = ''
  private minor = 1
  /**
   * The fields so far; null while every one so far is the same as `prev`'s (a repeated head: then no
   * array and no string is made for it).
   */
  private raw: string[] | null = []
  /** Fields seen in this head. */
  private fields = 0
  /**
   * The last head answered. Its strings are reused for the same bytes in the next head (strings are
   * immutable: always safe); the Head object itself only when `shareable`.
   */
  private prev: Head | null = null
  /**
   * Set by the connection when `prev` was only read, never handed on (the in-place lane answered it):
   * the same head again is answered with that very object.
   */
  shareable = false
  constructor (public maxHeaderSize: number) {}

  reset (): void {
    this.phase = Phase.Start
    this.size = 0
    this.fields = 0
    this.raw = this.shareable && this.prev !== null ? null : []
  }

  /** True when no byte of a head has been consumed yet (a keep-alive connection between requests). */
  get idle (): boolean { return this.phase === Phase.Start && this.size === 0 }

  feed (buf: Buffer, pos: number, len: number): Head | ParseStatus | null {
    for (;;) {
      if (this.phase === Phase.Start) {
        // Empty lines before a request line are skipped (RFC 9112 §2.2, llhttp).
        while (pos + 1 < len && buf[pos] === CR && buf[pos + 1] === LF) pos += 2
        if (pos < len && buf[pos] === LF) return 400
      }
      const lf = buf.indexOf(LF, pos)
      if (lf === -1 || lf >= len) {
        this.end = pos
        // Reject a partial line as soon as it cannot be valid any more: its length, or a byte that no
        // line may hold (CR not before LF, a control other than HTAB).
        if (this.size + (len - pos) > this.maxHeaderSize) return 431
        for (let i = pos; i < len; i++) {
          const c = buf[i] as number
          if (c < 0x20 && c !== HTAB && !(c === CR && i === len - 1)) return c === CR ? 400 : (this.phase === Phase.Start && this.versionArea(buf, pos, i) ? 505 : 400)
          if (c === 0x7f && this.phase === Phase.Start) return 400
        }
        return null
      }
      const lineLen = lf + 1 - pos
      this.size += lineLen
      if (this.size > this.maxHeaderSize) return 431
      if (lf === pos || buf[lf - 1] !== CR) {
        // A bare LF: llhttp reads it in the request line's version as a bad version (505), else 400.
        return this.phase === Phase.Start && this.versionArea(buf, pos, lf) ? 505 : 400
      }
      const eol = lf - 1
      if (this.phase === Phase.Start) {
        const r = this.requestLine(buf, pos, eol)
        if (r !== 0) return r
        this.phase = Phase.Fields
        pos = lf + 1
        continue
      }
      if (eol === pos) {
        // The empty line: the head is complete.
        this.end = lf + 1
        return this.finish()
      }
      const r = this.field(buf, pos, eol)
      if (r !== 0) return r
      pos = lf + 1
    }
  }

  /** Is offset `at` of the request line starting at `pos` past its target (in the version)? */
  private versionArea (buf: Buffer, pos: number, at: number): boolean {
    const sp1 = buf.indexOf(SP, pos)
    if (sp1 === -1 || sp1 >= at) return false
    const sp2 = buf.indexOf(SP, sp1 + 1)
    return sp2 !== -1 && sp2 < at
  }

  private requestLine (buf: Buffer, pos: number, eol: number): 0 | ParseStatus {
    let i = pos
    while (i < eol && TOKEN[buf[i] as number] === 1) i++
    if (i === pos || i === eol || buf[i] !== SP) return 400
    const prev = this.prev
    const method = prev !== null && same(buf, pos, i, prev.method) ? prev.method : latin1(buf, pos, i)
    if (!METHOD_SET.has(method)) return 400
    // llhttp skips repeated spaces before the target and before the version.
    while (i < eol && buf[i] === SP) i++
    const t0 = i
    while (i < eol && TARGET[buf[i] as number] === 1) i++
    if (i === t0) return 400
    if (i === eol) return 505 // no version: HTTP/0.9
    if (buf[i] !== SP) return 400
    this.url = prev !== null && same(buf, t0, i, prev.url) ? prev.url : latin1(buf, t0, i)
    while (i < eol && buf[i] === SP) i++
    // HTTP/D.D exactly
    if (eol - i < 5 || buf[i] !== 0x48 || buf[i + 1] !== 0x54 || buf[i + 2] !== 0x54 || buf[i + 3] !== 0x50 || buf[i + 4] !== 0x2f) return 400
    const maj = buf[i + 5] as number
    if (eol - i < 8 || maj < 0x30 || maj > 0x39 || buf[i + 6] !== 0x2e || (buf[i + 7] as number) < 0x30 || (buf[i + 7] as number) > 0x39) return 505
    if (eol - i !== 8) return buf[i + 8] === CR ? 400 : 505 // a bare CR after the version (llhttp: LF expected)
    if (maj !== 0x31) return 505
    const minor = (buf[i + 7] as number) - 0x30
    if (minor > 1) return 505
    this.method = method
    this.minor = minor
    return 0
  }

  private field (buf: Buffer, pos: number, eol: number): 0 | ParseStatus {
    let i = pos
    while (i < eol && TOKEN[buf[i] as number] === 1) i++
    if (i === pos || buf[i] !== 0x3a) return 400 // obs-fold, empty name, space before ':', bad name byte
    const nameEnd = i
    i++
    while (i < eol && (buf[i] === SP || buf[i] === HTAB)) i++
    const v0 = i
    let v1 = i
    for (; i < eol; i++) {
      const c = buf[i] as number
      if (VALUE[c] !== 1) return 400
      if (c !== SP && c !== HTAB) v1 = i + 1
    }
    const k = this.fields * 2
    this.fields++
    if (k >= 4096) return 431
    const pr = this.prev === null ? null : this.prev.rawHeaders
    const pn = pr === null ? undefined : pr[k]
    const pv = pr === null ? undefined : pr[k + 1]
    const name = same(buf, pos, nameEnd, pn) ? pn : latin1(buf, pos, nameEnd)
    const value = same(buf, v0, v1, pv) ? pv : v0 === v1 ? '' : latin1(buf, v0, v1)
    if (this.raw === null) {
      if (name === pn && value === pv) return 0
      this.raw = (pr as string[]).slice(0, k)
    }
    this.raw.push(name, value)
    return 0
  }

  private finish (): Head | ParseStatus {
    const prev = this.prev
    if (this.raw === null) {
      const pr = (prev as Head).rawHeaders
      if (this.fields * 2 === pr.length && this.method === (prev as Head).method && this.url === (prev as Head).url && this.minor === (prev as Head).minor) {
        // The same head as the last one, which nothing kept: the same object (its framing, keep-alive and
        // fields are functions of these bytes).
        this.reset()
        return prev as Head
      }
      this.raw = pr.slice(0, this.fields * 2)
    }
    const raw = this.raw
    const headers: Record<string, string | string[]> = {}
    let cl = -1
    let te: string | null = null
    let host = false
    let connection: string | null = null
    let expect: string | null = null
    for (let i = 0; i < raw.length; i += 2) {
      const name = lower(raw[i] as string)
      const value = raw[i + 1] as string
      switch (name) {
        case 'content-length': {
          if (cl !== -1) return 400
          if (value.length === 0 || value.length > 15) return 400
          for (let k = 0; k < value.length; k++) {
            const c = value.charCodeAt(k)
            if (c < 0x30 || c > 0x39) return 400
          }
          cl = Number(value)
          break
        }
        case 'transfer-encoding': te = te === null ? value : te + ', ' + value; break
        case 'host': host = true; break
        case 'connection': connection = connection === null ? value : connection + ', ' + value; break
        case 'expect': if (expect === null) expect = value; break
      }
      addHeader(headers, name, value)
    }
    if (te !== null) {
      if (cl !== -1) return 400
      if (!endsChunked(te)) return 400
    }
    if (this.minor === 1 && !host) return 400
    const keepAlive = this.minor === 1 ? connection === null || !hasToken(connection, 'close') : connection !== null && hasToken(connection, 'keep-alive')
    const head: Head = { method: this.method, url: this.url, minor: this.minor, rawHeaders: raw, headers, contentLength: cl, chunked: te !== null, keepAlive, expect }
    this.prev = head
    this.shareable = false
    this.reset()
    return head
  }
}

const enum CState { Size, Ext, SizeLf, Data, DataCr, DataLf, Trailer, Done }
const enum Ext { Name, InName, Value, InValue, Quoted, Escape, AfterQuoted }

/**
 * Chunked body decoder. `feed` hands each data slice to `onData` and answers the offset it consumed up
 * to, or a ParseStatus negated (-400, -431). `done` is true once the last chunk and its trailers were read.
 */
export class ChunkedDecoder {
  private state = CState.Size
  private ext = Ext.Name
  private size = 0
  private digits = 0
  private left = 0
  private trailerLine = 0
  private trailerBytes = 0
  constructor (private readonly maxTrailerSize: number) {}

  get done (): boolean { return this.state === CState.Done }

  feed (buf: Buffer, pos: number, len: number, onData: (b: Buffer) => void): number {
    while (pos < len) {
      const c = buf[pos] as number
      switch (this.state) {
        case CState.Size:
          if (HEX[c] === 1) {
            if (++this.digits > 15) return -400
            this.size = this.size * 16 + (c <= 0x39 ? c - 0x30 : (c | 0x20) - 0x57)
            pos++
          } else if (this.digits === 0) {
            return -400
          } else if (c === 0x3b) { this.state = CState.Ext; this.ext = Ext.Name; pos++ } else if (c === CR) { this.state = CState.SizeLf; pos++ } else return -400
          break
        case CState.Ext:
          // chunk-ext = *( ";" name [ "=" ( token / quoted-string ) ] ), ending at CR.
          switch (this.ext) {
            case Ext.Name:
              // llhttp takes an empty name (`;;`, `;=v`) but no byte outside a token.
              if (TOKEN[c] === 1) { this.ext = Ext.InName; pos++ } else if (c === 0x3b) pos++
              else if (c === 0x3d) { this.ext = Ext.Value; pos++ } else if (c === CR) { this.state = CState.SizeLf; pos++ } else return -400
              break
            case Ext.InName:
              if (TOKEN[c] === 1) pos++
              else if (c === 0x3d) { this.ext = Ext.Value; pos++ } else if (c === 0x3b) { this.ext = Ext.Name; pos++ } else if (c === CR) { this.state = CState.SizeLf; pos++ } else return -400
              break
            case Ext.Value:
              if (c === 0x22) { this.ext = Ext.Quoted; pos++ } else if (TOKEN[c] === 1) { this.ext = Ext.InValue; pos++ } else return -400
              break
            case Ext.InValue:
              if (TOKEN[c] === 1) pos++
              else if (c === 0x3b) { this.ext = Ext.Name; pos++ } else if (c === CR) { this.state = CState.SizeLf; pos++ } else return -400
              break
            case Ext.Quoted:
              if (c === 0x22) { this.ext = Ext.AfterQuoted; pos++ } else if (c === 0x5c) { this.ext = Ext.Escape; pos++ } else if (c === HTAB || (c >= 0x20 && c !== 0x7f)) pos++
              else return -400
              break
            case Ext.Escape:
              if (c === HTAB || (c >= 0x20 && c !== 0x7f)) { this.ext = Ext.Quoted; pos++ } else return -400
              break
            case Ext.AfterQuoted:
              if (c === 0x3b) { this.ext = Ext.Name; pos++ } else if (c === CR) { this.state = CState.SizeLf; pos++ } else return -400
              break
          }
          break
        case CState.SizeLf:
          if (c !== LF) return -400
          pos++
          if (this.size === 0) { this.state = CState.Trailer; this.trailerLine = 0 } else { this.left = this.size; this.state = CState.Data }
          break
        case CState.Data: {
          const n = Math.min(this.left, len - pos)
          onData(buf.subarray(pos, pos + n))
          pos += n
          this.left -= n
          if (this.left === 0) this.state = CState.DataCr
          break
        }
        case CState.DataCr:
          if (c !== CR) return -400
          this.state = CState.DataLf; pos++
          break
        case CState.DataLf:
          if (c !== LF) return -400
          this.state = CState.Size; this.size = 0; this.digits = 0; pos++
          break
        case CState.Trailer: {
          // Trailer fields (checked as header fields, then dropped, as node:http does not forward them).
          if (++this.trailerBytes > this.maxTrailerSize) return -431
          if (c === LF) return -400 // a bare LF
          if (c === CR) {
            if (this.trailerLine === 1) return -400 // a name without ':'
            // CR must be followed by LF; an empty line (no bytes before) ends the body.
            if (pos + 1 >= len) return pos // wait for the LF (resume on CR)
            if (buf[pos + 1] !== LF) return -400
            const empty = this.trailerLine === 0
            pos += 2
            this.trailerLine = 0
            if (empty) { this.state = CState.Done; return pos }
            break
          }
          if (this.trailerLine === 0) {
            if (TOKEN[c] !== 1) return -400
            this.trailerLine = 1 // in the name
          } else if (this.trailerLine === 1) {
            if (c === 0x3a) this.trailerLine = 2 // in the value
            else if (TOKEN[c] !== 1) return -400
          } else if (VALUE[c] !== 1) return -400
          pos++
          break
        }
        case CState.Done:
          return pos
      }
    }
    return pos
  }
}
