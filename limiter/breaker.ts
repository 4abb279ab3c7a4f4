/**
 * Circuit breaker around the store: after `failures` consecutive errors it opens for `backoffMs`
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
}
