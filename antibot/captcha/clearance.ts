/**
 * Clearance cookie: after a verified captcha the gateway sets `NAME=<expiresAtMs>.<mac>` (HttpOnly,
 * SameSite=Lax, Secure when the request came over HTTPS), with mac = HMAC-SHA256 over the cookie
 * name, the user (or '') and the client address and the expiry. Within its lifetime it stands in
 * for a captcha token on any route whose captcha guard uses the same cookie name. A tampered
 * cookie, another user's or another address's is ignored (the request then needs a token).
 */
import type { KeyObject } from 'node:crypto'
import { hmac, macMatches } from '../util.js'

function msg (name: string, user: string, ip: string, exp: string): string {
  return `fg-clearance|${name.length}:${name}|${user.length}:${user}|${ip.length}:${ip}|${exp}`
}

/** The cookie value for `user` (or '') at `ip`, valid while now < expiresAt. */
export function signClearance (key: KeyObject | Buffer, name: string, user: string, ip: string, expiresAt: number): string {
  const exp = String(Math.floor(expiresAt))
  return `${exp}.${hmac(key, msg(name, user, ip, exp)).toString('base64url')}`
}

/** True when the cookie value is ours, for this user and address, and not expired. */
export function verifyClearance (key: KeyObject | Buffer, name: string, value: string, user: string, ip: string, now: number): boolean {
  const dot = value.indexOf('.')
  if (dot < 1 || dot > 15) return false
  const exp = value.slice(0, dot)
  if (!/^\d+$/.test(exp)) return false
  if (!macMatches(key, msg(name, user, ip, exp), value.slice(dot + 1))) return false
  return now < Number(exp)
}

/** The Set-Cookie header value. */
export function clearanceSetCookie (name: string, value: string, maxAgeMs: number, secure: boolean): string {
  return `${name}=${value}; Path=/; Max-Age=${Math.max(1, Math.floor(maxAgeMs / 1000))}; HttpOnly; SameSite=Lax${secure ? '; Secure' : ''}`
}
