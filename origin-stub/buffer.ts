/**
 * The order path when the order stream cannot be written (issue 17; the seed course's 150): a buy's unit
 * is taken and its order recorded (QUEUED) in the atomic stock step; when the stream (on a Redis of its
 * own, `origin.queue`) then refuses the notice, the notice goes to this buffer on local disk, and the
 * buyer is answered 202 only once it is there. A background sender sends the notices on at a low rate
 * (`origin.buffer.rate`) by a **direct call**: the order system (the order writer, when configured)
 * first, then the order row is created straight in the order store (`OriginStore.createDirect`, QUEUED
 * → CREATED) — no stream involved, so the buffer drains while the stream is still down. A failed call
 * is retried with the writer's back-off; after `attempts` failures of the order system the notice is
 * parked in the dead-letter stream like any order (`deadLetterDirect`). A notice that also reached the
 * stream (an XADD sent and never answered) is created once: both paths create only a QUEUED order.
 *
 * File: `DIR/order-notices.log`, one JSON line per record: `{"n": ORDER_ID, "at": MS}` a notice,
 * `{"d": ORDER_ID}` its delivery (created, already created, or parked). Notices are appended in small
 * batches (group commit: one write + fdatasync in flight, the notices arriving meanwhile go in the next
 * one) and a buy waits for its batch; deliveries ride along (a delivery lost in a crash only means the
 * notice is sent again: idempotent). A crash while writing leaves at most a torn last line of a batch
 * nobody was answered for: it is dropped at open. At open the file is read back (the notices without a
 * delivery are pending again) and rewritten with only those (temporary file, fsync, rename, fsync of the
 * directory); it is rewritten empty whenever nothing is pending and it has grown past 1 MiB.
 *
 * A process killed after the stock step and before the notice's fsync (the buyer got no answer) leaves
 * a QUEUED order whose notice is nowhere: origin-stub/requeue.ts finds it after `origin.requeue_after`
 * and sends its notice again.
 */
import { closeSync, fsyncSync, openSync } from 'node:fs'
import { mkdir, open, rename, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { parseOrderId } from './keys.js'
import type { OrderWriter } from './dead-letter.js'
import type { OriginStore } from './types.js'

export const BUFFER_FILE = 'order-notices.log'
const COMPACT_BYTES = 1024 * 1024

interface Waiter { readonly resolve: () => void, readonly reject: (err: Error) => void }

export interface NoticeBuffer {
  /** Resolves once the notice is on disk (fdatasync returned); rejects when the disk failed. */
  append(orderId: string, at: number): Promise<void>
  /** Whether the notice of this order is pending here. */
  has(orderId: string): boolean
  /** Pending notices, oldest first (a copy, at most `max`). */
  peek(max: number): string[]
  /** The notice was delivered: it leaves the pending set (recorded on disk with the next batch). */
  done(orderId: string): void
  readonly pending: number
  /** Wait for every write queued so far. */
  flush(): Promise<void>
  close(): Promise<void>
}

/** fsync a directory (a rename is durable only then); ignored where the platform refuses it. */
function syncDir (dir: string): void {
  try {
    const fd = openSync(dir, 'r')
    try { fsyncSync(fd) } finally { closeSync(fd) }
  } catch { /* not supported here */ }
}

/** Read the records of a buffer file's text: the pending notices in order, and lines dropped (torn or foreign). */
export function replay (text: string): { pending: Map<string, number>, dropped: number } {
  const pending = new Map<string, number>()
  let dropped = 0
  const lines = text.split('\n')
  // The last element is '' after a final newline; anything else there is a torn line.
  const last = lines.pop()
  if (last !== undefined && last !== '') dropped++
  for (const line of lines) {
    if (line === '') continue
    let r: unknown
    try { r = JSON.parse(line) } catch { dropped++; continue }
    const rec = r as { n?: unknown, at?: unknown, d?: unknown }
    if (typeof rec.n === 'string' && parseOrderId(rec.n) !== null) pending.set(rec.n, typeof rec.at === 'number' ? rec.at : 0)
    else if (typeof rec.d === 'string') pending.delete(rec.d)
    else dropped++
  }
  return { pending, dropped }
}

/** Open (creating) the buffer in `dir` and read back what it holds. */
export async function openNoticeBuffer (dir: string): Promise<{ buffer: NoticeBuffer, recovered: number, dropped: number }> {
  await mkdir(dir, { recursive: true, mode: 0o700 })
  const path = join(dir, BUFFER_FILE)
  const tmp = `${path}.tmp`
  const rh = await open(path, 'a+', 0o600)
  let text: string
  try { text = await rh.readFile('utf8') } finally { await rh.close() }
  const { pending, dropped } = replay(text)

  const rewrite = async (): Promise<FileHandle> => {
    const fh = await open(tmp, 'w', 0o600)
    try {
      const lines = [...pending].map(([n, at]) => JSON.stringify({ n, at }) + '\n').join('')
      if (lines !== '') await fh.write(lines)
      await fh.datasync()
    } finally { await fh.close() }
    await rename(tmp, path)
    syncDir(dir)
    return await open(path, 'a', 0o600)
  }

  let fh = await rewrite()
  let size = 0
  let queue: string[] = []
  let waiters: Waiter[] = []
  let writing: Promise<void> | null = null
  let broken: Error | null = null
  let closed = false

  const write = async (): Promise<void> => {
    while (queue.length > 0) {
      const lines = queue.join('')
      const ws = waiters
      queue = []
      waiters = []
      try {
        const buf = Buffer.from(lines)
        let off = 0
        while (off < buf.length) off += (await fh.write(buf, off, buf.length - off)).bytesWritten
        await fh.datasync()
        size += buf.length
      } catch (err) {
        broken = err instanceof Error ? err : new Error(String(err))
        for (const w of [...ws, ...waiters]) w.reject(broken)
        waiters = []
        queue = []
        return
      }
      for (const w of ws) w.resolve()
      if (pending.size === 0 && size > COMPACT_BYTES && queue.length === 0) {
        const old = fh
        fh = await rewrite()
        await old.close()
        size = 0
      }
    }
  }

  const kick = (): void => {
    if (writing !== null || broken !== null) return
    writing = write().finally(() => {
      writing = null
      if (queue.length > 0) kick()
    })
  }

  const buffer: NoticeBuffer = {
    append (orderId, at) {
      if (closed) return Promise.reject(new Error('order buffer closed'))
      if (broken !== null) return Promise.reject(broken)
      pending.set(orderId, at)
      return new Promise<void>((resolve, reject) => {
        queue.push(JSON.stringify({ n: orderId, at }) + '\n')
        waiters.push({ resolve, reject })
        kick()
      })
    },
    has (orderId) { return pending.has(orderId) },
    peek (max) {
      const out: string[] = []
      for (const id of pending.keys()) {
        if (out.length >= max) break
        out.push(id)
      }
      return out
    },
    done (orderId) {
      if (!pending.delete(orderId) || broken !== null || closed) return
      queue.push(JSON.stringify({ d: orderId }) + '\n')
      kick()
    },
    get pending () { return pending.size },
    async flush () {
      while (writing !== null) await writing
    },
    async close () {
      if (closed) return
      await buffer.flush()
      closed = true
      await fh.close()
    }
  }
  return { buffer, recovered: pending.size, dropped }
}

export interface SenderOptions {
  readonly buffer: NoticeBuffer
  readonly store: OriginStore
  /** Notices sent per second. */
  readonly rate: number
  readonly paymentTimeoutMs: number
  readonly orderWriter?: OrderWriter
  /** Failures of the order system before a notice is parked (default 5). */
  readonly maxAttempts?: number
  readonly backoffMs?: number
  readonly maxBackoffMs?: number
  readonly clock?: () => number
  readonly onSent?: (orderId: string, created: boolean) => void
  readonly onDeadLetter?: (orderId: string, reason: string) => void
  readonly onError?: (err: unknown) => void
}

export interface Sender {
  /** A notice was buffered: cut an idle wait short. */
  wake(): void
  stop(): Promise<void>
  /** Notices delivered by this sender (created, found created, or parked). */
  readonly sent: number
}

/** The buffer's background sender: direct calls at `rate`/s, retried with back-off. */
export function startSender (opts: SenderOptions): Sender {
  const clock = opts.clock ?? Date.now
  const rate = Math.max(opts.rate, 0.001)
  const burst = Math.max(1, Math.min(20, Math.ceil(rate / 10)))
  const baseBackoff = opts.backoffMs ?? 100
  const maxBackoff = Math.max(baseBackoff, opts.maxBackoffMs ?? 2000)
  const maxAttempts = Math.max(1, opts.maxAttempts ?? 5)
  const failures = new Map<string, number>()
  let tokens = burst
  let last = clock()
  let running = true
  let sent = 0
  let wakeFn: (() => void) | null = null
  let idle = false
  const sleep = (ms: number): Promise<void> => new Promise((resolve) => {
    const timer = setTimeout(() => { wakeFn = null; resolve() }, ms)
    wakeFn = () => { clearTimeout(timer); wakeFn = null; resolve() }
  })

  /** One direct call; true when the notice is delivered (created, found created, or parked). */
  const direct = async (orderId: string): Promise<boolean> => {
    const parsed = parseOrderId(orderId)
    if (parsed === null) return true
    if (opts.orderWriter !== undefined) {
      try {
        await opts.orderWriter({ ref: parsed.ref, entryId: 'buffer', orderId })
      } catch (err) {
        const n = (failures.get(orderId) ?? 0) + 1
        const reason = err instanceof Error ? err.message : String(err)
        if (n < maxAttempts) { failures.set(orderId, n); return false }
        await opts.store.deadLetterDirect(orderId, reason, n, clock())
        failures.delete(orderId)
        opts.onDeadLetter?.(orderId, reason)
        return true
      }
    }
    const created = await opts.store.createDirect(orderId, clock(), opts.paymentTimeoutMs)
    failures.delete(orderId)
    opts.onSent?.(orderId, created)
    return true
  }

  const loop = async (): Promise<void> => {
    let backoff = baseBackoff
    while (running) {
      if (opts.buffer.pending === 0) {
        idle = true
        await sleep(200)
        idle = false
        continue
      }
      const now = clock()
      tokens = Math.min(burst, tokens + (Math.max(0, now - last) * rate) / 1000)
      last = now
      if (tokens < 1) { await sleep(Math.ceil(((1 - tokens) * 1000) / rate)); continue }
      const batch = opts.buffer.peek(Math.floor(tokens))
      tokens -= batch.length
      let failed = false
      for (const id of batch) {
        if (!running) break
        try {
          if (await direct(id)) { opts.buffer.done(id); sent++ } else failed = true
        } catch (err) {
          opts.onError?.(err)
          failed = true
          break
        }
      }
      if (failed) {
        await sleep(backoff)
        backoff = Math.min(maxBackoff, backoff * 2)
      } else {
        backoff = baseBackoff
      }
    }
  }
  const done = loop()
  return {
    wake () { if (idle && wakeFn !== null) wakeFn() },
    async stop () {
      running = false
      if (wakeFn !== null) wakeFn()
      await done
    },
    get sent () { return sent }
  }
}
