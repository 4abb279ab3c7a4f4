/**
 * The embedded store (one node): same contract as Redis, answered synchronously behind Promises.
 *
 * - Bounded: entries with a TTL (GCRA state, dedupe marks, nonces) live in an lru-cache of `maxKeys`, so
 *   an attacker rotating keys evicts the least recently used, never grows memory. Entries without a TTL
 *   (quota counters, operator sets) are few and named by the config; they live in a plain Map so that
 *   eviction can never forget a counter.
 * - No timer per key: expiry is an absolute time checked against the gateway's clock when a key is read
 *   (lru-cache's own TTL uses performance.now and cannot follow a fake clock).
 * - publish/subscribe deliver to subscribers in this process (synchronously, after the publishing call).
 */
import { LRUCache } from 'lru-cache'
import { gcraStep } from './gcra.js'
import type { AddOptions, CounterResult, GcraResult, MarkAddResult, Store } from './store.js'
import { RoomState, type RoomEntry, type RoomLog, type RoomParams, type RoomSyncResult } from './waiting-room.js'

const MARKED: MarkAddResult = Object.freeze({ fresh: false, ok: false, value: -1 })

type Value = number | string | Set<string>
interface Entry { v: Value, exp: number }

export interface MemoryStoreOptions {
  readonly maxKeys: number
  readonly clock: () => number
  readonly keyPrefix?: string
}

export class MemoryStore implements Store {
  readonly kind = 'memory' as const
  readonly healthy = true
  private readonly lru: LRUCache<string, Entry>
  private readonly pinned = new Map<string, Entry>()
  private readonly subs = new Map<string, Set<(m: string) => void>>()
  /** Waiting rooms by campaign id (named by the config: few, never evicted). */
  private readonly rooms = new Map<string, RoomState>()
  private readonly clock: () => number

  constructor (opts: MemoryStoreOptions) {
    this.lru = new LRUCache<string, Entry>({ max: opts.maxKeys })
    this.clock = opts.clock
  }

  private read (key: string): Entry | undefined {
    const p = this.pinned.get(key)
    if (p !== undefined) return p
    const e = this.lru.get(key)
    if (e === undefined) return undefined
    if (e.exp <= this.clock()) { this.lru.delete(key); return undefined }
    return e
  }

  private write (key: string, v: Value, ttlMs: number | undefined): void {
    if (ttlMs === undefined || !(ttlMs > 0 && Number.isFinite(ttlMs))) {
      this.lru.delete(key)
      this.pinned.set(key, { v, exp: Infinity })
    } else {
      this.pinned.delete(key)
      this.lru.set(key, { v, exp: this.clock() + ttlMs })
    }
  }

  private num (key: string): { n: number, e: Entry | undefined } {
    const e = this.read(key)
    if (e === undefined) return { n: 0, e }
    const n = typeof e.v === 'number' ? e.v : typeof e.v === 'string' ? Number(e.v) : NaN
    if (!Number.isFinite(n)) throw new TypeError(`store: ${key} does not hold a number`)
    return { n, e }
  }

  async gcra (key: string, now: number, emissionIntervalMs: number, burst: number, cost: number): Promise<GcraResult> {
    // Same units as the Redis script: µs, integers.
    const e = this.read(key)
    const tat = e === undefined ? null : (e.v as number)
    const iv = Math.max(1, Math.round(emissionIntervalMs * 1000))
    const s = gcraStep(tat, Math.round(now * 1000), iv, burst, cost)
    if (s.ok && s.resetAfter > 0) this.lru.set(key, { v: s.tat, exp: this.clock() + Math.ceil(s.resetAfter / 1000) })
    else if (s.ok) this.lru.delete(key)
    return { ok: s.ok, remaining: s.remaining, retryAfterMs: Math.ceil(s.retryAfter / 1000), resetAfterMs: Math.ceil(s.resetAfter / 1000) }
  }

  async addIfWithin (key: string, delta: number, limit: number, opts?: AddOptions): Promise<CounterResult> {
    const { n, e } = this.num(key)
    if (n + delta > limit || (opts?.min !== undefined && n + delta < opts.min)) return { ok: false, value: n }
    if (e !== undefined) e.v = n + delta
    else this.write(key, n + delta, undefined)
    return { ok: true, value: n + delta }
  }

  async markAndAdd (markKey: string, mark: string, ttlMs: number, key: string, delta: number, limit: number): Promise<MarkAddResult> {
    if (this.read(markKey) !== undefined) return MARKED
    const { n, e } = this.num(key)
    if (n + delta > limit) return { fresh: true, ok: false, value: n }
    if (e !== undefined) e.v = n + delta
    else this.write(key, n + delta, undefined)
    this.write(markKey, mark, Math.max(1, Math.ceil(ttlMs)))
    return { fresh: true, ok: true, value: n + delta }
  }

  async add (key: string, delta: number): Promise<number> {
    const { n, e } = this.num(key)
    if (e !== undefined) e.v = n + delta
    else this.write(key, n + delta, undefined)
    return n + delta
  }

  async get (key: string): Promise<string | null> {
    const e = this.read(key)
    if (e === undefined) return null
    if (e.v instanceof Set) throw new TypeError(`store: ${key} holds a set`)
    return String(e.v)
  }

  async set (key: string, value: string, ttlMs?: number): Promise<void> {
    this.write(key, value, ttlMs)
  }

  async setIfAbsent (key: string, value: string, ttlMs: number): Promise<boolean> {
    if (this.read(key) !== undefined) return false
    this.write(key, value, ttlMs)
    return true
  }

  async del (key: string): Promise<boolean> {
    const had = this.read(key) !== undefined
    this.pinned.delete(key)
    this.lru.delete(key)
    return had
  }

  private setOf (key: string, create: boolean): Set<string> | undefined {
    const e = this.read(key)
    if (e === undefined) {
      if (!create) return undefined
      const s = new Set<string>()
      this.write(key, s, undefined)
      return s
    }
    if (!(e.v instanceof Set)) throw new TypeError(`store: ${key} does not hold a set`)
    return e.v
  }

  async setAdd (key: string, members: readonly string[]): Promise<number> {
    const s = this.setOf(key, true) as Set<string>
    let n = 0
    for (const m of members) if (!s.has(m)) { s.add(m); n++ }
    return n
  }

  async setRemove (key: string, members: readonly string[]): Promise<number> {
    const s = this.setOf(key, false)
    if (s === undefined) return 0
    let n = 0
    for (const m of members) if (s.delete(m)) n++
    if (s.size === 0) await this.del(key)
    return n
  }

  async setHas (key: string, member: string): Promise<boolean> {
    return this.setOf(key, false)?.has(member) ?? false
  }

  private room (id: string): RoomState {
    let r = this.rooms.get(id)
    if (r === undefined) { r = new RoomState(); this.rooms.set(id, r) }
    return r
  }

  async roomSync (room: string, params: RoomParams, entries: readonly RoomEntry[]): Promise<RoomSyncResult> {
    return this.room(room).sync(params, entries)
  }

  async roomPass (room: string, user: string, now: number, use: boolean, expiresAt: number): Promise<boolean> {
    return this.room(room).pass(user, now, use, expiresAt)
  }

  async roomLog (room: string): Promise<RoomLog> {
    return this.room(room).log()
  }

  async publish (channel: string, message: string): Promise<void> {
    const set = this.subs.get(channel)
    if (set === undefined) return
    for (const fn of [...set]) {
      try { fn(message) } catch {}
    }
  }

  subscribe (channel: string, onMessage: (message: string) => void): () => void {
    return addSubscriber(this.subs, channel, onMessage)
  }

  async ready (): Promise<void> {}

  async close (): Promise<void> {
    this.subs.clear()
  }
}

/**
 * Add a subscriber to an in-process channel table (the memory store's, the IPC store's); the returned
 * function removes it, and the channel once it has none.
 */
export function addSubscriber (subs: Map<string, Set<(m: string) => void>>, channel: string, onMessage: (message: string) => void): () => void {
  let set = subs.get(channel)
  if (set === undefined) { set = new Set(); subs.set(channel, set) }
  const fn = (m: string): void => { onMessage(m) }
  set.add(fn)
  return () => {
    const s = subs.get(channel)
    s?.delete(fn)
    if (s?.size === 0) subs.delete(channel)
  }
}
