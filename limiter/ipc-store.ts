/**
 * One ledger per node with `--workers N` on the embedded store: the primary process holds the one
 * MemoryStore (`LedgerStore`, served by `serveLedger`) and every worker reaches it through `IpcStore`,
 * a Store that sends each call over a channel to the primary (`socketPeer`: a socketpair per worker)
 * and awaits the answer. Quota, dedupe marks, cluster-scope limits, single-use link nonces and
 * proof-of-work tokens are thus exact across the node's workers, as they are across nodes on Redis.
 * (Node-scope buckets and the quota's sold-out latch stay in each worker and send nothing.)
 *
 * - Batching: the calls a worker makes in one event-loop turn go out as one IPC message, and the primary
 *   answers each message with one message (the calls of a batch are applied one after the other, each
 *   atomically: the MemoryStore answers synchronously). An IPC message costs a JSON serialisation and a
 *   write on each side; batching spreads that over every request of the turn, as the Redis store's
 *   corking does. Calls travel as `[id, method, ...args]`, answers as JSON (a GCRA answer's Infinity as -1).
 * - Failure behaves as a Redis store's does: a per-call deadline (`store.timeout`, one timer for all calls,
 *   decided after one more poll phase so an answer already in the pipe wins), FG_ERR_STORE_TIMEOUT, the
 *   same circuit breaker (breaker.ts), FG_ERR_STORE_UNAVAILABLE at once when the channel is gone. A
 *   primary that stops answering is a store failure, handled by the guards' `on_error` policy. A late
 *   answer goes to `onLate` (addIfWithin / markAndAdd), so the quota gives back a unit applied for a
 *   request already answered with an error.
 * - publish: goes to the primary, which delivers it to its own subscribers and to every worker (channel
 *   messages are rare: quota changes, releases). So a `quota` message — an admin quota change, a reset,
 *   a release — clears the sold-out latch in every worker.
 *
 * Metrics as the Redis store: flashgate_store_duration_seconds{op}, flashgate_store_errors_total{op}
 * (worker side); the primary counts what it answers in flashgate_ledger_calls_total and
 * flashgate_ledger_messages_total{worker} (gateway/cluster.ts).
 */
import { performance } from 'node:perf_hooks'
import type { Duplex } from 'node:stream'
import type { StoreConfig } from '../conf/types.js'
import type { RoomEntry, RoomLog, RoomParams, RoomSyncResult } from './waiting-room.js'
import { StoreError } from '../conf/errors.js'
import { Breaker } from './breaker.js'
import { MemoryStore, addSubscriber, type MemoryStoreOptions } from './memory-store.js'
import type { AddOptions, CounterResult, GcraResult, MarkAddResult, Store, StoreMetrics } from './store.js'

/**
 * One end of a message channel: `socketPeer` over a socketpair (what the gateway uses), or Node's own
 * IPC channel (a ChildProcess, or `process` in the child).
 */
export interface Peer {
  send (message: unknown): boolean
  on (event: 'message', fn: (message: unknown) => void): unknown
  off (event: 'message', fn: (message: unknown) => void): unknown
  readonly connected?: boolean
  /** Let go of the channel (the store is closed). */
  close? (): void
}

/** A frame longer than this (no newline in sight) ends the channel: only our own processes write to it. */
const MAX_FRAME = 64 * 1024 * 1024

/**
 * Messages over a stream socket (the socketpair the primary gives each worker as its fd 4), one JSON
 * text per line (JSON.stringify never writes a raw newline).
 *
 * Why not the cluster IPC channel itself: the primary also passes every accepted connection to the
 * workers over it (round-robin scheduling), and Node's child_process holds every message sent after a
 * handle until the worker has acknowledged that handle (`_handleQueue`), so at the start of a sale — many
 * connections opened at once — store answers would wait behind connection hand-overs. A channel of its
 * own has no such queue. Side by side, 300 buyers at once with the 50 ms default timeout on a busy box:
 * 0 answers 503 on the socketpair in 3 rounds, 58, 90 and 6 on the cluster channel
 * (bench/results/ledger-transport-2026-12-01T2235.md).
 */
export function socketPeer (sock: Duplex): Peer {
  const fns = new Set<(m: unknown) => void>()
  let buf = ''
  let connected = true
  sock.setEncoding('utf8')
  sock.on('data', (chunk: string) => {
    let start = 0
    for (let i = chunk.indexOf('\n'); i !== -1; i = chunk.indexOf('\n', start)) {
      const line = buf === '' ? chunk.slice(start, i) : buf + chunk.slice(start, i)
      buf = ''
      start = i + 1
      let m: unknown
      try { m = JSON.parse(line) } catch { continue }
      for (const fn of fns) fn(m)
    }
    buf += chunk.slice(start)
    if (buf.length > MAX_FRAME) sock.destroy(new Error('store channel: frame too long'))
  })
  const down = (): void => { connected = false }
  sock.on('close', down)
  sock.on('error', down)
  return {
    send (m) {
      if (!connected) return false
      return sock.write(JSON.stringify(m) + '\n')
    },
    on (_e, fn) { fns.add(fn) },
    off (_e, fn) { fns.delete(fn) },
    get connected () { return connected && !sock.destroyed },
    close () { connected = false; sock.destroy() }
  }
}

/**
 * The Store methods a worker calls on the ledger: on the wire by name, applied by name on the primary.
 * A method added to the Store interface must be added here (the Record fails to compile until it is) and
 * to IpcStore (one line: `this.call('name', [args], decode)`); its answer travels as JSON, so only an
 * answer JSON cannot carry (Infinity, a Set, undefined) needs an entry in ENCODE and a decoder.
 */
type Op = Exclude<keyof Store, 'kind' | 'healthy' | 'subscribe' | 'ready' | 'close'> | 'ping'
const OPS: Readonly<Record<Op, true>> = {
  gcra: true, addIfWithin: true, markAndAdd: true, add: true, get: true, set: true, setIfAbsent: true, del: true,
  setAdd: true, setRemove: true, setHas: true, roomSync: true, roomPass: true, roomLog: true, publish: true, ping: true
}
/** Answers JSON cannot carry as they are (the worker's decoder undoes it). */
const ENCODE: Partial<Record<Op, (v: never) => unknown>> = {
  // retryAfterMs is Infinity when the cost can never fit: JSON has no Infinity.
  gcra: (r: GcraResult) => Number.isFinite(r.retryAfterMs) ? r : { ...r, retryAfterMs: -1 }
}
/** A call: [id, op, ...args]; an answer: [id, 1, value] or [id, 0, error message]. */
type Call = [number, Op, ...unknown[]]
type Answer = [number, 0 | 1, unknown]

/** Worker → primary: a batch of calls. */
export interface StoreMessage { fg: true, type: 'store', b: Call[] }
/** Primary → worker: the answers to one batch. */
interface ReplyMessage { fg: true, type: 'store-reply', b: Answer[] }
/** Primary → every worker: a published channel message. */
interface PubMessage { fg: true, type: 'store-pub', c: string, m: string }

const isMsg = (m: unknown): m is { fg: true, type: string } =>
  typeof m === 'object' && m !== null && (m as { fg?: unknown }).fg === true

// ---- the primary's side

/** The primary's MemoryStore: a publish reaches its own subscribers and every worker's. */
export class LedgerStore extends MemoryStore {
  private readonly peers = new Set<Peer>()

  constructor (opts: MemoryStoreOptions) { super(opts) }

  /** A worker's channel; its published messages and subscriptions go through this ledger. */
  addPeer (p: Peer): void { this.peers.add(p) }
  removePeer (p: Peer): void { this.peers.delete(p) }

  override async publish (channel: string, message: string): Promise<void> {
    const m: PubMessage = { fg: true, type: 'store-pub', c: channel, m: message }
    for (const p of this.peers) {
      if (p.connected !== false) { try { p.send(m) } catch {} }
    }
    await super.publish(channel, message)
  }
}

type Method = (...args: unknown[]) => Promise<unknown>

/** Apply one call to the ledger; the promise's value is what goes on the wire. */
function apply (store: Store, c: Call): Promise<unknown> {
  const op = c[1]
  if (op === 'ping') return Promise.resolve(1)
  if (typeof op !== 'string' || !Object.hasOwn(OPS, op)) return Promise.reject(new Error(`unknown store op ${String(op)}`))
  const p = ((store as unknown as Record<string, Method>)[op] as Method).apply(store, c.slice(2))
  const enc = ENCODE[op] as ((v: unknown) => unknown) | undefined
  return enc === undefined ? p : p.then(enc)
}

export interface LedgerCounters {
  /** A batch arrived (one IPC message). */
  message (): void
  /** `n` calls were answered. */
  calls (n: number): void
}

/**
 * Answer a worker's store calls from `store` (the primary's LedgerStore). Each batch is applied in order
 * and answered with one message. Returns a function that stops serving this peer.
 */
export function serveLedger (store: LedgerStore, peer: Peer, counters?: LedgerCounters): () => void {
  store.addPeer(peer)
  const onMessage = (m: unknown): void => {
    if (!isMsg(m) || m.type !== 'store') return
    const calls = (m as StoreMessage).b
    if (!Array.isArray(calls) || calls.length === 0) return
    counters?.message()
    const out: Answer[] = new Array<Answer>(calls.length)
    let left = calls.length
    const done = (): void => {
      if (--left > 0) return
      counters?.calls(calls.length)
      if (peer.connected === false) return
      try { peer.send({ fg: true, type: 'store-reply', b: out } satisfies ReplyMessage) } catch {}
    }
    for (let i = 0; i < calls.length; i++) {
      const c = calls[i] as Call
      const id = Array.isArray(c) ? Number(c[0]) : -1
      let p: Promise<unknown>
      try { p = Array.isArray(c) ? apply(store, c) : Promise.reject(new Error('malformed store call')) } catch (err) { p = Promise.reject(err) }
      const slot = i
      p.then((v) => { out[slot] = [id, 1, v === undefined ? null : v]; done() },
        (err: unknown) => { out[slot] = [id, 0, err instanceof Error ? err.message : String(err)]; done() })
    }
  }
  peer.on('message', onMessage)
  return () => {
    peer.off('message', onMessage)
    store.removePeer(peer)
  }
}

// ---- the worker's side

/** The op label of the store metrics, as the Redis store names them (addIfWithin → add_if_within). */
const metricOp = (op: string): string => op.replace(/[A-Z]/g, (c) => '_' + c.toLowerCase())

interface Pending {
  readonly op: Op
  readonly t0: number
  readonly deadline: number
  readonly decode: (v: unknown) => unknown
  readonly resolve: (v: unknown) => void
  readonly reject: (e: Error) => void
  readonly onLate: ((v: never) => void) | undefined
}

/** Timed-out calls kept for a late answer (their onLate): at most this many, the oldest dropped first. */
const MAX_LATE = 10_000

const same = (v: unknown): unknown => v
const toGcra = (v: unknown): GcraResult => {
  const r = v as GcraResult
  return r.retryAfterMs < 0 ? { ...r, retryAfterMs: Infinity } : r
}
const toVoid = (): void => {}

export interface IpcStoreDeps {
  readonly metrics: StoreMetrics
  /** The breaker's back-off clock. */
  readonly clock: () => number
  readonly log?: ((level: 'debug' | 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void) | undefined
}

/** A worker's Store: every call answered by the primary's ledger over `peer` (see the header). */
export class IpcStore implements Store {
  /** The same semantics as the embedded store (one node); it is the memory store, reached over IPC. */
  readonly kind = 'memory' as const
  private readonly peer: Peer
  private readonly timeoutMs: number
  private readonly breaker: Breaker
  private readonly log: NonNullable<IpcStoreDeps['log']>
  private readonly errors: Record<Op, { inc(): void }>
  private readonly durations: Record<Op, { observe(v: number): void }>
  private readonly pending = new Map<number, Pending>()
  private readonly late = new Map<number, Pending>()
  private readonly subs = new Map<string, Set<(m: string) => void>>()
  private nextId = 1
  private out: Call[] = []
  private flushing = false
  private timer: NodeJS.Timeout | null = null
  private closed = false
  private readonly onMessage = (m: unknown): void => { this.received(m) }

  constructor (cfg: Pick<StoreConfig, 'timeoutMs' | 'breakerFailures' | 'breakerBackoffMs'>, peer: Peer, deps: IpcStoreDeps) {
    this.peer = peer
    this.timeoutMs = cfg.timeoutMs
    this.log = deps.log ?? (() => {})
    const m = deps.metrics
    const ops = Object.keys(OPS)
    this.errors = Object.fromEntries(ops.map((op) => [op, m.storeOpErrors(metricOp(op))])) as unknown as Record<Op, { inc(): void }>
    this.durations = Object.fromEntries(ops.map((op) => [op, m.storeOpDuration(metricOp(op))])) as unknown as Record<Op, { observe(v: number): void }>
    this.breaker = new Breaker(cfg.breakerFailures, cfg.breakerBackoffMs, deps.clock, (open) => {
      m.storeBreakerChanged(open)
      this.log(open ? 'warn' : 'info', open ? 'store breaker open' : 'store breaker closed', { store: 'ledger' })
    })
    peer.on('message', this.onMessage)
  }

  get healthy (): boolean {
    return !this.closed && this.peer.connected !== false && this.breaker.state === 'closed'
  }

  /** One call: refused by the breaker, or queued for this turn's batch with its deadline. */
  private call<T> (op: Op, args: unknown[], decode: (v: unknown) => T, onLate?: (v: T) => void): Promise<T> {
    if (this.closed || this.peer.connected === false) {
      this.errors[op].inc()
      return Promise.reject(new StoreError('FG_ERR_STORE_UNAVAILABLE', 'store ledger (primary process) unreachable'))
    }
    if (!this.breaker.allow()) {
      this.errors[op].inc()
      return Promise.reject(new StoreError('FG_ERR_STORE_BREAKER_OPEN', 'store circuit breaker open'))
    }
    const id = this.nextId++
    const t0 = performance.now()
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { op, t0, deadline: t0 + this.timeoutMs, decode, resolve: resolve as (v: unknown) => void, reject, onLate: onLate as ((v: never) => void) | undefined })
      this.out.push([id, op, ...args])
      if (!this.flushing) { this.flushing = true; setImmediate(this.flush) }
      if (this.timer === null) this.timer = setTimeout(this.fire, this.timeoutMs)
    })
  }

  /** Send this turn's calls as one message. */
  private readonly flush = (): void => {
    this.flushing = false
    const b = this.out
    if (b.length === 0) return
    this.out = []
    try {
      this.peer.send({ fg: true, type: 'store', b } satisfies StoreMessage)
    } catch (err) {
      for (const c of b) this.fail(c[0], new StoreError('FG_ERR_STORE_UNAVAILABLE', `store ledger: ${err instanceof Error ? err.message : String(err)}`))
    }
  }

  private fail (id: number, err: StoreError): void {
    const p = this.pending.get(id)
    if (p === undefined) return
    this.pending.delete(id)
    this.errors[p.op].inc()
    this.durations[p.op].observe((performance.now() - p.t0) / 1000)
    this.breaker.failure()
    p.reject(err)
  }

  private received (m: unknown): void {
    if (!isMsg(m)) return
    if (m.type === 'store-reply') {
      const b = (m as ReplyMessage).b
      if (!Array.isArray(b)) return
      const t1 = performance.now()
      for (const a of b) this.answered(a, t1)
    } else if (m.type === 'store-pub') {
      const { c, m: text } = m as PubMessage
      const set = this.subs.get(c)
      if (set === undefined) return
      for (const fn of [...set]) {
        try { fn(text) } catch (err) { this.log('error', 'store subscriber threw', { channel: c, error: err instanceof Error ? err.message : String(err) }) }
      }
    }
  }

  private answered (a: Answer, t1: number): void {
    const [id, ok, v] = a
    const p = this.pending.get(id)
    if (p === undefined) {
      const l = this.late.get(id)
      if (l === undefined) return
      this.late.delete(id)
      if (ok === 1 && l.onLate !== undefined) { try { l.onLate(l.decode(v) as never) } catch {} }
      return
    }
    this.pending.delete(id)
    this.durations[p.op].observe((t1 - p.t0) / 1000)
    // An answer at all means the primary is alive: an error answer is bad data (a wrong type), not an outage.
    this.breaker.success()
    if (ok === 1) { p.resolve(p.decode(v)); return }
    this.errors[p.op].inc()
    p.reject(new StoreError('FG_ERR_STORE_SCRIPT', `store ${metricOp(p.op)}: ${String(v)}`))
  }

  /** The deadline timer fired: decide after one more poll phase (an answer already in the pipe wins). */
  private readonly fire = (): void => { setImmediate(this.sweep) }

  private readonly sweep = (): void => {
    this.timer = null
    const now = performance.now()
    // Every call has the same timeout, so the Map's insertion order is deadline order.
    for (const [id, p] of this.pending) {
      if (p.deadline > now) {
        this.timer = setTimeout(this.fire, Math.max(1, Math.ceil(p.deadline - now)))
        return
      }
      this.pending.delete(id)
      if (p.onLate !== undefined) {
        this.late.set(id, p)
        if (this.late.size > MAX_LATE) { for (const k of this.late.keys()) { this.late.delete(k); break } }
      }
      const name = metricOp(p.op)
      this.errors[p.op].inc()
      this.durations[p.op].observe((now - p.t0) / 1000)
      this.breaker.failure()
      p.reject(new StoreError('FG_ERR_STORE_TIMEOUT', `store ${name} timed out after ${this.timeoutMs}ms`))
    }
  }

  gcra (key: string, now: number, emissionIntervalMs: number, burst: number, cost: number): Promise<GcraResult> {
    return this.call('gcra', [key, now, emissionIntervalMs, burst, cost], toGcra)
  }

  addIfWithin (key: string, delta: number, limit: number, opts?: AddOptions): Promise<CounterResult> {
    // (onLate stays here: it is called with the late answer.)
    return this.call('addIfWithin', opts?.min === undefined ? [key, delta, limit] : [key, delta, limit, { min: opts.min }], same as (v: unknown) => CounterResult, opts?.onLate)
  }

  markAndAdd (markKey: string, mark: string, ttlMs: number, key: string, delta: number, limit: number, opts?: { readonly onLate?: (r: MarkAddResult) => void }): Promise<MarkAddResult> {
    return this.call('markAndAdd', [markKey, mark, ttlMs, key, delta, limit], same as (v: unknown) => MarkAddResult, opts?.onLate)
  }

  add (key: string, delta: number): Promise<number> { return this.call('add', [key, delta], same as (v: unknown) => number) }
  get (key: string): Promise<string | null> { return this.call('get', [key], same as (v: unknown) => string | null) }
  set (key: string, value: string, ttlMs?: number): Promise<void> { return this.call('set', ttlMs === undefined ? [key, value] : [key, value, ttlMs], toVoid) }
  setIfAbsent (key: string, value: string, ttlMs: number): Promise<boolean> { return this.call('setIfAbsent', [key, value, ttlMs], same as (v: unknown) => boolean) }
  del (key: string): Promise<boolean> { return this.call('del', [key], same as (v: unknown) => boolean) }
  setAdd (key: string, members: readonly string[]): Promise<number> { return this.call('setAdd', [key, members], same as (v: unknown) => number) }
  setRemove (key: string, members: readonly string[]): Promise<number> { return this.call('setRemove', [key, members], same as (v: unknown) => number) }
  setHas (key: string, member: string): Promise<boolean> { return this.call('setHas', [key, member], same as (v: unknown) => boolean) }
  roomSync (room: string, params: RoomParams, entries: readonly RoomEntry[]): Promise<RoomSyncResult> { return this.call('roomSync', [room, params, entries], same as (v: unknown) => RoomSyncResult) }
  roomPass (room: string, user: string, now: number, use: boolean, expiresAt: number): Promise<boolean> { return this.call('roomPass', [room, user, now, use, expiresAt], same as (v: unknown) => boolean) }
  roomLog (room: string): Promise<RoomLog> { return this.call('roomLog', [room], same as (v: unknown) => RoomLog) }
  publish (channel: string, message: string): Promise<void> { return this.call('publish', [channel, message], toVoid) }

  subscribe (channel: string, onMessage: (message: string) => void): () => void {
    return addSubscriber(this.subs, channel, onMessage)
  }

  /** Resolves once the primary answers a ping (rejects with a StoreError after `timeoutMs`). */
  async ready (timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      try { await this.call('ping', [], same); return } catch (err) {
        if (Date.now() >= deadline || (err as { code?: string }).code === 'FG_ERR_STORE_UNAVAILABLE') throw err
      }
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  }

  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.peer.off('message', this.onMessage)
    this.peer.close?.()
    if (this.timer !== null) { clearTimeout(this.timer); this.timer = null }
    for (const [id] of this.pending) this.fail(id, new StoreError('FG_ERR_STORE_UNAVAILABLE', 'store closed'))
    this.late.clear()
    this.subs.clear()
  }
}
