/**
 * Circuit breaker around the store (and the captcha provider's siteverify client): after `failures` consecutive errors it opens for `backoffMs`
 * (calls fail fast, no I/O), then lets exactly one probe through (half-open); the probe's success
 * closes it, its failure opens it again for another back-off. `reset()` closes it at once (the Redis
 * client calls it when its connection becomes ready again, so recovery does not wait for a probe).
 */
export class Breaker {
  private consecutive = 0
  private openUntil = 0
  private probing = false
  state: 'closed' | 'open' | 'half-open' = 'closed'

  constructor (
    private readonly failures: number,
    private readonly backoffMs: number,
    private readonly clock: () => number,
    private readonly onChange: (open: boolean) => void = () => {}
  ) {}

  /** May a call go out now? (In half-open, true once: that call is the probe.) */
  allow (): boolean {
    if (this.state === 'closed') return true
    if (this.state === 'open') {
      if (this.clock() < this.openUntil) return false
      this.state = 'half-open'
      this.probing = false
    }
    if (this.probing) return false
    this.probing = true
    return true
  }

  success (): void {
    this.consecutive = 0
    if (this.state !== 'closed') {
      this.state = 'closed'
      this.probing = false
      this.onChange(false)
    }
  }

  failure (): void {
    this.consecutive++
    if (this.state === 'half-open' || (this.state === 'closed' && this.consecutive >= this.failures)) {
      const wasClosed = this.state === 'closed'
      this.state = 'open'
      this.probing = false
      this.openUntil = this.clock() + this.backoffMs
      if (wasClosed) this.onChange(true)
    }
  }

  reset (): void { this.success() }

  /** Calls are refused now: within the back-off, or while the half-open probe is out. */
  get open (): boolean {
    if (this.state === 'open') return this.clock() < this.openUntil
    return this.state === 'half-open' && this.probing
  }
}

/** How often a store write that must not be lost is tried when the open breaker refuses it. */
const REFUSED_TRIES = 10

/**
 * Send a store write that must not be lost (a quota give-back, a dedupe mark's release). A call the open
 * breaker refused was certainly not sent, so it is sent again half a back-off later (at least 20 ms), up to
 * REFUSED_TRIES times in all. Any other failure, or the last refusal, goes to `onFailed`: a call that timed
 * out may have been applied, so it is not repeated. `send` may resolve without sending (nothing left to do).
 */
export function retryRefused (send: () => Promise<unknown>, breakerBackoffMs: number, onFailed: (err: unknown) => void, attempt = 0): void {
  send().then(undefined, (err: unknown) => {
    if ((err as { code?: string }).code === 'FG_ERR_STORE_BREAKER_OPEN' && attempt + 1 < REFUSED_TRIES) {
      setTimeout(() => { retryRefused(send, breakerBackoffMs, onFailed, attempt + 1) }, Math.max(20, Math.ceil(breakerBackoffMs / 2))).unref()
      return
    }
    onFailed(err)
  })
}
