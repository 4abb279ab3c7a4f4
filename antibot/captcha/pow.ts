/**
 * The built-in proof-of-work captcha (no third party): HMAC-signed challenges, verified locally.
 *
 * Challenge: `v1.<nonce>.<difficulty>.<expiresAtMs>.<base64url(HMAC-SHA256(key, "fg-pow|v1.<nonce>.<difficulty>.<expiresAtMs>"))>`
 * (nonce = 16 random bytes, base64url). Solution token: `<challenge>:<counter>` where counter is a
 * decimal integer such that SHA-256(challenge + counter) (UTF-8 of the concatenated strings) starts
 * with at least `difficulty` zero bits. Expected work: 2^difficulty hashes.
 *
 * Verification needs no network call; single use is enforced by the caller (the captcha guard
 * consumes the nonce with a store set-if-absent).
 */
import { createHash, randomBytes } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import { hmac, macMatches } from '../util.js'

export interface PowChallenge {
  readonly challenge: string
  readonly difficulty: number
  /** Epoch ms; solutions are refused from this instant on. */
  readonly expiresAt: number
}

export interface PowCheck {
  readonly result: 'ok' | 'invalid' | 'expired'
  readonly nonce: string
  readonly expiresAt: number
}

/** Highest difficulty accepted anywhere (2^32 hashes is far beyond a browser). */
export const MAX_DIFFICULTY = 32

/** Issue a challenge of `difficulty` bits valid for `ttlMs` from `now`. */
export function issueChallenge (key: KeyObject | Buffer, difficulty: number, ttlMs: number, now: number): PowChallenge {
  if (!Number.isInteger(difficulty) || difficulty < 0 || difficulty > MAX_DIFFICULTY) throw new Error(`pow difficulty must be 0..${MAX_DIFFICULTY}`)
  const expiresAt = now + ttlMs
  const body = `v1.${randomBytes(16).toString('base64url')}.${difficulty}.${expiresAt}`
  return { challenge: `${body}.${hmac(key, 'fg-pow|' + body).toString('base64url')}`, difficulty, expiresAt }
}

/** Number of leading zero bits of a buffer. */
export function leadingZeroBits (b: Uint8Array): number {
  let n = 0
  for (let i = 0; i < b.length; i++) {
    const x = b[i] as number
    if (x === 0) { n += 8; continue }
    return n + Math.clz32(x) - 24
  }
  return n
}

const BAD: PowCheck = { result: 'invalid', nonce: '', expiresAt: 0 }

/**
 * Check a solution token: signature (constant time), `difficulty >= minDifficulty`, expiry
 * (`now < expiresAt`), then the work itself.
 */
export function verifySolution (key: KeyObject | Buffer, token: string, minDifficulty: number, now: number): PowCheck {
  if (token.length > 200) return BAD
  const colon = token.lastIndexOf(':')
  if (colon === -1) return BAD
  const challenge = token.slice(0, colon)
  const counter = token.slice(colon + 1)
  if (!/^\d{1,15}$/.test(counter)) return BAD
  const dot = challenge.lastIndexOf('.')
  const body = challenge.slice(0, dot)
  const parts = body.split('.')
  if (dot === -1 || parts.length !== 4 || parts[0] !== 'v1') return BAD
  if (!macMatches(key, 'fg-pow|' + body, challenge.slice(dot + 1))) return BAD
  const nonce = parts[1] as string
  const difficulty = Number(parts[2])
  const expiresAt = Number(parts[3])
  if (!Number.isInteger(difficulty) || difficulty < minDifficulty || !Number.isSafeInteger(expiresAt)) return BAD
  if (now >= expiresAt) return { result: 'expired', nonce, expiresAt }
  const digest = createHash('sha256').update(challenge + counter).digest()
  if (leadingZeroBits(digest) < difficulty) return BAD
  return { result: 'ok', nonce, expiresAt }
}

/** Node solver (what a script or a test uses): the first counter that meets the difficulty. */
export function solveChallenge (challenge: string, difficulty: number, maxTries = 2 ** 36): number {
  for (let counter = 0; counter < maxTries; counter++) {
    const d = createHash('sha256').update(challenge + counter).digest()
    if (leadingZeroBits(d) >= difficulty) return counter
  }
  throw new Error('pow: no solution within maxTries')
}
