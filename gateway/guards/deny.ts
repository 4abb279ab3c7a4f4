/**
 * `deny`: IPs and CIDRs (IPv4 and IPv6) from the config and from files it names, user ids listed
 * literally, and user ids in a store set operators change at run time (`SADD` on Redis) → 403 BLOCKED.
 *
 * Everything literal is compiled once per load (conf/cidr.ts masks); the address and literal-user
 * checks are synchronous. The store set is asked once per user and second (a small local cache of
 * both answers, bounded), so an operator's SADD takes effect within DENY_CACHE_MS.
 */
import { LRUCache } from 'lru-cache'
import type { DenyGuardConfig } from '../../conf/types.js'
import type { Guard, GuardFactory, RequestContext, Verdict } from '../pipeline/types.js'
import { compileCidrs } from '../../conf/cidr.js'
import { rejection } from '../pipeline/reject.js'
import { guardId, onStoreError } from './common.js'

/** How long an answer of the store set is reused locally. */
export const DENY_CACHE_MS = 1000

export const denyGuard: GuardFactory<DenyGuardConfig> = (cfg, route, deps): Guard => {
  const id = guardId(route, cfg)
  // ip_files were read and checked by the loader (cfg.fileIps): a reload that validated is what serves.
  const ips = compileCidrs([...cfg.ips, ...cfg.fileIps])
  const users = new Set(cfg.users)
  const blocked = rejection('BLOCKED', 'blocked', { override: cfg.reject })
  const setKey = cfg.usersSet
  const policy = cfg.policy
  const cache = setKey === null ? null : new LRUCache<string, { until: number, member: boolean }>({ max: 100_000 })
  const needUser = users.size > 0 || setKey !== null

  function check (ctx: RequestContext): Verdict | Promise<Verdict> {
    if (ips.size > 0 && ips.has(ctx.clientIp)) return blocked
    if (!needUser) return undefined
    const user = deps.identity(ctx)
    if (user === null) return undefined
    if (users.has(user)) return blocked
    if (setKey === null || cache === null) return undefined
    const hit = cache.get(user)
    if (hit !== undefined && hit.until > ctx.now) return hit.member ? blocked : undefined
    return deps.store.setHas(setKey, user).then(
      (member) => {
        cache.set(user, { until: ctx.now + DENY_CACHE_MS, member })
        return member ? blocked : undefined
      },
      (err: unknown) => onStoreError(deps, id, policy, err, 'setHas')
    )
  }

  return { kind: 'deny', id, check }
}
