/**
 * The quota ledger on the store: a product's units over the segment counters, for the admin API
 * (status, set, release, reset) and for replaying a journaled buy. Strings and numbers over a Store: no
 * request, no rejection, no HTTP. The `quota` guard (gateway/guards/quota.ts) makes the same store calls
 * live; the key layout is conf/store-keys.ts, shared with an origin on the same store.
 *
 * Store layout (logical keys; the store adds `store.key_prefix`):
 * - `q:{<campaign>:<product>:<i>}` — admitted count of segment i (i in [0, segments)); different hash tags,
 *   so on a cluster the segments of a hot product land on different slots.
 * - `ql:{<campaign>:<product>}` — the quota set through the admin API (absent: the config's quota).
 * - channel `quota` — `{"c","p","quota"?,"reset"?,"released"?}` when the admin API changes a product:
 *   every node clears its sold-out latch and takes the new quota.
 */
import type { Config, ProductConfig } from '../conf/types.js'
import { QUOTA_CHANNEL, limitKey, originKey, segmentKey, segmentQuota } from '../conf/store-keys.js'
import type { Store } from './store.js'

/** FNV-1a 32-bit: a stable, cheap hash. The guard and the replay pick a buyer's first segment with it. */
export function fnv1a (s: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return h >>> 0
}

/** A stored quota (`ql:{C:P}`); null when absent or not a non-negative integer (the config's quota holds). */
export function parseQuota (v: string | null): number | null {
  const n = v === null ? NaN : Number(v)
  return Number.isSafeInteger(n) && n >= 0 ? n : null
}

/** The quota set through the admin API, null when none. Store failures reject. */
export function readOverride (store: Store, campaign: string, product: string): Promise<number | null> {
  return store.get(limitKey(campaign, product)).then(parseQuota)
}

/** A product's units as the admin API shows them. */
export interface QuotaView { readonly quota: number, readonly admitted: number, readonly remaining: number }

/** A change refused with nothing changed (the admin API answers 409 with `conflict` as the code). */
export interface QuotaConflict {
  readonly conflict: 'QUOTA_BELOW_ADMITTED' | 'RELEASE_EXCEEDS_ADMITTED' | 'RESET_BREAKS_LEDGER'
  readonly message: string
  readonly view: QuotaView
}

/** The admin operations by name (a cluster primary forwards them to a worker). */
export type QuotaOp = 'get' | 'set' | 'reset' | 'release'

export interface QuotaAdmin {
  /** null: unknown campaign or product (the admin API answers 404). Store failures reject with StoreError. */
  get(campaign: string, product: string): Promise<QuotaView | null>
  /**
   * Set the quota (a non-negative integer; RangeError otherwise) on every node: stored, then published.
   * Refused (QUOTA_BELOW_ADMITTED, nothing changed) below the units admitted: they are held by buyers.
   * An origin sharing the store follows the new quota with its stock (origin-stub `followQuota`).
   */
  set(campaign: string, product: string, quota: number): Promise<QuotaView | QuotaConflict | null>
  /**
   * Give back `units` (a positive integer; RangeError otherwise) a backend released (cancelled orders,
   * buys it refused): admitted goes down by `units`, and every node clears its sold-out latch (the
   * `quota` channel). Refused (RELEASE_EXCEEDS_ADMITTED, nothing changed) when more than admitted.
   */
  release(campaign: string, product: string, units: number): Promise<QuotaView | QuotaConflict | null>
  /**
   * Admitted back to 0 on every node (the quota stays). Refused (RESET_BREAKS_LEDGER, nothing changed)
   * when an origin keeps the product's orders on this store (`originKey`): the units its buyers hold
   * would be admitted again, edge and origin would disagree; units go back with `release`.
   */
  reset(campaign: string, product: string): Promise<QuotaView | QuotaConflict | null>
}

export interface QuotaAdminDeps {
  /** The products (segments, config quota) of the config in force. */
  readonly config: Pick<Config, 'campaigns'>
  readonly store: Store
  /** Every status read (the gateway sets its `flashgate_quota_remaining` gauge from it). */
  readonly onStatus?: (campaign: string, product: string, view: QuotaView) => void
}

/** The admin API's quota operations (GET/PUT /admin/quota/:campaign/:product, POST .../reset, .../release). */
export function createQuotaAdmin (deps: QuotaAdminDeps): QuotaAdmin {
  const { store, onStatus } = deps
  const find = (c: string, p: string): ProductConfig | undefined => deps.config.campaigns.get(c)?.products.find((x) => x.id === p)
  const get = async (c: string, p: string): Promise<QuotaView | null> => {
    const pc = find(c, p)
    if (pc === undefined) return null
    const [lim, ...segs] = await Promise.all([
      store.get(limitKey(c, p)),
      ...Array.from({ length: pc.segments }, async (_, i) => await store.get(segmentKey(c, p, i)))
    ])
    const quota = parseQuota(lim) ?? pc.quota
    let admitted = 0
    for (const s of segs) admitted += s === null ? 0 : Math.max(0, Number(s))
    const view = { quota, admitted, remaining: Math.max(0, quota - admitted) }
    onStatus?.(c, p, view)
    return view
  }
  /**
   * Take `units` off the product's segment counters (never one below 0), largest first. Each step is one
   * atomic add-with-floor; a segment a concurrent give-back emptied meanwhile is skipped, so the total
   * taken may fall short: the caller decides what to do then. Answers the units taken.
   */
  const takeOff = async (c: string, p: string, segments: number, units: number): Promise<number> => {
    const vals = await Promise.all(Array.from({ length: segments }, async (_, i) => Number(await store.get(segmentKey(c, p, i)) ?? 0)))
    const order = vals.map((v, i) => [v, i] as const).sort((a, b) => b[0] - a[0])
    let left = units
    for (const [v, i] of order) {
      if (left === 0) break
      const t = Math.min(left, Math.max(0, v))
      if (t === 0) continue
      const r = await store.addIfWithin(segmentKey(c, p, i), -t, Number.MAX_SAFE_INTEGER, { min: 0 })
      if (r.ok) left -= t
    }
    return units - left
  }
  return {
    get,
    async set (c, p, quota) {
      if (!Number.isSafeInteger(quota) || quota < 0) throw new RangeError('quota must be a non-negative integer')
      if (find(c, p) === undefined) return null
      const before = await get(c, p)
      if (before !== null && quota < before.admitted) {
        return { conflict: 'QUOTA_BELOW_ADMITTED', message: `${before.admitted} units are admitted (held by buyers); the quota cannot go below that`, view: before }
      }
      await store.set(limitKey(c, p), String(quota))
      await store.publish(QUOTA_CHANNEL, JSON.stringify({ c, p, quota }))
      return await get(c, p)
    },
    async release (c, p, units) {
      if (!Number.isSafeInteger(units) || units < 1) throw new RangeError('units must be a positive integer')
      const pc = find(c, p)
      if (pc === undefined) return null
      const before = await get(c, p) as QuotaView
      if (units > before.admitted) {
        return { conflict: 'RELEASE_EXCEEDS_ADMITTED', message: `only ${before.admitted} units are admitted; cannot release ${units}`, view: before }
      }
      const taken = await takeOff(c, p, pc.segments, units)
      if (taken < units) {
        // Raced with give-backs that emptied the counters meanwhile: put back what was taken, change nothing.
        if (taken > 0) await store.add(segmentKey(c, p, 0), taken)
        const now = await get(c, p) as QuotaView
        return { conflict: 'RELEASE_EXCEEDS_ADMITTED', message: `only ${now.admitted} units are admitted; cannot release ${units}`, view: now }
      }
      await store.publish(QUOTA_CHANNEL, JSON.stringify({ c, p, released: units }))
      return await get(c, p)
    },
    async reset (c, p) {
      const pc = find(c, p)
      if (pc === undefined) return null
      if (await store.get(originKey(c, p)) !== null) {
        const view = await get(c, p) as QuotaView
        return { conflict: 'RESET_BREAKS_LEDGER', message: `an origin keeps this product's orders on this store (${view.admitted} units admitted are its buyers' or on their way): a reset would admit them again; give units back with POST .../release, or change the quota with PUT`, view }
      }
      await Promise.all(Array.from({ length: pc.segments }, async (_, i) => await store.del(segmentKey(c, p, i))))
      await store.publish(QUOTA_CHANNEL, JSON.stringify({ c, p, reset: true }))
      return await get(c, p)
    }
  }
}

/*
 * Replaying a journaled buy (gateway/pending.ts): the same operations the dedupe and quota guards make
 * live — the segment counters with `addIfWithin`, and with a dedupe mark `markAndAdd` (one atomic step) —
 * so a replayed buy is judged exactly as a live one, against the same counters other nodes and live
 * requests use.
 *
 * The dedupe mark a replay sets holds `<ticket>/<segment>`: a gateway that crashed after the store
 * admitted an entry but before the journal said so finds its own mark on the next replay and knows the
 * entry was admitted, in which segment, instead of answering DUPLICATE. Without a dedupe mark that window
 * (milliseconds) leaves the unit taken and unsent — never an extra unit sold.
 */

export interface ReplayOp {
  readonly ticket: string
  /** The journaled request's X-Request-Id: a live mark `<id>/<segment>` is this request's own (see the quota guard's liveMark). */
  readonly requestId: string | null
  readonly campaign: string
  readonly product: string
  /** Segment count and config quota of the product (from the config at replay time). */
  readonly segments: number
  readonly quota: number
  /** Who the unit is for (segment choice, as the live guard: user, else address). */
  readonly who: string
  /** The dedupe mark, when a dedupe guard was before the quota. */
  readonly mark: { readonly key: string, readonly ttlMs: number } | null
  /** Mark and counter can be one atomic call (not on a Redis Cluster: different slots). */
  readonly fused: boolean
}

export type ReplayResult =
  | { readonly status: 'ADMITTED', readonly segment: number }
  | { readonly status: 'SOLD_OUT' | 'DUPLICATE' }

/** One replay step; store failures reject (StoreError) and the caller retries the same entry later. */
export async function replayAdmit (store: Store, op: ReplayOp): Promise<ReplayResult> {
  const quota = await readOverride(store, op.campaign, op.product) ?? op.quota
  const segs = Math.max(1, op.segments)
  const start = segs > 1 ? fnv1a(op.who) % segs : 0
  const mine = (m: string | null): number | null => {
    if (m === null) return null
    const slash = m.lastIndexOf('/')
    const who = slash < 0 ? m : m.slice(0, slash)
    if (who !== op.ticket && (op.requestId === null || op.requestId === '' || who !== op.requestId)) return null
    const s = Number(m.slice(slash + 1))
    return Number.isSafeInteger(s) ? s : -1
  }
  if (op.mark !== null && op.fused) {
    for (let j = 0; j < segs; j++) {
      const i = (start + j) % segs
      const r = await store.markAndAdd(op.mark.key, `${op.ticket}/${i}`, op.mark.ttlMs, segmentKey(op.campaign, op.product, i), 1, segmentQuota(quota, segs, i))
      if (!r.fresh) {
        const s = mine(await store.get(op.mark.key))
        if (s === null) return { status: 'DUPLICATE' }
        if (s >= 0) return { status: 'ADMITTED', segment: s }
        // `-1`: the mark this request's dedupe set live (or a replay cut short) and no unit yet: take it below.
        return await takeUnit(store, op, quota, segs, start)
      }
      if (r.ok) return { status: 'ADMITTED', segment: i }
    }
    return { status: 'SOLD_OUT' }
  }
  if (op.mark !== null) {
    // Two calls (a cluster): the mark first, as the dedupe guard before the quota does live.
    const fresh = await store.setIfAbsent(op.mark.key, `${op.ticket}/-1`, op.mark.ttlMs)
    if (!fresh) {
      const s = mine(await store.get(op.mark.key))
      if (s === null) return { status: 'DUPLICATE' }
      if (s >= 0) return { status: 'ADMITTED', segment: s }
      // Our own mark (set live by this request's dedupe, or by a replay cut short): go on and take the unit
      // (at worst a second unit counted, never sold twice).
    }
  }
  return await takeUnit(store, op, quota, segs, start)
}

/** The unit of an entry whose mark (if any) is already its own: segments in order; SOLD_OUT drops the mark. */
async function takeUnit (store: Store, op: ReplayOp, quota: number, segs: number, start: number): Promise<ReplayResult> {
  for (let j = 0; j < segs; j++) {
    const i = (start + j) % segs
    const r = await store.addIfWithin(segmentKey(op.campaign, op.product, i), 1, segmentQuota(quota, segs, i))
    if (r.ok) {
      if (op.mark !== null) await store.set(op.mark.key, `${op.ticket}/${i}`, op.mark.ttlMs)
      return { status: 'ADMITTED', segment: i }
    }
  }
  if (op.mark !== null) await store.del(op.mark.key)
  return { status: 'SOLD_OUT' }
}

/** Give back a replayed entry's unit (the upstream did not take the buy); never below 0. */
export async function replayGiveBack (store: Store, campaign: string, product: string, segment: number): Promise<void> {
  await store.addIfWithin(segmentKey(campaign, product, segment), -1, Number.MAX_SAFE_INTEGER, { min: 0 })
}
