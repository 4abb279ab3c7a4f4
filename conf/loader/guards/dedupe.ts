/** `dedupe:` one attempt per user per campaign and product, remembered for `ttl`. */
import type { DedupeGuardConfig } from '../../types.js'
import { DEFAULTS } from '../defaults.js'
import { campaignSource, productSource } from '../refs.js'
import { duration, policy } from '../values.js'
import { needUser } from './env.js'
import type { GuardReader } from './env.js'

export const readDedupe: GuardReader<DedupeGuardConfig> = (env, m, pos, rc, common) => {
  needUser(env, pos, 'dedupe')
  const ttlMs = duration(env.ck, m.get('ttl'), 'ttl', { min: 1000, timer: false }) ?? DEFAULTS.dedupe.ttlMs
  const campaign = campaignSource(env, m, rc, 'dedupe')
  const product = productSource(env, m, rc, 'dedupe', campaign)
  const onError = policy(env.ck, m.get('on_error')) ?? null
  return { kind: 'dedupe', ...common, ttlMs, campaign, product, onError, policy: onError ?? env.storeOnError }
}
