/**
 * `captcha`: a token from a header, form field or query param, verified by a third-party provider
 * (Turnstile, hCaptcha, reCAPTCHA v2/v3) or by the built-in proof of work; optionally a clearance
 * cookie that stands in for a token for `clearance` after one verified.
 *
 * Order of a check (cheapest first):
 *   1. a valid clearance cookie for this user and address → pass (no token needed);
 *   2. no token → 403 CAPTCHA_REQUIRED;
 *   3. a token already accepted (or in flight) on this node → 403 CAPTCHA_INVALID with no network
 *      call: SHA-256 of the token in an lru-cache for `token_ttl` (kept across reloads);
 *   4. pow: verified locally, then its nonce consumed on the store (single use across nodes);
 *      third-party: siteverify (which itself refuses a token seen before, `timeout-or-duplicate`,
 *      so tokens are single-use across nodes without a store round trip);
 *   5. `hostname` (when configured), reCAPTCHA v3 `min_score` and `action` checked on the answer.
 *
 * Provider down (timeout, connection error, 5xx, malformed answer, breaker open) follows `on_error`:
 * `fail_closed` (the default; `local` means the same here, there is no local verdict) answers
 * **503 OVERLOADED** with `Retry-After: 1` — not STORE_UNAVAILABLE, which would send operators to
 * look at Redis — and `fail_open` passes. Both are counted (flashgate_captcha_verifications_total
 * result=error_closed|error_open). A token whose verification failed this way is not marked spent.
 *
 * Form tokens: the urlencoded body (at most 64 KiB and the route's max body size; 413 above) is
 * buffered into `ctx.body`, which the proxy sends upstream instead of the consumed request stream.
 */
import { Slot } from '../pipeline/state.js'
import { createHash, createSecretKey, randomBytes } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import type { CaptchaGuardConfig } from '../../conf/types.js'
import { bufferBody } from '../http/body.js'
import type { Guard, GuardDeps, GuardFactory, RequestContext, Verdict } from '../pipeline/types.js'
import { rejection } from '../pipeline/reject.js'
import { guardId, onStoreError } from './common.js'
import { clearanceSetCookie, signClearance, verifyClearance } from '../../antibot/captcha/clearance.js'
import { verifySolution } from '../../antibot/captcha/pow.js'
import { createSiteverify } from '../../antibot/captcha/siteverify.js'
import type { CaptchaVerifier, VerifyResult } from '../../antibot/captcha/siteverify.js'
import { cookieOf } from '../../antibot/util.js'
import { FORM_FIELDS, valueOf } from './values.js'

/** Longest token looked at (Turnstile documents 2048 characters). */
const MAX_TOKEN = 4096
/** Largest urlencoded body buffered to find a form token. */
const MAX_FORM_BODY = 64 * 1024

/** Keys drawn per process when the config names none, by name; kept across reloads so old tokens still verify. */
export const PROCESS_KEYS = new Slot('antibot process keys', () => new Map<string, KeyObject>())
/** Captcha tokens already redeemed (a token buys one clearance). */
const SPENT = new Slot<LRUCache<string, true> | null>('antibot spent captcha tokens', () => null)

/** A key that survives reloads: from the config when set, else random per process. */
function processKey (deps: GuardDeps, name: string, configured: Buffer | null): KeyObject {
  if (configured !== null) return createSecretKey(configured)
  const keys = deps.kept.get(PROCESS_KEYS)
  let k = keys.get(name)
  if (k === undefined) {
    k = createSecretKey(randomBytes(32))
    keys.set(name, k)
  }
  return k
}

/** The proof-of-work key: secrets.pow, else secrets.session, else a per-process random key. */
export function powKey (deps: GuardDeps): KeyObject {
  return processKey(deps, 'antibot:pow-key', deps.config.secrets.pow ?? deps.config.secrets.session)
}

function spentCache (deps: GuardDeps, ttl: number): LRUCache<string, true> {
  let c = deps.kept.get(SPENT)
  if (c === null) {
    c = new LRUCache<string, true>({ max: 500_000, ttl: Math.max(1000, ttl), ttlAutopurge: false })
    deps.kept.set(SPENT, c)
  }
  return c
}

/** Is the request's answer going back over HTTPS (directly, or per the terminating proxy)? */
function isHttps (ctx: RequestContext): boolean {
  return (ctx.req.socket as { encrypted?: boolean }).encrypted === true || ctx.req.headers['x-forwarded-proto'] === 'https'
}

/** Buffer a urlencoded body (bounded) and parse it into ctx.locals. Resolves to a rejection or undefined. */
function readForm (ctx: RequestContext, limit: number, tooLarge: Verdict, bad: Verdict): Verdict | Promise<Verdict> {
  const locals = ctx.locals ?? (ctx.locals = {})
  if (locals[FORM_FIELDS] !== undefined) return undefined
  const ct = ctx.req.headers['content-type']
  if (ct === undefined || !ct.toLowerCase().startsWith('application/x-www-form-urlencoded')) return undefined
  const had = ctx.body
  if (had !== undefined && had !== null) { locals[FORM_FIELDS] = new URLSearchParams(had.toString('latin1')); return undefined }
  return bufferBody<Verdict>(ctx, limit, tooLarge, bad).then((body) => {
    if (!Buffer.isBuffer(body)) return body
    locals[FORM_FIELDS] = new URLSearchParams(body.toString('latin1'))
    return undefined
  })
}

export const captchaGuard: GuardFactory<CaptchaGuardConfig> = (cfg, route, deps): Guard => {
  const id = guardId(route, cfg)
  const o = { override: cfg.reject }
  const required = rejection('CAPTCHA_REQUIRED', 'captcha required', o)
  const invalid = rejection('CAPTCHA_INVALID', 'captcha invalid', o)
  const unavailable = rejection('OVERLOADED', 'captcha provider unavailable', { ...o, headers: ['retry-after', '1'] })
  const tooLarge = rejection('PAYLOAD_TOO_LARGE', 'form too large to look for a captcha token', o)
  const bad = rejection('BAD_REQUEST', 'request body incomplete', o)
  const providerPolicy = cfg.providerPolicy
  const storePolicy = cfg.policy
  const spent = spentCache(deps, cfg.tokenTtlMs)
  const counter = deps.metrics.captchaVerifications
  const provider = cfg.provider
  const formLimit = Math.min(MAX_FORM_BODY, route.maxBodySize)

  const clearanceMs = cfg.clearanceMs
  const clearanceKey = clearanceMs === null ? null : processKey(deps, 'antibot:clearance-key', deps.config.secrets.session ?? deps.config.secrets.pow)
  const cookieName = cfg.clearanceCookie

  let verifier: CaptchaVerifier | null = null
  let pow: KeyObject | null = null
  if (provider === 'pow') {
    pow = powKey(deps)
  } else {
    if (cfg.secret === null || cfg.secret === '') throw new Error(`captcha ${provider}: secret is required`)
    verifier = createSiteverify({ provider, secret: cfg.secret, verifyUrl: cfg.verifyUrl, timeoutMs: cfg.timeoutMs, clock: deps.clock })
  }

  function grant (ctx: RequestContext): void {
    if (clearanceKey === null || clearanceMs === null) return
    const user = deps.identity(ctx) ?? ''
    const value = signClearance(clearanceKey, cookieName, user, ctx.clientIp, ctx.now + clearanceMs)
    const h = clearanceSetCookie(cookieName, value, clearanceMs, isHttps(ctx))
    if (ctx.extraHeaders === null) ctx.extraHeaders = ['set-cookie', h]
    else ctx.extraHeaders.push('set-cookie', h)
  }

  function judge (ctx: RequestContext, r: VerifyResult): Verdict {
    let ok = r.ok
    if (ok && cfg.hostname !== null && r.hostname?.toLowerCase() !== cfg.hostname) ok = false
    if (ok && cfg.action !== null && r.action !== cfg.action) ok = false
    if (ok && cfg.minScore !== null && (r.score === undefined || r.score < cfg.minScore)) ok = false
    if (!ok) {
      counter.inc({ provider, result: 'invalid' })
      return invalid
    }
    counter.inc({ provider, result: 'passed' })
    grant(ctx)
    return undefined
  }

  function checkToken (ctx: RequestContext): Verdict | Promise<Verdict> {
    const token = valueOf(ctx, cfg.token)
    if (token === null) {
      counter.inc({ provider, result: 'missing' })
      return required
    }
    if (token.length > MAX_TOKEN) {
      counter.inc({ provider, result: 'invalid' })
      return invalid
    }
    const h = createHash('sha256').update(token).digest('base64url')
    if (spent.has(h)) {
      counter.inc({ provider, result: 'replayed' })
      return invalid
    }
    if (pow !== null) {
      const r = verifySolution(pow, token, cfg.difficulty, ctx.now)
      if (r.result !== 'ok') {
        counter.inc({ provider, result: r.result === 'expired' ? 'expired' : 'invalid' })
        return invalid
      }
      const ttl = Math.max(1, r.expiresAt - ctx.now)
      spent.set(h, true, { ttl })
      return deps.store.setIfAbsent(`pow:${r.nonce}`, '1', ttl).then(
        (fresh) => {
          if (!fresh) { counter.inc({ provider, result: 'replayed' }); return invalid }
          counter.inc({ provider, result: 'passed' })
          grant(ctx)
          return undefined
        },
        (err: unknown) => {
          if (storePolicy === 'local') { counter.inc({ provider, result: 'passed' }); grant(ctx); return undefined }
          const v = onStoreError(deps, id, storePolicy, err, 'setIfAbsent')
          if (v !== undefined) spent.delete(h)
          else grant(ctx)
          return v
        }
      )
    }
    spent.set(h, true, { ttl: Math.max(1, cfg.tokenTtlMs) }) // in flight: a concurrent replay is refused too
    return (verifier as CaptchaVerifier).verify(token, ctx.clientIp).then(
      (r) => judge(ctx, r),
      (err: unknown) => {
        spent.delete(h)
        deps.log('warn', 'captcha provider failed', { guard: id, provider, error: err instanceof Error ? err.message : String(err) })
        if (providerPolicy === 'fail_open') {
          counter.inc({ provider, result: 'error_open' })
          return undefined
        }
        counter.inc({ provider, result: 'error_closed' })
        return unavailable
      }
    )
  }

  return {
    kind: 'captcha',
    id,
    check (ctx: RequestContext): Verdict | Promise<Verdict> {
      if (clearanceKey !== null) {
        const c = cookieOf(ctx.req.headers.cookie, cookieName)
        if (c !== null && verifyClearance(clearanceKey, cookieName, c, deps.identity(ctx) ?? '', ctx.clientIp, ctx.now)) {
          return undefined
        }
      }
      if (cfg.token.from === 'form') {
        const v = readForm(ctx, formLimit, tooLarge, bad)
        if (v === undefined) return checkToken(ctx)
        if (!(v instanceof Promise)) return v
        return v.then((r) => r ?? checkToken(ctx))
      }
      return checkToken(ctx)
    },
    async close () {
      if (verifier !== null) await verifier.close()
    }
  }
}
