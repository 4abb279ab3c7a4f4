/**
 * Small helpers shared by the antibot guards: value sources, cookies, base64url and constant-time
 * HMAC comparison. Nothing here allocates more than the answer it returns.
 */
import { createHmac, timingSafeEqual } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import type { ValueSource } from '../conf/types.js'
import type { RequestContext } from '../gateway/types.js'

/** The request's parsed query, parsed once and cached on the context. */
export function queryOf (ctx: RequestContext): URLSearchParams {
  let q = ctx.queryParams
  if (q === null) {
    q = new URLSearchParams(ctx.query)
    ctx.queryParams = q
  }
  return q
}

/** First value of a request header (node lower-cases names); null when absent or empty. */
export function headerOf (headers: Record<string, string | string[] | undefined>, name: string): string | null {
  const v = headers[name]
  if (v === undefined) return null
  const s = typeof v === 'string' ? v : v[0]
  return s === undefined || s === '' ? null : s
}

/**
 * The value of cookie `name` in a Cookie header, or null. Scans the header without splitting it
 * into an array; values wrapped in double quotes are unwrapped (RFC 6265 cookie-value).
 */
export function cookieOf (header: string | undefined, name: string): string | null {
  if (header === undefined || header === '') return null
  let i = 0
  const n = header.length
  while (i < n) {
    while (i < n && (header.charCodeAt(i) === 32 || header.charCodeAt(i) === 59)) i++
    const eq = header.indexOf('=', i)
    if (eq === -1) return null
    let end = header.indexOf(';', eq)
    if (end === -1) end = n
    let kEnd = eq
    while (kEnd > i && header.charCodeAt(kEnd - 1) === 32) kEnd--
    if (kEnd - i === name.length && header.startsWith(name, i)) {
      let v = header.slice(eq + 1, end).trim()
      if (v.length >= 2 && v.charCodeAt(0) === 34 && v.charCodeAt(v.length - 1) === 34) v = v.slice(1, -1)
      return v === '' ? null : v
    }
    i = end + 1
  }
  return null
}

/** Resolve a guard's value source against a request; null when the value is absent. */
export function valueOf (ctx: RequestContext, src: ValueSource): string | null {
  switch (src.from) {
    case 'literal': return src.value
    case 'param': {
      const v = ctx.params[src.name]
      return v === undefined || v === '' ? null : v
    }
    case 'header': return headerOf(ctx.req.headers, src.name)
    case 'query': {
      const v = queryOf(ctx).get(src.name)
      return v === null || v === '' ? null : v
    }
    case 'cookie': return cookieOf(ctx.req.headers.cookie, src.name)
    case 'form': {
      const form = ctx.locals?.[FORM_FIELDS] as URLSearchParams | undefined
      const v = form?.get(src.name) ?? null
      return v === null || v === '' ? null : v
    }
  }
}

/** Key under ctx.locals where the parsed urlencoded form (when buffered) is kept. */
export const FORM_FIELDS = 'flashgate.form'

const B64URL = /^[A-Za-z0-9_-]*$/
const B64URL_INDEX = new Uint8Array(128)
for (let i = 0; i < 64; i++) B64URL_INDEX['ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'.charCodeAt(i)] = i

/** Decode strict, unpadded base64url of exactly `bytes` bytes; null on any other input. */
export function decodeB64url (s: string, bytes: number): Buffer | null {
  if (s.length !== Math.ceil(bytes * 4 / 3) || !B64URL.test(s)) return null
  // Reject non-canonical encodings: the unused low bits of the last character must be zero.
  const unused = s.length * 6 - bytes * 8
  if (unused > 0 && ((B64URL_INDEX[s.charCodeAt(s.length - 1)] ?? 0) & ((1 << unused) - 1)) !== 0) return null
  const buf = Buffer.from(s, 'base64url')
  return buf.length === bytes ? buf : null
}

/** HMAC-SHA256 of `msg` with `key`. */
export function hmac (key: KeyObject | Buffer, msg: string): Buffer {
  return createHmac('sha256', key).update(msg).digest()
}

/** Constant-time comparison of a computed MAC with a presented one (equal lengths checked first; lengths are public). */
export function macEqual (a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b)
}

/** Write a small JSON answer with no-store caching. */
export function sendJson (res: import('node:http').ServerResponse, status: number, body: unknown, headers: readonly string[] = []): void {
  const buf = Buffer.from(JSON.stringify(body))
  res.writeHead(status, ['content-type', 'application/json', 'cache-control', 'no-store', 'content-length', String(buf.length), ...headers])
  res.end(buf)
}
