/**
 * The one narrow interface behind which all shared state sits. Implemented by memory (embedded, one
 * node, lru-cache bounded), redis (ioredis; one Lua script per operation, one round trip) and
 * redis-cluster (ioredis Cluster; callers put a hash tag `{...}` in keys that must share a slot).
 * All implementations pass the same contract suite (test/limiter/store-contract.ts).
 *
 * Keys given here are logical; the store adds config.store.keyPrefix. Times are epoch ms passed by the
 * caller (the gateway's clock) unless a method says otherwise.
 *
 * Failures reject with a StoreError (code FG_ERR_STORE_*) — never with a rejection value.
 */

export interface GcraResult {
  readonly ok: boolean
  /** Whole requests still allowed right now after this one. */
  readonly remaining: number
  /** When ok=false: ms until one request would be allowed. */
  readonly retryAfterMs: number
  /** ms until the bucket is full again (for RateLimit reset). */
  readonly resetAfterMs: number
}

export interface CounterResult {
  /** true when the add was applied (value after add <= limit). */
  readonly ok: boolean
  /** The counter's value after the call (unchanged when ok=false). */
  readonly value: number
}

/** Options of `addIfWithin` (both optional; the plain call is the admission). */
export interface AddOptions {
  /**
   * Apply only if `value + delta >= min` as well (else ok=false, counter unchanged). A give-back passes
   * `min: 0` so that it can never take a counter below zero (e.g. one reset by an operator meanwhile).
   */
  readonly min?: number
  /**
   * Called once if the call already rejected with FG_ERR_STORE_TIMEOUT and the store's answer arrives
   * after all: the caller learns whether the timed-out call was applied (and can give the unit back).
   * Not called when the answer never comes. Memory store: never (it cannot time out).
   */
  readonly onLate?: (r: CounterResult) => void
}

/** What `markAndAdd` did. */
export interface MarkAddResult extends CounterResult {
  /** false: the mark already stood, and nothing was changed (ok=false, value -1: not read). */
  readonly fresh: boolean
}

/**
 * What a store reports about itself. The store knows its operations, not metric names: the gateway's
 * Metrics implements this (gateway/metrics.ts), so limiter/ needs nothing from gateway/.
 */
export interface StoreMetrics {
  /** A counter of the failed or timed-out calls of `op`. */
  storeOpErrors (op: string): { inc(): void }
  /** A histogram of `op`'s latency in seconds. */
  storeOpDuration (op: string): { observe(seconds: number): void }
  /** The circuit breaker opened (true) or closed. */
  storeBreakerChanged (open: boolean): void
}

import type { RoomEntry, RoomLog, RoomParams, RoomSyncResult } from './waiting-room.js'

export interface Store {
  readonly kind: 'memory' | 'redis' | 'redis-cluster'

  /**
   * One GCRA step (a token bucket expressed as a theoretical arrival time): emission interval
   * `periodMs / count`, burst `burst` requests, `cost` requests now. A negative `cost` gives requests
   * back (uncommit; always ok). `retryAfterMs` is Infinity when `cost` exceeds `burst`.
   */
  gcra(key: string, now: number, emissionIntervalMs: number, burst: number, cost: number): Promise<GcraResult>

  /**
   * Atomically: if value + delta <= limit (and >= opts.min when given) then apply and ok=true, else leave
   * it and ok=false. A missing counter is 0.
   */
  addIfWithin(key: string, delta: number, limit: number, opts?: AddOptions): Promise<CounterResult>

  /**
   * Atomically, in one round trip: when `markKey` is absent and value + delta <= limit, apply the add and
   * set `markKey` to `mark` with TTL `ttlMs`; when the mark stands, change nothing (fresh=false); when the
   * add would pass the limit, change nothing (ok=false, the mark is not set). It is "one attempt per
   * user, then take a unit" (a dedupe guard directly followed by a quota guard) as one step. On a cluster
   * the two keys must hash to one slot (a hash tag), as for any multi-key command.
   */
  markAndAdd(markKey: string, mark: string, ttlMs: number, key: string, delta: number, limit: number, opts?: { readonly onLate?: (r: MarkAddResult) => void }): Promise<MarkAddResult>

  /** Atomically add delta (may be negative) and return the new value. */
  add(key: string, delta: number): Promise<number>

  /** Read a counter or string; null when absent. */
  get(key: string): Promise<string | null>

  /** Set a value, with an optional TTL. */
  set(key: string, value: string, ttlMs?: number): Promise<void>

  /** Set only if absent, with TTL; true when this call set it. */
  setIfAbsent(key: string, value: string, ttlMs: number): Promise<boolean>

  /** Delete; true when it existed. */
  del(key: string): Promise<boolean>

  /** Sets (deny lists operators change at run time). */
  setAdd(key: string, members: readonly string[]): Promise<number>
  setRemove(key: string, members: readonly string[]): Promise<number>
  setHas(key: string, member: string): Promise<boolean>

  /**
   * Waiting room `room` (a campaign id), one atomic step: apply the entries (joins and liveness marks),
   * seal the pre-queue once `now >= startsAt`, expire passes, advance the admission cursor (see
   * limiter/waiting-room.ts), and answer the room's state and one result per join entry. Keys
   * `wr:{<room>}:*` share one hash tag (one cluster slot).
   */
  roomSync(room: string, params: RoomParams, entries: readonly RoomEntry[]): Promise<RoomSyncResult>
  /**
   * Use (`use` true: the pass of `user` is unused and unexpired → used, true) or give back (`use` false: a
   * used pass → unused again until `expiresAt`, true) a waiting-room pass. false: nothing changed.
   */
  roomPass(room: string, user: string, now: number, use: boolean, expiresAt: number): Promise<boolean>
  /** The room's join log: the pre-queue in served order, then later joiners (an admin export). */
  roomLog(room: string): Promise<RoomLog>

  /** Broadcast to every node sharing this store (e.g. "quota raised: clear your sold-out latch"). */
  publish(channel: string, message: string): Promise<void>
  /** Returns an unsubscribe function. Memory store: delivers to subscribers in this process. */
  subscribe(channel: string, onMessage: (message: string) => void): () => void

  /** True while the store is believed reachable (breaker closed). */
  readonly healthy: boolean
  /**
   * Resolves once the store can answer (a Redis store connects in the background from its
   * constructor); rejects with a StoreError after `timeoutMs` (default 5 s). `untilError`: reject at the
   * first connection error as well (nothing answers there; the gateway's start does not wait for it).
   * Memory: resolves at once.
   */
  ready?(timeoutMs?: number, opts?: { readonly untilError?: boolean }): Promise<void>
  close(): Promise<void>
}
