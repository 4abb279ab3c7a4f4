/**
 * What outlives one config. A reload builds new guards; they find the old buckets, latches, rooms and
 * spent-token caches here, so a reload neither refunds a limit nor forgets a sold-out product.
 *
 * Each guard module declares the slots it keeps (`new Slot('rate_limit zones', () => new Map())`), so a
 * read is typed where the state is defined and no module can read another's state by guessing a string.
 */
export class Slot<T> {
  constructor (readonly name: string, readonly create: () => T) {}
}

export class KeptState {
  readonly #values = new Map<Slot<unknown>, unknown>()

  /** The slot's value, created on first use. */
  get<T> (slot: Slot<T>): T {
    if (this.#values.has(slot)) return this.#values.get(slot) as T
    const v = slot.create()
    this.#values.set(slot, v)
    return v
  }

  /** Replace a slot's value (tests share a key between two processes' worth of guards this way). */
  set<T> (slot: Slot<T>, value: T): void {
    this.#values.set(slot, value)
  }
}

/**
 * Raised by the keyless (global) rate limit while it rejects; the pow challenge reads it and asks for its
 * harder difficulty. One per process, shared across reloads.
 */
export class OverloadSignal {
  active = false
}
