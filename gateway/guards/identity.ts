/**
 * Who is asking: `identity.user` is either a header set by an auth layer in front (trusted as given)
 * or a cookie holding a session token flashgate signed with `secrets.session`.
 *
 * Session token: `v1.<base64url(user)>.<expiresAtMs>.<base64url(HMAC-SHA256(key, "fg-session|v1.<user64>.<exp>"))>`.
 * Valid while `now < expiresAt`; the MAC is compared in constant time.
 */
import { createSecretKey } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import type { Config } from '../../conf/types.js'
import type { RequestContext } from '../pipeline/types.js'
import { cookieOf, headerOf, hmac, macMatches } from '../../antibot/util.js'

const MAX_USER = 256

/**
 * Mint a session token for `user`, valid until `expiresAt` (epoch ms, exclusive).
 * Used by the demo and by tests; a real site mints these in its login service with the same key.
 */
export function signSession (key: Buffer | KeyObject, user: string, expiresAt: number): string {
  if (user === '' || user.length > MAX_USER) throw new Error('session user must be 1..256 characters')
  const body = `v1.${Buffer.from(user).toString('base64url')}.${Math.floor(expiresAt)}`
  return `${body}.${hmac(key, 'fg-session|' + body).toString('base64url')}`
}

/** The user inside a session token when its MAC is right and `now < expiresAt`; null otherwise. */
export function verifySession (key: Buffer | KeyObject, token: string, now: number): string | null {
  if (token.length > 600) return null
  const last = token.lastIndexOf('.')
  if (last === -1) return null
  const body = token.slice(0, last)
  const parts = body.split('.')
  if (parts.length !== 3 || parts[0] !== 'v1') return null
  if (!macMatches(key, 'fg-session|' + body, token.slice(last + 1))) return null
  const exp = parts[2] as string
  if (!/^\d{1,15}$/.test(exp) || now >= Number(exp)) return null
  const user = Buffer.from(parts[1] as string, 'base64url').toString()
  return user === '' ? null : user
}

/**
 * Build the identity resolver for a config: `(ctx) => user | null`, cached on `ctx.user`.
 * With `identity.user: cookie NAME` a missing `secrets.session` is a config error (thrown here, at load).
 */
export function createIdentity (config: Config): (ctx: RequestContext) => string | null {
  const src = config.identity.user
  if (src === null) {
    return (ctx) => {
      if (ctx.user === undefined) ctx.user = null
      return ctx.user
    }
  }
  const name = src.name.toLowerCase()
  if (src.from === 'header') {
    return (ctx) => {
      if (ctx.user !== undefined) return ctx.user
      const v = headerOf(ctx.req.headers, name)
      ctx.user = v !== null && v.length <= MAX_USER ? v : null
      return ctx.user
    }
  }
  if (config.secrets.session === null) throw new Error('identity.user: cookie needs secrets.session')
  const key = createSecretKey(config.secrets.session)
  const cookie = src.name
  return (ctx) => {
    if (ctx.user !== undefined) return ctx.user
    const tok = cookieOf(ctx.req.headers.cookie, cookie)
    ctx.user = tok === null ? null : verifySession(key, tok, ctx.now)
    return ctx.user
  }
}
