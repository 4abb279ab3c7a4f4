/**
 * The origin's state on Redis or Redis Cluster: one Lua script per state change (registered with
 * ioredis `defineCommand`, so it is sent by SHA and loaded once), each touching the keys of one
 * campaign × product only — one hash-tagged slot (see keys.ts) — so every script is atomic and runs
 * unchanged on a cluster.
 *
 * Failure behaviour (the origin never hangs on a dead Redis):
 * - `enableOfflineQueue: false`: while disconnected, commands fail at once instead of waiting;
 * - `commandTimeout`: a command without an answer fails after that many ms;
 * - `autoResendUnfulfilledCommands: false`: a buy that was answered 503 is never replayed behind the
 *   client's back after a reconnect (an ambiguous one — sent, then the link broke — may still have run:
 *   the user's retry then gets DUPLICATE with that order id, never a second order).
 * Every failure rejects with a `StoreError`; callers answer 503 STORE_UNAVAILABLE.
 *
 * Durability is Redis's: what an origin answered 202 survives a Redis crash only with AOF
 * (`appendonly yes`, `appendfsync always` for every write, `everysec` for all but the last second).
 */
import { Cluster, Redis } from 'ioredis'
import { StoreError } from '../conf/errors.js'
import { QUOTA_CHANNEL, limitKey, originKey, segmentKey } from '../conf/store-keys.js'
import { GROUP, newOrderToken, orderId as makeOrderId, parseOrderId, productKeys } from './keys.js'
import type { BuyResult, Order, OrderStatus, OriginStore, PayResult, ProductRef, QueueEntry, StockView } from './types.js'

const INIT = `
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'stock', ARGV[1], 'sale', ARGV[1], 'locked', 0, 'sold', 0, 'seq', 0)
  return 1
end
return 0`

// KEYS: stock buyers orders queued queue · ARGV: user now token (a fresh random order token)
// (the stock step and the notice in one step: nothing to put in the queued index)
// → {1, token} queued · {2, token} duplicate (the user's existing order) · {0, ''} sold out (or stock absent)
const BUY = `
local existing = redis.call('HGET', KEYS[2], ARGV[1])
if existing then return {2, existing} end
local sale = tonumber(redis.call('HGET', KEYS[1], 'sale'))
if sale == nil or sale < 1 then return {0, ''} end
local seq = ARGV[3]
if redis.call('HEXISTS', KEYS[3], seq) == 1 then return redis.error_reply('ERR order token collision') end
redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('HINCRBY', KEYS[1], 'sale', -1)
redis.call('HINCRBY', KEYS[1], 'locked', 1)
redis.call('HSET', KEYS[2], ARGV[1], seq)
redis.call('HSET', KEYS[3], seq, cjson.encode({status = 'QUEUED', user = ARGV[1], queued_at = tonumber(ARGV[2])}))
redis.call('XADD', KEYS[5], '*', 'o', seq)
return {1, seq}`

// With the stream on a Redis of its own (origin.queue): the same stock step without the XADD, which the
// store then sends to the queue's Redis. The order enters the queued index (scored by now) until its
// notice is known to be in the stream or the disk buffer: a crash in between leaves it there, found by
// lostNotices. KEYS: stock buyers orders queued · ARGV: user now token → as BUY
const BUY_RECORD = BUY.replace("redis.call('XADD', KEYS[5], '*', 'o', seq)\n", "redis.call('ZADD', KEYS[4], tonumber(ARGV[2]), seq)\n")

// KEYS: orders paydue queued · ARGV: seq now paymentTimeoutMs → 1 created · 0 not QUEUED (or absent). The
// order half of COMPLETE: a direct call of a buffered notice, and the completion of an entry of a
// stream on another Redis (acked there after this step: a crash in between redelivers it, and a
// redelivered entry only acks).
const CREATE = `
redis.call('ZREM', KEYS[3], ARGV[1])
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local o = cjson.decode(raw)
if o.status ~= 'QUEUED' then return 0 end
local now = tonumber(ARGV[2])
o.status = 'CREATED'
o.created_at = now
o.pay_by = now + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(o))
redis.call('ZADD', KEYS[2], o.pay_by, ARGV[1])
return 1`

// KEYS: orders paydue queue queued · ARGV: seq entryId now paymentTimeoutMs group → 1 created · 0 already done
const COMPLETE = `
local r = 0
redis.call('ZREM', KEYS[4], ARGV[1])
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if raw then
  local o = cjson.decode(raw)
  if o.status == 'QUEUED' then
    local now = tonumber(ARGV[3])
    o.status = 'CREATED'
    o.created_at = now
    o.pay_by = now + tonumber(ARGV[4])
    redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(o))
    redis.call('ZADD', KEYS[2], o.pay_by, ARGV[1])
    r = 1
  end
end
redis.call('XACK', KEYS[3], ARGV[5], ARGV[2])
redis.call('XDEL', KEYS[3], ARGV[2])
return r`

// KEYS: queue dead · ARGV: entryId group seq reason attempts now → 1 parked · 0 not in the queue any more
// (XACK answers 1 only for an entry still pending: a second park of one entry does nothing)
const DEAD_LETTER = `
if redis.call('XACK', KEYS[1], ARGV[2], ARGV[1]) == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('XADD', KEYS[2], '*', 'o', ARGV[3], 'reason', ARGV[4], 'attempts', ARGV[5], 'at', ARGV[6])
return 1`

// KEYS: orders queued · ARGV: before now max → the tokens indexed at or before ARGV[1] whose order is
// still QUEUED, each with its notice time set to now; the others leave the index.
const EXAMINE = `
local out = {}
local now = tonumber(ARGV[2])
for _, seq in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[1]), 'LIMIT', 0, tonumber(ARGV[3]))) do
  local raw = redis.call('HGET', KEYS[1], seq)
  if raw and cjson.decode(raw).status == 'QUEUED' then
    redis.call('ZADD', KEYS[2], now, seq)
    out[#out + 1] = seq
  else
    redis.call('ZREM', KEYS[2], seq)
  end
end
return out`

// KEYS: orders queue queued · ARGV: seq → 1 its notice added to the stream again · 0 not QUEUED (or absent)
const REQUEUE = `
redis.call('ZREM', KEYS[3], ARGV[1])
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw or cjson.decode(raw).status ~= 'QUEUED' then return 0 end
redis.call('XADD', KEYS[2], '*', 'o', ARGV[1])
return 1`

// KEYS: dead orders queue · ARGV: max → queued again (the others, whose order is no longer QUEUED, dropped)
const REDRIVE = `
local list = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', tonumber(ARGV[1]))
local n = 0
for _, e in ipairs(list) do
  local seq = nil
  for i = 1, #e[2], 2 do if e[2][i] == 'o' then seq = e[2][i + 1] end end
  redis.call('XDEL', KEYS[1], e[1])
  if seq then
    local raw = redis.call('HGET', KEYS[2], seq)
    if raw and cjson.decode(raw).status == 'QUEUED' then
      redis.call('XADD', KEYS[3], '*', 'o', seq)
      n = n + 1
    end
  end
end
return n`

// KEYS: stock orders paydue · ARGV: seq now user('' = anyone)
// → {0,''} not found · {4,''} forbidden · {1,o} paid now · {5,o} already paid · {2,o} cancelled · {6,o} cancelled now (deadline passed) · {3,o} still queued
const PAY = `
local raw = redis.call('HGET', KEYS[2], ARGV[1])
if not raw then return {0, ''} end
local o = cjson.decode(raw)
if ARGV[3] ~= '' and o.user ~= ARGV[3] then return {4, ''} end
if o.status == 'PAID' then return {5, raw} end
if o.status == 'CANCELLED' then return {2, raw} end
if o.status == 'QUEUED' then return {3, raw} end
local now = tonumber(ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HINCRBY', KEYS[1], 'locked', -1)
local code = 1
if o.pay_by ~= nil and now >= o.pay_by then
  o.status = 'CANCELLED'
  o.cancelled_at = now
  redis.call('HINCRBY', KEYS[1], 'sale', 1)
  redis.call('HINCRBY', KEYS[1], 'released', 1)
  code = 6
else
  o.status = 'PAID'
  o.paid_at = now
  redis.call('HINCRBY', KEYS[1], 'sold', 1)
end
raw = cjson.encode(o)
redis.call('HSET', KEYS[2], ARGV[1], raw)
return {code, raw}`

// KEYS: stock orders paydue · ARGV: now max → {cancelled, examined}
const SWEEP = `
local now = tonumber(ARGV[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local n = 0
for _, seq in ipairs(due) do
  redis.call('ZREM', KEYS[3], seq)
  local raw = redis.call('HGET', KEYS[2], seq)
  if raw then
    local o = cjson.decode(raw)
    if o.status == 'CREATED' then
      o.status = 'CANCELLED'
      o.cancelled_at = now
      redis.call('HSET', KEYS[2], seq, cjson.encode(o))
      redis.call('HINCRBY', KEYS[1], 'locked', -1)
      redis.call('HINCRBY', KEYS[1], 'sale', 1)
      n = n + 1
    end
  end
end
if n > 0 then redis.call('HINCRBY', KEYS[1], 'released', n) end
return {n, #due}`

// KEYS: stock → units released and not yet claimed; the count goes to 0
const TAKE_RELEASED = `
local n = tonumber(redis.call('HGET', KEYS[1], 'released') or '0') or 0
if n > 0 then redis.call('HSET', KEYS[1], 'released', 0) end
return n`

// KEYS: one edge quota segment counter · ARGV: units wanted → units taken off it (never below 0)
const EDGE_RELEASE = `
local v = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local t = math.min(v, tonumber(ARGV[1]))
if t > 0 then redis.call('DECRBY', KEYS[1], t) else t = 0 end
return t`

// KEYS: stock · ARGV: the edge's quota → {0} nothing to do · {1, delta} followed · {-1, sale} cannot (sale would go below 0)
const FOLLOW = `
local cur = redis.call('HGET', KEYS[1], 'edge_quota')
if cur == ARGV[1] then return {0, 0} end
local base = tonumber(cur) or tonumber(redis.call('HGET', KEYS[1], 'stock'))
if base == nil then return {0, 0} end
local delta = tonumber(ARGV[1]) - base
local sale = tonumber(redis.call('HGET', KEYS[1], 'sale'))
if sale + delta < 0 then return {-1, sale} end
redis.call('HINCRBY', KEYS[1], 'stock', delta)
redis.call('HINCRBY', KEYS[1], 'sale', delta)
redis.call('HSET', KEYS[1], 'edge_quota', ARGV[1])
return {1, delta}`

type ScriptFn = (...args: Array<string | number>) => Promise<unknown>

export interface RedisOriginStoreOptions {
  /** `redis`: one URL; `redis-cluster`: seed URLs. */
  readonly kind: 'redis' | 'redis-cluster'
  readonly url?: string | null
  readonly nodes?: readonly string[]
  /** Prefix of every key (default `fg:`); must not contain `{`. */
  readonly keyPrefix?: string
  /** A command with no answer after this long fails (default 1000 ms). */
  readonly commandTimeoutMs?: number
  /** Called on connection errors (rate-limited by the caller if it logs). */
  readonly onError?: (err: Error) => void
  /**
   * The order stream (and the dead-letter stream) on a Redis of its own (`origin.queue.url`). A buy then
   * takes its unit in the stock step and sends the notice in a second command; when that fails the buy
   * answers `unsent` (the caller buffers the notice on disk). Absent: one atomic step on the store.
   */
  readonly queueUrl?: string
}

interface RawOrder {
  status: OrderStatus
  user: string
  queued_at: number
  created_at?: number
  pay_by?: number
  paid_at?: number
  cancelled_at?: number
}

function num (v: unknown): number | null {
  return typeof v === 'number' && Number.isFinite(v) ? v : null
}

function toOrder (ref: ProductRef, seq: string, raw: string): Order {
  const o = JSON.parse(raw) as RawOrder
  return {
    orderId: makeOrderId(ref, seq),
    campaign: ref.campaign,
    product: ref.product,
    user: String(o.user),
    status: o.status,
    queuedAt: num(o.queued_at) ?? 0,
    createdAt: num(o.created_at),
    payBy: num(o.pay_by),
    paidAt: num(o.paid_at),
    cancelledAt: num(o.cancelled_at)
  }
}

function storeError (err: unknown): StoreError {
  if (err instanceof StoreError) return err
  const msg = err instanceof Error ? err.message : String(err)
  if (/timed out/i.test(msg)) return new StoreError('FG_ERR_STORE_TIMEOUT', `origin store: ${msg}`, { cause: err })
  if (/^(ERR|NOSCRIPT|WRONGTYPE|BUSY)/.test(msg) && /script|lua|WRONGTYPE/i.test(msg)) {
    return new StoreError('FG_ERR_STORE_SCRIPT', `origin store: ${msg}`, { cause: err })
  }
  return new StoreError('FG_ERR_STORE_UNAVAILABLE', `origin store: ${msg}`, { cause: err })
}

/** XREADGROUP / XAUTOCLAIM entry lists: [[id, [field, value, ...] | null], ...]. */
function parseEntries (ref: ProductRef, list: unknown): { entries: QueueEntry[], empty: string[] } {
  const entries: QueueEntry[] = []
  const empty: string[] = []
  if (!Array.isArray(list)) return { entries, empty }
  for (const item of list) {
    if (!Array.isArray(item)) continue
    const id = item[0]
    const fields = item[1]
    if (typeof id !== 'string') continue
    let seq: string | null = null
    if (Array.isArray(fields)) {
      for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i] === 'o') seq = String(fields[i + 1])
    }
    if (seq === null) empty.push(id)
    else entries.push({ ref, entryId: id, orderId: makeOrderId(ref, seq) })
  }
  return { entries, empty }
}

export function createRedisOriginStore (opts: RedisOriginStoreOptions): OriginStore {
  const prefix = opts.keyPrefix ?? 'fg:'
  if (prefix.includes('{')) throw new RangeError('origin store: key prefix must not contain "{"')
  const commandTimeout = opts.commandTimeoutMs ?? 1000
  const base = {
    lazyConnect: true,
    enableOfflineQueue: false,
    autoResendUnfulfilledCommands: false,
    maxRetriesPerRequest: 1,
    commandTimeout,
    connectTimeout: Math.max(commandTimeout, 1000),
    retryStrategy: (times: number) => Math.min(50 * times, 1000)
  }
  let client: Redis | Cluster
  if (opts.kind === 'redis-cluster') {
    const nodes = (opts.nodes ?? []).map((u) => {
      const url = new URL(u)
      return { host: url.hostname, port: Number(url.port === '' ? 6379 : url.port) }
    })
    if (nodes.length === 0) throw new RangeError('origin store: redis-cluster needs at least one node')
    client = new Cluster(nodes, {
      lazyConnect: true,
      enableOfflineQueue: false,
      scaleReads: 'master',
      clusterRetryStrategy: (times: number) => Math.min(100 * times, 1000),
      redisOptions: { ...base, lazyConnect: false }
    })
  } else {
    if (opts.url == null) throw new RangeError('origin store: redis needs a url')
    client = new Redis(opts.url, base)
  }
  client.on('error', (err: Error) => { opts.onError?.(err) })
  const separate = opts.queueUrl !== undefined
  const qclient: Redis | Cluster = opts.queueUrl === undefined ? client : new Redis(opts.queueUrl, base)
  if (separate) qclient.on('error', (err: Error) => { opts.onError?.(err) })

  const scripts = { fgoInit: [1, INIT], fgoBuy: [5, BUY], fgoComplete: [4, COMPLETE], fgoPay: [3, PAY], fgoSweep: [3, SWEEP], fgoTakeReleased: [1, TAKE_RELEASED], fgoEdgeRelease: [1, EDGE_RELEASE], fgoFollow: [1, FOLLOW], fgoDeadLetter: [2, DEAD_LETTER], fgoRedrive: [3, REDRIVE], fgoRequeue: [3, REQUEUE] } as const
  const own = { fgoBuyRecord: [4, BUY_RECORD], fgoCreate: [3, CREATE], fgoExamine: [2, EXAMINE] } as const
  for (const [name, [numberOfKeys, lua]] of Object.entries({ ...scripts, ...own })) client.defineCommand(name, { numberOfKeys, lua })
  const cmd = client as unknown as Record<keyof typeof scripts | keyof typeof own, ScriptFn>
  if (separate) qclient.defineCommand('fgoDeadLetter', { numberOfKeys: 2, lua: DEAD_LETTER })
  const qcmd = qclient as unknown as Record<'fgoDeadLetter', ScriptFn>

  let closed = false
  // Waits for 'ready' (bounded) rather than trusting connect()'s promise, which was seen to stay
  // pending for a Cluster that had become ready.
  const connectTimeoutMs = Math.max(commandTimeout, 1000) * 5
  const connect = async (c: Redis | Cluster = client): Promise<void> => {
    const client = c
    if (client.status === 'ready') return
    if (client.status === 'wait') client.connect().catch(() => {}) // failures also arrive as 'error' events
    await new Promise<void>((resolve, reject) => {
      const done = (err?: Error): void => {
        clearTimeout(timer)
        client.off('ready', onReady)
        if (err === undefined) resolve()
        else reject(err)
      }
      const onReady = (): void => { done() }
      const timer = setTimeout(() => {
        done(new StoreError('FG_ERR_STORE_UNAVAILABLE', `origin store: not ready after ${connectTimeoutMs} ms (status ${client.status})`))
      }, connectTimeoutMs)
      client.on('ready', onReady)
      if (client.status === 'ready') done()
    })
  }

  const run = async <T>(fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn()
    } catch (err) {
      throw storeError(err)
    }
  }

  // Consumer groups made on the queue's Redis (when it is a Redis of its own, it may be down at start).
  const grouped = new Set<string>()
  const makeGroup = async (queue: string): Promise<void> => {
    try {
      await qclient.xgroup('CREATE', queue, GROUP, '0', 'MKSTREAM')
    } catch (err) {
      if (!(err instanceof Error && err.message.includes('BUSYGROUP'))) throw storeError(err)
    }
    grouped.add(queue)
  }

  const readGroup = async (ref: ProductRef, consumer: string, max: number, from: '>' | '0'): Promise<QueueEntry[]> => {
    if (max <= 0) return []
    const k = productKeys(prefix, ref)
    if (separate && !grouped.has(k.queue)) await makeGroup(k.queue)
    const reply = await run(async () => await qclient.xreadgroup('GROUP', GROUP, consumer, 'COUNT', max, 'STREAMS', k.queue, from))
    const stream = Array.isArray(reply) ? reply[0] : null
    const { entries, empty } = parseEntries(ref, Array.isArray(stream) ? stream[1] : null)
    // Entries deleted while pending carry no fields: nothing left to do for them but ack.
    if (empty.length > 0) await run(async () => await qclient.xack(k.queue, GROUP, ...empty))
    return entries
  }

  /**
   * The notice is in the stream: the order leaves the queued index. A failure is ignored (the buy is
   * answered as queued): the order is then named by lostNotices after the bound and its notice sent a
   * second time, which creates nothing twice.
   */
  const kept = async (queued: string, token: string): Promise<void> => {
    try { await client.zrem(queued, token) } catch { /* a duplicate notice later, harmless */ }
  }

  return {
    kind: opts.kind,
    get healthy () { return !closed && client.status === 'ready' },

    async init (products) {
      await run(connect)
      for (const p of products) {
        const k = productKeys(prefix, p)
        await run(async () => await cmd.fgoInit(k.stock, p.stock))
        // Tells a gateway on this store that its quota counters are one ledger with these orders (its
        // admin reset is then refused: conf/store-keys.ts originKey).
        await run(async () => await client.set(prefix + originKey(p.campaign, p.product), '1'))
        if (!separate) await makeGroup(k.queue)
      }
      if (separate) {
        // The queue's Redis may be down now: buys are then buffered, and the groups are made on first read.
        try {
          await connect(qclient)
          for (const p of products) await makeGroup(productKeys(prefix, p).queue)
        } catch (err) {
          opts.onError?.(err instanceof Error ? err : new Error(String(err)))
        }
      }
    },

    async buy (ref, user, now): Promise<BuyResult> {
      const k = productKeys(prefix, ref)
      if (separate) {
        const r = await run(async () => await cmd.fgoBuyRecord(k.stock, k.buyers, k.orders, k.queued, user, now, newOrderToken())) as [number, string]
        if (r[0] === 2) return { kind: 'duplicate', orderId: makeOrderId(ref, r[1]) }
        if (r[0] !== 1) return { kind: 'sold_out' }
        const orderId = makeOrderId(ref, r[1])
        try {
          await qclient.xadd(k.queue, '*', 'o', r[1])
        } catch {
          // Down, timed out, OOM, or sent and unanswered: buffered either way (a notice that reached the
          // stream as well is created once: both paths create only a QUEUED order).
          return { kind: 'queued', orderId, unsent: true }
        }
        await kept(k.queued, r[1])
        return { kind: 'queued', orderId }
      }
      const r = await run(async () => await cmd.fgoBuy(k.stock, k.buyers, k.orders, k.queued, k.queue, user, now, newOrderToken())) as [number, string]
      if (r[0] === 1) return { kind: 'queued', orderId: makeOrderId(ref, r[1]) }
      if (r[0] === 2) return { kind: 'duplicate', orderId: makeOrderId(ref, r[1]) }
      return { kind: 'sold_out' }
    },

    async stock (ref): Promise<StockView | null> {
      const k = productKeys(prefix, ref)
      const r = await run(async () => await client.hmget(k.stock, 'stock', 'sale', 'locked', 'sold'))
      if (r[0] == null) return null
      return { stock: Number(r[0]), sale: Number(r[1]), locked: Number(r[2]), sold: Number(r[3]) }
    },

    async order (id) {
      const parsed = parseOrderId(id)
      if (parsed === null) return null
      const k = productKeys(prefix, parsed.ref)
      const raw = await run(async () => await client.hget(k.orders, String(parsed.token)))
      return raw === null ? null : toOrder(parsed.ref, parsed.token, raw)
    },

    async orderOf (ref, user) {
      const k = productKeys(prefix, ref)
      const token = await run(async () => await client.hget(k.buyers, user))
      if (token === null) return null
      const raw = await run(async () => await client.hget(k.orders, token))
      return raw === null ? null : toOrder(ref, token, raw)
    },

    async pay (id, user, now): Promise<PayResult> {
      const parsed = parseOrderId(id)
      if (parsed === null) return { kind: 'not_found' }
      const k = productKeys(prefix, parsed.ref)
      const [code, raw] = await run(async () => await cmd.fgoPay(k.stock, k.orders, k.paydue, parsed.token, now, user ?? '')) as [number, string]
      if (code === 0) return { kind: 'not_found' }
      if (code === 4) return { kind: 'forbidden' }
      const order = toOrder(parsed.ref, parsed.token, raw)
      if (code === 1 || code === 5) return { kind: 'paid', already: code === 5, order }
      if (code === 3) return { kind: 'not_created', order }
      return { kind: 'cancelled', order, byThisCall: code === 6 }
    },

    async readOwnPending (ref, consumer, max) { return await readGroup(ref, consumer, max, '0') },
    async readNew (ref, consumer, max) { return await readGroup(ref, consumer, max, '>') },

    async claimIdle (ref, consumer, minIdleMs, max) {
      if (max <= 0) return []
      const k = productKeys(prefix, ref)
      if (separate && !grouped.has(k.queue)) await makeGroup(k.queue)
      const reply = await run(async () => await qclient.xautoclaim(k.queue, GROUP, consumer, minIdleMs, '0-0', 'COUNT', max)) as unknown[]
      const { entries, empty } = parseEntries(ref, reply[1])
      if (empty.length > 0) await run(async () => await qclient.xack(k.queue, GROUP, ...empty))
      // Redis 7 also lists ids deleted while pending (reply[2]); XAUTOCLAIM already dropped them from the PEL.
      return entries
    },

    async complete (entry, now, paymentTimeoutMs) {
      const parsed = parseOrderId(entry.orderId)
      const k = productKeys(prefix, entry.ref)
      if (parsed === null) {
        await run(async () => await qclient.xack(k.queue, GROUP, entry.entryId))
        return false
      }
      if (separate) {
        const created = await run(async () => await cmd.fgoCreate(k.orders, k.paydue, k.queued, parsed.token, now, paymentTimeoutMs))
        try {
          await qclient.xack(k.queue, GROUP, entry.entryId)
          await qclient.xdel(k.queue, entry.entryId)
        } catch {
          // The order is made; the entry stays pending and its redelivery only acks.
        }
        return created === 1
      }
      const r = await run(async () => await cmd.fgoComplete(k.orders, k.paydue, k.queue, k.queued, parsed.token, entry.entryId, now, paymentTimeoutMs, GROUP))
      return r === 1
    },

    async queueDepth (ref) {
      const k = productKeys(prefix, ref)
      return await run(async () => await qclient.xlen(k.queue))
    },

    async createDirect (id, now, paymentTimeoutMs) {
      const parsed = parseOrderId(id)
      if (parsed === null) return false
      const k = productKeys(prefix, parsed.ref)
      return Number(await run(async () => await cmd.fgoCreate(k.orders, k.paydue, k.queued, parsed.token, now, paymentTimeoutMs))) === 1
    },

    async lostNotices (ref, before, now, max) {
      if (max <= 0) return []
      const k = productKeys(prefix, ref)
      const lost = await run(async () => await cmd.fgoExamine(k.orders, k.queued, before, now, max)) as string[]
      return lost.map((seq) => makeOrderId(ref, String(seq)))
    },

    async noticeKept (id) {
      const parsed = parseOrderId(id)
      if (parsed === null) return
      await run(async () => await client.zrem(productKeys(prefix, parsed.ref).queued, parsed.token))
    },

    async requeue (id) {
      const parsed = parseOrderId(id)
      if (parsed === null) return 'skipped'
      const k = productKeys(prefix, parsed.ref)
      if (!separate) return Number(await run(async () => await cmd.fgoRequeue(k.orders, k.queue, k.queued, parsed.token))) === 1 ? 'queued' : 'skipped'
      const raw = await run(async () => await client.hget(k.orders, parsed.token))
      if (raw === null || (JSON.parse(raw) as RawOrder).status !== 'QUEUED') return 'skipped'
      try {
        await qclient.xadd(k.queue, '*', 'o', parsed.token)
      } catch {
        return 'unsent'
      }
      await kept(k.queued, parsed.token)
      return 'queued'
    },

    async deadLetterDirect (id, reason, attempts, now) {
      const parsed = parseOrderId(id)
      if (parsed === null) return
      const k = productKeys(prefix, parsed.ref)
      await run(async () => await qclient.xadd(k.dead, '*', 'o', parsed.token, 'reason', reason.slice(0, 200), 'attempts', attempts, 'at', now))
    },

    async deadLetter (entry, reason, attempts, now) {
      const parsed = parseOrderId(entry.orderId)
      if (parsed === null) return
      const k = productKeys(prefix, entry.ref)
      await run(async () => await qcmd.fgoDeadLetter(k.queue, k.dead, entry.entryId, GROUP, parsed.token, reason.slice(0, 200), attempts, now))
    },

    async deadLetters (ref, max) {
      if (max <= 0) return []
      const k = productKeys(prefix, ref)
      const list = await run(async () => await qclient.xrange(k.dead, '-', '+', 'COUNT', max))
      return list.map(([entryId, f]) => {
        const field = (n: string): string => { const i = f.indexOf(n); return i >= 0 && i % 2 === 0 ? f[i + 1] ?? '' : '' }
        return { ref, entryId, orderId: makeOrderId(ref, field('o')), reason: field('reason'), attempts: Number(field('attempts')), at: Number(field('at')) }
      })
    },

    async deadLetterCount (ref) {
      const k = productKeys(prefix, ref)
      return await run(async () => await qclient.xlen(k.dead))
    },

    async redrive (ref, max) {
      if (max <= 0) return 0
      const k = productKeys(prefix, ref)
      if (!separate) return Number(await run(async () => await cmd.fgoRedrive(k.dead, k.orders, k.queue, max)))
      // Streams and orders on two Redis: letter by letter, queued again before it leaves the dead stream
      // (a crash in between queues it twice: the second completion only acks).
      const list = await run(async () => await qclient.xrange(k.dead, '-', '+', 'COUNT', max))
      let n = 0
      for (const [entryId, f] of list) {
        const i = f.indexOf('o')
        const seq = i >= 0 && i % 2 === 0 ? f[i + 1] : undefined
        const raw = seq === undefined ? null : await run(async () => await client.hget(k.orders, seq))
        if (seq !== undefined && raw !== null && (JSON.parse(raw) as RawOrder).status === 'QUEUED') {
          await run(async () => await qclient.xadd(k.queue, '*', 'o', seq))
          n++
        }
        await run(async () => await qclient.xdel(k.dead, entryId))
      }
      return n
    },

    async sweep (ref, now, max) {
      const k = productKeys(prefix, ref)
      const r = await run(async () => await cmd.fgoSweep(k.stock, k.orders, k.paydue, now, max)) as [number, number]
      return r[0]
    },

    async takeReleased (ref) {
      const k = productKeys(prefix, ref)
      return Number(await run(async () => await cmd.fgoTakeReleased(k.stock)))
    },

    async releaseToEdge (ref, units, segments) {
      let left = units
      // Two passes: a segment a concurrent give-back emptied meanwhile is skipped in the first.
      for (let pass = 0; pass < 2 && left > 0; pass++) {
        for (let i = 0; i < segments && left > 0; i++) {
          const t = Number(await run(async () => await cmd.fgoEdgeRelease(prefix + segmentKey(ref.campaign, ref.product, i), left)))
          left -= t
        }
      }
      const applied = units - left
      if (applied > 0) await run(async () => await client.publish(prefix + QUOTA_CHANNEL, JSON.stringify({ c: ref.campaign, p: ref.product, released: applied })))
      return applied
    },

    async followQuota (ref) {
      const v = await run(async () => await client.get(prefix + limitKey(ref.campaign, ref.product)))
      const n = v === null ? NaN : Number(v)
      if (!Number.isSafeInteger(n) || n < 0) return 0
      const k = productKeys(prefix, ref)
      const r = await run(async () => await cmd.fgoFollow(k.stock, n)) as [number, number]
      return r[0] === -1 ? null : r[1]
    },

    async close () {
      if (closed) return
      closed = true
      for (const c of separate ? [client, qclient] : [client]) {
        try {
          await c.quit()
        } catch {
          c.disconnect()
        }
      }
    }
  }
}
