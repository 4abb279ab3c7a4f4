/**
 * One timer for many delayed requests (leaky_bucket `delay`): waiters sit in a binary min-heap by
 * deadline and a single setTimeout is armed for the earliest one — never a timer per request (as
 * undici's shared timers). Deadlines are in the caller's clock (epoch ms); `clock` is read only when the
 * timer fires, to release everything due.
 */

interface Waiter { at: number, resolve: () => void }

export class DelayQueue {
  private readonly heap: Waiter[] = []
  private timer: NodeJS.Timeout | null = null
  private armedAt = Infinity
  private readonly clock: () => number

  constructor (clock: () => number) {
    this.clock = clock
  }

  get size (): number { return this.heap.length }

  /** Resolves at (or just after) `at`. */
  wait (at: number): Promise<void> {
    return new Promise<void>((resolve) => {
      this.push({ at, resolve })
      if (at < this.armedAt) this.arm()
    })
  }

  /** Release every waiter now (shutdown). */
  flush (): void {
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
    this.armedAt = Infinity
    const all = this.heap.splice(0)
    for (const w of all) w.resolve()
  }

  private arm (): void {
    if (this.timer !== null) clearTimeout(this.timer)
    const first = this.heap[0]
    if (first === undefined) { this.timer = null; this.armedAt = Infinity; return }
    this.armedAt = first.at
    const ms = first.at - this.clock()
    this.timer = setTimeout(this.fire, ms > 0 ? ms : 0)
  }

  private readonly fire = (): void => {
    this.timer = null
    const now = this.clock()
    let w = this.heap[0]
    while (w !== undefined && w.at <= now) {
      this.pop()
      w.resolve()
      w = this.heap[0]
    }
    this.armedAt = Infinity
    this.arm()
  }

  private push (w: Waiter): void {
    const h = this.heap
    h.push(w)
    let i = h.length - 1
    while (i > 0) {
      const parent = (i - 1) >> 1
      const p = h[parent] as Waiter
      if (p.at <= w.at) break
      h[i] = p
      i = parent
    }
    h[i] = w
  }

  private pop (): void {
    const h = this.heap
    const last = h.pop()
    if (last === undefined || h.length === 0) return
    let i = 0
    const n = h.length
    for (;;) {
      const l = 2 * i + 1
      if (l >= n) break
      const r = l + 1
      const c = r < n && (h[r] as Waiter).at < (h[l] as Waiter).at ? r : l
      if ((h[c] as Waiter).at >= last.at) break
      h[i] = h[c] as Waiter
      i = c
    }
    h[i] = last
  }
}
