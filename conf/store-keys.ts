/**
 * The shared store's key layout for the quota: the gateway's quota guard and an origin on the same
 * store (origin-stub/redis-store.ts takes units off the same counters) both name keys through these, so
 * they sit at the bottom layer that both import. Logical keys; the store adds `store.key_prefix`.
 */

/** Channel of quota changes: `{"c","p","quota"?,"reset"?,"released"?}` (gateway/guards/quota.ts). */
export const QUOTA_CHANNEL = 'quota'

/** Admitted count of segment i of a product; one hash tag per segment, so a cluster spreads a hot product. */
export const segmentKey = (c: string, p: string, i: number): string => `q:{${c}:${p}:${i}}`

/** The quota set through the admin API (absent: the config's quota). */
export const limitKey = (c: string, p: string): string => `ql:{${c}:${p}}`

/**
 * Set by an origin that keeps the product's orders on this store (origin-stub, at start): the edge's
 * counters are then one ledger with those orders, and an admin reset — which would forget units the
 * origin's buyers hold — is refused (RESET_BREAKS_LEDGER, gateway/guards/quota.ts).
 */
export const originKey = (c: string, p: string): string => `qo:{${c}:${p}}`

/** Quota of segment i when `quota` is split in `n` (the first `quota % n` get one more). */
export function segmentQuota (quota: number, n: number, i: number): number {
  return Math.floor(quota / n) + (i < quota % n ? 1 : 0)
}
