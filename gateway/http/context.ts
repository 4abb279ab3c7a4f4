/**
 * The per-request context and the small parsers that fill it: request target (origin-form or
 * absolute-form), Host, and the client address behind trusted proxies. All of it is plain string work
 * with indexOf/charCodeAt — no regex, no URL objects on the request path.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { RouteConfig } from '../../conf/types.js'
import { parseIPv4, parseIPv6, type CidrSet } from '../../conf/cidr.js'
import type { QueryParams } from './query.js'
import type { Outcome, RequestContext, Settler } from '../pipeline/types.js'

/**
 * The concrete RequestContext. A class so every request has the same hidden shape (monomorphic
 * property access in guards); fields after `locals` are the gateway's own bookkeeping.
 */
export class Ctx implements RequestContext {
  /** Not readonly: the strict listener's lane swaps in real objects when the request passes (server.ts isLane). */
  req: IncomingMessage
  res: ServerResponse
  route: RouteConfig
  // Not readonly here (RequestContext keeps them readonly for guards): `renew` refills a context the
  // strict listener's lane kept for its connection.
  method: string
  path: string
  query: string
  host: string
  clientIp: string
  peerTrusted: boolean
  params: Readonly<Record<string, string>>
  now: number
  user: string | null | undefined = undefined
  queryParams: QueryParams | null = null
  extraHeaders: string[] | null = null
  settlers: Settler[] | null = null
  locals: Record<string, unknown> | null = null
  body: Buffer | null = null
  bodyFile: { readonly path: string, readonly length: number } | null = null
  upstreamTarget: string | null = null
  /** performance.now() at arrival, for the duration histogram. */
  start: number
  /** Index of the route in the state's table. */
  routeIndex = -1
  /** A streamed (chunked) body went over the route's limit. */
  tooLarge = false
  /** The body is read whole before the upstream is asked (memory up to server.body_buffer_size, then a spool file). */
  bufferBody = false
  /** The client paused longer than server.body_timeout while sending the body (408). */
  bodyTimedOut = false
  /** Set once the request's fate is known (settlers ran). */
  settled = false
  /** Outcome label: 'passed' or a reject / failure code. */
  outcome = 'passed'
  /** Opaque owner (the serving state) so completion can find its bookkeeping without a closure. */
  owner: unknown = null
  /** Callback handed to the proxy; created once per request only when proxying. */
  done: ((o: Outcome) => void) | null = null
  /** X-Request-Id (gateway/trace.ts). */
  requestId = ''
  /** This span (hex ids; '' until the span is started: before proxying, or at settle when exporting). */
  traceId = ''
  spanId = ''
  parentSpanId = ''
  traceSampled = false
  traceparent: string | null = null
  tracestate: string | null = null
  /** Request body bytes: Content-Length, or counted as a chunked / h2 body arrives. */
  bytesIn = 0
  /** Response body bytes the gateway wrote (a rejection's body, or what the proxy relayed). */
  bytesOut = 0
  upstreamStatus = 0
  upstreamMs = -1

  constructor (req: IncomingMessage, res: ServerResponse, route: RouteConfig, method: string, path: string, query: string,
    host: string, clientIp: string, peerTrusted: boolean, params: Readonly<Record<string, string>>, now: number, start: number) {
    this.req = req
    this.res = res
    this.route = route
    this.method = method
    this.path = path
    this.query = query
    this.host = host
    this.clientIp = clientIp
    this.peerTrusted = peerTrusted
    this.params = params
    this.now = now
    this.start = start
  }

  /**
   * This context as a new one for another request: every field as the constructor and the field
   * initialisers leave it. Only for a context nothing else can still hold (server.ts `route` keeps one
   * per lane connection, and only from a request that was rejected synchronously without settlers), so a
   * rejected request on the strict listener's lane makes no context object (issue 18).
   */
  renew (req: IncomingMessage, res: ServerResponse, route: RouteConfig, method: string, path: string, query: string,
    host: string, clientIp: string, peerTrusted: boolean, params: Readonly<Record<string, string>>, now: number, start: number): this {
    this.req = req
    this.res = res
    this.route = route
    this.method = method
    this.path = path
    this.query = query
    this.host = host
    this.clientIp = clientIp
    this.peerTrusted = peerTrusted
    this.params = params
    this.now = now
    this.start = start
    this.user = undefined
    this.queryParams = null
    this.extraHeaders = null
    this.settlers = null
    this.locals = null
    this.body = null
    this.bodyFile = null
    this.upstreamTarget = null
    this.routeIndex = -1
    this.tooLarge = false
    this.bufferBody = false
    this.bodyTimedOut = false
    this.settled = false
    this.outcome = 'passed'
    this.owner = null
    this.done = null
    this.requestId = ''
    this.traceId = ''
    this.spanId = ''
    this.parentSpanId = ''
    this.traceSampled = false
    this.traceparent = null
    this.tracestate = null
    this.bytesIn = 0
    this.bytesOut = 0
    this.upstreamStatus = 0
    this.upstreamMs = -1
    return this
  }
}

/**
 * The request target split into path and query; `null` when it is not acceptable (→ 400). `path` is
 * the normalised path (see normalizePath); `rewritten` is true when it differs from what was sent, so
 * the caller forwards the normalised form.
 */
export interface Target { path: string, query: string, authority: string | null, rewritten: boolean }

/**
 * Split `req.url`. Origin-form (`/a/b?q`) is the fast path. Absolute-form (`http://host/a?q`, what a
 * client talking to a forward proxy sends) yields the authority so the caller can check it against Host;
 * anything else (`*`, authority-form, other schemes) is rejected. The path is normalised as nginx does
 * before routing (normalizePath), and refused when it cannot be normalised safely: routing on one path
 * while the origin resolves another would let a request slip past a route's guards.
 */
export function parseTarget (url: string): Target | null {
  const out: Target = { path: '', query: '', authority: null, rewritten: false }
  return parseTargetInto(url, out) ? out : null
}

/**
 * parseTarget into `out` (false: not acceptable, `out` then unspecified): the request path's one
 * caller (server.ts `route`) fills one object it reads at once, so a request makes no Target (issue 18).
 */
export function parseTargetInto (url: string, out: Target): boolean {
  let rest = url
  let authority: string | null = null
  if (url.charCodeAt(0) !== 47 /* / */) {
    let schemeEnd: number
    if (url.startsWith('http://')) schemeEnd = 7
    else if (url.startsWith('https://')) schemeEnd = 8
    else return false
    let slash = url.indexOf('/', schemeEnd)
    const q = url.indexOf('?', schemeEnd)
    if (slash === -1 || (q !== -1 && q < slash)) slash = q
    authority = slash === -1 ? url.slice(schemeEnd) : url.slice(schemeEnd, slash)
    if (authority === '' || authority.includes('@')) return false
    rest = slash === -1 ? '/' : url.charCodeAt(slash) === 63 ? '/' + url.slice(slash) : url.slice(slash)
  }
  const qi = rest.indexOf('?')
  const raw = qi === -1 ? rest : rest.slice(0, qi)
  const query = qi === -1 ? '' : rest.slice(qi + 1)
  const path = normalizePath(raw)
  if (path === null) return false
  out.path = path
  out.query = query
  out.authority = authority
  out.rewritten = path !== raw
  return true
}

const HEX = new Int8Array(128).fill(-1)
for (let i = 0; i < 10; i++) HEX[48 + i] = i
for (let i = 0; i < 6; i++) { HEX[65 + i] = 10 + i; HEX[97 + i] = 10 + i }

/** RFC 3986 unreserved: ALPHA DIGIT - . _ ~ */
function unreserved (c: number): boolean {
  return (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || (c >= 48 && c <= 57) || c === 45 || c === 46 || c === 95 || c === 126
}

const UPPER_HEX = '0123456789ABCDEF'

/**
 * The path as routes and the upstream see it, nginx-style: percent-encoded unreserved characters
 * decoded (`/%61dmin` → `/admin`), other escapes kept with upper-case hex (`%c3%a9` → `%C3%A9`), runs of
 * slashes merged (`//admin` → `/admin`). Case is kept. `null` (→ 400) for what cannot be normalised
 * safely: an invalid escape (`%`, `%4`, `%zz`), an encoded `/`, `\` or NUL (the upstream might decode
 * them into separators or terminators), a raw `\`, and dot segments (`.`, `..`), also when they appear
 * only after decoding (`%2e%2e`). The fast path (nothing to do) allocates nothing.
 */
export function normalizePath (raw: string): string | null {
  const n = raw.length
  let simple = true
  let prev = 0
  for (let i = 0; i < n; i++) {
    const c = raw.charCodeAt(i)
    if (c === 37 /* % */ || c === 92 /* \ */ || ((c === 47 || c === 46) && prev === 47)) { simple = false; break }
    prev = c
  }
  if (simple) return raw
  let out = ''
  let segStart = 0 // index in `out` where the current segment starts (after its '/')
  for (let i = 0; i < n; i++) {
    let c = raw.charCodeAt(i)
    if (c === 92) return null
    if (c === 47) {
      if (dotSegment(out, segStart)) return null
      if (out.charCodeAt(out.length - 1) === 47) continue // merge slashes
      out += '/'
      segStart = out.length
      continue
    }
    if (c === 37) {
      const h = i + 2 < n ? raw.charCodeAt(i + 1) : 128
      const l = i + 2 < n ? raw.charCodeAt(i + 2) : 128
      const hv = h < 128 ? HEX[h] as number : -1
      const lv = l < 128 ? HEX[l] as number : -1
      if (hv < 0 || lv < 0) return null
      c = hv * 16 + lv
      i += 2
      if (c === 0 || c === 47 || c === 92) return null
      if (unreserved(c)) out += String.fromCharCode(c)
      else out += '%' + (UPPER_HEX[hv] as string) + (UPPER_HEX[lv] as string)
      continue
    }
    out += raw[i]
  }
  if (dotSegment(out, segStart)) return null
  return out
}

function dotSegment (out: string, segStart: number): boolean {
  const len = out.length - segStart
  if (len === 1) return out.charCodeAt(segStart) === 46
  if (len === 2) return out.charCodeAt(segStart) === 46 && out.charCodeAt(segStart + 1) === 46
  return false
}

/**
 * Lower-case host without the port, or `null` when the Host value is not a plausible host name or
 * address (→ 400). `[v6]:port` keeps the brackets off.
 */
export function parseHost (raw: string): string | null {
  let end = raw.length
  let start = 0
  if (raw.charCodeAt(0) === 91 /* [ */) {
    const close = raw.indexOf(']')
    if (close === -1) return null
    if (close + 1 < raw.length && raw.charCodeAt(close + 1) !== 58) return null
    start = 1
    end = close
    for (let i = start; i < end; i++) {
      const c = raw.charCodeAt(i)
      if (!((c >= 48 && c <= 58) || (c >= 97 && c <= 102) || (c >= 65 && c <= 70) || c === 46)) return null
    }
    return raw.slice(start, end).toLowerCase()
  }
  const colon = raw.indexOf(':')
  if (colon !== -1) {
    end = colon
    for (let i = colon + 1; i < raw.length; i++) {
      const c = raw.charCodeAt(i)
      if (c < 48 || c > 57) return null
    }
  }
  if (end === 0 || end > 253) return null
  let upper = false
  for (let i = 0; i < end; i++) {
    const c = raw.charCodeAt(i)
    if ((c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 45 || c === 46 || c === 95) continue
    if (c >= 65 && c <= 90) { upper = true; continue }
    return null
  }
  const h = end === raw.length ? raw : raw.slice(0, end)
  return upper ? h.toLowerCase() : h
}

/** `::ffff:1.2.3.4` → `1.2.3.4` so limits key one address one way. */
export function normalizeIp (ip: string): string {
  return ip.length > 7 && ip.charCodeAt(0) === 58 && ip.startsWith('::ffff:') && ip.includes('.', 7) ? ip.slice(7) : ip
}

/**
 * The client address: the socket peer, unless the peer is a trusted proxy, in which case
 * X-Forwarded-For is walked from the right, skipping trusted hops (nginx `real_ip_recursive on`); the
 * first untrusted hop is the client. An unparsable hop ends the walk at the last address we could trust.
 */
export function clientAddress (peer: string, xff: string | string[] | undefined, trusted: CidrSet): string {
  if (xff === undefined) return peer
  const list = (Array.isArray(xff) ? xff.join(',') : xff).split(',')
  let last = peer
  for (let i = list.length - 1; i >= 0; i--) {
    const hop = normalizeIp((list[i] as string).trim())
    if (hop === '' || !isIp(hop)) return last
    if (!trusted.has(hop)) return hop
    last = hop
  }
  return last
}

const scratch = new Uint32Array(4)

function isIp (s: string): boolean {
  return parseIPv4(s) >= 0 || parseIPv6(s, scratch)
}
