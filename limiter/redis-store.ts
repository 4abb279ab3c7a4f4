/**
 * The Redis store (standalone: ioredis `Redis`; cluster: ioredis `Cluster`).
 *
 * - One round trip per operation. Operations with more than one step (GCRA, add-if-within, mark-and-add)
 *   are one Lua script, sent as EVALSHA (and once more as EVAL when the server answers NOSCRIPT, e.g.
 *   after a restart lost its script cache); the single-step ones (INCRBY, GET, SET NX PX, DEL, SADD...)
 *   are the native atomic command. (EVALSHA directly rather than ioredis's defineCommand: its wrapper
 *   costs a subclassed Command, a copied argument list and a chained promise per call.)
 * - Batching, standalone Redis only: the operations of all requests handled in one event-loop turn go out
 *   in one write, and their replies come back in one read. The store corks the connection's socket at
 *   the first command of a turn and uncorks it at the end of the turn (setImmediate), so ioredis writes
 *   each command as usual and Node sends them together (writev). Each is still its own command with its
 *   own reply and deadline; what is shared is the syscalls. This does what ioredis's
 *   `enableAutoPipelining` does, without a Pipeline object per batch: `bench/redis-client.ts` measured
 *   5.8 → 3.1 µs of client CPU per command at 64 in flight and 10.3 → 7.3 µs at 8 (commands alone,
 *   unbatched, cost 21 µs at 2 in flight: one write and one read each). Not on a cluster: its commands
 *   go to several connections (each is sent unbatched, as ioredis does there; auto-pipelining is not
 *   used either, because ioredis retries a pipeline after MOVED/ASK only when every command in it got the
 *   same redirection).
 * - Time: every time-dependent operation takes `now` from the caller (the gateway's clock), never Redis
 *   TIME. Why: the memory store and the pure algorithms take the clock as an argument too, so the three
 *   stores answer identically under the contract suite's fake clock, and a script that calls TIME is
 *   non-deterministic (it must be replicated by effects). The cost: gateways should run NTP; a node whose
 *   clock is d ms ahead can take at most d / interval extra requests from a GCRA bucket, and a clock
 *   going backwards is clamped (the TAT never moves back).
 * - Cluster: every operation touches one key, so it is on one slot by construction; callers put hash tags
 *   `{...}` in keys that must share a slot, or differ on purpose (quota segments).
 * - A slow Redis must not stall requests: a per-operation timer (config timeoutMs, default 50 ms) rejects a
 *   late answer as FG_ERR_STORE_TIMEOUT, the offline queue is off (a command while disconnected fails at
 *   once), an in-flight command is not replayed after a reconnect, and a circuit breaker (breaker.ts) stops
 *   calling a dead store. ioredis reconnects in the background with a capped back-off; when its connection
 *   is ready again the breaker closes at once (automatic recovery).
 * - The timer does not count this process's own event-loop lag against Redis: when it fires it lets the
 *   poll phase run once (setImmediate) before deciding, so an answer that arrived in time but sat unread
 *   in the socket while JavaScript was busy is taken, as nginx handles ready events before expired
 *   timers. (ioredis's commandTimeout fires in the timers phase, before the socket is read: on a loaded
 *   2-core box it turned in-time answers into 503s and into admitted-but-unsold quota units.) The backstop
 *   for a server that stops answering without closing the connection: when calls are timing out and
 *   nothing has been answered for 20× the timeout (≥ 1 s), the connection is dropped and reopened, which
 *   fails every command still queued in ioredis (they were all answered with a timeout already) instead
 *   of letting them pile up. (It replaced ioredis's commandTimeout, a timer set and cleared per command.)
 *   A late answer is handed to `onLate` (addIfWithin) so that the quota
 *   can give back a unit that was applied for a request already answered with an error.
 * - Errors reject with StoreError; every op is timed in flashgate_store_duration_seconds{op} and every
 *   failure counted in flashgate_store_errors_total{op}.
 * - publish/subscribe: a separate subscriber connection (a connection in subscriber mode can run no other
 *   command), opened on the first subscribe and re-subscribed by ioredis after reconnects.
 */
import { Redis, Cluster, type RedisOptions, type ClusterOptions } from 'ioredis'
import { createHash } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { StoreError } from '../conf/errors.js'
import type { StoreConfig } from '../conf/types.js'
import { Breaker } from './breaker.js'
import { NotConfirmedError, ReplicaWait } from './replica-wait.js'
import type { AddOptions, CounterResult, GcraResult, MarkAddResult, Store, StoreMetrics } from './store.js'
import type { RoomEntry, RoomEntryResult, RoomLog, RoomParams, RoomSyncResult } from './waiting-room.js'

/** GCRA in µs — a copy of gcra.ts gcraStep (keep the two in step). KEYS[1]; ARGV now, interval, burst, cost. */
const GCRA_LUA = `
local tat = tonumber(redis.call('GET', KEYS[1]))
local now = tonumber(ARGV[1])
local iv = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local base = now
if tat and tat > now then base = tat end
if cost <= 0 then
  local t = base + cost * iv
  if t < now then t = now end
  if t > now then
    redis.call('SET', KEYS[1], string.format('%.0f', t), 'PX', math.ceil((t - now) / 1000))
  else
    redis.call('DEL', KEYS[1])
  end
  return {1, math.floor((now + burst * iv - t) / iv), 0, t - now}
end
local newTat = base + cost * iv
local limit = now + burst * iv
if newTat > limit then
  local retry = -1
  if cost <= burst then retry = newTat - limit end
  local rem = math.floor((limit - base) / iv)
  if rem < 0 then rem = 0 end
  return {0, rem, retry, base - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', newTat), 'PX', math.ceil((newTat - now) / 1000))
return {1, math.floor((limit - newTat) / iv), 0, newTat - now}
`

/** INCRBY-and-compare: KEYS[1]; ARGV delta, limit[, min] → {ok, value}. */
const ADD_WITHIN_LUA = `
local v = tonumber(redis.call('GET', KEYS[1]) or '0')
local d = tonumber(ARGV[1])
if v + d > tonumber(ARGV[2]) then return {0, v} end
local mn = tonumber(ARGV[3])
if mn and v + d < mn then return {0, v} end
return {1, redis.call('INCRBY', KEYS[1], d)}
`

/**
 * Mark, then INCRBY-and-compare, atomically: KEYS[1] mark, KEYS[2] counter; ARGV mark value, mark TTL ms,
 * delta, limit → {fresh, ok, value}. The mark is looked at first: a repeated attempt is a duplicate even
 * when the counter is full.
 */
const MARK_ADD_LUA = `
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, 0, -1} end
local v = tonumber(redis.call('GET', KEYS[2]) or '0')
local d = tonumber(ARGV[3])
if v + d > tonumber(ARGV[4]) then return {1, 0, v} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, 1, redis.call('INCRBY', KEYS[2], d)}
`

/**
 * The waiting room's sync step — the Lua twin of RoomState.sync (limiter/waiting-room.ts; keep the two in
 * step). KEYS: state hash, pre-queue zset (score → user), later joiners list, users hash (user →
 * "position:joinedAt", position 0 = pre-queue), seen hash (user → last poll ms), admission hash (user →
 * pass expiry | 'u' used | 'x' expired), live-pass zset (expiry → user). ARGV: now, startsAt, expireMs,
 * count, periodMs, burst, cap, passTtl, scanMax, keyTtl, idleBurst, then (op, user, score, at) per entry.
 * → {sealed, pre, total, cursor, outstanding, admitted, expired, then (position, pass) per join}.
 */
const ROOM_SYNC_LUA = `
local now = tonumber(ARGV[1])
local startsAt = tonumber(ARGV[2])
local expireMs = tonumber(ARGV[3])
local count = tonumber(ARGV[4])
local period = tonumber(ARGV[5])
local burst = tonumber(ARGV[6])
local cap = tonumber(ARGV[7])
local passTtl = tonumber(ARGV[8])
local scanMax = tonumber(ARGV[9])
local keyTtl = tonumber(ARGV[10])
local idleBurst = tonumber(ARGV[11])
local nowS = string.format('%.0f', now)
local st = redis.call('HMGET', KEYS[1], 'sealed', 'pre', 'cursor', 'last', 'credit', 'out', 'admitted', 'expired')
local sealed = tonumber(st[1]) or 0
local pre = tonumber(st[2]) or 0
local cursor = tonumber(st[3]) or 0
local last = tonumber(st[4]) or 0
local credit = tonumber(st[5]) or 0
local out = tonumber(st[6]) or 0
local admitted = tonumber(st[7]) or 0
local expired = tonumber(st[8]) or 0
if sealed == 0 and now >= startsAt then
  sealed = 1
  pre = redis.call('ZCARD', KEYS[2])
  last = startsAt
end
if sealed == 1 then
  local gone = redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', nowS)
  for _, u in ipairs(gone) do redis.call('HSET', KEYS[6], u, 'x') end
  if #gone > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', nowS)
    out = out - #gone
  end
end
local post = redis.call('LLEN', KEYS[3])
local function posOf (user)
  local v = redis.call('HGET', KEYS[4], user)
  if not v then return nil end
  local p = tonumber(string.match(v, '^(%d+)'))
  if p == 0 and sealed == 1 then
    local r = redis.call('ZRANK', KEYS[2], user)
    if not r then return nil end
    return r + 1
  end
  return p
end
local function append (user)
  post = redis.call('RPUSH', KEYS[3], user)
  redis.call('HSET', KEYS[4], user, string.format('%.0f', pre + post) .. ':' .. nowS)
  redis.call('HDEL', KEYS[6], user)
end
local n = (#ARGV - 11) / 4
for i = 0, n - 1 do
  local op = ARGV[12 + i * 4]
  local user = ARGV[13 + i * 4]
  if op == 'join' then
    local p = posOf(user)
    if p == nil then
      if sealed == 0 then
        redis.call('ZADD', KEYS[2], ARGV[14 + i * 4], user)
        redis.call('HSET', KEYS[4], user, '0:' .. nowS)
      else
        append(user)
      end
    elseif sealed == 1 and p <= cursor then
      local a = redis.call('HGET', KEYS[6], user)
      if (not a) or a == 'x' then append(user) end
    end
  end
  local at = tonumber(ARGV[15 + i * 4])
  if at > now then at = now end
  local was = tonumber(redis.call('HGET', KEYS[5], user) or '-1')
  if at > was then redis.call('HSET', KEYS[5], user, string.format('%.0f', at)) end
end
if sealed == 1 then
  if now > last then
    credit = credit + (now - last) * count
    last = now
  end
  if credit > burst * period then credit = burst * period end
  local k = math.floor(credit / period)
  if cap >= 0 and cap - out < k then k = cap - out end
  local total = pre + post
  local scanned = 0
  while k > 0 and cursor < total and scanned < scanMax do
    cursor = cursor + 1
    scanned = scanned + 1
    local user
    if cursor <= pre then
      user = redis.call('ZRANGE', KEYS[2], cursor - 1, cursor - 1)[1]
    else
      user = redis.call('LINDEX', KEYS[3], cursor - pre - 1)
    end
    if user then
      local v = redis.call('HGET', KEYS[4], user)
      local sp = v and tonumber(string.match(v, '^(%d+)'))
      if sp ~= nil and ((cursor <= pre and sp == 0) or sp == cursor) then
        local ls = tonumber(redis.call('HGET', KEYS[5], user) or '-1')
        if ls >= now - expireMs then
          local exp = string.format('%.0f', now + passTtl)
          redis.call('HSET', KEYS[6], user, exp)
          redis.call('ZADD', KEYS[7], exp, user)
          out = out + 1
          admitted = admitted + 1
          credit = credit - period
          k = k - 1
        else
          expired = expired + 1
        end
      end
    end
  end
  if cursor >= total and credit > idleBurst * period then credit = idleBurst * period end
end
local f = function (x) return string.format('%.0f', x) end
redis.call('HSET', KEYS[1], 'sealed', sealed, 'pre', f(pre), 'cursor', f(cursor), 'last', f(last), 'credit', f(credit), 'out', f(out), 'admitted', f(admitted), 'expired', f(expired))
for i = 1, 7 do redis.call('PEXPIRE', KEYS[i], keyTtl) end
local viewPre = pre
if sealed == 0 then viewPre = redis.call('ZCARD', KEYS[2]) end
local res = {sealed, viewPre, pre + post, cursor, out, admitted, expired}
for i = 0, n - 1 do
  if ARGV[12 + i * 4] == 'join' then
    local user = ARGV[13 + i * 4]
    local a = redis.call('HGET', KEYS[6], user)
    local pass = 0
    if a == 'u' then pass = -1 elseif a and a ~= 'x' then pass = tonumber(a) end
    res[#res + 1] = posOf(user) or 0
    res[#res + 1] = pass
  end
end
return res
`

/** Use or give back a waiting-room pass (RoomState.pass). KEYS state, admission, live; ARGV user, now, use, expiresAt → 1/0. */
const ROOM_PASS_LUA = `
local a = redis.call('HGET', KEYS[2], ARGV[1])
local now = tonumber(ARGV[2])
if ARGV[3] == '1' then
  local e = tonumber(a)
  if a == 'u' or a == 'x' or not e or e <= now then return 0 end
  redis.call('HSET', KEYS[2], ARGV[1], 'u')
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'out', -1)
  return 1
end
if a ~= 'u' then return 0 end
if tonumber(ARGV[4]) > now then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'out', 1)
else
  redis.call('HSET', KEYS[2], ARGV[1], 'x')
end
return 1
`

/** The join log (RoomState.log). KEYS state, pre-queue, later joiners, users → {state..., pre flat, post, users flat}. */
const ROOM_LOG_LUA = `
local st = redis.call('HMGET', KEYS[1], 'sealed', 'pre', 'cursor', 'out', 'admitted', 'expired')
local post = redis.call('LRANGE', KEYS[3], 0, -1)
local sealed = tonumber(st[1]) or 0
local pre = tonumber(st[2]) or 0
if sealed == 0 then pre = redis.call('ZCARD', KEYS[2]) end
return {{sealed, pre, pre + #post, tonumber(st[3]) or 0, tonumber(st[4]) or 0, tonumber(st[5]) or 0, tonumber(st[6]) or 0},
  redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES'), post, redis.call('HGETALL', KEYS[4])}
`

/** A Lua script: its text, SHA-1 (for EVALSHA) and number of keys. */
interface Lua { readonly lua: string, readonly sha: string, readonly keys: number }
const lua = (text: string, keys: number): Lua => ({ lua: text, sha: createHash('sha1').update(text).digest('hex'), keys })
const GCRA = lua(GCRA_LUA, 1)
const ADD_WITHIN = lua(ADD_WITHIN_LUA, 1)
const MARK_ADD = lua(MARK_ADD_LUA, 2)
const ROOM_SYNC = lua(ROOM_SYNC_LUA, 7)
const ROOM_PASS = lua(ROOM_PASS_LUA, 3)
const ROOM_LOG = lua(ROOM_LOG_LUA, 4)
const SCRIPTS: readonly Lua[] = [GCRA, ADD_WITHIN, MARK_ADD, ROOM_SYNC, ROOM_PASS, ROOM_LOG]
type Arg = string | number

const isNoScript = (err: unknown): boolean => err instanceof Error && err.message.startsWith('NOSCRIPT')

/** Answer mappers (module-level: no closure per call). */
const same = <T>(r: T): T => r
const nothing = (): void => {}
const isOk = (r: unknown): boolean => r === 'OK'
const isOne = (r: number): boolean => r === 1
const positive = (r: number): boolean => r > 0
const toCounter = ([ok, value]: [number, number]): CounterResult => ({ ok: ok === 1, value })
const toMarkAdd = ([fresh, ok, value]: [number, number, number]): MarkAddResult => ({ fresh: fresh === 1, ok: ok === 1, value })
const toRoomSync = (r: number[]): RoomSyncResult => {
  const results: RoomEntryResult[] = []
  for (let i = 7; i + 1 < r.length; i += 2) results.push({ position: r[i] as number, pass: r[i + 1] as number })
  return { sealed: r[0] === 1, pre: r[1] as number, total: r[2] as number, cursor: r[3] as number, outstanding: r[4] as number, admitted: r[5] as number, expired: r[6] as number, results }
}
const toRoomLog = ([st, pre, post, users]: [number[], string[], string[], string[]]): RoomLog => {
  const u = new Map<string, [number, number]>()
  for (let i = 0; i + 1 < users.length; i += 2) {
    const [p, at] = (users[i + 1] as string).split(':')
    u.set(users[i] as string, [Number(p), Number(at)])
  }
  const preQueue: Array<{ user: string, score: number, joinedAt: number }> = []
  for (let i = 0; i + 1 < pre.length; i += 2) preQueue.push({ user: pre[i] as string, score: Number(pre[i + 1]), joinedAt: u.get(pre[i] as string)?.[1] ?? 0 })
  const preCount = st[1] as number
  const after: Array<{ user: string, position: number, joinedAt: number }> = []
  post.forEach((user, i) => {
    const p = preCount + i + 1
    const x = u.get(user)
    if (x !== undefined && x[0] === p) after.push({ user, position: p, joinedAt: x[1] })
  })
  return { sealed: st[0] === 1, pre: preCount, total: st[2] as number, cursor: st[3] as number, outstanding: st[4] as number, admitted: st[5] as number, expired: st[6] as number, preQueue, after }
}
const toGcra = ([ok, remaining, retry, reset]: [number, number, number, number]): GcraResult =>
  ({ ok: ok === 1, remaining, retryAfterMs: retry < 0 ? Infinity : Math.ceil(retry / 1000), resetAfterMs: Math.ceil(reset / 1000) })

/** The marker a call's deadline rejects with (turned into FG_ERR_STORE_TIMEOUT by `failed`). */
const TIMED_OUT = Symbol('timed out')

/** A call waiting for its answer. */
interface Pending {
  done: boolean
  /** Its place in the Deadlines ring (a sequence number). */
  seq: number
  readonly expire: () => void
}

/**
 * The per-operation timeout, one timer for all calls. Every call of a store has the same timeout, so
 * deadlines fall in the order calls were made: a ring (FIFO) whose head is the next to expire, and a
 * single timer armed for it (a timer per call cost a setTimeout and a clearTimeout on every request).
 * When the timer fires, the decision waits one more poll phase (setImmediate), so that an answer that
 * arrived in time but sat unread in the socket while JavaScript was busy is taken (as nginx handles ready
 * events before expired timers).
 *
 * An answered call leaves the ring at once (`settled` empties its slot): a slot holding the call until
 * its deadline kept every call's closures and arguments alive for the whole timeout (1 s in the bench),
 * long enough to be promoted to the old generation — measured as scavenges of 12 ms instead of 8 on the
 * funnel. Deadlines are in a Float64Array, so a slot is two writes and no allocation.
 */
class Deadlines {
  private at = new Float64Array(1024)
  private calls: Array<Pending | undefined> = new Array<Pending | undefined>(1024)
  private mask = 1023
  private head = 0
  private tail = 0
  private timer: NodeJS.Timeout | null = null

  constructor (private readonly ms: number) {}

  add (c: Pending, deadline: number): void {
    if (this.tail - this.head > this.mask) this.grow()
    const i = this.tail & this.mask
    this.at[i] = deadline
    this.calls[i] = c
    c.seq = this.tail++
    if (this.timer === null) this.timer = setTimeout(this.fire, this.ms)
  }

  /** The call was answered (or failed): its slot lets go of it. */
  settled (c: Pending): void {
    const i = c.seq & this.mask
    if (this.calls[i] === c) this.calls[i] = undefined
  }

  private grow (): void {
    const size = (this.mask + 1) * 2
    const at = new Float64Array(size)
    const calls = new Array<Pending | undefined>(size)
    for (let s = this.head; s < this.tail; s++) {
      at[s & (size - 1)] = this.at[s & this.mask] as number
      calls[s & (size - 1)] = this.calls[s & this.mask]
    }
    this.at = at
    this.calls = calls
    this.mask = size - 1
  }

  private readonly fire = (): void => { setImmediate(this.sweep) }

  private readonly sweep = (): void => {
    this.timer = null
    const now = performance.now()
    while (this.head < this.tail) {
      const i = this.head & this.mask
      const c = this.calls[i]
      if (c !== undefined) {
        if ((this.at[i] as number) > now) break
        this.calls[i] = undefined
        if (!c.done) {
          c.done = true
          c.expire()
        }
      }
      this.head++
    }
    if (this.head === this.tail) return
    this.timer = setTimeout(this.fire, Math.max(1, Math.ceil((this.at[this.head & this.mask] as number) - now)))
  }
}

type Client = Redis | Cluster

type Op = 'gcra' | 'add_if_within' | 'mark_and_add' | 'add' | 'get' | 'set' | 'set_if_absent' | 'del' | 'set_add' | 'set_remove' | 'set_has' | 'publish' | 'room_sync' | 'room_pass' | 'room_log' | 'wait'
const OPS: readonly Op[] = ['gcra', 'add_if_within', 'mark_and_add', 'add', 'get', 'set', 'set_if_absent', 'del', 'set_add', 'set_remove', 'set_has', 'publish', 'room_sync', 'room_pass', 'room_log', 'wait']

/** EVALSHA, once more as EVAL when the server lost its script cache. */
const evalOn = (c: Redis, s: Lua, args: Arg[]): Promise<unknown> =>
  c.evalsha(s.sha, s.keys, ...args).catch((err: unknown) => isNoScript(err) ? c.eval(s.lua, s.keys, ...args) : Promise.reject(err))
const markApplied = (r: unknown): boolean => Array.isArray(r) && r[0] === 1 && r[1] === 1

export interface RedisStoreDeps {
  readonly metrics: StoreMetrics
  /** Used by the breaker's back-off only. */
  readonly clock: () => number
  readonly log?: ((level: 'debug' | 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void) | undefined
}

function hostPort (url: string): { host: string, port: number, password?: string, username?: string, db?: number } {
  const u = new URL(url)
  const out: { host: string, port: number, password?: string, username?: string, db?: number } = { host: u.hostname.replace(/^\[|\]$/g, ''), port: u.port === '' ? 6379 : Number(u.port) }
  if (u.password !== '') out.password = decodeURIComponent(u.password)
  if (u.username !== '') out.username = decodeURIComponent(u.username)
  const db = u.pathname.replace(/^\//, '')
  if (db !== '' && /^\d+$/.test(db)) out.db = Number(db)
  return out
}

export class RedisStore implements Store {
  readonly kind: 'redis' | 'redis-cluster'
  private readonly client: Client
  private sub: Redis | Cluster | null = null
  private readonly handlers = new Map<string, Set<(m: string) => void>>()
  private readonly breaker: Breaker
  private readonly prefix: string
  private readonly timeoutMs: number
  private readonly errors: Record<Op, { inc(): void }>
  private readonly durations: Record<Op, { observe(v: number): void }>
  private readonly log: NonNullable<RedisStoreDeps['log']>
  private closed = false
  private warming: Promise<void> | null = null
  /** The first warm-up (see warm()) has settled: until then the store is not reported healthy. */
  private warmed = false
  private readonly deadlines: Deadlines
  /** No answer at all for this long while calls time out: the connection is reopened (see the header). */
  private readonly backstopMs: number
  private lastAnswer = 0
  private silentSince = 0
  /** Standalone Redis: commands of one event-loop turn are written together (see the header). */
  private batching = false
  private corked: NodeJS.WritableStream & { uncork(): void } | null = null
  private readonly uncork = (): void => {
    const s = this.corked
    this.corked = null
    s?.uncork()
  }
  private wasDown = false
  /** store.wait: replicas and timeout of the WAIT after each admission (null: off). */
  private readonly waitFor: { readonly replicas: number, readonly timeoutMs: number } | null
  /** Standalone/Sentinel with store.wait: the admissions' own connection and its WAIT batches (see replica-wait.ts). */
  private admitConn: Redis | null = null
  private waiter: ReplicaWait | null = null

  constructor (cfg: StoreConfig, deps: RedisStoreDeps) {
    this.kind = cfg.kind === 'redis-cluster' ? 'redis-cluster' : 'redis'
    this.prefix = cfg.keyPrefix
    this.timeoutMs = cfg.timeoutMs
    this.deadlines = new Deadlines(cfg.timeoutMs)
    this.log = deps.log ?? (() => {})
    const m = deps.metrics
    this.errors = Object.fromEntries(OPS.map((op) => [op, m.storeOpErrors(op)])) as unknown as Record<Op, { inc(): void }>
    this.durations = Object.fromEntries(OPS.map((op) => [op, m.storeOpDuration(op)])) as unknown as Record<Op, { observe(v: number): void }>
    this.breaker = new Breaker(cfg.breakerFailures, cfg.breakerBackoffMs, deps.clock, (open) => {
      m.storeBreakerChanged(open)
      this.log(open ? 'warn' : 'info', open ? 'store breaker open' : 'store breaker closed', { store: this.kind })
    })
    this.backstopMs = Math.max(1000, cfg.timeoutMs * 20)
    const common: RedisOptions = {
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      connectTimeout: Math.max(500, cfg.timeoutMs * 10),
      retryStrategy: (times: number) => Math.min(50 * times, 500)
    }
    if (this.kind === 'redis-cluster') {
      if (cfg.nodes.length === 0) throw new StoreError('FG_ERR_STORE_UNAVAILABLE', 'store.nodes is empty for redis-cluster')
      const { retryStrategy: _r, enableOfflineQueue: _e, ...redisOptions } = common
      const opts: ClusterOptions = {
        enableOfflineQueue: false,
        enableReadyCheck: true,
        scaleReads: 'master',
        maxRedirections: 4,
        retryDelayOnFailover: 50,
        retryDelayOnClusterDown: 50,
        clusterRetryStrategy: (times: number) => Math.min(50 * times, 500),
        slotsRefreshTimeout: 1000,
        redisOptions
      }
      this.client = new Cluster(cfg.nodes.map(hostPort), opts) as Client
    } else if (cfg.sentinels !== undefined && cfg.sentinels.length > 0) {
      // Behind Redis Sentinel: ioredis asks the sentinels where the master is, and again after every
      // disconnect (a failover), and hears +switch-master at once (failoverDetector). A demoted primary
      // answers READONLY: reconnect, which asks the sentinels again.
      this.client = new Redis({
        ...common,
        sentinels: cfg.sentinels.map((h) => ({ host: h.host, port: h.port })),
        name: cfg.sentinelName ?? 'mymaster',
        role: 'master',
        failoverDetector: true,
        sentinelRetryStrategy: (times: number) => Math.min(100 * times, 1000),
        sentinelCommandTimeout: Math.max(200, cfg.timeoutMs * 4),
        reconnectOnError: (err: Error) => err.message.startsWith('READONLY') ? 1 : false
      }) as Client
      this.batching = true
    } else {
      if (cfg.url === null) throw new StoreError('FG_ERR_STORE_UNAVAILABLE', 'store.url is missing for redis')
      this.client = new Redis(cfg.url, common) as Client
      this.batching = true
    }
    this.waitFor = cfg.wait ?? null
    if (this.waitFor !== null && !(this.client instanceof Cluster)) this.openAdmission()
    this.client.on('ready', () => {
      if (this.wasDown) this.log('info', 'store connection ready', { store: this.kind })
      this.wasDown = false
      this.breaker.reset()
      // (Re)load the scripts: a restarted server lost its script cache.
      this.warming = null
      void this.warm(Math.max(1000, cfg.timeoutMs * 20)).then(() => { this.warmed = true })
    })
    this.client.on('error', (err: Error) => {
      if (!this.wasDown) this.log('warn', 'store connection error', { store: this.kind, error: err.message })
      this.wasDown = true
    })
    this.client.on('end', () => { this.wasDown = true })
  }

  get healthy (): boolean {
    return !this.closed && this.warmed && this.client.status === 'ready' && this.breaker.state === 'closed'
  }

  /**
   * Resolves once connected and warmed (or rejects after `timeoutMs`). `healthy` (hence /readyz) stays
   * false until the first warm-up has settled.
   */
  async ready (timeoutMs = 5000, opts: { readonly untilError?: boolean } = {}): Promise<void> {
    const deadline = Date.now() + timeoutMs
    await this.connected(timeoutMs, opts.untilError === true)
    if (this.admitConn !== null && this.admitConn.status !== 'ready') {
      const c = this.admitConn
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => { c.off('ready', onReady); reject(new StoreError('FG_ERR_STORE_UNAVAILABLE', `store admission connection not ready after ${timeoutMs}ms`)) }, Math.max(0, deadline - Date.now()))
        const onReady = (): void => { clearTimeout(timer); resolve() }
        c.once('ready', onReady)
      })
    }
    await this.warm(Math.max(0, deadline - Date.now()))
    this.warmed = true
  }

  /**
   * Once per store: connect to every master and load the scripts there (SCRIPT LOAD), bounded by
   * `timeoutMs` and best effort (a failure only means the first calls pay for it). Without it the first
   * burst of a sale paid for the cluster's per-master connections and the script cache: 250 concurrent
   * admissions right after 'ready' took ~80 ms (p50) on a 2-core box and half of them timed out at 50 ms;
   * warmed, the same burst took ~15 ms.
   */
  private warm (timeoutMs: number): Promise<void> {
    if (this.warming !== null) return this.warming
    const c = this.client
    const targets: Array<Redis | Cluster> = c instanceof Cluster ? c.nodes('master') : [c]
    const load = Promise.all(targets.map(async (n) => {
      for (const s of SCRIPTS) await n.script('LOAD', s.lua)
    })).then(() => {}, (err: unknown) => {
      this.log('warn', 'store warm-up failed (scripts load on first use)', { store: this.kind, error: err instanceof Error ? err.message : String(err) })
    })
    this.warming = Promise.race([load, new Promise<void>((resolve) => setTimeout(resolve, timeoutMs).unref())])
    return this.warming
  }

  private connected (timeoutMs: number, untilError: boolean): Promise<void> {
    if (this.client.status === 'ready') return Promise.resolve()
    return new Promise((resolve, reject) => {
      const done = (err?: Error): void => {
        clearTimeout(timer)
        this.client.removeListener('ready', onReady)
        this.client.removeListener('error', onError)
        if (err) reject(err); else resolve()
      }
      const onReady = (): void => { done() }
      const onError = (err: Error): void => {
        if (untilError) done(new StoreError('FG_ERR_STORE_UNAVAILABLE', `store not ready: ${err.message}`, { cause: err }))
      }
      const timer = setTimeout(() => done(new StoreError('FG_ERR_STORE_UNAVAILABLE', `store not ready after ${timeoutMs}ms`)), timeoutMs)
      this.client.on('ready', onReady)
      this.client.on('error', onError)
    })
  }

  /**
   * Issue one operation: the breaker may refuse it (no I/O); otherwise `start()` sends it, and its answer
   * is mapped by `map`, or the call fails with FG_ERR_STORE_TIMEOUT once its deadline has passed (see
   * Deadlines: decided after one more poll phase, so an answer already in the socket wins). An answer
   * arriving after the timeout goes to `onLate` (once). Plain promise chaining — one promise of ours
   * per call, no async wrappers — because this is on every store-backed request's path.
   */
  private run<R, T> (op: Op, start: () => Promise<R>, map: (r: R) => T, onLate?: (v: T) => void, script?: Lua, args?: Arg[]): Promise<T> {
    if (this.closed) return Promise.reject(new StoreError('FG_ERR_STORE_UNAVAILABLE', 'store closed'))
    if (!this.breaker.allow()) {
      this.errors[op].inc()
      return Promise.reject(new StoreError('FG_ERR_STORE_BREAKER_OPEN', 'store circuit breaker open'))
    }
    const t0 = performance.now()
    if (this.batching && this.corked === null) this.cork()
    let sent: Promise<R>
    try {
      sent = start()
    } catch (err) {
      return Promise.reject(this.failed(op, t0, err))
    }
    return new Promise<T>((resolve, reject) => {
      const call: Pending = {
        done: false,
        seq: 0,
        expire: () => { reject(this.failed(op, t0, TIMED_OUT)) }
      }
      this.deadlines.add(call, t0 + this.timeoutMs)
      let retried = false
      const answered = (r: R): void => {
        let v: T
        try {
          v = map(r)
        } catch (err) {
          if (call.done) return
          call.done = true
          this.deadlines.settled(call)
          reject(this.failed(op, t0, err))
          return
        }
        const t1 = performance.now()
        this.lastAnswer = t1
        if (call.done) {
          if (onLate !== undefined) { try { onLate(v) } catch {} }
          return
        }
        call.done = true
        this.deadlines.settled(call)
        this.durations[op].observe((t1 - t0) / 1000)
        this.breaker.success()
        resolve(v)
      }
      const refused = (err: unknown): void => {
        if ((err as { name?: string }).name === 'ReplyError') this.lastAnswer = performance.now()
        if (call.done) return
        if (script !== undefined && !retried && isNoScript(err)) {
          // The server lost its script cache (restarted, SCRIPT FLUSH): once more as EVAL, which loads it.
          retried = true
          this.client.eval(script.lua, script.keys, ...(args as Arg[])).then(answered as (r: unknown) => void, refused)
          return
        }
        call.done = true
        this.deadlines.settled(call)
        reject(this.failed(op, t0, err))
      }
      sent.then(answered, refused)
    })
  }

  /** A script call (EVALSHA); see run() for the NOSCRIPT fallback. */
  private script<T> (op: Op, s: Lua, args: Arg[], map: (r: never) => T, onLate?: (v: T) => void): Promise<T> {
    return this.run(op, () => this.client.evalsha(s.sha, s.keys, ...args), map as (r: unknown) => T, onLate, s, args)
  }

  /** Hold this turn's writes on the connection until the turn ends (then one writev for all of them). */
  private cork (): void {
    const stream = (this.client as Redis).stream as (Redis['stream'] & { cork?: () => void, uncork?: () => void, writable?: boolean }) | undefined
    if (stream === undefined || stream.writable !== true || typeof stream.cork !== 'function') return
    stream.cork()
    this.corked = stream as unknown as NodeJS.WritableStream & { uncork(): void }
    setImmediate(this.uncork)
  }

  /** Account a failed call (duration, error count, breaker) and say what it was as a StoreError. */
  private failed (op: Op, t0: number, err: unknown): StoreError {
    const t1 = performance.now()
    this.durations[op].observe((t1 - t0) / 1000)
    this.errors[op].inc()
    if (err === TIMED_OUT) {
      this.breaker.failure()
      // The first timeout with no answer since starts a silence; a timeout more than backstopMs into it
      // (calls kept timing out, nothing came back) reopens the connection.
      if (this.silentSince === 0 || this.lastAnswer > this.silentSince) {
        this.silentSince = t1
      } else if (t1 - this.silentSince > this.backstopMs && !this.closed) {
        this.log('warn', 'store not answering: reconnecting', { store: this.kind, silentMs: Math.round(t1 - this.silentSince) })
        this.silentSince = 0
        this.client.disconnect(true)
      }
      return new StoreError('FG_ERR_STORE_TIMEOUT', `store ${op} timed out after ${this.timeoutMs}ms`)
    }
    const msg = err instanceof Error ? err.message : String(err)
    // A script or type error is a bug or bad data, not an outage: it does not trip the breaker. A MOVED/ASK
    // left over after ioredis's own redirections (slots moving) is transient, like CLUSTERDOWN or TRYAGAIN.
    if (err instanceof Error && err.name === 'ReplyError' && !/^(CLUSTERDOWN|LOADING|TRYAGAIN|MASTERDOWN|READONLY|BUSY|MOVED|ASK)/.test(msg)) {
      return new StoreError('FG_ERR_STORE_SCRIPT', `store ${op}: ${msg}`, { cause: err })
    }
    this.breaker.failure()
    if (/timed out/i.test(msg)) return new StoreError('FG_ERR_STORE_TIMEOUT', `store ${op} timed out`, { cause: err })
    return new StoreError('FG_ERR_STORE_UNAVAILABLE', `store ${op}: ${msg}`, { cause: err })
  }

  gcra (key: string, now: number, emissionIntervalMs: number, burst: number, cost: number): Promise<GcraResult> {
    const iv = Math.max(1, Math.round(emissionIntervalMs * 1000))
    return this.script('gcra', GCRA, [this.prefix + key, Math.round(now * 1000), iv, burst, cost], toGcra)
  }

  addIfWithin (key: string, delta: number, limit: number, opts?: AddOptions): Promise<CounterResult> {
    const k = this.prefix + key
    const min = opts?.min
    if (this.waitFor !== null && delta > 0) {
      const args: Arg[] = min === undefined ? [k, delta, limit] : [k, delta, limit, min]
      return this.run('add_if_within', () => this.durable(ADD_WITHIN, args, null), toCounter as (r: unknown) => CounterResult, opts?.onLate)
    }
    return this.script('add_if_within', ADD_WITHIN, min === undefined ? [k, delta, limit] : [k, delta, limit, min], toCounter, opts?.onLate)
  }

  markAndAdd (markKey: string, mark: string, ttlMs: number, key: string, delta: number, limit: number, opts?: { readonly onLate?: (r: MarkAddResult) => void }): Promise<MarkAddResult> {
    const mk = this.prefix + markKey
    const k = this.prefix + key
    const ttl = Math.max(1, Math.ceil(ttlMs))
    if (this.waitFor !== null && delta > 0) {
      return this.run('mark_and_add', () => this.durable(MARK_ADD, [mk, k, mark, ttl, delta, limit], mk), toMarkAdd as (r: unknown) => MarkAddResult, opts?.onLate)
    }
    return this.script('mark_and_add', MARK_ADD, [mk, k, mark, ttl, delta, limit], toMarkAdd, opts?.onLate)
  }

  /**
   * (Re)open the admission connection of store.wait and its WAIT batches. Reopened when found ended: a
   * duplicate of a Sentinel client was seen to end (status 'end', "Connection is closed") after a failover
   * under load instead of reconnecting, while the main connection reconnected.
   */
  private openAdmission (): void {
    const main = this.client as Redis
    const conn = main.duplicate()
    conn.on('error', () => {}) // reported by the main connection's handler
    this.admitConn = conn
    const waitErrors = this.errors.wait
    const waitDuration = this.durations.wait
    this.waiter = new ReplicaWait(conn, {
      ...(this.waitFor as { readonly replicas: number, readonly timeoutMs: number }),
      observe: (acked, ms) => {
        waitDuration.observe(ms / 1000)
        if (acked < (this.waitFor?.replicas ?? 0)) waitErrors.inc()
      }
    })
  }

  /**
   * An admission under store.wait (see limiter/replica-wait.ts): the script, then WAIT; answers the
   * script's reply only once `replicas` replicas have it. Standalone/Sentinel: on the admission
   * connection, one WAIT per event-loop turn for all of them. Cluster: the script and a WAIT in one
   * pipeline, which ioredis sends to the node of the script's keys. Not confirmed: rejects with
   * NotConfirmedError (FG_ERR_STORE_UNAVAILABLE), deleting the dedupe mark `unmark` if the script set it;
   * the unit itself is never given back (it might be given back on a replica that never had it).
   */
  private durable (s: Lua, args: Arg[], unmark: string | null): Promise<unknown> {
    const w = this.waitFor as { readonly replicas: number, readonly timeoutMs: number }
    const dropMark = (r: unknown): void => {
      if (unmark !== null && markApplied(r)) this.client.del(unmark).catch(() => {})
    }
    if (this.waiter !== null && this.admitConn !== null) {
      if (this.admitConn.status === 'end' && !this.closed) {
        this.log('warn', 'store admission connection ended: reopening', { store: this.kind })
        this.admitConn.disconnect()
        this.openAdmission()
      }
      const waiter = this.waiter as ReplicaWait
      return evalOn(this.admitConn as Redis, s, args).then((r) => waiter.confirm().then(() => r, (err: unknown) => {
        dropMark(r)
        throw err
      }))
    }
    const cluster = this.client as Cluster
    const send = (sha: boolean): Promise<Array<[Error | null, unknown]>> => {
      const p = cluster.pipeline()
      if (sha) p.evalsha(s.sha, s.keys, ...args)
      else p.eval(s.lua, s.keys, ...args)
      p.wait(w.replicas, w.timeoutMs)
      return p.exec() as Promise<Array<[Error | null, unknown]>>
    }
    const t0 = performance.now()
    const once = (): Promise<Array<[Error | null, unknown]>> => send(true).then((res) => isNoScript(res[0]?.[0]) ? send(false) : res)
    // ioredis follows a MOVED in a pipeline only when every command got the same one; WAIT has no key, so
    // after a failover (the slot's master changed) the script's MOVED came back as an answer and every
    // admission of that slot failed for good. Refresh the slot map and send the pair again, once.
    const moved = (e: Error | null | undefined): boolean => e instanceof Error && /^(MOVED|ASK) /.test(e.message)
    return once().then((res) => !moved(res[0]?.[0])
      ? res
      : new Promise<void>((resolve) => { cluster.refreshSlotsCache(() => { resolve() }) }).then(once)
    ).then((res) => {
      const [e1, r] = res[0] ?? [new Error('empty pipeline answer'), null]
      if (e1 !== null) throw e1
      const [e2, acked] = res[1] ?? [new Error('no WAIT answer'), null]
      this.durations.wait.observe((performance.now() - t0) / 1000)
      if (e2 !== null || typeof acked !== 'number' || acked < w.replicas) {
        this.errors.wait.inc()
        dropMark(r)
        throw e2 ?? new NotConfirmedError(w.replicas, typeof acked === 'number' ? acked : 0, w.timeoutMs)
      }
      return r
    })
  }

  /** The room's keys: one hash tag per campaign, so a cluster keeps them on one slot. */
  private roomKeys (room: string, names: readonly string[]): string[] {
    return names.map((n) => `${this.prefix}wr:{${room}}:${n}`)
  }

  roomSync (room: string, p: RoomParams, entries: readonly RoomEntry[]): Promise<RoomSyncResult> {
    const args: Arg[] = this.roomKeys(room, ['s', 'pre', 'post', 'u', 'seen', 'adm', 'live'])
    args.push(p.now, p.startsAt, p.expireMs, p.rate.count, p.rate.periodMs, p.burst, p.cap, p.passTtlMs, p.scanMax, Math.max(1, Math.ceil(p.keyTtlMs)), p.idleBurst)
    for (const e of entries) args.push(e.op, e.user, e.score, e.at)
    return this.script('room_sync', ROOM_SYNC, args, toRoomSync)
  }

  roomPass (room: string, user: string, now: number, use: boolean, expiresAt: number): Promise<boolean> {
    const args: Arg[] = [...this.roomKeys(room, ['s', 'adm', 'live']), user, now, use ? 1 : 0, expiresAt]
    return this.script('room_pass', ROOM_PASS, args, isOne)
  }

  roomLog (room: string): Promise<RoomLog> {
    return this.script('room_log', ROOM_LOG, this.roomKeys(room, ['s', 'pre', 'post', 'u']), toRoomLog)
  }

  add (key: string, delta: number): Promise<number> {
    return this.run('add', () => this.client.incrby(this.prefix + key, delta), same)
  }

  get (key: string): Promise<string | null> {
    return this.run('get', () => this.client.get(this.prefix + key), same)
  }

  set (key: string, value: string, ttlMs?: number): Promise<void> {
    return this.run('set', () => ttlMs !== undefined && ttlMs > 0 ? this.client.set(this.prefix + key, value, 'PX', Math.ceil(ttlMs)) : this.client.set(this.prefix + key, value), nothing)
  }

  setIfAbsent (key: string, value: string, ttlMs: number): Promise<boolean> {
    return this.run('set_if_absent', () => this.client.set(this.prefix + key, value, 'PX', Math.max(1, Math.ceil(ttlMs)), 'NX'), isOk)
  }

  del (key: string): Promise<boolean> {
    return this.run('del', () => this.client.del(this.prefix + key), positive)
  }

  setAdd (key: string, members: readonly string[]): Promise<number> {
    if (members.length === 0) return Promise.resolve(0)
    return this.run('set_add', () => this.client.sadd(this.prefix + key, ...members), same)
  }

  setRemove (key: string, members: readonly string[]): Promise<number> {
    if (members.length === 0) return Promise.resolve(0)
    return this.run('set_remove', () => this.client.srem(this.prefix + key, ...members), same)
  }

  setHas (key: string, member: string): Promise<boolean> {
    return this.run('set_has', () => this.client.sismember(this.prefix + key, member), isOne)
  }

  publish (channel: string, message: string): Promise<void> {
    return this.run('publish', () => this.client.publish(this.prefix + channel, message), nothing)
  }

  subscribe (channel: string, onMessage: (message: string) => void): () => void {
    const full = this.prefix + channel
    let set = this.handlers.get(full)
    if (set === undefined) {
      set = new Set()
      this.handlers.set(full, set)
      const sub = this.subscriber()
      sub.subscribe(full).catch((err: unknown) => {
        this.log('warn', 'store subscribe failed (ioredis re-subscribes on reconnect)', { channel, error: err instanceof Error ? err.message : String(err) })
      })
    }
    const fn = (m: string): void => { onMessage(m) }
    set.add(fn)
    return () => {
      const s = this.handlers.get(full)
      if (s === undefined) return
      s.delete(fn)
      if (s.size === 0) {
        this.handlers.delete(full)
        this.sub?.unsubscribe(full).catch(() => {})
      }
    }
  }

  private subscriber (): Redis | Cluster {
    if (this.sub !== null) return this.sub
    // Its own connection, with the offline queue on: SUBSCRIBE before it is connected is queued.
    const sub = this.client instanceof Cluster
      ? this.client.duplicate(undefined, { enableOfflineQueue: true })
      : this.client.duplicate({ enableOfflineQueue: true })
    sub.on('error', () => {})
    sub.on('message', (channel: string, message: string) => {
      const s = this.handlers.get(channel)
      if (s === undefined) return
      for (const fn of [...s]) {
        try { fn(message) } catch (err) { this.log('error', 'store subscriber threw', { channel, error: err instanceof Error ? err.message : String(err) }) }
      }
    })
    this.sub = sub
    return sub
  }

  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    const quit = async (c: Redis | Cluster | null): Promise<void> => {
      if (c === null) return
      try {
        await Promise.race([c.quit(), new Promise((resolve) => setTimeout(resolve, 500).unref())])
      } catch {}
      c.disconnect()
    }
    await Promise.all([quit(this.client), quit(this.sub), quit(this.admitConn)])
    this.handlers.clear()
  }
}
