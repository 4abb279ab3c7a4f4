/**
 * Signed purchase links (the hidden, dynamic purchase URL).
 *
 * `hmac` mode: the link is the purchase path plus `?expires=<epoch ms>&kid=<key id>&sig=<base64url>`
 * (and `&nonce=<16 chars>` when `single_use`). The signature is HMAC-SHA256, with the key named by
 * `kid`, over the length-prefixed fields
 *   "fg-link|v1", method, path, user, campaign, product, expires, nonce
 * so no field can bleed into its neighbour. The first key in `secrets.link_keys` signs; every listed
 * key verifies (rotation: add the new key first, keep the old one until its links have expired).
 *
 * Expiry: a link is valid while `now < expires` — `expires` itself is already expired (JWT `exp`
 * semantics). The signature is checked before the expiry, so a tampered expired link is LINK_INVALID.
 *
 * `nginx_secure_link_md5` mode: see ./nginx-secure-link.ts. The guard is gateway/guards/signed-link.ts.
 */
import { createSecretKey, randomBytes } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import type { Config, RouteConfig } from '../conf/types.js'
import { hmac, macMatches } from './util.js'

/** What verifying a link needs of a parsed query (URLSearchParams has this shape, and so has the gateway's raw-query reader). */
export interface QueryParams {
  get (name: string): string | null
}

/** What a link is signed for. */
export interface LinkClaims {
  readonly method: string
  readonly path: string
  readonly user: string
  readonly campaign: string
  readonly product: string
  /** Epoch ms; the link is valid while now < expiresAt. */
  readonly expiresAt: number
  /** Present when the guard is `single_use`. */
  readonly nonce?: string
}

export type LinkCheck = 'ok' | 'invalid' | 'expired'

const BAD_LINK = Object.freeze({ result: 'invalid' as const, expiresAt: 0, nonce: null })

const NONCE = /^[A-Za-z0-9_-]{16}$/
const EXPIRES = /^[1-9]\d{0,14}$/

function field (s: string): string {
  return `${s.length}:${s}|`
}

/** The exact bytes an HMAC link signature covers. */
export function linkMessage (c: LinkClaims): string {
  return message(c, String(c.expiresAt), c.nonce ?? '')
}

/** `expires` as written in the link (digits, no leading zero: the same as String(expiresAt)). */
function message (c: Omit<LinkClaims, 'expiresAt' | 'nonce'>, expires: string, nonce: string): string {
  return 'fg-link|v1|' + field(c.method) + field(c.path) + field(c.user) + field(c.campaign) +
    field(c.product) + field(expires) + field(nonce)
}

/** A fresh single-use nonce: 12 random bytes, base64url (16 characters). */
export function newNonce (): string {
  return randomBytes(12).toString('base64url')
}

/** The query string (without `?`) that makes `claims.path` a signed link. */
export function signLinkQuery (kid: string, key: KeyObject | Buffer, c: LinkClaims): string {
  const sig = hmac(key, linkMessage(c)).toString('base64url')
  let q = `expires=${c.expiresAt}&kid=${encodeURIComponent(kid)}&sig=${sig}`
  if (c.nonce !== undefined) q += `&nonce=${c.nonce}`
  return q
}

/**
 * Verify a link's query parameters against the claims the request makes (everything but expiry and
 * nonce, which come from the link). Constant-time MAC comparison on equal-length buffers.
 */
export function verifyLinkQuery (
  keys: ReadonlyMap<string, KeyObject>,
  q: QueryParams,
  c: Omit<LinkClaims, 'expiresAt' | 'nonce'>,
  singleUse: boolean,
  now: number
): { result: LinkCheck, expiresAt: number, nonce: string | null } {
  const kid = q.get('kid')
  const sig = q.get('sig')
  const exp = q.get('expires')
  if (kid === null || sig === null || exp === null || !EXPIRES.test(exp)) return BAD_LINK
  const key = keys.get(kid)
  if (key === undefined) return BAD_LINK
  let nonce: string | null = null
  if (singleUse) {
    nonce = q.get('nonce')
    if (nonce === null || !NONCE.test(nonce)) return BAD_LINK
  }
  const expiresAt = Number(exp)
  if (!macMatches(key, message(c, exp, nonce ?? ''), sig)) return BAD_LINK
  if (now >= expiresAt) return { result: 'expired', expiresAt, nonce }
  return { result: 'ok', expiresAt, nonce }
}

/** Link keys as KeyObjects by kid, and the signing one (the first). Throws when none are configured. */
export function linkKeys (config: Config): { keys: Map<string, KeyObject>, signer: { kid: string, key: KeyObject } } {
  const keys = new Map<string, KeyObject>()
  for (const k of config.secrets.linkKeys) {
    if (k.key.length < 16) throw new Error(`secrets.link_keys.${k.kid}: key must be at least 16 bytes`)
    keys.set(k.kid, createSecretKey(k.key))
  }
  const first = config.secrets.linkKeys[0]
  if (first === undefined) throw new Error('signed_link needs secrets.link_keys')
  return { keys, signer: { kid: first.kid, key: keys.get(first.kid) as KeyObject } }
}

/** The method a route's links are signed for: the request method when the route lists methods, `*` otherwise. */
export function linkMethodOf (route: RouteConfig, requestMethod: string): string {
  return route.match.methods === null ? '*' : requestMethod
}
