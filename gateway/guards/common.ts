/**
 * What every antibot guard shares: its id, its pre-built rejections, and the store failure policy.
 */
import type { FailurePolicy, GuardConfig, RouteConfig } from '../../conf/types.js'
import type { GuardDeps, Rejection } from '../pipeline/types.js'
import { rejection } from '../pipeline/reject.js'

/** `<route>#<index>:<kind>` */
export function guardId (route: RouteConfig, cfg: GuardConfig): string {
  return `${route.name}#${cfg.index}:${cfg.kind}`
}

/** The store's 503, built once. */
export const STORE_UNAVAILABLE: Rejection = rejection('STORE_UNAVAILABLE', 'shared state store unavailable', { headers: ['retry-after', '1'] })

/**
 * What a guard does when the store fails: `fail_closed` answers 503 STORE_UNAVAILABLE; `fail_open`
 * (and `local` where the guard has no local equivalent) passes. Every such decision is counted.
 */
export function onStoreError (deps: GuardDeps, id: string, policy: FailurePolicy, err: unknown, op: string): Rejection | undefined {
  deps.metrics.storeFallbacks.inc({ guard: id, policy })
  deps.log('warn', 'store failed in guard', { guard: id, op, policy, error: err instanceof Error ? err.message : String(err) })
  return policy === 'fail_closed' ? STORE_UNAVAILABLE : undefined
}
