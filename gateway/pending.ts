/**
 * `store.on_error: journal`: buys taken while the store is down, answered 202 PENDING, replayed in
 * arrival order when it is back (the file format is limiter/journal.ts, the store steps
 * limiter/quota-ledger.ts).
 *
 * - Journaling: the quota guard (alone or fused with a dedupe before it) hands a request whose store call
 *   failed to `submit`. The request passed every guard before it. Its body is read (bounded by the
 *   route's max_body_size), the entry — ticket, user, campaign, product, dedupe mark, and the request as
 *   it would have been forwarded (method, path with query, the headers the proxy sends, body) — is
 *   appended, and only once its batch is fsynced is the buyer answered 202 `{"status":"PENDING","ticket"}`.
 *   More than `max_entries` entries not yet final, or a write that fails → 503 STORE_UNAVAILABLE (nothing
 *   was acknowledged).
 * - Replay: one loop per process, strictly in journal order: each entry's store step (the same dedupe
 *   and quota operations as live) is made before the next one's; a store failure waits
 *   `store.breaker_backoff` and retries the same entry. An admitted entry is recorded (`a`) and, once that
 *   record is on disk, sent to its upstream as the original request (a few at once); refused ones are
 *   final at once (SOLD_OUT, DUPLICATE). The upstream's answer is recorded (`r`) and the unit (and dedupe
 *   mark) given back as a live request would (any 4xx/5xx returns the unit). A connection that cannot be
 *   made is tried on the next target, 3 tries in all → FAILED (`code: UPSTREAM_UNAVAILABLE`), unit given
 *   back. A request sent without an answer (timeout, reset) is not sent again — the upstream may have
 *   taken the buy — and ends FAILED (`UPSTREAM_TIMEOUT` / `UPSTREAM_UNAVAILABLE`) with its unit kept, in
 *   doubt (`flashgate_journal_in_doubt_total`), as live.
 * - Order across the outage: while entries for a product wait for their store step, new buys for it are
 *   journaled too (the quota asks `holds`), even though the store answers again: they replay after the
 *   older ones, and the live path resumes once the backlog is judged. Otherwise a live buyer arriving
 *   right after the store came back would take a unit before the replay reached the earlier arrivals.
 * - Restart: the journal is read back; entries without a final record are replayed (those with an `a`
 *   record go straight to the upstream); a torn last record (a crash mid-write: never acknowledged) is
 *   dropped and counted. Once nothing is left to replay the file is compacted to the final answers.
 * - Workers: one journal file per worker (`journal-<index>.fgj`), each replayed by its worker; a ticket
 *   names its worker, and a worker asked about another's ticket reads that worker's file (incrementally:
 *   only the bytes added since it last looked).
 * - `GET /_flashgate/pending/:ticket`: the same identity as the buy (the journaled user); anyone else, or
 *   an unknown ticket, gets 404 NOT_FOUND — the same answer, so nothing leaks. A buy made with no user
 *   (no identity configured) is its ticket's alone: 128 random bits.
 * The journal holds the request's headers (cookies, authorization) to replay it: the file is 0600 and
 * none of it is logged.
 */
import { randomBytes } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { join } from 'node:path'
import { open, stat } from 'node:fs/promises'
import { Counter, Gauge, Histogram, type Registry } from 'prom-client'
import { Pool } from 'undici'
import type { Config, JournalConfig } from '../conf/types.js'
import { JournalFile, decodeFrames } from '../limiter/journal.js'
import { replayAdmit, replayGiveBack, type ReplayResult } from '../limiter/quota-ledger.js'
import { bufferBody } from './http/body.js'
import { sendJson } from './http/json.js'
import type { Store } from '../limiter/store.js'
import { StoreError } from '../conf/errors.js'
import { rejection } from './pipeline/reject.js'
import type { EdgeHandler, Rejection, RequestContext, Verdict } from './pipeline/types.js'
import { requestHeaders } from './upstream/headers.js'

export const PENDING_PATH = '/_flashgate/pending/'

export type FinalStatus = 'ADMITTED' | 'SOLD_OUT' | 'DUPLICATE' | 'FAILED'

/** What the quota guard knows about a buy it journals. */
export interface PendingBuy {
  readonly campaign: string
  readonly product: string
  readonly mark: { readonly key: string, readonly ttlMs: number } | null
  /** The buyer (deps.identity), null when the request has none. */
  readonly user: string | null
  /** A waiting-room pass not yet marked used in the store (the replay marks it before the unit). */
  readonly pass?: { readonly room: string, readonly user: string, readonly exp: number }
}

/** The journal as guards see it (GuardDeps.pending). */
export interface PendingSink {
  submit (ctx: RequestContext, buy: PendingBuy): Verdict | Promise<Verdict>
  /**
   * Whether this journal holds entries for the product whose store step is not made yet (replay pending
   * or in progress). While it does, the quota journals new buys for the product too instead of taking a
   * unit live, so that nobody who arrived later is judged before them (arrival order across the outage).
   */
  holds (campaign: string, product: string): boolean
}

interface Entry {
  readonly t: 'e'
  readonly id: string
  readonly at: number
  readonly user: string | null
  readonly who: string
  /** X-Request-Id of the journaled request (its live dedupe mark names it). */
  readonly rid: string | null
  readonly campaign: string
  readonly product: string
  readonly mark: { readonly key: string, readonly ttlMs: number } | null
  /** The waiting-room pass to mark used at replay (absent: none, or marked live). */
  readonly pass?: { readonly room: string, readonly user: string, readonly exp: number }
  readonly upstream: string
  readonly method: string
  readonly url: string
  readonly headers: string[]
  /** base64 */
  readonly body: string
}
interface Taken { readonly t: 'a', readonly id: string, readonly segment: number }
interface UpstreamAnswer { readonly status: number, readonly contentType: string | null, readonly body: string }
interface Final { readonly t: 'r', readonly id: string, readonly user: string | null, readonly status: FinalStatus, readonly upstream?: UpstreamAnswer, readonly code?: string }
type JournalRecord = Entry | Taken | Final

interface Slot { readonly entry: Entry, taken: number | null, durable: Promise<boolean> }

interface TicketView { readonly user: string | null, status: 'PENDING' | FinalStatus, upstream?: UpstreamAnswer, code?: string }

const TICKET = /^(\d{1,4})-([0-9a-f]{32})$/
const MAX_ANSWER = 64 * 1024
const SEND_CONCURRENCY = 16
const SEND_TRIES = 3
/** Errors of a connection that was never made: the request did not leave, another try is safe. */
const NOT_SENT: ReadonlySet<string> = new Set(['ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EADDRNOTAVAIL'])
const REPLAY_TIMEOUTS: ReadonlySet<string> = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT'])

export interface PendingOptions {
  readonly config: Config
  readonly journal: JournalConfig
  readonly store: Store
  readonly registry: Registry
  readonly worker: { readonly index: number, readonly count: number }
  readonly clock: () => number
  readonly log: (level: 'debug' | 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void
}

export interface PendingMetrics {
  readonly appended: Counter
  readonly replayed: Counter<'outcome'>
  readonly depth: Gauge
  readonly fsync: Histogram
  readonly refused: Counter<'reason'>
  readonly torn: Counter
  readonly inDoubt: Counter
}

function createPendingMetrics (r: Registry): PendingMetrics {
  return {
    appended: new Counter({ name: 'flashgate_journal_appended_total', help: 'Buys written to the journal (answered 202 PENDING) while the store was unreachable.', registers: [r] }),
    replayed: new Counter({ name: 'flashgate_journal_replayed_total', help: 'Journal entries replayed, by final outcome (ADMITTED, SOLD_OUT, DUPLICATE, FAILED).', labelNames: ['outcome'], registers: [r] }),
    depth: new Gauge({ name: 'flashgate_journal_depth', help: 'Journal entries without a final answer yet.', registers: [r] }),
    fsync: new Histogram({ name: 'flashgate_journal_fsync_seconds', help: 'Time of one journal group commit (write + fdatasync of one batch).', buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1], registers: [r] }),
    refused: new Counter({ name: 'flashgate_journal_refused_total', help: 'Buys the journal refused (503 STORE_UNAVAILABLE): full, or the write failed.', labelNames: ['reason'], registers: [r] }),
    torn: new Counter({ name: 'flashgate_journal_torn_total', help: 'Torn tails (a record cut by a crash, never acknowledged) dropped when a journal was opened.', registers: [r] }),
    inDoubt: new Counter({ name: 'flashgate_journal_in_doubt_total', help: 'Replayed buys sent to the upstream without an answer (it may have taken them): not sent again, unit kept.', registers: [r] })
  }
}

export const journalFileOf = (dir: string, worker: number): string => join(dir, `journal-${worker}.fgj`)

const FULL: Rejection = rejection('STORE_UNAVAILABLE', 'shared state store unavailable and the journal is full', { headers: ['retry-after', '1'] })
const WRITE_FAILED: Rejection = rejection('STORE_UNAVAILABLE', 'shared state store unavailable and the journal cannot be written', { headers: ['retry-after', '1'] })
const TOO_LARGE: Rejection = rejection('PAYLOAD_TOO_LARGE', 'request body too large')
const BAD_BODY: Rejection = rejection('BAD_REQUEST', 'request body not received')

function pendingAnswer (ticket: string): Rejection {
  return {
    status: 202,
    code: 'PENDING',
    body: Buffer.from(JSON.stringify({ status: 'PENDING', ticket, message: 'your purchase is in progress', poll: PENDING_PATH + ticket })),
    headers: ['location', PENDING_PATH + ticket]
  }
}

/** Read the request body whole (bounded); the proxy would have streamed it, the journal must keep it. */
function readBody (ctx: RequestContext, limit: number): Promise<Buffer | Rejection> {
  return bufferBody(ctx, limit, TOO_LARGE, BAD_BODY)
}

/** The headers a replay sends: what the proxy would have sent, less the framing the new body sets. */
function replayHeaders (flat: readonly string[]): string[] {
  const out: string[] = []
  for (let i = 0; i + 1 < flat.length; i += 2) {
    const n = (flat[i] as string).toLowerCase()
    if (n === 'content-length' || n === 'transfer-encoding' || n === 'expect') continue
    out.push(flat[i] as string, flat[i + 1] as string)
  }
  return out
}

/** Another worker's journal, read incrementally for ticket lookups. */
class ForeignView {
  private offset = 0
  private ino = -1
  readonly tickets = new Map<string, TicketView>()
  constructor (private readonly path: string, private readonly max: number) {}

  async refresh (): Promise<void> {
    let st
    try { st = await stat(this.path) } catch { return }
    if (st.ino !== this.ino || st.size < this.offset) { this.ino = st.ino; this.offset = 0; this.tickets.clear() }
    if (st.size === this.offset) return
    const fh = await open(this.path, 'r')
    try {
      const len = st.size - this.offset
      const buf = Buffer.allocUnsafe(len)
      const { bytesRead } = await fh.read(buf, 0, len, this.offset)
      const d = decodeFrames(buf.subarray(0, bytesRead))
      this.offset += d.validBytes
      for (const r of d.records as JournalRecord[]) apply(this.tickets, r, this.max)
    } finally { await fh.close() }
  }
}

function apply (tickets: Map<string, TicketView>, r: JournalRecord, max: number): void {
  if (r.t === 'e') tickets.set(r.id, { user: r.user, status: 'PENDING' })
  else if (r.t === 'r') {
    tickets.delete(r.id)
    const v: TicketView = { user: r.user, status: r.status }
    if (r.upstream !== undefined) v.upstream = r.upstream
    if (r.code !== undefined) v.code = r.code
    tickets.set(r.id, v)
  }
  while (tickets.size > max * 2) {
    const first = tickets.keys().next().value
    if (first === undefined) break
    tickets.delete(first)
  }
}

export class PendingJournal implements PendingSink {
  readonly metrics: PendingMetrics
  private config: Config
  private readonly file: JournalFile
  /** Entries not final yet, in journal order; `taken` once the store admitted them. */
  private readonly queue: Array<Slot> = []
  /** Per `campaign\u0000product`: entries in `queue` whose store step is not made yet (`taken` null). */
  private readonly unjudged = new Map<string, number>()
  /** Index in `queue` of the next entry the replay loop judges. */
  private next = 0
  private readonly tickets = new Map<string, TicketView>()
  private readonly foreign = new Map<number, ForeignView>()
  private running = false
  private closed = false
  private timer: NodeJS.Timeout | null = null
  private sending = 0
  private readonly sendQueue: Array<() => void> = []
  private readonly pools = new Map<string, Pool>()
  private rr = 0
  private finalsSinceCompact = 0
  /** Resolves when the replay loop has nothing left (tests, drain). */
  private idleWaiters: Array<() => void> = []

  private constructor (private readonly opts: PendingOptions, file: JournalFile, metrics: PendingMetrics) {
    this.config = opts.config
    this.file = file
    this.metrics = metrics
  }

  /** Open this worker's journal, read it back, and start replaying what it holds. */
  static async open (opts: PendingOptions): Promise<PendingJournal> {
    const metrics = createPendingMetrics(opts.registry)
    const path = journalFileOf(opts.journal.path, opts.worker.index)
    const { file, records, tornBytes } = await JournalFile.open(path, { onBatch: (_n, ms) => { metrics.fsync.observe(ms / 1000) } })
    const pj = new PendingJournal(opts, file, metrics)
    if (tornBytes > 0) {
      metrics.torn.inc()
      opts.log('warn', 'journal: torn last record dropped (a crash while writing; it was never acknowledged)', { file: path, bytes: tornBytes })
    }
    pj.restore(records as JournalRecord[])
    if (pj.queue.length === 0 && records.length > 0) await pj.compact()
    pj.kick(0)
    return pj
  }

  private restore (records: readonly JournalRecord[]): void {
    const byId = new Map<string, { entry: Entry, taken: number | null }>()
    const order: string[] = []
    for (const r of records) {
      apply(this.tickets, r, this.opts.journal.maxEntries)
      if (r.t === 'e') { byId.set(r.id, { entry: r, taken: null }); order.push(r.id) } else if (r.t === 'a') {
        const q = byId.get(r.id)
        if (q !== undefined) q.taken = r.segment
      } else byId.delete(r.id)
    }
    for (const id of order) {
      const q = byId.get(id)
      if (q === undefined) continue
      this.queue.push({ entry: q.entry, taken: q.taken, durable: Promise.resolve(true) })
      if (q.taken === null) this.count(q.entry, 1)
    }
    this.metrics.depth.set(this.queue.length)
    if (this.queue.length > 0) this.opts.log('info', 'journal: entries to replay', { entries: this.queue.length })
  }

  private count (e: Entry, delta: number): void {
    const k = `${e.campaign}\u0000${e.product}`
    const n = (this.unjudged.get(k) ?? 0) + delta
    if (n > 0) this.unjudged.set(k, n)
    else this.unjudged.delete(k)
  }

  holds (campaign: string, product: string): boolean {
    return this.unjudged.has(`${campaign}\u0000${product}`)
  }

  /** A reload: replays judge against the new config's products and upstreams. */
  update (config: Config): void { this.config = config }

  get depth (): number { return this.queue.length }

  submit (ctx: RequestContext, buy: PendingBuy): Verdict | Promise<Verdict> {
    if (this.closed || this.queue.length >= this.opts.journal.maxEntries) {
      this.metrics.refused.inc({ reason: 'full' })
      return FULL
    }
    return readBody(ctx, ctx.route.maxBodySize).then((body): Verdict | Promise<Verdict> => {
      if (!Buffer.isBuffer(body)) return body
      if (this.queue.length >= this.opts.journal.maxEntries) {
        this.metrics.refused.inc({ reason: 'full' })
        return FULL
      }
      const id = `${this.opts.worker.index}-${randomBytes(16).toString('hex')}`
      const user = buy.user
      const entry: Entry = {
        t: 'e',
        id,
        at: ctx.now,
        user,
        who: user ?? ctx.clientIp,
        rid: ctx.requestId ?? null,
        campaign: buy.campaign,
        product: buy.product,
        mark: buy.mark,
        ...(buy.pass !== undefined ? { pass: buy.pass } : {}),
        upstream: ctx.route.upstream ?? '',
        method: ctx.method,
        url: ctx.req.url ?? ctx.path,
        headers: requestHeaders(ctx.req, ctx.peerTrusted, ctx.clientIp, { requestId: ctx.requestId }),
        body: body.toString('base64')
      }
      // In the queue before the write returns, so that arrival order is journal order and `full` counts it.
      const slot: Slot = { entry, taken: null, durable: Promise.resolve(false) }
      this.queue.push(slot)
      this.count(entry, 1)
      this.metrics.depth.set(this.queue.length)
      slot.durable = this.file.append(entry).then(() => {
        this.tickets.set(id, { user, status: 'PENDING' })
        this.metrics.appended.inc()
        this.kick(this.config.store.breakerBackoffMs)
        return true
      }, (err: unknown) => {
        const i = this.queue.indexOf(slot)
        if (i >= 0) { this.queue.splice(i, 1); if (i < this.next) this.next--; this.count(entry, -1) }
        this.metrics.depth.set(this.queue.length)
        this.metrics.refused.inc({ reason: 'write' })
        this.opts.log('error', 'journal write failed', { error: err instanceof Error ? err.message : String(err) })
        return false
      })
      return slot.durable.then((ok) => ok ? pendingAnswer(id) : WRITE_FAILED)
    })
  }

  /** Schedule the replay loop (after `delayMs`) unless it runs or is scheduled. */
  private kick (delayMs: number): void {
    if (this.running || this.closed || this.timer !== null || this.next >= this.queue.length) {
      if (!this.running && this.next >= this.queue.length && this.sending === 0) this.notifyIdle()
      return
    }
    this.timer = setTimeout(() => { this.timer = null; void this.replay() }, delayMs)
    this.timer.unref()
  }

  private async replay (): Promise<void> {
    if (this.running || this.closed) return
    this.running = true
    try {
      while (!this.closed && this.next < this.queue.length) {
        const slot = this.queue[this.next] as Slot
        // Appended but maybe not yet durable: its buyer has no ticket before it is; a failed write removed it.
        if (!await slot.durable) continue
        if (slot.taken !== null) { this.next++; this.send(slot); continue }
        let r: ReplayResult
        try {
          r = await this.admit(slot.entry)
        } catch (err) {
          if (!(err instanceof StoreError)) this.opts.log('error', 'journal replay step failed', { ticket: slot.entry.id, error: err instanceof Error ? err.message : String(err) })
          // Store still down: try the same entry again later (order is kept).
          this.running = false
          this.kick(this.config.store.breakerBackoffMs)
          return
        }
        this.next++
        if (r.status === 'ADMITTED') {
          slot.taken = r.segment
          this.count(slot.entry, -1)
          const taken: Taken = { t: 'a', id: slot.entry.id, segment: r.segment }
          this.file.append(taken).then(() => { this.send(slot) }, (err: unknown) => {
            // The unit is taken but the record is not durable: send anyway (a restart would find its mark).
            this.opts.log('error', 'journal write failed', { error: err instanceof Error ? err.message : String(err) })
            this.send(slot)
          })
        } else {
          this.finish(slot, { t: 'r', id: slot.entry.id, user: slot.entry.user, status: r.status })
        }
      }
    } finally {
      this.running = false
    }
    this.kick(0)
  }

  private async admit (e: Entry): Promise<ReplayResult> {
    const pc = this.config.campaigns.get(e.campaign)?.products.find((p) => p.id === e.product)
    if (pc === undefined) return { status: 'SOLD_OUT' }
    const store = this.opts.store
    const r = await this.judge(e, pc)
    if (r.status !== 'ADMITTED' || e.pass === undefined) return r
    // A waiting-room pass: marked used after the unit is taken (a store failure here retries the entry,
    // whose dedupe mark then says ADMITTED again, no second unit). Used already — on another node's
    // journal, or live since — → one attempt per pass: the unit and the mark go back, DUPLICATE.
    // (A crash after this step and before the `a` record finds the pass used on the next replay: that
    // entry is answered DUPLICATE and its unit given back — unsold, never oversold.)
    if (await store.roomPass(e.pass.room, e.pass.user, this.opts.clock(), true, e.pass.exp)) return r
    await replayGiveBack(store, e.campaign, e.product, r.segment)
    if (e.mark !== null) await store.del(e.mark.key)
    return { status: 'DUPLICATE' }
  }

  private judge (e: Entry, pc: { readonly segments: number, readonly quota: number }): Promise<ReplayResult> {
    return replayAdmit(this.opts.store, {
      ticket: e.id,
      requestId: e.rid ?? null,
      campaign: e.campaign,
      product: e.product,
      segments: pc.segments,
      quota: pc.quota,
      who: e.who,
      mark: e.mark,
      fused: this.opts.store.kind !== 'redis-cluster'
    })
  }

  /** Send an admitted entry upstream (at most SEND_CONCURRENCY at once), then record the answer. */
  private send (slot: Slot): void {
    const go = (): void => {
      this.sending++
      this.forward(slot.entry).then(({ ans, sent, code }) => {
        const seg = slot.taken ?? 0
        const e = slot.entry
        // As live (quota.ts unitReturns): a 4xx/5xx, or no answer to a request that never reached the
        // upstream, returns the unit; one sent without an answer is in doubt and stays taken.
        const returns = ans === null ? !sent : ans.status >= 400
        if (returns) {
          replayGiveBack(this.opts.store, e.campaign, e.product, seg).catch((err: unknown) => {
            this.opts.log('warn', 'journal give-back failed', { ticket: e.id, error: err instanceof Error ? err.message : String(err) })
          })
        } else if (ans === null) {
          this.metrics.inDoubt.inc()
        }
        // The dedupe mark goes as a live one would: no answer, 5xx, 408, 429 → released.
        if (e.mark !== null && (ans === null || ans.status >= 500 || ans.status === 408 || ans.status === 429)) {
          this.opts.store.del(e.mark.key).catch(() => {})
        }
        // The waiting-room pass goes back as the room guard gives it back live: no answer or a 5xx.
        if (e.pass !== undefined && (ans === null || ans.status >= 500)) {
          this.opts.store.roomPass(e.pass.room, e.pass.user, this.opts.clock(), false, e.pass.exp).catch(() => {})
        }
        const fin: Final = ans === null
          ? { t: 'r', id: e.id, user: e.user, status: 'FAILED', code }
          : { t: 'r', id: e.id, user: e.user, status: 'ADMITTED', upstream: ans }
        this.finish(slot, fin)
      }).finally(() => {
        this.sending--
        const n = this.sendQueue.shift()
        if (n !== undefined) n()
        else this.kick(0)
      })
    }
    if (this.sending < SEND_CONCURRENCY) go()
    else this.sendQueue.push(go)
  }

  /**
   * The upstream's answer, or null when none came. Only a request that never reached an upstream (the
   * connection could not be made) is tried again, on the next target, up to SEND_TRIES times: one that
   * was sent and got no answer (timeout, reset) may have been acted on — a buy taken — so it is not sent
   * twice, and `sent` tells the caller its unit is in doubt.
   */
  private async forward (e: Entry): Promise<{ ans: UpstreamAnswer | null, sent: boolean, code: string }> {
    const up = this.config.upstreams.get(e.upstream)
    if (up === undefined || up.targets.length === 0) return { ans: null, sent: false, code: 'UPSTREAM_UNAVAILABLE' }
    const body = Buffer.from(e.body, 'base64')
    const headers = replayHeaders(e.headers)
    for (let attempt = 0; attempt < SEND_TRIES && !this.closed; attempt++) {
      const target = up.targets[(this.rr++) % up.targets.length] as { url: string }
      let pool = this.pools.get(target.url)
      if (pool === undefined) {
        pool = new Pool(target.url, { connections: SEND_CONCURRENCY, connectTimeout: up.connectTimeoutMs })
        this.pools.set(target.url, pool)
      }
      try {
        const res = await pool.request({ method: e.method as 'POST', path: e.url, headers, body: body.length > 0 ? body : null, headersTimeout: up.timeoutMs, bodyTimeout: up.timeoutMs })
        const chunks: Buffer[] = []
        let size = 0
        for await (const c of res.body) {
          const b = c as Buffer
          if (size < MAX_ANSWER) chunks.push(b.subarray(0, MAX_ANSWER - size))
          size += b.length
        }
        const ct = res.headers['content-type']
        return { ans: { status: res.statusCode, contentType: typeof ct === 'string' ? ct : null, body: Buffer.concat(chunks).toString('utf8') }, sent: true, code: '' }
      } catch (err) {
        const code = (err as { code?: unknown }).code
        this.opts.log('warn', 'journal replay: upstream failed', { ticket: e.id, target: target.url, error: err instanceof Error ? err.message : String(err) })
        if (typeof code !== 'string' || !NOT_SENT.has(code)) {
          return { ans: null, sent: true, code: typeof code === 'string' && REPLAY_TIMEOUTS.has(code) ? 'UPSTREAM_TIMEOUT' : 'UPSTREAM_UNAVAILABLE' }
        }
        await new Promise((resolve) => setTimeout(resolve, 200 * (attempt + 1)))
      }
    }
    return { ans: null, sent: false, code: 'UPSTREAM_UNAVAILABLE' }
  }

  private finish (slot: Slot, fin: Final): void {
    const i = this.queue.indexOf(slot)
    if (i >= 0) {
      this.queue.splice(i, 1)
      if (i < this.next) this.next--
      if (slot.taken === null) this.count(slot.entry, -1)
    }
    this.metrics.depth.set(this.queue.length)
    this.metrics.replayed.inc({ outcome: fin.status })
    apply(this.tickets, fin, this.opts.journal.maxEntries)
    this.finalsSinceCompact++
    this.file.append(fin).then(() => {
      if (this.queue.length === 0 && this.finalsSinceCompact >= 1000) return this.compact()
    }).catch((err: unknown) => {
      this.opts.log('error', 'journal write failed', { error: err instanceof Error ? err.message : String(err) })
    })
  }

  /** Nothing left to replay: the file keeps only the final answers (the newest max_entries). */
  private async compact (): Promise<void> {
    if (this.queue.length > 0) return
    this.finalsSinceCompact = 0
    const finals: Final[] = []
    for (const [id, v] of this.tickets) {
      if (v.status === 'PENDING') continue
      const f: Final = { t: 'r', id, user: v.user, status: v.status, ...(v.upstream !== undefined ? { upstream: v.upstream } : {}), ...(v.code !== undefined ? { code: v.code } : {}) }
      finals.push(f)
    }
    await this.file.rewrite(finals.slice(-this.opts.journal.maxEntries))
  }

  private notifyIdle (): void {
    const w = this.idleWaiters
    this.idleWaiters = []
    for (const f of w) f()
  }

  /** Resolves once every entry has a final answer (or at close). */
  settled (): Promise<void> {
    if (this.queue.length === 0 || this.closed) return Promise.resolve()
    return new Promise<void>((resolve) => { this.idleWaiters.push(resolve) }).then(async () => { await this.settled() })
  }

  /** A ticket's answer for `user`; null = 404 (unknown, or another user's). */
  async lookup (ticket: string, user: string | null): Promise<TicketView | null> {
    const m = TICKET.exec(ticket)
    if (m === null) return null
    const w = Number(m[1])
    let v: TicketView | undefined
    if (w === this.opts.worker.index) {
      v = this.tickets.get(ticket)
    } else if (w < this.opts.worker.count) {
      let f = this.foreign.get(w)
      if (f === undefined) { f = new ForeignView(journalFileOf(this.opts.journal.path, w), this.opts.journal.maxEntries); this.foreign.set(w, f) }
      await f.refresh()
      v = f.tickets.get(ticket)
    }
    if (v === undefined) return null
    if (v.user !== null && v.user !== user) return null
    return v
  }

  /** `GET /_flashgate/pending/:ticket`. */
  handler (identity: (ctx: RequestContext) => string | null): EdgeHandler {
    const notFound = Buffer.from(JSON.stringify({ code: 'NOT_FOUND', message: 'no such ticket' }))
    return async (req: IncomingMessage, res: ServerResponse, e) => {
      const path = (req.url ?? '').split('?')[0] as string
      const ticket = path.slice(PENDING_PATH.length)
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        sendJson(res, 405, { code: 'METHOD_NOT_ALLOWED', message: 'GET only' }, ['allow', 'GET, HEAD'])
        return
      }
      const ctx = {
        req, res, route: null, method: 'GET', path, query: '', host: '', clientIp: e.clientIp, peerTrusted: false, params: {}, now: e.now,
        user: undefined, queryParams: null, extraHeaders: null, settlers: null, locals: null
      } as unknown as RequestContext
      const user = identity(ctx)
      const v = await this.lookup(ticket, user)
      if (v === null) {
        sendJson(res, 404, notFound)
        return
      }
      const out: Record<string, unknown> = { status: v.status, ticket }
      if (v.status === 'PENDING') { out.message = 'your purchase is in progress'; out.poll_ms = 1000 }
      if (v.code !== undefined) out.code = v.code
      if (v.upstream !== undefined) {
        let body: unknown = v.upstream.body
        if (v.upstream.contentType !== null && v.upstream.contentType.includes('json')) { try { body = JSON.parse(v.upstream.body) } catch { /* kept as text */ } }
        out.upstream = { status: v.upstream.status, body }
      }
      sendJson(res, 200, out)
    }
  }

  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    if (this.timer !== null) { clearTimeout(this.timer); this.timer = null }
    this.notifyIdle()
    await this.file.close()
    await Promise.all([...this.pools.values()].map(async (p) => { await p.close() }))
  }
}
