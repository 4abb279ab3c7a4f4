/**
 * The per-request context and the small parsers that fill it: request target (origin-form or
 * absolute-form), Host, and the client address behind trusted proxies. All of it is plain string work
 * with indexOf/charCodeAt — no regex, no URL objects on the request path.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { RouteConfig } from '../conf/types.js'
import { parseIPv4, parseIPv6, type CidrSet } from './cidr.js'
import type { QueryParams } from './query.js'
import type { Outcome, RequestContext, Settler } from './types.js'

/**
 * The concrete RequestContext. A class so every request has the same hidden shape (monomorphic
 * property access in guards); fields after `locals` are the gateway's own bookkeeping.
 */
export class Ctx implements RequestContext {
  readonly req: IncomingMessage
  readonly res: ServerResponse
  route: RouteConfig
  readonly method: string
  readonly path: string
  readonly query: string
  readonly host: string
  readonly clientIp: string
  readonly peerTrusted: boolean
  params: Readonly<Record<string, string>>
  readonly now: number
  user: string | null | undefined = undefined
  queryParams: QueryParams | null = null
  extraHeaders: string[] | null = null
  settlers: Settler[] | null = null
  locals: Record<string, unknown> | null = null
  body: Buffer | null = null
  upstreamTarget: string | null = null
  /** performance.now() at arrival, for the duration histogram. */
  readonly start: number
  /** Index of the route in the state's table. */
  routeIndex = -1
  /** A streamed (chunked) body went over the route's limit. */
  tooLarge = false
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
}

/** The request target split into path and query; `null` when it is not acceptable (→ 400). */
export interface Target { path: string, query: string, authority: string | null }

/**
 * Split `req.url`. Origin-form (`/a/b?q`) is the fast path. Absolute-form (`http://host/a?q`, what a
 * client talking to a forward proxy sends) yields the authority so the caller can check it against Host;
 * anything else (`*`, authority-form, other schemes) is rejected. Paths carrying dot-segments
 * (`/a/../b`, also percent-encoded) are rejected: routing on one path while the origin resolves another
 * would let a request slip past a route's guards.
 */
export function parseTarget (url: string): Target | null {
  let rest = url
  let authority: string | null = null
  if (url.charCodeAt(0) !== 47 /* / */) {
    let schemeEnd: number
    if (url.startsWith('http://')) schemeEnd = 7
    else if (url.startsWith('https://')) schemeEnd = 8
    else return null
    let slash = url.indexOf('/', schemeEnd)
    const q = url.indexOf('?', schemeEnd)
    if (slash === -1 || (q !== -1 && q < slash)) slash = q
    authority = slash === -1 ? url.slice(schemeEnd) : url.slice(schemeEnd, slash)
    if (authority === '' || authority.includes('@')) return null
    rest = slash === -1 ? '/' : url.charCodeAt(slash) === 63 ? '/' + url.slice(slash) : url.slice(slash)
  }
  const qi = rest.indexOf('?')
  const path = qi === -1 ? rest : rest.slice(0, qi)
  const query = qi === -1 ? '' : rest.slice(qi + 1)
  if (path.includes('/.') && hasDotSegment(path)) return null
  if (path.includes('%') && hasEncodedDotSegment(path)) return null
  if (path.includes('\\')) return null
  return { path, query, authority }
}

function hasDotSegment (path: string): boolean {
  for (const seg of path.split('/')) if (seg === '.' || seg === '..') return true
  return false
}

function hasEncodedDotSegment (path: string): boolean {
  for (const seg of path.split('/')) {
    if (!seg.includes('%')) continue
    const s = seg.toLowerCase().replaceAll('%2e', '.')
    if (s === '.' || s === '..' || seg.toLowerCase().includes('%2f') || seg.toLowerCase().includes('%5c')) return true
  }
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
