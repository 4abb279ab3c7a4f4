/**
 * The `signed_link` guard: the request's link checked by antibot/signed-link.ts (hmac) or
 * antibot/nginx-secure-link.ts, and a single-use link's nonce spent on this node and in the store.
 */
import { LRUCache } from 'lru-cache'
import type { SignedLinkGuardConfig } from '../../conf/types.js'
import { compileSecureLink } from '../../antibot/nginx-secure-link.js'
import { linkKeys, linkMethodOf, verifyLinkQuery } from '../../antibot/signed-link.js'
import { queryOf } from '../http/query.js'
import { rejection } from '../pipeline/reject.js'
import type { Guard, GuardFactory, RequestContext, Verdict } from '../pipeline/types.js'
import { guardId, onStoreError } from './common.js'
import { valueOf } from './values.js'

export const signedLinkGuard: GuardFactory<SignedLinkGuardConfig> = (cfg, route, deps): Guard => {
  const id = guardId(route, cfg)
  const o = { override: cfg.reject }
  const invalid = rejection('LINK_INVALID', 'purchase link invalid', o)
  const used = rejection('LINK_INVALID', 'purchase link already used', o)
  const expired = rejection('LINK_EXPIRED', 'purchase link expired', o)
  const unauth = rejection('UNAUTHENTICATED', 'sign in first', o)
  const policy = cfg.policy
  // Nonces seen by this node: replays are refused without a store call; also the `local` fallback.
  const spent = cfg.singleUse ? new LRUCache<string, true>({ max: 100_000 }) : null

  function consume (nonce: string, expiresAt: number, now: number): Verdict | Promise<Verdict> {
    if (spent === null) return undefined
    if (spent.has(nonce)) return used
    const ttl = Math.max(1, expiresAt - now)
    spent.set(nonce, true, { ttl })
    return deps.store.setIfAbsent(`link:used:${nonce}`, '1', ttl).then(
      (fresh) => fresh ? undefined : used,
      (err: unknown) => policy === 'local' ? undefined : onStoreError(deps, id, policy, err, 'setIfAbsent')
    )
  }

  if (cfg.mode === 'nginx_secure_link_md5') {
    const verify = compileSecureLink(cfg.secureLink, cfg.secureLinkMd5)
    return {
      kind: 'signed_link',
      id,
      check (ctx: RequestContext): Verdict | Promise<Verdict> {
        const r = verify(ctx)
        if (r.result === 'invalid') return invalid
        if (r.result === 'expired') return expired
        // nginx links carry no nonce: the MAC itself is the one-time token.
        return consume(r.hash, r.expires === 0 ? ctx.now + 86_400_000 : r.expires * 1000 + 1000, ctx.now)
      }
    }
  }

  const { keys } = linkKeys(deps.config)
  return {
    kind: 'signed_link',
    id,
    check (ctx: RequestContext): Verdict | Promise<Verdict> {
      const user = deps.identity(ctx)
      if (user === null) return unauth
      const campaign = valueOf(ctx, cfg.campaign)
      const product = valueOf(ctx, cfg.product)
      if (campaign === null || product === null) return invalid
      const r = verifyLinkQuery(keys, queryOf(ctx), {
        method: linkMethodOf(route, ctx.method), path: ctx.path, user, campaign, product
      }, cfg.singleUse, ctx.now)
      if (r.result === 'invalid') return invalid
      if (r.result === 'expired') return expired
      return r.nonce === null ? undefined : consume(r.nonce, r.expiresAt, ctx.now)
    }
  }
}

