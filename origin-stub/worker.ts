/**
 * The order worker: turns queued buys into orders at `orderRate` per second — the seckill design's flow
 * control toward the order system — and the payment-timeout sweeper.
 *
 * Worker loop (one per origin process, one consumer name):
 * 1. pacing: a token bucket of `orderRate`/s holding at most `burst` tokens; with no token it sleeps
 *    until the next one is due (no busy loop);
 * 2. it reads, in this order, its own pending entries (after a start or a store error: what it had been
 *    given and not finished), entries other consumers were given more than `claimIdleMs` ago and never
 *    finished (a crashed process; checked every `claimIdleMs / 2`), then new entries;
 * 3. each entry is completed (order CREATED + ack, one atomic step, idempotent);
 * 4. with nothing to do it waits for `pollMs` or until `wake()` (a buy in this process) — whichever first;
 * 5. on a store error it backs off (`backoffMs` doubling to `maxBackoffMs`, default 100 ms → 2 s:
 *    `origin.writer`) and starts again from step 2's own pending.
 *
 * Sweeper: ONE interval timer per process (not one per order) cancelling CREATED orders past their
 * payment deadline; exactly once even with several processes, because the cancel is one atomic step
 * that checks the status.
 */
import { orderAttempts, type OrderWriter } from './dead-letter.js'
import type { OriginStore, ProductRef, QueueEntry } from './types.js'

export interface WorkerOptions {
  readonly store: OriginStore
  readonly products: readonly ProductRef[]
  /** Unique per process (a stream consumer name). */
  readonly consumer: string
  /** Orders created per second by this process. */
  readonly orderRate: number
  readonly paymentTimeoutMs: number
  /** Entries given to a consumer that has not finished them after this long are taken over (default 5 s). */
  readonly claimIdleMs?: number
  /** Idle poll interval when the queue is empty (default 50 ms). */
  readonly pollMs?: number
  readonly clock?: () => number
  /** Called after each order this worker created. */
  readonly onCreated?: (entry: QueueEntry) => void
  readonly onError?: (err: unknown) => void
  /** The order system, handed each order before it is created; failures are retried, then parked (dead-letter.ts). */
  readonly orderWriter?: OrderWriter
  /** Failures of one order before it is parked in the dead-letter stream (default 5). */
  readonly maxAttempts?: number
  /** Called for each order parked. */
  readonly onDeadLetter?: (entry: QueueEntry, reason: string) => void
  /** Back-off after a store error or a failed hand-over round, doubling up to maxBackoffMs (default 100 ms → 2 s; `origin.writer`). */
  readonly backoffMs?: number
  readonly maxBackoffMs?: number
}

export interface Worker {
  /** Wake the loop now (a buy was queued by this process). */
  wake(): void
  /** Stop after the current step; resolves when the loop has exited. */
  stop(): Promise<void>
  /** Orders created by this worker. */
  readonly created: number
}

export function startWorker (opts: WorkerOptions): Worker {
  const clock = opts.clock ?? Date.now
  const rate = Math.max(opts.orderRate, 0.001)
  const burst = Math.max(1, Math.min(100, Math.ceil(rate / 20)))
  const claimIdleMs = opts.claimIdleMs ?? 5000
  const pollMs = opts.pollMs ?? 50
  let tokens = burst
  let last = clock()
  let running = true
  let created = 0
  let recoverOwn = true
  let nextClaimAt = 0
  let rr = 0
  const baseBackoff = Math.max(1, opts.backoffMs ?? 100)
  const maxBackoff = Math.max(baseBackoff, opts.maxBackoffMs ?? 2000)
  const attempts = opts.orderWriter === undefined ? null : orderAttempts(opts.orderWriter, Math.max(1, opts.maxAttempts ?? 5))

  let wakeFn: (() => void) | null = null
  let sleepTimer: NodeJS.Timeout | null = null
  const sleep = (ms: number): Promise<void> => new Promise((resolve) => {
    wakeFn = () => {
      if (sleepTimer !== null) clearTimeout(sleepTimer)
      sleepTimer = null
      wakeFn = null
      resolve()
    }
    sleepTimer = setTimeout(wakeFn, ms)
  })
  // A wake only cuts an idle wait short, never a pacing wait (that would break the rate).
  let idle = false

  const refill = (): void => {
    const now = clock()
    tokens = Math.min(burst, tokens + (Math.max(0, now - last) * rate) / 1000)
    last = now
  }

  const fetch = async (max: number): Promise<QueueEntry[]> => {
    const { store, products, consumer } = opts
    const out: QueueEntry[] = []
    if (recoverOwn) {
      for (const p of products) {
        if (out.length >= max) break
        out.push(...await store.readOwnPending(p, consumer, max - out.length))
      }
      // Done recovering once nothing of our own is left pending beyond what we now hold.
      if (out.length < max) recoverOwn = false
      if (out.length > 0) return out
    }
    const now = clock()
    if (now >= nextClaimAt) {
      nextClaimAt = now + Math.max(10, claimIdleMs / 2)
      for (const p of products) {
        if (out.length >= max) break
        out.push(...await store.claimIdle(p, consumer, claimIdleMs, max - out.length))
      }
      if (out.length > 0) return out
    }
    // Round-robin over products so one busy product does not starve the others.
    const n = products.length
    for (let i = 0; i < n && out.length < max; i++) {
      const p = products[(rr + i) % n]
      if (p !== undefined) out.push(...await store.readNew(p, consumer, max - out.length))
    }
    rr = (rr + 1) % Math.max(1, n)
    return out
  }

  const loop = async (): Promise<void> => {
    let backoff = baseBackoff
    while (running) {
      refill()
      if (tokens < 1) {
        await sleep(Math.ceil(((1 - tokens) * 1000) / rate))
        continue
      }
      try {
        const batch = await fetch(Math.floor(tokens))
        if (batch.length === 0) {
          idle = true
          await sleep(pollMs)
          idle = false
          backoff = baseBackoff
          continue
        }
        let todo: readonly QueueEntry[] = batch
        let retry = false
        if (attempts !== null) {
          // The order system first: what it did not take stays pending (retried after a back-off) or,
          // at its last attempt, is parked in the dead-letter stream.
          const sent = await attempts.send(batch)
          todo = sent.taken
          retry = sent.retry
          for (const p of sent.park) {
            await opts.store.deadLetter(p.entry, p.reason, p.attempts, clock())
            opts.onDeadLetter?.(p.entry, p.reason)
          }
        }
        // Completed concurrently (ioredis pipelines them); each is its own atomic step.
        const results = await Promise.all(todo.map(async (e) => await opts.store.complete(e, clock(), opts.paymentTimeoutMs)))
        tokens -= batch.length
        results.forEach((ok, i) => {
          if (!ok) return
          created++
          const e = todo[i]
          if (e !== undefined) opts.onCreated?.(e)
        })
        if (retry) {
          recoverOwn = true
          await sleep(backoff)
          backoff = Math.min(maxBackoff, backoff * 2)
          continue
        }
        backoff = baseBackoff
      } catch (err) {
        opts.onError?.(err)
        recoverOwn = true
        nextClaimAt = 0
        await sleep(backoff)
        backoff = Math.min(maxBackoff, backoff * 2)
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
    get created () { return created }
  }
}

export interface SweeperOptions {
  readonly store: OriginStore
  readonly products: readonly ProductRef[]
  readonly intervalMs: number
  /** Orders cancelled per store call (default 200). */
  readonly batch?: number
  readonly clock?: () => number
  readonly onCancelled?: (ref: ProductRef, n: number) => void
  /**
   * Units released (cancelled orders) claimed from the store after each sweep, to hand to the edge
   * (origin-stub/origin.ts: the shared store's edge counters and the onRelease hook). Awaited.
   */
  readonly onReleased?: (ref: ProductRef, n: number) => Promise<void>
  /** Called once per sweep and product before the orders are swept (following the edge's quota). */
  readonly beforeSweep?: (ref: ProductRef) => Promise<void>
  /** Called once per sweep and product after it (lost order notices sent again: origin-stub/requeue.ts). */
  readonly afterSweep?: (ref: ProductRef) => Promise<void>
  readonly onError?: (err: unknown) => void
}

export interface Sweeper {
  /** One sweep now (also what the timer runs); overlapping calls share the running one. */
  sweepNow(): Promise<number>
  stop(): Promise<void>
}

export function startSweeper (opts: SweeperOptions): Sweeper {
  const clock = opts.clock ?? Date.now
  const batch = opts.batch ?? 200
  let current: Promise<number> | null = null

  const sweepOnce = async (): Promise<number> => {
    let total = 0
    for (const p of opts.products) {
      await opts.beforeSweep?.(p)
      for (;;) {
        const n = await opts.store.sweep(p, clock(), batch)
        total += n
        if (n > 0) opts.onCancelled?.(p, n)
        if (n < batch) break
      }
      // Also what a pay after the deadline cancelled (it releases its unit without the sweeper).
      if (opts.onReleased !== undefined) {
        const r = await opts.store.takeReleased(p)
        if (r > 0) await opts.onReleased(p, r)
      }
      await opts.afterSweep?.(p)
    }
    return total
  }

  const sweepNow = (): Promise<number> => {
    current ??= sweepOnce().finally(() => { current = null })
    return current
  }

  const timer = setInterval(() => {
    sweepNow().catch((err: unknown) => opts.onError?.(err))
  }, opts.intervalMs)

  return {
    sweepNow,
    async stop () {
      clearInterval(timer)
      if (current !== null) await current.catch(() => 0)
    }
  }
}
