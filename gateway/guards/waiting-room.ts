/**
 * The waiting room: the `waiting_room` guard, the Room it and the queue endpoints share
 * (`GET /_flashgate/queue`, `/queue/seed`: gateway/edge/queue.ts), and the join-log export behind
 * `GET /admin/queue/:campaign/joins`.
 *
 * Per node and campaign, one Room (kept across reloads in deps.kept) holds:
 * - the room's HMAC key and shuffle seed, each 32 random bytes made by the first node that needs them and
 *   kept in the store (`wr:{C}:key`, `wr:{C}:seed`; setIfAbsent, then read), so every node signs and
 *   shuffles alike;
 * - the room's state as of the last sync (cursor, positions handed out, passes outstanding) and the
 *   remaining stock, refreshed every SYNC_MS while anyone polls this node;
 * - the pending batch: joins and "still here" marks collected from polls since the last sync, sent in
 *   ONE store call per sync (Store.roomSync). So a status poll makes no store call of its own: it is
 *   answered from the user's signed ticket (their position) and the cached cursor, and leaves a mark in
 *   the batch. Only a poll that needs the store's word (a first join, the first poll after the draw, a
 *   user whose position the cursor has reached) waits for the next sync (≤ SYNC_MS).
 *
 * Tickets and passes are HMAC-SHA256 (the room key) over the campaign, the user and the position or
 * expiry, checked in constant time (antibot/util.ts macMatches): a ticket or pass replayed by another
 * identity fails the check. A pass buys once: the guard marks it used in the store (Store.roomPass)
 * when the buy passes, and gives it back when a later step rejects the buy or the upstream fails.
 */
import { Slot } from '../pipeline/state.js'
import { randomBytes } from 'node:crypto'
import type { CampaignConfig, WaitingRoomConfig, WaitingRoomGuardConfig } from '../../conf/types.js'
import { GaugeCell } from '../metrics.js'
import { rejection } from '../pipeline/reject.js'
import type { GuardDeps, GuardFactory, Outcome, RequestContext, Verdict } from '../pipeline/types.js'
import { StoreError } from '../../conf/errors.js'
import type { Store } from '../../limiter/store.js'
import { segmentKey, limitKey } from '../../conf/store-keys.js'
import { PASS_USED, commitmentOf, defaultBurst, etaMs, shuffleScore, stockCap, type RoomEntry, type RoomEntryResult, type RoomParams, type RoomView } from '../../limiter/waiting-room.js'
import { onSettle } from '../pipeline/settle.js'
import { guardId, onStoreError } from './common.js'
import { cookieOf, headerOf, hmacB64url, macMatches } from '../../antibot/util.js'
import { valueOf } from './values.js'
import { ROOM_PASS, type RoomPassMark } from './journal-marks.js'
import { LRUCache } from 'lru-cache'

/** How often a node syncs with the store while its room is polled (the cursor cache's age bound). */
const SYNC_MS = 100
/** Entries per store call (a batch bigger than this goes in several calls). */
const CHUNK = 500
/** Bound on the pending batch; joins beyond it are answered 503 OVERLOADED. */
const MAX_PENDING = 50_000
/** Positions examined per sync at most (abandoned ones skipped included). */
const SCAN_MAX = 2_000
/** A node keeps syncing this long after the last poll it served. */
const IDLE_MS = 5_000

export const ticketCookie = (campaign: string): string => `fgq_${campaign}`
export const passCookie = (campaign: string): string => `fgp_${campaign}`
/** Header a client may send its pass in instead of the cookie. */
export const PASS_HEADER = 'x-flashgate-pass'

export type QueueStatus = 'not_open' | 'waiting' | 'admitted' | 'sold_out' | 'closed'

export interface QueueAnswer {
  readonly status: QueueStatus
  readonly position: number
  readonly eta_ms: number
  readonly poll_ms: number
  readonly pass?: string
  readonly ticket?: string
  /** Pre-queue: the order is drawn at this instant (epoch ms). */
  readonly draw_at?: number
}

interface Waiter { resolve: (r: RoomEntryResult) => void, reject: (err: unknown) => void }
interface Pending { op: 'join' | 'seen', score: number, at: number, waiters: Waiter[] | null }

/** The waiting room of one campaign on this node. */
export class Room {
  campaign: CampaignConfig
  cfg: WaitingRoomConfig
  private key: Buffer | null = null
  private seed: Buffer | null = null
  private commitment: string | null = null
  private loading: Promise<void> | null = null
  view: RoomView | null = null
  /** Remaining stock over the campaign's products as last read (-1: not read yet). */
  remaining = -1
  private pending = new Map<string, Pending>()
  private timer: NodeJS.Timeout | null = null
  private syncing = false
  private lastPoll = 0
  /** Store calls this room made (the bench divides by polls). */
  storeCalls = 0
  polls = 0
  private readonly history: Array<[number, number]> = []
  private readonly gauges: { waiting: GaugeCell, admitted: GaugeCell, expired: GaugeCell, rate: GaugeCell, wait: GaugeCell }

  constructor (campaign: CampaignConfig, private readonly deps: Pick<GuardDeps, 'store' | 'metrics' | 'clock' | 'log'>) {
    this.campaign = campaign
    this.cfg = campaign.waitingRoom as WaitingRoomConfig
    const m = deps.metrics
    const c = campaign.id
    this.gauges = {
      waiting: new GaugeCell(m.waitingRoomUsers, { campaign: c, state: 'waiting' }),
      admitted: new GaugeCell(m.waitingRoomUsers, { campaign: c, state: 'admitted' }),
      expired: new GaugeCell(m.waitingRoomUsers, { campaign: c, state: 'expired' }),
      rate: new GaugeCell(m.waitingRoomAdmitRate, { campaign: c }),
      wait: new GaugeCell(m.waitingRoomWait, { campaign: c })
    }
  }

  /** A reload: the campaign's new settings (the room's state stays). */
  configure (campaign: CampaignConfig): void {
    this.campaign = campaign
    this.cfg = campaign.waitingRoom as WaitingRoomConfig
  }

  private get store (): Store { return this.deps.store }

  /** Key and seed loaded (from the store, made there by the first node). */
  get loaded (): boolean { return this.key !== null }

  load (): Promise<void> {
    if (this.key !== null) return Promise.resolve()
    if (this.loading !== null) return this.loading
    const c = this.campaign.id
    const ttl = Math.max(0, this.campaign.endsAt - this.deps.clock()) + 7 * 86_400_000
    const one = async (name: string): Promise<Buffer> => {
      const k = `wr:{${c}}:${name}`
      this.storeCalls += 2
      await this.store.setIfAbsent(k, randomBytes(32).toString('hex'), ttl)
      const v = await this.store.get(k)
      if (v === null || !/^[0-9a-f]{64}$/.test(v)) throw new StoreError('FG_ERR_STORE_SCRIPT', `waiting room ${c}: ${name} unreadable`)
      return Buffer.from(v, 'hex')
    }
    this.loading = Promise.all([one('key'), one('seed')]).then(([key, seed]) => {
      this.key = key
      this.seed = seed
      this.commitment = commitmentOf(seed)
    }).finally(() => { this.loading = null })
    return this.loading
  }

  // --- tokens -------------------------------------------------------------------------------------------

  private mac (kind: 't' | 'p', user: string, n: number): string {
    return hmacB64url(this.key as Buffer, `${kind}\n${this.campaign.id}\n${user}\n${n}`)
  }

  signTicket (user: string, position: number): string { return `${position}.${this.mac('t', user, position)}` }
  signPass (user: string, expiresAt: number): string { return `${expiresAt}.${this.mac('p', user, expiresAt)}` }

  /** The position in a ticket signed for this user (0 = pre-queue), or null. */
  verifyTicket (user: string, token: string | null): number | null {
    return this.verify('t', user, token)
  }

  /** The expiry in a pass signed for this user, or null (not checked against the clock here). */
  verifyPass (user: string, token: string | null): number | null {
    return this.verify('p', user, token)
  }

  private verify (kind: 't' | 'p', user: string, token: string | null): number | null {
    if (token === null || this.key === null || token.length > 80) return null
    const dot = token.indexOf('.')
    if (dot < 1 || dot > 16) return null
    const ns = token.slice(0, dot)
    for (let i = 0; i < ns.length; i++) { const ch = ns.charCodeAt(i); if (ch < 48 || ch > 57) return null }
    const n = Number(ns)
    if (!Number.isSafeInteger(n)) return null
    return macMatches(this.key, `${kind}\n${this.campaign.id}\n${user}\n${n}`, token.slice(dot + 1)) ? n : null
  }

  // --- the batch and the sync ----------------------------------------------------------------------------

  private touch (now: number): void {
    this.lastPoll = now
    if (this.timer === null && !this.syncing) {
      this.timer = setTimeout(this.tick, SYNC_MS)
      this.timer.unref()
    }
  }

  private seen (user: string, now: number): void {
    const p = this.pending.get(user)
    if (p !== undefined) { if (now > p.at) p.at = now; return }
    if (this.pending.size >= MAX_PENDING) return
    this.pending.set(user, { op: 'seen', score: 0, at: now, waiters: null })
  }

  /** Ask the store (at the next sync) for this user's position and pass, joining if new. */
  private join (user: string, now: number): Promise<RoomEntryResult> | null {
    let p = this.pending.get(user)
    if (p === undefined) {
      if (this.pending.size >= MAX_PENDING) return null
      p = { op: 'join', score: 0, at: now, waiters: null }
      this.pending.set(user, p)
    }
    if (now > p.at) p.at = now
    if (p.op === 'seen') p.op = 'join'
    if (now < this.campaign.startsAt && this.seed !== null) p.score = shuffleScore(this.seed, this.campaign.id, user)
    const entry = p
    return new Promise<RoomEntryResult>((resolve, reject) => {
      (entry.waiters ??= []).push({ resolve, reject })
    })
  }

  private readonly tick = (): void => {
    this.timer = null
    this.syncing = true
    this.sync().catch((err: unknown) => {
      this.deps.log('warn', 'waiting room sync failed', { campaign: this.campaign.id, error: err instanceof Error ? err.message : String(err) })
    }).finally(() => {
      this.syncing = false
      if (this.pending.size > 0 || this.deps.clock() - this.lastPoll < IDLE_MS) {
        this.timer = setTimeout(this.tick, SYNC_MS)
        this.timer.unref()
      }
    })
  }

  /** Read the campaign's remaining stock from the quota counters (the quota guard's keys). */
  private async readStock (): Promise<number> {
    const c = this.campaign.id
    const reads: Array<Promise<string | null>> = []
    for (const p of this.campaign.products) {
      reads.push(this.store.get(limitKey(c, p.id)))
      for (let i = 0; i < p.segments; i++) reads.push(this.store.get(segmentKey(c, p.id, i)))
    }
    this.storeCalls += reads.length
    const v = await Promise.all(reads)
    let left = 0
    let j = 0
    for (const p of this.campaign.products) {
      const lim = v[j++] ?? null
      const n = lim === null ? NaN : Number(lim)
      const quota = Number.isSafeInteger(n) && n >= 0 ? n : p.quota
      let admitted = 0
      for (let i = 0; i < p.segments; i++) { const s = v[j++] ?? null; admitted += s === null ? 0 : Math.max(0, Number(s)) }
      left += Math.max(0, quota - admitted)
    }
    return left
  }

  params (now: number, cap: number): RoomParams {
    const r = this.cfg.admit
    return {
      now,
      startsAt: this.campaign.startsAt,
      expireMs: 3 * this.cfg.pollMs,
      rate: { count: r.count, periodMs: r.periodMs },
      burst: 10 * defaultBurst(r),
      idleBurst: defaultBurst(r),
      cap,
      passTtlMs: this.cfg.passTtlMs,
      scanMax: SCAN_MAX,
      keyTtlMs: Math.max(0, this.campaign.endsAt - now) + 7 * 86_400_000
    }
  }

  /** One sync: stock (after the start), then the batch in chunks; every waiter is answered or failed. */
  async sync (): Promise<void> {
    await this.load()
    const now = this.deps.clock()
    const batch = this.pending
    this.pending = new Map()
    try {
      if (now >= this.campaign.startsAt) this.remaining = await this.readStock()
      const cap = this.remaining < 0 ? 0 : stockCap(this.remaining, this.cfg.overbook)
      const users = [...batch.keys()]
      let i = 0
      do {
        const part = users.slice(i, i + CHUNK)
        const entries: RoomEntry[] = part.map((u) => { const p = batch.get(u) as Pending; return { op: p.op, user: u, score: p.score, at: p.at } })
        this.storeCalls++
        const r = await this.store.roomSync(this.campaign.id, this.params(now, cap), entries)
        this.observe(r, now)
        let k = 0
        for (const u of part) {
          const p = batch.get(u) as Pending
          if (p.op !== 'join') continue
          const res = r.results[k++] ?? { position: 0, pass: 0 }
          for (const w of p.waiters ?? []) w.resolve(res)
          p.waiters = null
        }
        i += CHUNK
      } while (i < users.length)
    } catch (err) {
      for (const p of batch.values()) for (const w of p.waiters ?? []) w.reject(err)
      throw err
    }
  }

  private observe (v: RoomView, now: number): void {
    this.view = v
    const g = this.gauges
    const waiting = Math.max(0, v.total - v.cursor)
    g.waiting.set(waiting)
    g.admitted.set(v.admitted)
    g.expired.set(v.expired)
    const h = this.history
    h.push([now, v.admitted])
    while (h.length > 2 && now - (h[0] as [number, number])[0] > 5000) h.shift()
    const first = h[0] as [number, number]
    g.rate.set(now > first[0] ? (v.admitted - first[1]) * 1000 / (now - first[0]) : 0)
    g.wait.set(etaMs(waiting, this.cfg.admit) / 1000)
  }

  get soldOut (): boolean { return this.remaining === 0 }

  // --- a poll --------------------------------------------------------------------------------------------

  /**
   * Answer a status poll. Synchronous (no store call) in the common case; a Promise when the store's
   * word is needed (null in the answer: the batch is full — 503).
   */
  poll (user: string, ticket: string | null, pass: string | null, now: number): QueueAnswer | Promise<QueueAnswer | null> | null {
    if (this.key === null) return this.load().then(() => this.poll(user, ticket, pass, now))
    this.polls++
    const c = this.campaign
    const cfg = this.cfg
    const opensAt = c.startsAt - cfg.prequeueMs
    if (now < opensAt) return { status: 'not_open', position: 0, eta_ms: opensAt - now, poll_ms: cfg.pollMs, draw_at: c.startsAt }
    if (now >= c.endsAt) return { status: 'closed', position: 0, eta_ms: 0, poll_ms: cfg.pollMs }
    this.touch(now)
    if (this.soldOut) return { status: 'sold_out', position: 0, eta_ms: 0, poll_ms: cfg.pollMs }
    const exp = this.verifyPass(user, pass)
    if (exp !== null && exp > now) return { status: 'admitted', position: 0, eta_ms: 0, poll_ms: cfg.pollMs, pass: pass as string }
    const v = this.view
    const pos = this.verifyTicket(user, ticket)
    if (pos !== null) {
      if (pos === 0 && now < c.startsAt && (v === null || !v.sealed)) {
        this.seen(user, now)
        return { status: 'waiting', position: 0, eta_ms: c.startsAt - now, poll_ms: cfg.pollMs, draw_at: c.startsAt }
      }
      if (pos > 0 && v !== null && pos > v.cursor) {
        this.seen(user, now)
        return this.waiting(pos, v)
      }
    }
    const p = this.join(user, now)
    if (p === null) return null
    return p.then((r) => this.answer(user, r, this.deps.clock()))
  }

  private waiting (pos: number, v: RoomView): QueueAnswer {
    const ahead = pos - v.cursor
    return { status: 'waiting', position: ahead, eta_ms: etaMs(ahead - 1, this.cfg.admit) + SYNC_MS, poll_ms: this.cfg.pollMs }
  }

  private answer (user: string, r: RoomEntryResult, now: number): QueueAnswer {
    const cfg = this.cfg
    if (this.soldOut) return { status: 'sold_out', position: 0, eta_ms: 0, poll_ms: cfg.pollMs }
    if (r.pass > now) return { status: 'admitted', position: 0, eta_ms: 0, poll_ms: cfg.pollMs, pass: this.signPass(user, r.pass) }
    if (r.pass === PASS_USED) return { status: 'closed', position: 0, eta_ms: 0, poll_ms: cfg.pollMs }
    const ticket = this.signTicket(user, r.position)
    if (r.position === 0) return { status: 'waiting', position: 0, eta_ms: Math.max(0, this.campaign.startsAt - now), poll_ms: cfg.pollMs, ticket, draw_at: this.campaign.startsAt }
    const v = this.view as RoomView
    return { ...this.waiting(Math.max(r.position, v.cursor + 1), v), ticket }
  }

  /** `/_flashgate/queue/seed`: the commitment; the seed too from starts_at. */
  seedAnswer (now: number): { commitment: string, seed?: string } {
    const commitment = this.commitment as string
    return now >= this.campaign.startsAt ? { commitment, seed: (this.seed as Buffer).toString('hex') } : { commitment }
  }

  close (): void {
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
  }
}

/** The node's rooms, one per campaign with a waiting_room, kept across reloads. */
const ROOMS = new Slot('waiting_room rooms', () => new Map<string, Room>())

export function roomsOf (deps: GuardDeps): Map<string, Room> {
  const rooms = deps.kept.get(ROOMS)
  for (const c of deps.config.campaigns.values()) {
    if (c.waitingRoom === undefined || c.waitingRoom === null) continue
    const r = rooms.get(c.id)
    if (r === undefined) rooms.set(c.id, new Room(c, deps))
    else r.configure(c)
  }
  return rooms
}

/**
 * The join log as NDJSON (GET /admin/queue/:campaign/joins): a header line
 * `{"campaign","commitment","seed"?,"sealed","pre","total","cursor","admitted","expired"}` (the seed from
 * starts_at on), then one line per pre-queue joiner in served order `{"phase":"pre","position","user",
 * "joined_at"}`, then later joiners `{"phase":"after",...}`. null: no such room.
 */
export async function roomJoinLog (deps: Pick<GuardDeps, 'store' | 'metrics' | 'clock' | 'log' | 'config'>, campaign: string): Promise<string | null> {
  const c = deps.config.campaigns.get(campaign)
  if (c === undefined || c.waitingRoom == null) return null
  const room = new Room(c, deps)
  await room.load()
  const log = await deps.store.roomLog(campaign)
  const now = deps.clock()
  const head = { campaign, ...room.seedAnswer(now), sealed: log.sealed, pre: log.pre, total: log.total, cursor: log.cursor, admitted: log.admitted, expired: log.expired }
  const lines = [JSON.stringify(head)]
  log.preQueue.forEach((e, i) => { lines.push(JSON.stringify({ phase: 'pre', position: i + 1, user: e.user, joined_at: e.joinedAt })) })
  for (const e of log.after) lines.push(JSON.stringify({ phase: 'after', position: e.position, user: e.user, joined_at: e.joinedAt }))
  return lines.join('\n') + '\n'
}

// --- the guard -----------------------------------------------------------------------------------------------

/** `waiting_room: {}` — 403 QUEUE_REQUIRED without a valid, unused pass for this user and campaign. */
export const waitingRoomGuard: GuardFactory<WaitingRoomGuardConfig> = (cfg, route, deps) => {
  const id = guardId(route, cfg)
  const rooms = roomsOf(deps)
  const required = rejection('QUEUE_REQUIRED', 'a waiting-room pass is required: GET /_flashgate/queue?campaign=...', { override: cfg.reject })
  const used = rejection('QUEUE_REQUIRED', 'this waiting-room pass has been used', { override: cfg.reject })
  const unauth = rejection('UNAUTHENTICATED', 'sign in first')
  const policy = cfg.policy
  const src = cfg.campaign
  const store = deps.store
  // store.on_error: journal (inherited): a valid pass the store cannot mark used goes on to the quota,
  // which journals the buy with the pass (journal-marks.ts RoomPassMark); this node refuses the same
  // pass again meanwhile. Bound: a pass is used once per node during the outage, once in all at replay.
  const journal = cfg.onError === null && deps.config.store.journal != null && deps.pending != null
  const outageUsed = new LRUCache<string, true>({ max: 100_000, ttl: Math.max(1, deps.config.store.breakerBackoffMs * 600) })

  const giveBack = (room: Room, user: string, exp: number) => (_ctx: RequestContext, o: Outcome): void => {
    if (!(o.kind === 'rejected' || o.kind === 'failed' || (o.kind === 'upstream' && o.status >= 500))) return
    store.roomPass(room.campaign.id, user, deps.clock(), false, exp).catch((err: unknown) => {
      deps.log('warn', 'waiting room: pass give-back failed', { guard: id, error: err instanceof Error ? err.message : String(err) })
    })
  }

  const check = (ctx: RequestContext): Verdict | Promise<Verdict> => {
    const cid = valueOf(ctx, src)
    const room = cid === null ? undefined : rooms.get(cid)
    if (room === undefined || deps.config.campaigns.get(room.campaign.id)?.waitingRoom == null) return required
    const user = deps.identity(ctx)
    if (user === null) return unauth
    if (!room.loaded) return room.load().then(() => check(ctx), (err: unknown) => onStoreError(deps, id, policy, err, 'room_load') ?? required)
    const token = cookieOf(ctx.req.headers.cookie, passCookie(room.campaign.id)) ?? headerOf(ctx.req.headers, PASS_HEADER)
    const exp = room.verifyPass(user, token)
    if (exp === null || exp <= ctx.now) return required
    return store.roomPass(room.campaign.id, user, ctx.now, true, exp).then((ok): Verdict => {
      if (!ok) return used
      // The used pass leaves the browser, so the next status poll asks the store (→ closed).
      const clear = `${passCookie(room.campaign.id)}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax`
      if (ctx.extraHeaders === null) ctx.extraHeaders = ['set-cookie', clear]
      else ctx.extraHeaders.push('set-cookie', clear)
      onSettle(ctx, giveBack(room, user, exp))
      return undefined
    }, (err: unknown): Verdict => {
      if (!(err instanceof StoreError)) throw err
      if (journal) {
        const k = `${room.campaign.id}\n${user}\n${exp}`
        deps.metrics.storeFallbacks.inc({ guard: id, policy: 'journal' })
        if (outageUsed.has(k)) return used
        outageUsed.set(k, true)
        const release = giveBack(room, user, exp)
        onSettle(ctx, (_c, o) => { if (!(o.kind === 'rejected' && o.rejection.code === 'PENDING')) { if (o.kind === 'rejected' || o.kind === 'failed' || (o.kind === 'upstream' && o.status >= 500)) outageUsed.delete(k) } })
        const mark: RoomPassMark = { room: room.campaign.id, user, exp, used, release }
        ;(ctx.locals ?? (ctx.locals = {}))[ROOM_PASS] = mark
        return undefined
      }
      // No pass check is possible without the store: fail_open lets a valid pass through unmarked.
      return onStoreError(deps, id, policy === 'local' ? 'fail_closed' : policy, err, 'room_pass')
    })
  }
  return { kind: 'waiting_room', id, check }
}
