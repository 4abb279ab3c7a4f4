/**
 * Header rewriting on the proxy path, both directions, as flat `[name, value, ...]` arrays (no object
 * per request, names keep the case they were sent with).
 *
 * Dropped in both directions (RFC 9110 7.6.1 connection-specific fields): `Connection` and every field
 * it names, `Keep-Alive`, `Proxy-*` (Proxy-Connection, Proxy-Authorization, Proxy-Authenticate: meant
 * for the hop, not the origin or the client), `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`.
 * Dropped toward the upstream as well: `Expect` (node:http has already answered 100-continue; undici
 * refuses it), and the client's `X-Forwarded-*`, which are rebuilt:
 *
 * - `X-Forwarded-For`: when the socket peer is a trusted proxy, its incoming chain plus the peer
 *   address (`a, b, peer`); otherwise the peer address alone (a client cannot plant addresses).
 * - `X-Forwarded-Proto`: the trusted peer's value when it sent one, else this listener's scheme.
 * - `X-Forwarded-Host`: the trusted peer's value when it sent one, else the client's `Host`.
 * - `X-Real-IP`: the client address the gateway judged (the peer, or X-Forwarded-For's right-most
 *   untrusted hop behind trusted proxies), as nginx's `proxy_set_header X-Real-IP $remote_addr` with
 *   real_ip; the client's own X-Real-IP is never passed on.
 * - `Forwarded` (RFC 7239): from a trusted peer, its value plus this hop (`for=peer;proto=..;host=..`);
 *   from anyone else, only this hop (a client cannot plant a `for=`).
 * - `Host`: the client's Host is passed through unchanged (nginx `proxy_set_header Host $host`), so
 *   origins see the public name; a request without Host gets the target's `host:port` from undici.
 *   Over HTTP/2 the Host is the client's `:authority`; pseudo-headers (`:method`, `:path`…) are
 *   never forwarded.
 * - `X-Request-Id`, `traceparent`, `tracestate`: the client's are dropped and the gateway's sent
 *   (gateway/trace.ts: a trusted proxy's request id is kept; the traceparent names this span).
 */
import type { IncomingMessage } from 'node:http'
import { latin1 } from '../http/raw-parser.js'
import type { RawHead } from './raw-pool.js'

/** Lower-cased names never forwarded upstream (hop-by-hop, or rebuilt here). `proxy-*` is checked apart. */
const DROP_REQUEST = new Set([
  'connection', 'keep-alive', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'expect', 'host',
  'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-real-ip', 'forwarded', 'x-request-id', 'traceparent', 'tracestate'
])

/** What the gateway itself sends upstream about the request (request id, trace context). */
export interface RequestIds {
  readonly requestId?: string | undefined
  readonly traceparent?: string | null | undefined
  readonly tracestate?: string | null | undefined
}

/** Lower-cased names never forwarded to the client. `proxy-*` is checked apart. */
const DROP_RESPONSE = new Set(['connection', 'keep-alive', 'te', 'trailer', 'transfer-encoding', 'upgrade'])

/** Tokens of a Connection header that name no extra field to drop. */
function connectionTokens (value: string): string[] | null {
  // Fast path: nearly every Connection header is exactly one of these (the profile showed the split).
  const v = value.length <= 10 ? value.toLowerCase() : ''
  if (v === 'keep-alive' || v === 'close') return null
  let out: string[] | null = null
  for (const raw of value.split(',')) {
    const t = raw.trim().toLowerCase()
    if (t === '' || t === 'close' || t === 'keep-alive') continue
    ;(out ??= []).push(t)
  }
  return out
}

/** Remove the fields a Connection header named (rare: only then is the array walked twice). */
function dropNamed (headers: string[], names: readonly string[]): string[] {
  const out: string[] = []
  for (let i = 0; i < headers.length; i += 2) {
    if (!names.includes(headers[i]!.toLowerCase())) out.push(headers[i]!, headers[i + 1]!)
  }
  return out
}

/** `::ffff:127.0.0.1` → `127.0.0.1`, as nginx's `$remote_addr` shows it. */
function peerAddress (addr: string | undefined): string {
  if (addr === undefined) return ''
  return addr.startsWith('::ffff:') && addr.includes('.') ? addr.slice(7) : addr
}

/**
 * The headers sent upstream for `req`: its raw headers minus the dropped ones, then Host and
 * X-Forwarded-For/-Proto/-Host. `peerTrusted` says whether the socket peer is in trusted_proxies.
 * Only the first Content-Length is kept (node:http has already rejected conflicting ones).
 */
export function requestHeaders (req: IncomingMessage, peerTrusted: boolean, clientIp?: string, ids: RequestIds | null = null): string[] {
  const raw = req.rawHeaders
  const out: string[] = []
  let host: string | null = null
  let fwd: string | null = null
  let xff: string | null = null
  let xfp: string | null = null
  let xfh: string | null = null
  let named: string[] | null = null
  let sawLength = false
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!
    const value = raw[i + 1]!
    if (name.charCodeAt(0) === 58 /* : */) {
      // HTTP/2 pseudo-header: :authority stands for Host; the others are the request line.
      if (name === ':authority') host ??= value
      continue
    }
    const lower = name.toLowerCase()
    if (DROP_REQUEST.has(lower)) {
      switch (lower) {
        case 'host': host ??= value; break
        case 'x-forwarded-for': xff = xff === null ? value : `${xff}, ${value}`; break
        case 'x-forwarded-proto': xfp ??= value; break
        case 'x-forwarded-host': xfh ??= value; break
        case 'forwarded': fwd = fwd === null ? value : `${fwd}, ${value}`; break
        case 'connection': {
          const t = connectionTokens(value)
          if (t !== null) named = named === null ? t : named.concat(t)
          break
        }
      }
      continue
    }
    if (lower.startsWith('proxy-')) continue
    if (lower === 'content-length') {
      if (sawLength) continue
      sawLength = true
    }
    out.push(name, value)
  }
  const result = named === null ? out : dropNamed(out, named)
  const peer = peerAddress(req.socket.remoteAddress)
  if (host !== null) result.push('host', host)
  result.push('x-forwarded-for', peerTrusted && xff !== null ? `${xff}, ${peer}` : peer)
  result.push('x-forwarded-proto', peerTrusted && xfp !== null ? xfp : ('encrypted' in req.socket && req.socket.encrypted === true ? 'https' : 'http'))
  const fwdHost = peerTrusted && xfh !== null ? xfh : host
  if (fwdHost !== null) result.push('x-forwarded-host', fwdHost)
  result.push('x-real-ip', clientIp ?? peer)
  const proto = 'encrypted' in req.socket && req.socket.encrypted === true ? 'https' : 'http'
  let hop = `for=${forwardedNode(peer)};proto=${proto}`
  if (host !== null) hop += `;host=${forwardedValue(host)}`
  result.push('forwarded', peerTrusted && fwd !== null ? `${fwd}, ${hop}` : hop)
  if (ids !== null) {
    if (ids.requestId !== undefined && ids.requestId !== '') result.push('x-request-id', ids.requestId)
    if (ids.traceparent != null) {
      result.push('traceparent', ids.traceparent)
      if (ids.tracestate != null) result.push('tracestate', ids.tracestate)
    }
  }
  return result
}

/** RFC 7239 node: IPv6 in brackets and quoted. */
function forwardedNode (ip: string): string {
  return ip.includes(':') ? `"[${ip}]"` : ip === '' ? 'unknown' : ip
}

/** The last forwardedValue (nearly every request of a site has the same Host). */
let lastForwardedIn = ''
let lastForwardedOut = ''

/** A token as is, anything else as a quoted-string. */
function forwardedValue (v: string): string {
  if (v === lastForwardedIn) return lastForwardedOut
  const out = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/.test(v) ? v : `"${v.replace(/["\\]/g, '\\$&')}"`
  lastForwardedIn = v
  lastForwardedOut = out
  return out
}

/** False when the raw name cannot be one of DROP_RESPONSE nor start with `proxy-` (ASCII case-insensitive). */
function maybeHopByHop (name: Buffer): boolean {
  return maybeDropped(name[0]!, name.length)
}

/** maybeHopByHop by the name's first byte and length. */
function maybeDropped (first: number, length: number): boolean {
  const c = first | 0x20
  switch (length) {
    case 2: return c === 116 /* te */
    case 7: return c === 116 /* trailer */ || c === 117 /* upgrade */ || c === 112
    case 10: return c === 99 /* connection */ || c === 107 /* keep-alive */ || c === 112
    case 12: return c === 120 /* x-request-id */ || c === 112
    case 17: return c === 116 /* transfer-encoding */ || c === 112
    default: return length >= 6 && c === 112 /* proxy-* */
  }
}

/**
 * The upstream's raw response headers (Buffers, as undici hands them over) as a flat string array for
 * `res.writeHead`, hop-by-hop fields dropped, then `extra` (the guards' response headers) appended.
 */
export function responseHeaders (raw: readonly Buffer[], extra: readonly string[] | null, requestId: string | null = null): string[] {
  const out: string[] = []
  let named: string[] | null = null
  for (let i = 0; i < raw.length; i += 2) {
    const b = raw[i]!
    // Performance: only a name whose length and first letter match a dropped one (connection,
    // keep-alive, te, trailer, transfer-encoding, upgrade, proxy-*) is lower-cased and looked up; the
    // usual Server/Date/Content-Type/Content-Length are copied as they are.
    if (!maybeHopByHop(b)) {
      out.push(b.toString('latin1'), raw[i + 1]!.toString('latin1'))
      continue
    }
    const name = b.toString('latin1')
    const lower = name.toLowerCase()
    if (DROP_RESPONSE.has(lower) || lower === 'x-request-id') {
      if (lower === 'connection') {
        const t = connectionTokens(raw[i + 1]!.toString('latin1'))
        if (t !== null) named = named === null ? t : named.concat(t)
      }
      continue
    }
    if (lower.startsWith('proxy-')) continue
    out.push(name, raw[i + 1]!.toString('latin1'))
  }
  const result = named === null ? out : dropNamed(out, named)
  if (extra !== null) for (let i = 0; i < extra.length; i++) result.push(extra[i]!)
  if (requestId !== null) result.push('x-request-id', requestId)
  return result
}

/** What responseLines found besides the lines (valid until its next call). */
export const headFlags = { hasLength: false, hasDate: false }

/**
 * responseHeaders for the raw client's head, as header lines (`Name: value\r\n`…) for
 * RawResponse.writeHeadLines, the same fields in the same order and spelling. Runs of fields the
 * upstream wrote as `Name: value` are copied as one slice of its bytes. Null when a Connection header
 * names other fields to drop (then responseHeaders does it).
 */
export function responseLines (h: RawHead): string | null {
  const buf = h.buf
  const at = h.at
  let lines = ''
  let run = -1
  let runEnd = -1
  let hasLength = false
  let hasDate = false
  for (let k = 0; k < 4 * h.count; k += 4) {
    const n0 = at[k]!; const n1 = at[k + 1]!; const v0 = at[k + 2]!; const eol = at[k + 3]!
    const first = buf[n0]!
    const n = n1 - n0
    if (maybeDropped(first, n)) {
      const lower = latin1(buf, n0, n1).toLowerCase()
      if (DROP_RESPONSE.has(lower) || lower === 'x-request-id' || lower.startsWith('proxy-')) {
        if (lower === 'connection' && connectionTokens(latin1(buf, v0, eol)) !== null) return null
        if (run !== -1) { lines += latin1(buf, run, runEnd); run = -1 }
        continue
      }
    } else if (n === 14 && (first | 0x20) === 0x63 && latin1(buf, n0, n1).toLowerCase() === 'content-length') hasLength = true
    else if (n === 4 && (first | 0x20) === 0x64 && latin1(buf, n0, n1).toLowerCase() === 'date') hasDate = true
    if (v0 === n1 + 2 && buf[n1 + 1] === 0x20) {
      // Written `Name: value`: its bytes are the line.
      if (run === -1) run = n0
      runEnd = eol + 2
      continue
    }
    if (run !== -1) { lines += latin1(buf, run, runEnd); run = -1 }
    lines += latin1(buf, n0, n1) + ': ' + latin1(buf, v0, eol) + '\r\n'
  }
  if (run !== -1) lines += latin1(buf, run, runEnd)
  headFlags.hasLength = hasLength
  headFlags.hasDate = hasDate
  return lines
}
