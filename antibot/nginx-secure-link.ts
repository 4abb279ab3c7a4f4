/**
 * nginx `ngx_http_secure_link_module` compatibility (the `secure_link` + `secure_link_md5` pair), so a
 * site migrating from nginx keeps its link generator:
 *
 *   secure_link      $arg_md5,$arg_expires;
 *   secure_link_md5  "$secure_link_expires$uri$remote_addr secret";
 *
 * Semantics follow nginx's ngx_http_secure_link_variable():
 * - the `secure_link` expression is evaluated; text before the first `,` is the hash, text after it
 *   the expiry (decimal epoch seconds; empty, non-numeric, overflowing or <= 0 → not found);
 *   no comma means no expiry;
 * - the hash is at most 24 characters of base64url (decoding stops at the first `=`; any other
 *   character outside the alphabet, or a length ≡ 1 mod 4, fails) and must decode to 16 bytes;
 * - the `secure_link_md5` expression is evaluated (with `$secure_link_expires` = the expiry text)
 *   and its MD5 compared with the hash (here in constant time);
 * - a matching link is expired when `expires < now` in whole seconds (`expires == now` still valid).
 *
 * Variables: `$uri` (the percent-decoded path), `$request_uri`, `$args` / `$query_string`, `$arg_NAME`
 * (raw, first match, name case-insensitive, as nginx), `$http_NAME` (`_` → `-`), `$cookie_NAME`,
 * `$remote_addr` (the trusted client address), `$host`, `$request_method`, `$secure_link_expires`;
 * `$name` and `${name}` forms. Unknown variables are rejected at load. Not emulated: nginx's merging
 * of `//` and resolution of `.`/`..` in `$uri` (the gateway's router sees the path as sent).
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import { parseSecureLinkTemplate, type TemplatePart } from '../conf/secure-link.js'
import { cookieOf } from './util.js'

/**
 * What the nginx variables read of a request. The gateway's request context has this shape; antibot/
 * names only the fields it reads, so it needs nothing from gateway/.
 */
export interface LinkRequest {
  readonly path: string
  readonly query: string
  readonly clientIp: string
  readonly host: string
  readonly method: string
  readonly now: number
  readonly req: { readonly headers: { readonly cookie?: string | undefined, readonly [name: string]: string | string[] | undefined } }
}

type Getter = (ctx: LinkRequest, expires: string) => string
type Part = string | Getter

/** Raw value of query argument `name` (case-insensitive), as nginx's `$arg_NAME`; '' when absent. */
export function rawArg (query: string, name: string): string {
  const lname = name.toLowerCase()
  let i = 0
  while (i <= query.length) {
    let end = query.indexOf('&', i)
    if (end === -1) end = query.length
    const eq = query.indexOf('=', i)
    const kEnd = eq !== -1 && eq < end ? eq : end
    if (kEnd - i === lname.length && query.slice(i, kEnd).toLowerCase() === lname) {
      return kEnd === end ? '' : query.slice(kEnd + 1, end)
    }
    i = end + 1
  }
  return ''
}

function decodedPath (p: string): string {
  try { return decodeURIComponent(p) } catch { return p }
}

function variable (name: string): Getter {
  switch (name) {
    case 'uri': return (ctx) => decodedPath(ctx.path)
    case 'request_uri': return (ctx) => ctx.query === '' ? ctx.path : `${ctx.path}?${ctx.query}`
    case 'args': case 'query_string': return (ctx) => ctx.query
    case 'remote_addr': return (ctx) => ctx.clientIp
    case 'host': return (ctx) => ctx.host
    case 'request_method': return (ctx) => ctx.method
    case 'secure_link_expires': return (_ctx, expires) => expires
  }
  if (name.startsWith('arg_') && name.length > 4) {
    const arg = name.slice(4)
    return (ctx) => rawArg(ctx.query, arg)
  }
  if (name.startsWith('http_') && name.length > 5) {
    const h = name.slice(5).toLowerCase().replace(/_/g, '-')
    return (ctx) => {
      const v = ctx.req.headers[h]
      return v === undefined ? '' : Array.isArray(v) ? v.join(', ') : v
    }
  }
  if (name.startsWith('cookie_') && name.length > 7) {
    const c = name.slice(7)
    return (ctx) => cookieOf(ctx.req.headers.cookie, c) ?? ''
  }
  throw new Error(`secure_link: unsupported variable $${name}`)
}

/** Compile an nginx complex value (`"$a$b literal ${c}"`, parsed by conf/secure-link.ts) into parts. Throws on a bad or unknown variable. */
export function compileTemplate (tpl: string): Part[] {
  let parts: TemplatePart[]
  try { parts = parseSecureLinkTemplate(tpl) } catch (err) { throw new Error(`secure_link: ${(err as Error).message}`) }
  return parts.map((p) => 'text' in p ? p.text : variable(p.variable))
}

function run (parts: Part[], ctx: LinkRequest, expires: string): string {
  let out = ''
  for (const p of parts) out += typeof p === 'string' ? p : p(ctx, expires)
  return out
}

const B64URL_CHAR = /^[A-Za-z0-9_-]*$/

/** nginx's ngx_decode_base64url: stop at '=', refuse other foreign characters and len % 4 == 1. */
export function nginxDecodeBase64url (s: string): Buffer | null {
  const eq = s.indexOf('=')
  const body = eq === -1 ? s : s.slice(0, eq)
  if (!B64URL_CHAR.test(body) || body.length % 4 === 1) return null
  return Buffer.from(body, 'base64url')
}

/** nginx's ngx_atotm: decimal digits only, no empty string, no overflow; -1 on error. */
function atotm (s: string): number {
  if (s === '' || !/^\d+$/.test(s)) return -1
  const n = Number(s)
  return Number.isSafeInteger(n) ? n : -1
}

export interface SecureLinkResult {
  readonly result: 'ok' | 'invalid' | 'expired'
  /** Epoch seconds; 0 = no expiry. */
  readonly expires: number
  /** The presented hash, canonical base64url (a natural one-time token for single_use). */
  readonly hash: string
}

const INVALID: SecureLinkResult = { result: 'invalid', expires: 0, hash: '' }

/** Compile the `secure_link` / `secure_link_md5` pair into a checker of requests. */
export function compileSecureLink (secureLink: string, secureLinkMd5: string): (ctx: LinkRequest) => SecureLinkResult {
  const link = compileTemplate(secureLink)
  const md5 = compileTemplate(secureLinkMd5)
  return (ctx) => {
    const val = run(link, ctx, '')
    const comma = val.indexOf(',')
    let hash = val
    let expiresText = ''
    let expires = 0
    if (comma !== -1) {
      hash = val.slice(0, comma)
      expiresText = val.slice(comma + 1)
      expires = atotm(expiresText)
      if (expires <= 0) return INVALID
    }
    if (hash.length > 24) return INVALID
    const presented = nginxDecodeBase64url(hash)
    if (presented === null || presented.length !== 16) return INVALID
    const want = createHash('md5').update(run(md5, ctx, expiresText)).digest()
    if (!timingSafeEqual(want, presented)) return INVALID
    const nowSec = Math.floor(ctx.now / 1000)
    return { result: expires !== 0 && expires < nowSec ? 'expired' : 'ok', expires, hash: presented.toString('base64url') }
  }
}

/** Make an nginx-style link hash: base64url(md5(text)) without padding (what `openssl md5 -binary | base64 | tr +/ -_ | tr -d =` prints). */
export function nginxLinkHash (text: string): string {
  return createHash('md5').update(text).digest('base64url')
}
