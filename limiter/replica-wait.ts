/**
 * `store.wait: { replicas, timeout }` — failover without oversell (issue 17). A quota admission (the
 * `addIfWithin`/`markAndAdd` that takes a unit) counts only once Redis WAIT says `replicas` replicas have
 * it: a primary that dies after answering "ok" cannot take the unit with it, because the replica Sentinel
 * (or the cluster) promotes has it too. Without this a promoted replica that lagged has lost the last
 * decrements, and the sale sells them again (the seed course's "101 people buy 100 units").
 *
 * Group commit (standalone Redis and Sentinel): WAIT answers for every write its connection made before
 * it, so one WAIT covers all admissions answered in one event-loop turn: each admission joins the turn's
 * batch when its script answers, and the batch's single WAIT goes out at the end of the turn
 * (setImmediate). The connection is the store's own admission connection (WAIT blocks the connection it
 * is sent on; other store calls do not queue behind it).
 *
 * When WAIT answers fewer replicas (the replicas lag or are gone) the admission rejects: the quota answers
 * 503 STORE_UNAVAILABLE (its fail_closed policy) and the unit is NOT given back — the give-back could
 * land on a promoted replica that never had the unit and free a unit someone else holds (an oversell).
 * The unit stays taken on the old primary (undersold by one per unconfirmed admission, counted in
 * flashgate_store_errors_total{op="wait"}). The dedupe mark set with it is deleted, so that buyer may
 * try again.
 */
import type { Redis } from 'ioredis'

/** Raised for an admission that WAIT did not confirm (the store turns it into FG_ERR_STORE_UNAVAILABLE). */
export class NotConfirmedError extends Error {
  override readonly name = 'NotConfirmedError'
  constructor (readonly wanted: number, readonly got: number, timeoutMs: number) {
    super(`not confirmed by ${wanted} replica${wanted === 1 ? '' : 's'} within ${timeoutMs}ms (${got} had it)`)
  }
}

export interface ReplicaWaitDeps {
  readonly replicas: number
  readonly timeoutMs: number
  /** Each WAIT's outcome: replicas that had the batch (-1: the WAIT itself failed) and its duration in ms. */
  readonly observe?: (acked: number, ms: number, batch: number) => void
}

/** One connection's WAIT batches. */
export class ReplicaWait {
  private open: Promise<number> | null = null
  private settle: ((n: number) => void) | null = null
  private fail: ((err: unknown) => void) | null = null
  private size = 0

  constructor (private readonly conn: Redis, private readonly deps: ReplicaWaitDeps) {}

  /**
   * Resolves once a WAIT sent after this call says `replicas` replicas have every write this connection
   * made so far; rejects with NotConfirmedError when fewer do, or with the connection's error.
   */
  confirm (): Promise<void> {
    if (this.open === null) {
      this.open = new Promise<number>((resolve, reject) => { this.settle = resolve; this.fail = reject })
      setImmediate(this.flush)
    }
    this.size++
    return this.open.then(this.check)
  }

  private readonly check = (acked: number): void => {
    if (acked < this.deps.replicas) throw new NotConfirmedError(this.deps.replicas, acked, this.deps.timeoutMs)
  }

  private readonly flush = (): void => {
    const settle = this.settle as (n: number) => void
    const fail = this.fail as (err: unknown) => void
    const size = this.size
    this.open = null
    this.settle = null
    this.fail = null
    this.size = 0
    const t0 = performance.now()
    let sent: Promise<number>
    try {
      sent = this.conn.wait(this.deps.replicas, this.deps.timeoutMs)
    } catch (err) {
      this.deps.observe?.(-1, 0, size)
      fail(err)
      return
    }
    sent.then((n) => {
      this.deps.observe?.(n, performance.now() - t0, size)
      settle(n)
    }, (err: unknown) => {
      this.deps.observe?.(-1, performance.now() - t0, size)
      fail(err)
    })
  }
}
