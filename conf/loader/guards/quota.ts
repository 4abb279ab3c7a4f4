/** `quota:` sells each product's units exactly once across the cluster. */
import type { QuotaGuardConfig } from '../../types.js'
import { DEFAULTS } from '../defaults.js'
import { campaignSource, productSource } from '../refs.js'
import { duration, policy } from '../values.js'
import type { GuardReader } from './env.js'

export const readQuota: GuardReader<QuotaGuardConfig> = (env, m, pos, rc, common) => {
  const { ck } = env
  const campaign = campaignSource(env, m, rc, 'quota')
  const product = productSource(env, m, rc, 'quota', campaign)
  if (env.campaigns.size === 0) ck.error(pos, 'quota needs at least one campaign with products in campaigns:')
  const latchTtlMs = duration(ck, m.get('latch_ttl'), 'latch_ttl') ?? DEFAULTS.quota.latchTtlMs
  // A quota sells exactly its units: admitting everything while the store is down (fail_open) has no
  // bound, so it is refused for a quota; local admits from units leased in the store ahead
  // (limiter/quota-lease.ts), fail_closed answers 503.
  const own = policy(ck, m.get('on_error')) ?? null
  const effective = own ?? env.storeOnError
  if (effective === 'fail_open') {
    const at = m.get('on_error')?.pos ?? pos
    ck.error(at, `quota: on_error fail_open${own === null ? ' (inherited from store.on_error)' : ''} cannot bound the units sold while the store is down (it would oversell); use quota: { on_error: local } (bounded by leases) or { on_error: fail_closed }`)
  }
  const lease = ck.num(m.get('lease'), 'lease', 1, 1_000_000) ?? DEFAULTS.quota.lease
  const journaled = own === null && env.storeJournal
  if (m.get('lease') !== undefined && (effective !== 'local' || journaled)) ck.error(m.get('lease')!.pos, `lease: only with on_error: local (this quota's on_error is ${journaled ? 'journal, inherited from store.on_error' : effective})`)
  // effective is never fail_open in a config that loads (refused above; the guard is then left out).
  return { kind: 'quota', ...common, campaign, product, latchTtlMs, onError: own, policy: effective === 'fail_open' ? 'fail_closed' : effective, journaled, lease }
}
