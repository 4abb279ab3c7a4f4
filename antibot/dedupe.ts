/**
 * `dedupe`: one attempt per user per campaign × product. The mark is a store set-if-absent with the
 * guard's `ttl`; a second attempt while it stands → 409 DUPLICATE.
 *
 * The mark is released (store del) by a settler when the attempt did not really happen:
 *   - a later guard rejected it (e.g. SOLD_OUT, RATE_LIMITED downstream in the funnel),
 *   - no upstream answer (connect error, timeout, client abort), or
 *   - the upstream answered 5xx, 408 or 429 (it did not process the purchase).
 * It is kept on 2xx (accepted) and on other 4xx: the origin looked at the attempt and refused it
 * (its own DUPLICATE/SOLD_OUT/validation), so a retry would be the same attempt again.
 *
 * Needs a user (401 UNAUTHENTICATED without one). Campaign and product must be configured
 * (404 NOT_FOUND otherwise), which also keeps arbitrary ids from filling the store.
 */
import { LRUCache } from 'lru-cache'
import type { DedupeGuardConfig } from '../conf/types.js'
import type { Guard, GuardFactory, Outcome, RequestContext, Settler, Verdict } from '../gateway/types.js'
import { rejection } from '../gateway/reject.js'
import { onSettle } from '../gateway/settle.js'
import { guardId, onStoreError } from './common.js'
import { valueOf } from './util.js'

/** Whether an attempt that ended this way releases its dedupe mark. */
export function releasesMark (outcome: Outcome): boolean {
  switch (outcome.kind) {
    case 'rejected': return true
    case 'failed': return true
    case 'upstream': return outcome.status >= 500 || outcome.status === 408 || outcome.status === 429
  }
}

export const dedupeGuard: GuardFactory<DedupeGuardConfig> = (cfg, route, deps): Guard => {
  const id = guardId(route, cfg)
  const o = { override: cfg.reject }
  const duplicate = rejection('DUPLICATE', 'one attempt per user', o)
  const unauth = rejection('UNAUTHENTICATED', 'sign in first', o)
  const notFound = rejection('NOT_FOUND', 'no such campaign or product', o)
  const policy = cfg.onError ?? deps.config.store.onError
  const products = new Set<string>()
  for (const c of deps.config.campaigns.values()) for (const p of c.products) products.add(`${c.id}\n${p.id}`)
  // Node-local marks used only while the store is failing and the policy is `local`.
  const local = new LRUCache<string, true>({ max: 100_000, ttl: Math.max(1, cfg.ttlMs) })
  const store = deps.store

  function releaser (key: string, isLocal: boolean): Settler {
    return (_ctx, outcome) => {
      if (!releasesMark(outcome)) return
      if (isLocal) { local.delete(key); return }
      store.del(key).then(undefined, (err: unknown) => {
        deps.metrics.storeErrors.inc({ op: 'del' })
        deps.log('warn', 'dedupe release failed', { guard: id, error: err instanceof Error ? err.message : String(err) })
      })
    }
  }

  return {
    kind: 'dedupe',
    id,
    check (ctx: RequestContext): Verdict | Promise<Verdict> {
      const user = deps.identity(ctx)
      if (user === null) return unauth
      const campaign = valueOf(ctx, cfg.campaign)
      const product = valueOf(ctx, cfg.product)
      if (campaign === null || product === null || !products.has(`${campaign}\n${product}`)) return notFound
      const key = `dedupe:${campaign}:${product}:${user}`
      return store.setIfAbsent(key, String(ctx.now), cfg.ttlMs).then(
        (fresh) => {
          if (!fresh) return duplicate
          onSettle(ctx, releaser(key, false))
          return undefined
        },
        (err: unknown) => {
          if (policy === 'local') {
            deps.metrics.storeFallbacks.inc({ guard: id, policy })
            if (local.has(key)) return duplicate
            local.set(key, true)
            onSettle(ctx, releaser(key, true))
            return undefined
          }
          return onStoreError(deps, id, policy, err, 'setIfAbsent')
        }
      )
    }
  }
}
