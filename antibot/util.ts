/**
 * Small helpers shared by the antibot checks: headers, cookies (with RFC 6265's quote unwrapping),
 * base64url and constant-time HMAC comparison. Nothing here allocates more than the answer it returns.
 */
import * as cryptoNs from 'node:crypto'
import { createHash, createHmac, timingSafeEqual } from 'node:crypto'
import type { KeyObject } from 'node:crypto'

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

const B64URL = /^[A-Za-z0-9_-]*$/

/** HMAC-SHA256 of `msg` with `key`. */
export function hmac (key: KeyObject | Buffer, msg: string): Buffer {
  return Buffer.from(hmacB64url(key, msg), 'base64url')
}

/**
 * HMAC-SHA256 (RFC 2104) of `msg` under `key`, unpadded base64url: H((K ^ opad) || H((K ^ ipad) || msg)),
 * as two one-shot `crypto.hash` calls over per-key buffers that hold the padded key. createHmac builds a
 * stream object and a native handle per call; this builds neither (1.30 → 1.05 µs alone, and less
 * garbage on the request path, where two MACs are checked per purchase). Checked against createHmac in
 * test/antibot/signed-link.test.ts for short, block-sized and long keys and ASCII, non-ASCII and long
 * messages. Falls back to createHmac where `crypto.hash` is missing (Node < 20.12) or for a message
 * longer than the scratch space.
 */
export function hmacB64url (key: KeyObject | Buffer, msg: string): string {
  if (oneShotHash === undefined || msg.length > SCRATCH / 3) return createHmac('sha256', key).update(msg).digest('base64url')
  const p = padsOf(key)
  const n = p.inner.write(msg, BLOCK, 'utf8')
  // The inner digest as a latin1 string written into place: asking crypto.hash for a Buffer costs about
  // 1.2 µs more here (a new ArrayBuffer from C++) than a 32-character string does.
  const view = p.views[n] ??= p.inner.subarray(0, BLOCK + n)
  p.outer.write(oneShotHash('sha256', view, 'latin1') as string, BLOCK, 'latin1')
  return oneShotHash('sha256', p.outer, 'base64url') as string
}

/** SHA-256 block size; scratch room for a message (in UTF-8 bytes: 3 per UTF-16 unit at most). */
const BLOCK = 64
const SCRATCH = 3072
const oneShotHash = (cryptoNs as { hash?: (alg: string, data: Buffer, enc: string) => Buffer | string }).hash

interface Pads {
  /** K ^ ipad, then room for the message. */
  readonly inner: Buffer
  /** K ^ opad, then the inner digest. */
  readonly outer: Buffer
  /** `inner` cut after a message of n bytes, by n, made once each (a view is an object). */
  readonly views: Buffer[]
}
const padsByKey = new WeakMap<KeyObject | Buffer, Pads>()

function padsOf (key: KeyObject | Buffer): Pads {
  let p = padsByKey.get(key)
  if (p !== undefined) return p
  let k: Buffer = Buffer.isBuffer(key) ? key : key.export()
  if (k.length > BLOCK) k = createHash('sha256').update(k).digest()
  const inner = Buffer.alloc(BLOCK + SCRATCH)
  const outer = Buffer.alloc(BLOCK + 32)
  for (let i = 0; i < BLOCK; i++) {
    const b = k[i] ?? 0
    inner[i] = b ^ 0x36
    outer[i] = b ^ 0x5c
  }
  p = { inner, outer, views: [] }
  padsByKey.set(key, p)
  return p
}

/** Length of an HMAC-SHA256 in unpadded base64url. */
const MAC_B64URL_LENGTH = 43

/**
 * Whether `presented` is the HMAC-SHA256 of `msg` under `key`, in unpadded base64url. The comparison is
 * `crypto.timingSafeEqual` on equal-length buffers of the two encodings (lengths are public): the
 * computed MAC is canonical base64url, so a non-canonical or otherwise altered encoding never matches.
 * Comparing the encodings instead of decoded bytes spares two ArrayBuffer allocations per check
 * (0.4 µs of about 2 here, and garbage on the request path). `presented` is checked to be exactly 43
 * base64url characters first, so writing it as latin1 fills the buffer byte for byte.
 */
export function macMatches (key: KeyObject | Buffer, msg: string, presented: string): boolean {
  if (presented.length !== MAC_B64URL_LENGTH || !B64URL.test(presented)) return false
  const expected = hmacB64url(key, msg)
  // Both encodings into two fixed buffers (no allocation per check); 43 ASCII characters each.
  EXPECTED.write(expected, 'latin1')
  PRESENTED.write(presented, 'latin1')
  return timingSafeEqual(EXPECTED, PRESENTED)
}
const EXPECTED = Buffer.alloc(MAC_B64URL_LENGTH)
const PRESENTED = Buffer.alloc(MAC_B64URL_LENGTH)
