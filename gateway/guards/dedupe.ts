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
import type { DedupeGuardConfig } from '../../conf/types.js'
import { isMarkTaker, type Guard, type GuardFactory, type MarkSpec, type Outcome, type Rejection, type RequestContext, type Settler, type Verdict } from '../pipeline/types.js'
import { rejection } from '../pipeline/reject.js'
import { onSettle } from '../pipeline/settle.js'
import { retryRefused } from '../../limiter/breaker.js'
import { guardId, onStoreError } from './common.js'
import { valueOf } from './values.js'
import { JOURNAL_MARK, type JournalMark } from './journal-marks.js'

/** Whether an attempt that ended this way releases its dedupe mark. */
export function releasesMark (outcome: Outcome): boolean {
  switch (outcome.kind) {
    // 202 PENDING: the buy is in the journal, whose replay owns the mark from now on (a mark given back
    // here would let the same user buy again before, or after, the replay took the unit).
    case 'rejected': return outcome.rejection.code !== 'PENDING'
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
  const policy = cfg.policy
  const products = new Set<string>()
  for (const c of deps.config.campaigns.values()) for (const p of c.products) products.add(`${c.id}\n${p.id}`)
  // Node-local marks used only while the store is failing and the policy is `local`.
  const local = new LRUCache<string, true>({ max: 100_000, ttl: Math.max(1, cfg.ttlMs) })
  const store = deps.store
  // store.on_error: journal: a quota after this guard journals a buy the store cannot judge; it needs the mark (journal-marks.ts JournalMark).
  const journal = deps.config.store.journal != null
  const leave = (ctx: RequestContext, m: JournalMark): void => { (ctx.locals ?? (ctx.locals = {}))[JOURNAL_MARK] = m }

  /**
   * Delete a mark on the store, retried while the open breaker refuses it (retryRefused), so that a user
   * whose attempt failed during a store hiccup is not locked out for the whole TTL.
   */
  const unmark = (key: string): void => {
    retryRefused(() => store.del(key), deps.config.store.breakerBackoffMs, (err) => {
      deps.log('warn', 'dedupe release failed', { guard: id, error: err instanceof Error ? err.message : String(err) })
    })
  }

  function releaser (key: string, isLocal: boolean): Settler {
    return (_ctx, outcome) => {
      if (!releasesMark(outcome)) return
      if (isLocal) { local.delete(key); return }
      unmark(key)
    }
  }

  /** The mark's key, or the rejection when the request cannot have one. */
  const markKey = (ctx: RequestContext): string | Rejection => {
    const user = deps.identity(ctx)
    if (user === null) return unauth
    const campaign = valueOf(ctx, cfg.campaign)
    const product = valueOf(ctx, cfg.product)
    if (campaign === null || product === null || !products.has(`${campaign}\n${product}`)) return notFound
    return `dedupe:${campaign}:${product}:${user}`
  }

  /** A store failure under this guard's policy; undefined = go on (passed, or marked node-locally). */
  const onError = (ctx: RequestContext, key: string, err: unknown): Verdict => {
    if (policy === 'local') {
      deps.metrics.storeFallbacks.inc({ guard: id, policy })
      if (local.has(key)) return duplicate
      local.set(key, true)
      onSettle(ctx, releaser(key, true))
      // store.on_error: journal: the store mark is not set; the quota sets it with the unit, or journals it with the buy.
      if (journal) leave(ctx, { key, ttlMs: cfg.ttlMs, deferred: { duplicate, release: releaser(key, false) } })
      return undefined
    }
    return onStoreError(deps, id, policy, err, 'setIfAbsent')
  }

  const spec: MarkSpec = {
    ttlMs: cfg.ttlMs,
    duplicate,
    release: (key) => releaser(key, false),
    unmark,
    onError
  }

  return {
    kind: 'dedupe',
    id,
    check (ctx: RequestContext): Verdict | Promise<Verdict> {
      const key = markKey(ctx)
      if (typeof key !== 'string') return key
      // With a journal the mark names its request (`<request id>/-1`): the replay of a journaled buy knows it as its own.
      return store.setIfAbsent(key, journal ? `${ctx.requestId ?? ''}/-1` : String(ctx.now), cfg.ttlMs).then(
        (fresh) => {
          if (!fresh) return duplicate
          onSettle(ctx, releaser(key, false))
          if (journal) leave(ctx, { key, ttlMs: cfg.ttlMs })
          return undefined
        },
        (err: unknown) => onError(ctx, key, err)
      )
    },
    /**
     * Directly before a quota guard (on the memory store or a standalone Redis): the mark is set in the
     * quota's own store call (Store.markAndAdd), one round trip for both. The answers are the same as the
     * two guards in sequence, except that a repeated attempt for a product latched sold out gets SOLD_OUT
     * (from the latch, with no store call) instead of DUPLICATE. Not on a Redis Cluster: the mark and the
     * product's counter would have to share a slot, i.e. every user's mark of a hot product on one shard.
     */
    fuseWith (next: Guard): Guard | null {
      if (store.kind === 'redis-cluster' || !isMarkTaker(next)) return null
      return {
        kind: `dedupe+${next.kind}`,
        id: `${id}+${next.id}`,
        check (ctx: RequestContext): Verdict | Promise<Verdict> {
          const key = markKey(ctx)
          if (typeof key !== 'string') return key
          return next.checkWithMark(ctx, key, spec)
        }
        // No close(): the two guards it was made of are closed with the pipeline's other guards.
      }
    }
  }
}