/**
 * The `quota` guard (per campaign × product). The store layout and the admin operations on it are the
 * ledger's (limiter/quota-ledger.ts).
 *
 * Admission: one `addIfWithin(segment, 1, segmentQuota)` — INCRBY-and-compare in one Lua call, so exactly
 * `quota` requests are admitted under any concurrency and over any number of gateways. Segment quotas are
 * the quota split evenly (the first `quota % segments` get one more); a request tries the segment its user
 * (or address) hashes to, then the others; the total never exceeds the quota. A full segment is skipped
 * locally for `latch_ttl`; all full → the product is latched SOLD_OUT on this node for `latch_ttl` and
 * answered synchronously, with no store call. (The latch is a field on the product's state rather than an
 * lru-cache entry: products come from the config, so the key space is already bounded, and the TTL
 * follows the gateway's clock — ctx.now — which lru-cache's TTL cannot.)
 *
 * Give-back: when the request is not admitted downstream (a later guard rejected it, the upstream failed
 * or answered 5xx) the unit is returned and the latch cleared. The give-back is `addIfWithin(segment, -1,
 * ∞, {min: 0})`, so it can never take a counter below zero, and it is dropped when the product was reset
 * (admin `reset`) since the admission: each node counts resets it hears of (an epoch) and a settler from
 * an older epoch gives nothing back — its unit went with the reset (else it would take the counter to -1
 * and let one unit too many through). The one window left is a give-back sent by a node between the reset's DEL and that node receiving the reset message (on
 * loopback well under a millisecond); the floor at 0 still holds there.
 *
 * Give-back on the upstream's answer (unitReturns): the unit stays taken when the upstream accepted the
 * buy (2xx/3xx); any 4xx/5xx (the origin's own SOLD_OUT or DUPLICATE locked no unit) returns it. A buy
 * that reached an upstream connection and got no complete answer (upstream timeout, connection reset, the
 * client leaving while the upstream works) is *in doubt*: the upstream may have taken it, so its unit
 * stays taken — giving it back would let the edge admit one more buyer than the origin has units, and
 * the ledger's lower bound (edge admitted ≥ origin locked + sold) would break. An in-doubt unit the
 * origin did not take is one unit unsold, never one oversold; they are counted in
 * `flashgate_quota_in_doubt_total`, and the operator (or the origin, after checking its orders) gives
 * them back with `POST /admin/quota/:c/:p/release`. A request that never left the gateway (connect
 * refused, no target, the wait for a connection timed out, the client gone before it was sent) returns it.
 *
 * One ledger with the origin: `release` (admin `POST .../release`, or an origin-stub on the same store,
 * which takes units off the same `q:{C:P:i}` counters itself) lowers the counters by units a backend gave
 * back (never below 0) and publishes `{"c","p","released"}` on `quota`: every node clears its latch. That
 * publish is the hook for any other broadcast (e.g. an IPC store's primary): a node clears its latch on
 * any `quota` message for the product. A missed message is bounded by `latch_ttl` (default 1 s).
 *
 * A store call that timed out may still have been applied by Redis. When its answer arrives late and
 * says applied for a request this node already answered with a rejection (fail_closed's 503), the unit
 * is given back the same way, so a slow moment does not leave units admitted that nobody bought.
 *
 * Failure policy: fail_closed → 503 STORE_UNAVAILABLE. `local` → admit from this process's lease
 * (limiter/quota-lease.ts: units reserved in the store while it answered, so nothing is reconciled
 * afterwards and the total never passes the quota), 503 once the lease is spent. `fail_open` is refused
 * (conf/load.ts at FILE:LINE:COL, and this factory): admitting without counting has no bound, and the
 * only bound it could have — a node-local allowance counted in the store ahead — is `local` with a lease.
 * A node-local share reconciled into the counter after an outage cannot bound it: other nodes' calls are
 * judged without it meanwhile, and the sum oversells.
 */
import { Slot, type KeptState } from '../pipeline/state.js'
import type { CampaignConfig, ProductConfig, QuotaGuardConfig } from '../../conf/types.js'
import { CounterCell, GaugeCell, type Metrics } from '../metrics.js'
import { rejection } from '../pipeline/reject.js'
import type { GuardDeps, GuardFactory, MarkSpec, MarkTaker, Outcome, RequestContext, Verdict } from '../pipeline/types.js'
import { asStoreError, processCount, valueReader } from './values.js'
import { STORE_UNAVAILABLE, guardId } from './common.js'
import { onSettle } from '../pipeline/settle.js'
import { retryRefused } from '../../limiter/breaker.js'
import type { CounterResult, MarkAddResult, Store } from '../../limiter/store.js'
import { QUOTA_CHANNEL, originKey, segmentKey, segmentQuota } from '../../conf/store-keys.js'
import { fnv1a, readOverride } from '../../limiter/quota-ledger.js'
import { JOURNAL_MARK, ROOM_PASS, type JournalMark, type RoomPassMark } from './journal-marks.js'
import { dropAll, leaseHeld, newLease, putBack, reshape, returnAll, takeUnit, topUp, type Lease, type LeaseDeps } from '../../limiter/quota-lease.js'



/**
 * Whether the unit a request took goes back: unless the upstream accepted the buy (2xx/3xx). A later
 * guard's rejection, no upstream answer, and every upstream 4xx/5xx give it back — the origin's own
 * SOLD_OUT or DUPLICATE means it locked no unit for this request, so the edge must not count one (one
 * ledger: edge admitted − given back == origin locked + sold + buys in flight).
 */
function unitReturns (ctx: RequestContext, o: Outcome): boolean {
  switch (o.kind) {
    case 'rejected': return true
    case 'upstream': return o.status >= 400
    // Sent, no complete answer: kept, unless the head that did arrive refused the buy.
    case 'failed': return o.sent !== true || (ctx.upstreamStatus ?? 0) >= 400
  }
}


/** A product's node-local state; one per process (deps.kept), shared by every quota guard and kept across reloads. */
interface Product {
  readonly campaign: string
  readonly product: string
  segments: number
  configQuota: number
  /** Quota set via the admin API (from the store), null = none / unknown yet. */
  override: number | null
  overrideLoaded: boolean
  loading: Promise<void> | null
  /** Per segment: the counter as last seen (-1 = never). */
  seen: number[]
  /** Per segment: skip until (ms). */
  fullUntil: number[]
  /** Whole product sold out until (ms). */
  latchUntil: number
  remainingGauge: { set(v: number): void }
  admitted: { inc(): void }
  released: { inc(): void }
  /** Units kept for buys that reached the upstream and got no complete answer. */
  inDoubt: { inc(): void }
  lastRefresh: number
  /** Resets heard of (admin reset); a give-back from an older epoch is dropped. */
  epoch: number
  /** Units reserved in the store for `on_error: local` (limiter/quota-lease.ts); empty otherwise. */
  lease: Lease
}

const quotaOf = (p: Product): number => p.override ?? p.configQuota

interface Registry { products: Map<string, Product>, store: Store | null, off: (() => void) | null }

const PRODUCTS = new Slot<Registry>('quota products', () => ({ products: new Map(), store: null, off: null }))

function registryOf (kept: KeptState): Registry {
  return kept.get(PRODUCTS)
}

function clearLatch (p: Product): void {
  p.latchUntil = 0
  p.fullUntil.fill(0)
}

function productOf (reg: Registry, c: CampaignConfig, pc: ProductConfig, metrics: Metrics): Product {
  const id = `${c.id}\u0000${pc.id}`
  let p = reg.products.get(id)
  if (p === undefined) {
    p = {
      campaign: c.id,
      product: pc.id,
      segments: pc.segments,
      configQuota: pc.quota,
      override: null,
      overrideLoaded: false,
      loading: null,
      seen: new Array<number>(pc.segments).fill(-1),
      fullUntil: new Array<number>(pc.segments).fill(0),
      latchUntil: 0,
      remainingGauge: new GaugeCell(metrics.quotaRemaining, { campaign: c.id, product: pc.id }),
      admitted: new CounterCell(metrics.quotaAdmitted, { campaign: c.id, product: pc.id }),
      released: new CounterCell(metrics.quotaReleased, { campaign: c.id, product: pc.id }),
      inDoubt: new CounterCell(metrics.quotaInDoubt, { campaign: c.id, product: pc.id }),
      lastRefresh: 0,
      epoch: 0,
      lease: newLease(pc.segments)
    }
    reg.products.set(id, p)
    p.remainingGauge.set(pc.quota)
  } else {
    // Config reload: a new quota (or segment count) from the config clears the latch.
    if (p.configQuota !== pc.quota || p.segments !== pc.segments) {
      p.configQuota = pc.quota
      if (p.segments !== pc.segments) {
        p.segments = pc.segments
        p.seen = new Array<number>(pc.segments).fill(-1)
        p.fullUntil = new Array<number>(pc.segments).fill(0)
      }
      clearLatch(p)
    }
  }
  return p
}

function ensureSubscribed (reg: Registry, store: Store, log: GuardDeps['log']): void {
  if (reg.store === store) return
  reg.off?.()
  reg.store = store
  reg.off = store.subscribe(QUOTA_CHANNEL, (msg) => {
    let m: { c?: unknown, p?: unknown, quota?: unknown, reset?: unknown }
    try { m = JSON.parse(msg) } catch { return }
    const p = reg.products.get(`${String(m.c)}\u0000${String(m.p)}`)
    if (p === undefined) return
    if (typeof m.quota === 'number') { p.override = m.quota; p.overrideLoaded = true }
    if (m.reset === true) { p.seen.fill(0); p.epoch++; dropAll(p.lease) }
    clearLatch(p)
    log('info', 'quota changed', { campaign: p.campaign, product: p.product, quota: quotaOf(p) })
  })
}

function leftSeen (p: Product): number {
  const q = quotaOf(p)
  let left = 0
  for (let i = 0; i < p.segments; i++) {
    const s = p.seen[i] ?? -1
    if (s < 0) return -1
    const l = segmentQuota(q, p.segments, i) - s
    if (l > 0) left += l
  }
  return left
}

export const quotaGuard: GuardFactory<QuotaGuardConfig> = (cfg, route, deps): MarkTaker => {
  const id = guardId(route, cfg)
  const store = deps.store
  const reg = registryOf(deps.kept)
  const campaigns = new Map<string, Map<string, Product>>()
  for (const c of deps.config.campaigns.values()) {
    const m = new Map<string, Product>()
    for (const pc of c.products) m.set(pc.id, productOf(reg, c, pc, deps.metrics))
    campaigns.set(c.id, m)
  }
  ensureSubscribed(reg, store, deps.log)
  const readCampaign = valueReader(cfg.campaign)
  const readProduct = valueReader(cfg.product)
  const latchTtl = cfg.latchTtlMs
  const policy = cfg.policy
  // store.on_error: journal (inherited; other guards get `local`): a buy the store cannot judge is journaled (gateway/pending.ts).
  const pending = cfg.journaled ? deps.pending ?? null : null
  const local = policy === 'local' && pending === null
  const leaseSize = cfg.lease
  const processes = processCount(deps)
  const leaseDeps = (p: Product): LeaseDeps => ({
    store,
    campaign: p.campaign,
    product: p.product,
    processes,
    onChange: (held) => { deps.metrics.quotaLeased.labels(p.campaign, p.product).set(held) },
    log: (level, msg, fields) => { deps.log(level, msg, { guard: id, ...fields }) }
  })
  const leaseOf = new Map<Product, LeaseDeps>()
  for (const m of campaigns.values()) {
    for (const p of m.values()) {
      const ld = leaseDeps(p)
      leaseOf.set(p, ld)
      if (p.lease.units.length !== p.segments) reshape(p.lease, ld, p.segments)
    }
  }
  const fallbacks = deps.metrics.storeFallbacks.labels(id, policy)
  const soldOut = rejection('SOLD_OUT', 'sold out', { override: cfg.reject })
  const notFound = rejection('NOT_FOUND', 'unknown campaign or product')

  const loadOverride = (p: Product): Promise<void> => {
    if (p.loading !== null) return p.loading
    const l = readOverride(store, p.campaign, p.product).then((q) => {
      p.override = q
      p.overrideLoaded = true
    }, () => { /* store down: the config's quota, retried on the next request */ }).finally(() => { p.loading = null })
    p.loading = l
    return l
  }

  /**
   * Return one unit to segment `seg` unless the product was reset since `epoch`; never below 0. Retried
   * while the open breaker refuses it (retryRefused; a unit still not returned is lost — the safe
   * direction, never an oversell).
   */
  const giveBack = (p: Product, seg: number, epoch: number): void => {
    if (p.epoch !== epoch) return
    p.released.inc()
    retryRefused(() => {
      if (p.epoch !== epoch) return Promise.resolve()
      p.latchUntil = 0
      p.fullUntil[seg] = 0
      return store.addIfWithin(segmentKey(p.campaign, p.product, seg), -1, Number.MAX_SAFE_INTEGER, { min: 0 })
    }, deps.config.store.breakerBackoffMs, () => {
      deps.log('warn', 'quota give-back failed', { guard: id, campaign: p.campaign, product: p.product })
    })
  }
  const giveBackFor = (p: Product, seg: number, epoch: number) => (ctx: RequestContext, o: Outcome): void => {
    if (!unitReturns(ctx, o)) {
      if (o.kind === 'failed') p.inDoubt.inc() // kept with no complete answer: in doubt
      return
    }
    giveBack(p, seg, epoch)
  }
  /** For a timed-out admission call: set by onError when this request is answered with a rejection. */
  const lateGiveBack = (p: Product, seg: number, epoch: number, state: { rejected: boolean }) => (r: { ok: boolean }): void => {
    if (r.ok && state.rejected) giveBack(p, seg, epoch)
  }
  /** The same for a call that also set a dedupe mark: the mark goes with the unit. */
  const lateMarked = (p: Product, seg: number, epoch: number, state: { rejected: boolean }, mark: MarkSpec, markKey: string) => (r: { ok: boolean }): void => {
    if (!r.ok || !state.rejected) return
    giveBack(p, seg, epoch)
    mark.unmark(markKey)
  }

  /**
   * With a journal, a live mark names its request and segment (`<request id>/<i>`): a call whose answer
   * was lost (Redis killed mid-call) is journaled, and its replay finds the mark its own request set —
   * the unit was taken, in segment i — instead of answering DUPLICATE (limiter/quota-ledger.ts replayAdmit).
   */
  const liveMark = (ctx: RequestContext, i: number): string => `${ctx.requestId ?? ''}/${i}`

  /**
   * Hand the buy to the journal (202 PENDING, or 503 when it is full) with what its replay must judge:
   * the dedupe mark — this guard's own when fused, else the one a dedupe before it left (journal-marks.ts)
   * — and a waiting-room pass not yet marked used.
   */
  const journalBuy = (sink: NonNullable<GuardDeps['pending']>, ctx: RequestContext, p: Product, markKey: string | null, mark: MarkSpec | null): Verdict | Promise<Verdict> => {
    const jm = ctx.locals?.[JOURNAL_MARK] as JournalMark | undefined
    const m = mark !== null ? { key: markKey as string, ttlMs: mark.ttlMs } : jm !== undefined ? { key: jm.key, ttlMs: jm.ttlMs } : null
    const rp = ctx.locals?.[ROOM_PASS] as RoomPassMark | undefined
    return sink.submit(ctx, { campaign: p.campaign, product: p.product, user: deps.identity(ctx), mark: m, ...(rp !== undefined ? { pass: { room: rp.room, user: rp.user, exp: rp.exp } } : {}) })
  }

  /**
   * Arrival order across an outage: while this node's journal holds entries for the product not yet
   * judged by the store (replay pending or in progress), a new buy is journaled behind them instead of
   * taking a unit live, even though the store answers — else a buyer arriving just after the store came
   * back would be admitted ahead of earlier ones still waiting in the journal. No store call is made: its
   * dedupe mark and room pass go into the entry, and the replay applies them in order.
   */
  const behindBacklog = (p: Product): boolean => pending !== null && pending.holds(p.campaign, p.product)

  const onError = (err: unknown, late: { rejected: boolean }, ctx: RequestContext, p: Product, markKey: string | null, mark: MarkSpec | null, seg: number, epoch: number): Verdict | Promise<Verdict> => {
    asStoreError(err)
    fallbacks.inc()
    // Answered with a rejection, a unit from the lease, or PENDING (the replay takes the unit again): a late "applied" gives the unit back.
    late.rejected = true
    if (pending !== null) return journalBuy(pending, ctx, p, markKey, mark)
    if (local) {
      const s = takeUnit(p.lease, seg)
      if (s >= 0) {
        p.admitted.inc()
        leaseOf.get(p)?.onChange(leaseHeld(p.lease))
        onSettle(ctx, (c, o) => {
          if (!unitReturns(c, o)) { if (o.kind === 'failed') p.inDoubt.inc() } else if (p.epoch === epoch) putBack(p.lease, s)
        })
        return undefined
      }
    }
    return STORE_UNAVAILABLE
  }

  /**
   * Take one unit of `p`, trying the segment the user (or address) hashes to first, then the others. With
   * `mark` (a dedupe directly before this guard), each store call also sets the dedupe mark `markKey` in
   * the same round trip: the mark is set only with the unit, and a standing mark answers `mark.duplicate`.
   * Plain promise chaining, one store call per segment tried (on the path of every admitted request).
   */
  const admit = (ctx: RequestContext, p: Product, markKey: string | null, mark: MarkSpec | null): Promise<Verdict> => {
    let start = 0
    if (p.segments > 1) start = fnv1a(deps.identity(ctx) ?? ctx.clientIp) % p.segments
    if (!p.overrideLoaded) return loadOverride(p).then(() => tryFrom(ctx, p, markKey, mark, start, 0))
    return tryFrom(ctx, p, markKey, mark, start, 0)
  }

  const tryFrom = (ctx: RequestContext, p: Product, markKey: string | null, mark: MarkSpec | null, start: number, j: number): Promise<Verdict> => {
    const n = p.segments
    const now = ctx.now
    for (; j < n; j++) {
      const i = (start + j) % n
      if ((p.fullUntil[i] ?? 0) > now) continue
      return trySegment(ctx, p, markKey, mark, start, j, i)
    }
    // Every segment full while this process holds a lease: return it and try again, so that the leased
    // units are sold rather than stranded at the end of a sale.
    if (local && leaseHeld(p.lease) > 0 && store.healthy) {
      return returnAll(p.lease, leaseOf.get(p) as LeaseDeps).then(() => {
        p.fullUntil.fill(0)
        return leaseHeld(p.lease) > 0 ? soldOut : tryFrom(ctx, p, markKey, mark, start, 0)
      })
    }
    p.latchUntil = now + latchTtl
    p.remainingGauge.set(0)
    // While sold out, re-read an admin-set quota at most once per latch period (a missed publish).
    if (now - p.lastRefresh >= latchTtl) {
      p.lastRefresh = now
      p.overrideLoaded = false
    }
    return Promise.resolve(soldOut)
  }

  const trySegment = (ctx: RequestContext, p: Product, markKey: string | null, mark: MarkSpec | null, start: number, j: number, i: number): Promise<Verdict> => {
    const now = ctx.now
    const epoch = p.epoch
    const late = { rejected: false }
    const key = segmentKey(p.campaign, p.product, i)
    const limit = segmentQuota(quotaOf(p), p.segments, i)
    const call: Promise<CounterResult | MarkAddResult> = mark === null
      ? store.addIfWithin(key, 1, limit, { onLate: lateGiveBack(p, i, epoch, late) })
      : store.markAndAdd(markKey as string, pending !== null ? liveMark(ctx, i) : String(now), mark.ttlMs, key, 1, limit, { onLate: lateMarked(p, i, epoch, late, mark, markKey as string) })
    return call.then((r): Verdict | Promise<Verdict> => {
      if (mark !== null && !(r as MarkAddResult).fresh) return mark.duplicate
      p.seen[i] = r.value
      if (r.ok) {
        p.admitted.inc()
        const left = leftSeen(p)
        if (left >= 0) p.remainingGauge.set(left)
        if (local) {
          const ld = leaseOf.get(p) as LeaseDeps
          // The store answers again: what an outage left of the lease goes back; else keep it topped up.
          if (p.lease.outage) void returnAll(p.lease, ld)
          else if (leaseSize > 0) topUp(p.lease, ld, leaseSize, p.segments, i, limit, limit - r.value)
        }
        onSettle(ctx, giveBackFor(p, i, epoch))
        if (mark !== null) onSettle(ctx, mark.release(markKey as string))
        return undefined
      }
      p.fullUntil[i] = now + latchTtl
      return tryFrom(ctx, p, markKey, mark, start, j + 1)
    }, (err: unknown): Verdict | Promise<Verdict> => {
      if (mark !== null) {
        const v = mark.onError(ctx, markKey as string, err)
        if (v !== undefined) {
          late.rejected = true
          return v
        }
      }
      return onError(err, late, ctx, p, markKey, mark, i, epoch)
    })
  }

  const find = (ctx: RequestContext): Product | undefined => {
    const c = readCampaign(ctx)
    const pid = readProduct(ctx)
    return c === null || pid === null ? undefined : campaigns.get(c)?.get(pid)
  }

  /**
   * A dedupe before this guard fell back node-locally (its store call failed) and the store answers now:
   * its mark is set first, so that a unit admitted live always has its buyer's mark in the store
   * (journal-marks.ts JournalMark). A store failure here journals the buy with the mark.
   */
  const admitDeferred = (ctx: RequestContext, p: Product, jm: JournalMark, d: NonNullable<JournalMark['deferred']>): Promise<Verdict> =>
    store.setIfAbsent(jm.key, liveMark(ctx, -1), jm.ttlMs).then((fresh): Verdict | Promise<Verdict> => {
      if (!fresh) return d.duplicate
      onSettle(ctx, d.release)
      return admit(ctx, p, null, null)
    }, (err: unknown) => onError(err, { rejected: false }, ctx, p, null, null, 0, p.epoch))

  /**
   * A waiting-room pass the room guard could not mark used (store down) while the store answers now: it
   * is marked used first (a pass used elsewhere meanwhile → the room's answer), then the unit is taken.
   * A store failure journals the buy with the pass (journal-marks.ts RoomPassMark).
   */
  const viaPass = (ctx: RequestContext, p: Product, rp: RoomPassMark, next: () => Verdict | Promise<Verdict>): Promise<Verdict> =>
    store.roomPass(rp.room, rp.user, ctx.now, true, rp.exp).then((ok): Verdict | Promise<Verdict> => {
      if (!ok) return rp.used
      onSettle(ctx, rp.release)
      // Marked in the store: a journaled buy from here on needs no pass step at replay.
      if (ctx.locals !== null) delete ctx.locals[ROOM_PASS]
      return next()
    }, (err: unknown) => onError(err, { rejected: false }, ctx, p, null, null, 0, p.epoch))

  const guard: MarkTaker = {
    kind: 'quota',
    id,
    check (ctx) {
      const p = find(ctx)
      if (p === undefined) return notFound
      if (p.latchUntil > ctx.now) return soldOut
      if (pending !== null) {
        if (behindBacklog(p)) return journalBuy(pending, ctx, p, null, null)
        const rp = ctx.locals?.[ROOM_PASS] as RoomPassMark | undefined
        const go = (): Verdict | Promise<Verdict> => {
          const jm = ctx.locals?.[JOURNAL_MARK] as JournalMark | undefined
          if (jm?.deferred !== undefined) return admitDeferred(ctx, p, jm, jm.deferred)
          return admit(ctx, p, null, null)
        }
        return rp !== undefined ? viaPass(ctx, p, rp, go) : go()
      }
      return admit(ctx, p, null, null)
    },
    // A sold-out product is answered from the latch before the mark is looked at: a repeated attempt
    // then gets SOLD_OUT rather than DUPLICATE, and costs no store call.
    checkWithMark (ctx, markKey, mark) {
      const p = find(ctx)
      if (p === undefined) return notFound
      if (p.latchUntil > ctx.now) return soldOut
      if (pending !== null && behindBacklog(p)) return journalBuy(pending, ctx, p, markKey, mark)
      const rp = pending !== null ? ctx.locals?.[ROOM_PASS] as RoomPassMark | undefined : undefined
      if (rp !== undefined) return viaPass(ctx, p, rp, () => admit(ctx, p, markKey, mark))
      return admit(ctx, p, markKey, mark)
    },
    close () {
      // The subscription belongs to the process-wide registry and outlives a reload.
    }
  }
  return guard
}
