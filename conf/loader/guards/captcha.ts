/** `captcha:` a third-party siteverify provider (turnstile, hcaptcha, recaptcha) or the local proof of work. */
import type { PScalar } from '../../tree.js'
import type { CaptchaGuardConfig, CaptchaProvider } from '../../types.js'
import { CAPTCHA_TOKEN_DEFAULTS, CAPTCHA_VERIFY_URLS, DEFAULTS, HEADER_NAME } from '../defaults.js'
import { duration, policy, source } from '../values.js'
import type { GuardReader } from './env.js'

export const readCaptcha: GuardReader<CaptchaGuardConfig> = (env, m, pos, _rc, common) => {
  const { ck, secrets } = env
  const onError = policy(ck, m.get('on_error')) ?? null
  const D = DEFAULTS.captcha
  const pn = m.get('provider')
  const provider = ck.oneOf(pn, 'provider', ['turnstile', 'hcaptcha', 'recaptcha', 'pow'] as const)
  if (pn === undefined) ck.error(pos, 'captcha is missing required key "provider" (turnstile, hcaptcha, recaptcha or pow)')
  const p = provider ?? 'turnstile'
  const secretNode = m.get('secret')
  const secret = ck.str(secretNode, 'secret', { secret: true }) ?? null
  if (provider !== undefined && provider !== 'pow' && secretNode === undefined) ck.error(pos, `captcha provider ${provider} needs secret (e.g. secret: "\${${provider.toUpperCase()}_SECRET}")`)
  if (provider === 'pow' && secretNode !== undefined) ck.error(m.keyPos('secret'), 'secret: the pow provider signs its challenges with secrets.pow (or secrets.session); remove secret here')
  if (provider === 'pow' && secrets.pow === null && secrets.session === null) ck.error(pos, 'captcha provider pow needs secrets.pow (or secrets.session) to sign its challenges')
  const token = source(ck, m.get('token'), 'token', ['header', 'form', 'query'], false) ?? { from: 'header', name: CAPTCHA_TOKEN_DEFAULTS[p] }
  const vn = m.get('verify_url')
  let verifyUrl = CAPTCHA_VERIFY_URLS[p]
  const vs = ck.str(vn, 'verify_url')
  if (vs !== undefined && vn !== undefined) {
    if (p === 'pow') ck.error(vn.pos, 'verify_url: the pow provider verifies locally, no URL')
    else {
      let ok = false
      try { const u = new URL(vs); ok = u.protocol === 'http:' || u.protocol === 'https:' } catch {}
      if (ok) verifyUrl = vs
      else ck.error(vn.pos, `verify_url: ${ck.show(vn as PScalar)} is not an http(s) URL`)
    }
  }
  const only = (key: string, providers: readonly CaptchaProvider[]): void => {
    if (provider !== undefined && m.get(key) !== undefined && !providers.includes(provider)) ck.error(m.keyPos(key), `${key}: only applies to provider ${providers.join(' / ')}`)
  }
  only('min_score', ['recaptcha']); only('action', ['recaptcha'])
  only('difficulty', ['pow']); only('difficulty_under_load', ['pow']); only('challenge_ttl', ['pow'])
  only('hostname', ['turnstile', 'hcaptcha', 'recaptcha']); only('timeout', ['turnstile', 'hcaptcha', 'recaptcha'])
  const difficulty = ck.num(m.get('difficulty'), 'difficulty', 1, 32) ?? D.difficulty
  const dul = ck.num(m.get('difficulty_under_load'), 'difficulty_under_load', 1, 32) ?? null
  if (dul !== null && dul < difficulty) ck.error(m.get('difficulty_under_load')!.pos, `difficulty_under_load: must be at least difficulty (${difficulty})`)
  const clearanceMs = duration(ck, m.get('clearance'), 'clearance', { min: 1000, timer: false }) ?? null
  if (clearanceMs !== null && secrets.session === null) ck.error(m.keyPos('clearance'), 'clearance: the clearance cookie is signed with secrets.session; set it')
  const cookie = ck.str(m.get('clearance_cookie'), 'clearance_cookie', { pattern: HEADER_NAME, patternHelp: 'is not a valid cookie name' }) ?? D.clearanceCookie
  return {
    kind: 'captcha',
    ...common,
    provider: p,
    secret,
    token,
    verifyUrl,
    timeoutMs: duration(ck, m.get('timeout'), 'timeout', { min: 1 }) ?? D.timeoutMs,
    minScore: ck.num(m.get('min_score'), 'min_score', 0, 1, false) ?? null,
    action: ck.str(m.get('action'), 'action') ?? null,
    hostname: ck.str(m.get('hostname'), 'hostname')?.toLowerCase() ?? null,
    tokenTtlMs: duration(ck, m.get('token_ttl'), 'token_ttl', { min: 1000 }) ?? D.tokenTtlMs,
    clearanceMs,
    clearanceCookie: cookie,
    onError,
    policy: onError ?? env.storeOnError,
    // A provider outage is not a store outage: store.on_error says nothing about it.
    providerPolicy: onError ?? 'fail_closed',
    difficulty,
    difficultyUnderLoad: dul,
    challengeTtlMs: duration(ck, m.get('challenge_ttl'), 'challenge_ttl', { min: 1000 }) ?? D.challengeTtlMs
  }
}
