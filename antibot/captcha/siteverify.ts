/**
 * Third-party captcha providers over their real siteverify protocols (Cloudflare Turnstile, hCaptcha,
 * Google reCAPTCHA v2/v3): `POST` `application/x-www-form-urlencoded` with `secret`, `response` and
 * `remoteip` (plus `idempotency_key` for Turnstile), answer JSON `{success, "error-codes", hostname,
 * challenge_ts, action?, score?}`.
 *
 * One undici Pool per verifier (never the global dispatcher), a deadline per verification, and a
 * circuit breaker: after `breakerFailures` consecutive failures calls fail fast for `breakerBackoffMs`,
 * then one probe is let through. Retries only where the provider makes them safe: Turnstile, with the
 * same `idempotency_key`, once, within the same deadline, on a connection error or a 5xx.
 */
import { randomUUID } from 'node:crypto'
import { Pool } from 'undici'
import { FlashgateError } from '../../conf/errors.js'
import { Breaker } from '../../limiter/breaker.js'

export type SiteverifyProvider = 'turnstile' | 'hcaptcha' | 'recaptcha'

/** The documented endpoints. */
export const VERIFY_URLS: Readonly<Record<SiteverifyProvider, string>> = {
  turnstile: 'https://challenges.cloudflare.com/turnstile/v0/siteverify',
  hcaptcha: 'https://api.hcaptcha.com/siteverify',
  recaptcha: 'https://www.google.com/recaptcha/api/siteverify'
}

export interface VerifyResult {
  readonly ok: boolean
  /** The provider's `error-codes` (empty when none). */
  readonly codes: readonly string[]
  readonly score?: number
  readonly action?: string
  readonly hostname?: string
}

/** A captcha provider: answers a verdict, or rejects with a CaptchaError when it could not ask. */
export interface CaptchaVerifier {
  verify (token: string, remoteip: string): Promise<VerifyResult>
  /** True while the breaker is closed (or half-open). */
  readonly healthy: boolean
  close (): Promise<void>
}

export class CaptchaError extends FlashgateError {
  constructor (code: 'FG_ERR_CAPTCHA_UNAVAILABLE' | 'FG_ERR_CAPTCHA_TIMEOUT' | 'FG_ERR_CAPTCHA_BREAKER_OPEN' | 'FG_ERR_CAPTCHA_BAD_ANSWER', message: string, options?: { cause?: unknown }) {
    super(code, message, options)
    this.name = 'CaptchaError'
  }
}

export interface SiteverifyOptions {
  readonly provider: SiteverifyProvider
  readonly secret: string
  readonly verifyUrl?: string | null
  readonly timeoutMs: number
  readonly clock?: () => number
  readonly breakerFailures?: number
  readonly breakerBackoffMs?: number
  readonly connections?: number
}

const MAX_ANSWER = 64 * 1024

export function createSiteverify (opts: SiteverifyOptions): CaptchaVerifier {
  const url = new URL(opts.verifyUrl != null && opts.verifyUrl !== '' ? opts.verifyUrl : VERIFY_URLS[opts.provider])
  const path = url.pathname + url.search
  const clock = opts.clock ?? Date.now
  const pool = new Pool(url.origin, {
    connections: opts.connections ?? 32,
    connect: { timeout: opts.timeoutMs },
    headersTimeout: opts.timeoutMs,
    bodyTimeout: opts.timeoutMs,
    keepAliveTimeout: 30_000
  })
  const breaker = new Breaker(opts.breakerFailures ?? 5, opts.breakerBackoffMs ?? 2000, clock)
  const retries = opts.provider === 'turnstile' ? 1 : 0

  async function once (body: string, signal: AbortSignal): Promise<{ status: number, text: string }> {
    const res = await pool.request({
      method: 'POST',
      path,
      headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
      body,
      signal
    })
    let text = ''
    for await (const chunk of res.body) {
      text += (chunk as Buffer).toString()
      if (text.length > MAX_ANSWER) {
        res.body.destroy()
        throw new CaptchaError('FG_ERR_CAPTCHA_BAD_ANSWER', 'siteverify answer too large')
      }
    }
    return { status: res.statusCode, text }
  }

  async function ask (token: string, remoteip: string): Promise<VerifyResult> {
    const form = new URLSearchParams({ secret: opts.secret, response: token })
    if (remoteip !== '') form.set('remoteip', remoteip)
    if (retries > 0) form.set('idempotency_key', randomUUID())
    const body = form.toString()
    const signal = AbortSignal.timeout(opts.timeoutMs)
    let lastErr: unknown
    for (let attempt = 0; attempt <= retries; attempt++) {
      let r: { status: number, text: string }
      try {
        r = await once(body, signal)
      } catch (err) {
        if (signal.aborted || (err as { code?: string }).code === 'UND_ERR_HEADERS_TIMEOUT' || (err as { code?: string }).code === 'UND_ERR_BODY_TIMEOUT' || (err as { code?: string }).code === 'UND_ERR_CONNECT_TIMEOUT') {
          throw new CaptchaError('FG_ERR_CAPTCHA_TIMEOUT', `siteverify timed out after ${opts.timeoutMs}ms`, { cause: err })
        }
        if (err instanceof CaptchaError) throw err
        lastErr = err
        continue
      }
      if (r.status >= 500) { lastErr = new Error(`siteverify answered ${r.status}`); continue }
      if (r.status !== 200) throw new CaptchaError('FG_ERR_CAPTCHA_BAD_ANSWER', `siteverify answered ${r.status}`)
      return parseAnswer(r.text)
    }
    throw new CaptchaError('FG_ERR_CAPTCHA_UNAVAILABLE', `siteverify failed: ${lastErr instanceof Error ? lastErr.message : String(lastErr)}`, { cause: lastErr })
  }

  return {
    get healthy () { return !breaker.open },
    async verify (token, remoteip) {
      if (!breaker.allow()) throw new CaptchaError('FG_ERR_CAPTCHA_BREAKER_OPEN', 'captcha provider breaker open')
      try {
        const r = await ask(token, remoteip)
        breaker.success()
        return r
      } catch (err) {
        breaker.failure()
        throw err
      }
    },
    async close () { await pool.close() }
  }
}

/** Parse a siteverify JSON answer; a malformed one is a provider failure, not a refusal. */
export function parseAnswer (text: string): VerifyResult {
  let j: unknown
  try { j = JSON.parse(text) } catch (err) {
    throw new CaptchaError('FG_ERR_CAPTCHA_BAD_ANSWER', 'siteverify answer is not JSON', { cause: err })
  }
  if (j === null || typeof j !== 'object' || typeof (j as { success?: unknown }).success !== 'boolean') {
    throw new CaptchaError('FG_ERR_CAPTCHA_BAD_ANSWER', 'siteverify answer has no boolean "success"')
  }
  const a = j as Record<string, unknown>
  const codes = Array.isArray(a['error-codes']) ? (a['error-codes'] as unknown[]).filter((c): c is string => typeof c === 'string') : []
  const out: { ok: boolean, codes: string[], score?: number, action?: string, hostname?: string } = { ok: a.success === true, codes }
  if (typeof a.score === 'number') out.score = a.score
  if (typeof a.action === 'string') out.action = a.action
  if (typeof a.hostname === 'string') out.hostname = a.hostname
  return out
}
