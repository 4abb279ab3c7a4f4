/**
 * The `rate_limit` guard.
 *
 * - `scope: node` (default): a token bucket (or nginx leaky bucket) in this process, its rate and burst
 *   split evenly between the node's workers. Keyless (the global limit): one bucket, checked
 *   synchronously — no Promise on the hot path. Keyed: one bucket per key in an lru-cache of `max_keys`,
 *   so rotating keys evicts old buckets instead of growing memory. Buckets live in deps.kept (ZONES) by
 *   limit name: the same name on several routes is one zone (as nginx `limit_req_zone`), and a
 *   config reload keeps the buckets.
 * - `scope: cluster`: GCRA on the store, exact across every node. On a store failure the policy decides:
 *   fail_closed → 503, fail_open → pass, local → this process's share (rate / (gateway_nodes × workers)).
 * - A key part that the request lacks (no user, no header) means the request is not counted by this limit
 *   (nginx skips empty keys); put an identity check before a per-user limit.
 * - Combining: a pass registers a settler; the token is given back (lua-resty-limit-traffic's uncommit)
 *   only when a later *limit* rejects the request (429) or the store or the upstream fails it
 *   (gateway/pipeline/settle.ts limitGivesBack), so stacked limits do not leak — but a guard that judged the
 *   client (LINK_INVALID, CAPTCHA_*, DUPLICATE, SOLD_OUT...) keeps the token spent: a per-IP limit slows
 *   link guessing.
 * - Leaky bucket delays: the request's check returns a Promise released by one shared DelayQueue timer.
 * - Rejection: 429 RATE_LIMITED, `Retry-After` in whole seconds rounded up, and IETF
 *   `RateLimit-Policy: "<name>";q=<count>;w=<seconds>` / `RateLimit: "<name>";r=<remaining>;t=<seconds>`.
 *   Built once per distinct Retry-After value. Shadow mode is the runner's: this guard just rejects.
 * - The keyless limiter sets deps.overload.active while it is rejecting (the pow captcha hardens).
 */
import { Slot } from '../pipeline/state.js'
import { LRUCache } from 'lru-cache'
import type { RateLimitGuardConfig, RouteConfig } from '../../conf/types.js'
import { rejection } from '../pipeline/reject.js'
import type { Guard, GuardDeps, GuardFactory, Outcome, Rejection, RequestContext, Verdict } from '../pipeline/types.js'
import { asStoreError, processCount } from './values.js'
import { STORE_UNAVAILABLE, guardId } from './common.js'
import { onSettle } from '../pipeline/settle.js'
import { limitGivesBack } from '../pipeline/settle.js'
import { DelayQueue } from '../../limiter/delay-queue.js'
import { leak, leakyBucketPolicy, unleak, type LeakyBucketPolicy } from '../../limiter/leaky-bucket.js'
import { giveBack, takeOut, takeTo, tokenBucketPolicy, type TokenBucketPolicy } from '../../limiter/token-bucket.js'

type KeyFn = (ctx: RequestContext) => string | null

function compileKey (cfg: RateLimitGuardConfig, route: RouteConfig, deps: GuardDeps): KeyFn | null {
  if (cfg.key.length === 0) return null
  const parts: KeyFn[] = cfg.key.map((p): KeyFn => {
    switch (p.kind) {
      case 'ip': return (ctx) => ctx.clientIp
      case 'user': return (ctx) => deps.identity(ctx)
      case 'route': { const r = route.name; return () => r }
      case 'header': {
        const n = p.name.toLowerCase()
        return (ctx) => {
          const v = ctx.req.headers[n]
          const s = typeof v === 'string' ? v : Array.isArray(v) ? v[0] : undefined
          return s === undefined || s === '' ? null : s
        }
      }
    }
    return () => null
  })
  if (parts.length === 1) return parts[0] as KeyFn
  return (ctx) => {
    let k = ''
    for (let i = 0; i < parts.length; i++) {
      const v = (parts[i] as KeyFn)(ctx)
      if (v === null) return null
      k = i === 0 ? v : k + '\u001f' + v
    }
    return k
  }
}

/**
 * A bucket's state, copied into a long-lived cell and updated in place: token bucket `a` = units, `b` =
 * at; leaky bucket `a` = excess, `b` = last. In place for two reasons: one LRU lookup per request instead
 * of a get and a set, and no new object per request held by a long-lived one (each such state object lived
 * until the key's next request and so was promoted to the old generation: per-user buckets made the
 * funnel's scavenges longer).
 */
interface Cell { a: number, b: number }

/** Node-local state of one limit zone, kept across reloads. */
interface Zone {
  single: Cell | null
  keyed: LRUCache<string, Cell> | null
}

/** Zones by limit name (+ suffix), kept across reloads so a reload refunds nothing. */
const ZONES = new Slot('rate_limit zones', () => new Map<string, Zone>())
/** One queue per process for `delay` (nodelay: false) limits; it needs the clock, so it is made on first use. */
const DELAY_QUEUE = new Slot<DelayQueue | null>('rate_limit delay queue', () => null)

function zoneOf (deps: GuardDeps, name: string, suffix: string, maxKeys: number, keyed: boolean): Zone {
  const zones = deps.kept.get(ZONES)
  const id = name + suffix
  let z = zones.get(id)
  if (z === undefined) {
    z = { single: null, keyed: null }
    zones.set(id, z)
  }
  if (keyed && (z.keyed === null || z.keyed.max !== maxKeys)) {
    const lru = new LRUCache<string, Cell>({ max: maxKeys })
    if (z.keyed !== null) for (const [k, v] of z.keyed.entries()) lru.set(k, v)
    z.keyed = lru
  }
  return z
}

/** The bucket's cell, if it has one. */
function cellOf (zone: Zone, key: string | null): Cell | undefined {
  return key === null ? zone.single ?? undefined : (zone.keyed as LRUCache<string, Cell>).get(key)
}

/** Store a bucket's new state: in its cell when it had one, else in a new cell. */
function keep (zone: Zone, key: string | null, cell: Cell | undefined, a: number, b: number): void {
  if (cell !== undefined) {
    cell.a = a
    cell.b = b
  } else if (key === null) {
    zone.single = { a, b }
  } else {
    (zone.keyed as LRUCache<string, Cell>).set(key, { a, b })
  }
}

function delayQueue (deps: GuardDeps): DelayQueue {
  let q = deps.kept.get(DELAY_QUEUE)
  if (q === null) {
    q = new DelayQueue(deps.clock)
    deps.kept.set(DELAY_QUEUE, q)
  }
  return q
}

export const rateLimitGuard: GuardFactory<RateLimitGuardConfig> = (cfg, route, deps): Guard => {
  const id = guardId(route, cfg)
  const keyFn = compileKey(cfg, route, deps)
  const keyless = keyFn === null
  const { count, periodMs } = cfg.rate
  const burst = cfg.burst > 0 ? cfg.burst : count
  const leaky = cfg.algorithm === 'leaky_bucket'
  const policy = cfg.policy
  const fallbacks = deps.metrics.storeFallbacks.labels(id, policy)

  // Node share: the worker split for scope node; the (nodes × workers) split for the local fallback.
  const share = (n: number): { tb: TokenBucketPolicy, lb: LeakyBucketPolicy | null } => {
    const b = Math.max(1, Math.round(burst / n))
    return {
      tb: tokenBucketPolicy(count, periodMs * n, b),
      lb: leaky ? leakyBucketPolicy(count, periodMs * n, Math.round(cfg.burst / n), cfg.delay === 'nodelay' ? 'nodelay' : Math.min(cfg.delay, Math.round(cfg.burst / n))) : null
    }
  }
  const local = cfg.scope === 'node' ? share(Math.max(1, deps.worker.count)) : share(processCount(deps))
  const zone = zoneOf(deps, cfg.name, cfg.scope === 'cluster' ? ':fallback' : '', cfg.maxKeys, !keyless)
  const queue = leaky ? delayQueue(deps) : null

  // Rejections, one per Retry-After second value (bounded cache).
  const windowS = Math.max(1, Math.ceil(periodMs / 1000))
  const policyHeader = `"${cfg.name}";q=${count};w=${windowS}`
  const rejections = new Map<number, Rejection>()
  const limited = (retryAfterMs: number, remaining: number): Rejection => {
    const s = Number.isFinite(retryAfterMs) ? Math.max(1, Math.ceil(retryAfterMs / 1000)) : windowS
    const cacheable = remaining === 0
    let r = cacheable ? rejections.get(s) : undefined
    if (r === undefined) {
      r = rejection('RATE_LIMITED', 'rate limit exceeded', {
        override: cfg.reject,
        headers: ['retry-after', String(s), 'ratelimit-policy', policyHeader, 'ratelimit', `"${cfg.name}";r=${remaining};t=${s}`]
      })
      if (cacheable && rejections.size < 4096) rejections.set(s, r)
    }
    return r
  }

  const overload = deps.overload

  // ---- node-local token bucket / leaky bucket (synchronous unless a leaky delay applies)
  const tb = local.tb
  const lb = local.lb
  // The token bucket's step writes into this one object (checks are synchronous: no two at once), so a
  // 429 from a node-local limit allocates nothing here: the cell is updated in place, the Rejection cached.
  const out = takeOut()
  const localCheck = (ctx: RequestContext, key: string | null): Verdict | Promise<Verdict> => {
    const cell = cellOf(zone, key)
    if (lb !== null) {
      const r = leak(cell === undefined ? null : { excess: cell.a, last: cell.b }, ctx.now, lb)
      if (!r.ok) {
        if (keyless) overload.active = true
        return limited(r.retryAfterMs, 0)
      }
      keep(zone, key, cell, r.state.excess, r.state.last)
      if (keyless) overload.active = false
      onSettle(ctx, (_c, o) => { if (limitGivesBack(o)) uncommitLocal(key, 'leaky') })
      if (r.delayMs > 0) return (queue as DelayQueue).wait(ctx.now + r.delayMs).then(() => undefined)
      return undefined
    }
    const r = cell === undefined ? takeTo(out, 0, 0, true, ctx.now, tb, 1) : takeTo(out, cell.a, cell.b, false, ctx.now, tb, 1)
    keep(zone, key, cell, r.units, r.at)
    if (!r.ok) {
      if (keyless) overload.active = true
      return limited(r.retryAfterMs, r.remaining)
    }
    if (keyless && overload.active) overload.active = false
    onSettle(ctx, key === null ? settleSingle : (_c, o) => { if (limitGivesBack(o)) uncommitLocal(key, 'token') })
    return undefined
  }
  const uncommitLocal = (key: string | null, kind: 'token' | 'leaky'): void => {
    const cell = key === null ? zone.single ?? undefined : zone.keyed?.get(key)
    if (cell === undefined) return
    if (kind === 'leaky') {
      const next = unleak({ excess: cell.a, last: cell.b })
      cell.a = next.excess
      cell.b = next.last
    } else {
      const next = giveBack({ units: cell.a, at: cell.b }, tb, 1)
      cell.a = next.units
      cell.b = next.at
    }
  }
  const settleSingle = (_c: RequestContext, o: Outcome): void => { if (limitGivesBack(o)) uncommitLocal(null, 'token') }

  if (cfg.scope === 'node') {
    return {
      kind: 'rate_limit',
      id,
      check: keyless
        ? (ctx) => localCheck(ctx, null)
        : (ctx) => {
            const k = (keyFn as KeyFn)(ctx)
            return k === null ? undefined : localCheck(ctx, k)
          }
    }
  }

  // ---- scope: cluster — GCRA on the store
  const store = deps.store
  const interval = periodMs / count
  const storeKey = (k: string | null): string => `rl:{${cfg.name}${k === null ? '' : ':' + k}}`
  const clusterCheck = async (ctx: RequestContext, key: string | null): Promise<Verdict> => {
    const sk = storeKey(key)
    let r
    try {
      r = await store.gcra(sk, ctx.now, interval, burst, 1)
    } catch (err) {
      asStoreError(err)
      fallbacks.inc()
      if (policy === 'fail_closed') return STORE_UNAVAILABLE
      if (policy === 'fail_open') return undefined
      return await localCheck(ctx, key)
    }
    if (!r.ok) {
      if (keyless) overload.active = true
      return limited(r.retryAfterMs, r.remaining)
    }
    if (keyless && overload.active) overload.active = false
    onSettle(ctx, (c, o) => {
      if (!limitGivesBack(o)) return
      store.gcra(sk, c.now, interval, burst, -1).catch((err: unknown) => {
        deps.log('debug', 'rate_limit uncommit failed', { guard: id, error: err instanceof Error ? err.message : String(err) })
      })
    })
    return undefined
  }
  return {
    kind: 'rate_limit',
    id,
    check: keyless
      ? (ctx) => clusterCheck(ctx, null)
      : (ctx) => {
          const k = (keyFn as KeyFn)(ctx)
          return k === null ? undefined : clusterCheck(ctx, k)
        }
  }
}
