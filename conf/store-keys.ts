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
