/** `rate_limit:` a token bucket (node or cluster scope) or a node-local leaky bucket, keyed by ip, user, route or headers. */
import { didYouMean } from '../../check.js'
import type { PNode, PScalar } from '../../tree.js'
import { quote } from '../../quote.js'
import { fmtPos } from '../../tree.js'
import type { Checker } from '../../check.js'
import type { Rate, RateKeyPart, RateLimitGuardConfig } from '../../types.js'
import { DEFAULTS, HEADER_NAME, NAME_RE } from '../defaults.js'
import { policy, rate as readRate } from '../values.js'
import { needUser } from './env.js'
import type { GuardEnv, GuardReader } from './env.js'

export const readRateLimit: GuardReader<RateLimitGuardConfig> = (env, m, pos, rc, common) => {
  const { ck } = env
  const rateNode = m.get('rate')
  const rate = readRate(ck, rateNode, 'rate')
  if (rateNode === undefined) ck.error(pos, 'rate_limit is missing required key "rate" (e.g. rate: 100/s)')
  const name = ck.str(m.get('name'), 'name', { pattern: NAME_RE, patternHelp: 'must be letters, digits, and . _ - (it is a metrics label)' }) ?? `${rc.name}.${common.index}`
  const key = rateKey(ck, m.get('key'))
  if (key.some((k) => k.kind === 'user')) needUser(env, pos, 'rate_limit key: user')
  const algorithm = ck.oneOf(m.get('algorithm'), 'algorithm', ['token_bucket', 'leaky_bucket'] as const) ?? 'token_bucket'
  const burstNode = m.get('burst')
  let burst = ck.num(burstNode, 'burst', algorithm === 'token_bucket' ? 1 : 0, 1e9)
  if (burst === undefined) burst = algorithm === 'leaky_bucket' ? 0 : rate?.count ?? 1
  let delay: number | 'nodelay' = 0
  const dn = m.get('delay')
  if (dn !== undefined) {
    if (algorithm !== 'leaky_bucket') ck.error(dn.pos, 'delay: only applies to algorithm: leaky_bucket')
    else if (dn.kind === 'scalar' && dn.value === 'nodelay') delay = 'nodelay'
    else if (dn.kind === 'scalar' && typeof dn.value === 'number') delay = ck.num(dn, 'delay', 0, 1e9) ?? 0
    else ck.error(dn.pos, `delay: expected a number or nodelay, got ${ck.show(dn as PScalar)}`)
  }
  const scope = ck.oneOf(m.get('scope'), 'scope', ['node', 'cluster'] as const) ?? 'node'
  // A leaky bucket queues or delays requests on this node (nginx limit_req); it has no store form.
  if (algorithm === 'leaky_bucket' && scope === 'cluster') ck.error(m.get('scope')?.pos ?? pos, 'scope: cluster needs algorithm: token_bucket (leaky_bucket is node-scoped, as nginx limit_req)')
  const maxKeys = ck.num(m.get('max_keys'), 'max_keys', 1, 1e8) ?? DEFAULTS.rateLimit.maxKeys
  if (rate !== undefined && rateNode !== undefined) checkShares(env, rateNode, burstNode ?? rateNode, rate, burst, algorithm, scope)
  const onError = policy(ck, m.get('on_error')) ?? null
  const cfg = { kind: 'rate_limit', ...common, name, key, rate: rate ?? { count: 1, periodMs: 1000 }, burst, algorithm, delay, scope, maxKeys, onError, policy: onError ?? env.storeOnError } as const
  if (rate !== undefined && m.get('name') !== undefined) {
    const sig = JSON.stringify([key, cfg.rate, burst, algorithm, delay, scope])
    const seen = env.rateLimits.get(name)
    if (seen === undefined) env.rateLimits.set(name, { sig, pos: m.get('name')!.pos })
    else if (seen.sig !== sig) ck.error(m.get('name')!.pos, `rate_limit ${quote(name)} is already defined with different settings at ${fmtPos(seen.pos)} (guards with one name share one limit)`)
  }
  return cfg
}

/**
 * The guard keeps its node-local bucket as a share of the limit: the limit split across this node's
 * workers (scope node), or across every gateway process (a cluster limit's fallback while the store
 * fails), as gateway/guards/rate-limit.ts does. A share the algorithms cannot represent is refused
 * here, so validate refuses what serve would: a leaky bucket counts in milli-requests per second
 * (nginx limit_req's resolution), a token bucket holds burst × period in a safe integer.
 */
function checkShares (env: GuardEnv, rateNode: PNode, burstAt: PNode, rate: Rate, burst: number, algorithm: 'token_bucket' | 'leaky_bucket', scope: 'node' | 'cluster'): void {
  const { ck } = env
  const workers = Math.max(1, env.workers)
  const nodes = Math.max(1, env.gatewayNodes)
  // In one process (flashgate serve with workers: 1, tests) the split is 1 worker; with workers, all of them.
  const splits = scope === 'node' ? [1, workers] : [nodes, nodes * workers]
  const n = Math.max(...splits)
  if (algorithm === 'leaky_bucket' && Math.floor(rate.count * 1_000_000 / (rate.periodMs * n)) < 1) {
    ck.error(rateNode.pos, `rate: ${ck.show(rateNode as PScalar)} is below the leaky bucket's resolution of 1 request per 1000s${n > 1 ? ` per worker (workers: ${n})` : ''}, as nginx limit_req; use a higher rate or algorithm: token_bucket`)
    return
  }
  const b = burst > 0 ? burst : rate.count
  if (splits.some((k) => !Number.isSafeInteger(Math.max(1, Math.round(b / k)) * rate.periodMs * k))) {
    ck.error(burstAt.pos, `${burstAt === rateNode ? 'rate' : 'burst'}: burst (${b}) × the rate's period (${rate.periodMs}ms) is too large to count exactly; lower the burst or use a shorter period`)
  }
}

function rateKey (ck: Checker, n: PNode | undefined): RateKeyPart[] {
  if (n === undefined) return []
  const items = n.kind === 'seq' ? n.items : [n]
  const out: RateKeyPart[] = []
  for (const it of items) {
    const s = ck.str(it, 'key')
    if (s === undefined) continue
    const t = s.trim()
    const hm = /^header\s+(\S+)$/.exec(t)
    if (t === 'ip' || t === 'user' || t === 'route') out.push({ kind: t })
    else if (hm !== null && HEADER_NAME.test(hm[1] as string)) out.push({ kind: 'header', name: (hm[1] as string).toLowerCase() })
    else ck.error(it.pos, `key: expected ip, user, route or header NAME, got ${ck.show(it as PScalar)}${didYouMean(t, ['ip', 'user', 'route'])}`)
  }
  return out
}
