/**
 * `GET /_flashgate/challenge` — a proof-of-work challenge for the `pow` captcha provider (difficulty
 * raised to `difficulty_under_load` while the global limiter is rejecting); 404 without a pow captcha.
 */
import type { CaptchaGuardConfig } from '../../conf/types.js'
import type { EdgeHandler, GuardDeps } from '../pipeline/types.js'
import { rejection } from '../pipeline/reject.js'
import { powKey } from '../guards/captcha.js'
import { issueChallenge } from '../../antibot/captcha/pow.js'
import { sendJson } from '../http/json.js'
import { METHOD, reject } from './respond.js'

const NO_POW = rejection('NOT_FOUND', 'no proof-of-work captcha configured')

/** The challenge endpoint for a config (built once per load). */
export function challengeHandler (deps: GuardDeps): EdgeHandler {
  const pow = deps.config.routes.flatMap((r) => r.guards).find((g): g is CaptchaGuardConfig => g.kind === 'captcha' && g.provider === 'pow')
  if (pow === undefined) return (_req, res) => reject(res, NO_POW)
  const key = powKey(deps)
  return (req, res, e) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return reject(res, METHOD)
    const difficulty = deps.overload.active && pow.difficultyUnderLoad !== null ? pow.difficultyUnderLoad : pow.difficulty
    const c = issueChallenge(key, difficulty, pow.challengeTtlMs, e.now)
    sendJson(res, 200, { algorithm: 'SHA-256', challenge: c.challenge, difficulty: c.difficulty, expires_at: c.expiresAt })
  }
}
