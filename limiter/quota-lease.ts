/**
 * Quota leases: what bounds `quota: { on_error: local }`.
 *
 * While the store answers, each process reserves a block of units per product segment in the store —
 * one atomic `addIfWithin(q:{C:P:i}, n, segmentQuota)`, the same INCRBY-and-compare an admission is — and
 * keeps the block in memory, unused. The store counts leased units as admitted, so:
 * - while the store is up nothing changes on the admission path: one store call per admitted request,
 *   judged against a counter that already holds every lease;
 * - while the store is down (a call fails or the breaker refuses it) the process admits from its own
 *   lease, with no store call, until the lease is spent, then answers 503 STORE_UNAVAILABLE;
 * - when the store answers again the unused rest is returned (`addIfWithin(-n, ∞, {min: 0})`);
 *   no reconciliation adds anything: a unit admitted from a lease was counted when it was leased.
 * The total admitted is thus never more than the store's counter, which never passes the quota, through
 * store death, restart (with AOF the counter survives) and recovery. What an outage can admit is at most
 * the leases held when it began: `lease` × processes (gateway nodes × workers), per product.
 *
 * Every way a lease can be lost errs towards selling less, never more: a process that dies holding a lease
 * strands it (counted as admitted, sold by nobody) until an operator's release or reset; a return whose
 * answer never came is counted as not returned; a lease call that timed out and was applied after all is
 * added to the lease when its late answer arrives, and dropped when none does.
 *
 * Leases never take a product's last units: a block is taken only while the segment has at least
 * `(processes + 1) ×` the block left at the last reading, and a process that finds every segment full
 * returns its lease first and tries again (so the leased units are sold, not stranded, at the end of a
 * sale). A reset (admin) drops every lease: the units it counted went with the reset.
 */
import type { Store } from './store.js'
import { segmentKey, segmentQuota } from '../conf/store-keys.js'

/** The lease of one product in one process. */
export interface Lease {
  /** Per segment: units leased and not used. */
  units: number[]
  /** Per segment: a lease call in flight. */
  pending: boolean[]
  /** Admitted from the lease since the store last answered: the next answer returns the rest. */
  outage: boolean
  /** A return of every unused unit in flight (shared by the requests that wait for it). */
  returning: Promise<void> | null
}

export function newLease (segments: number): Lease {
  return { units: new Array<number>(segments).fill(0), pending: new Array<boolean>(segments).fill(false), outage: false, returning: null }
}

export const leaseHeld = (l: Lease): number => l.units.reduce((a, b) => a + b, 0)

/** Units of segment i in a lease of `size` split over `segments` (as the quota is split). */
const segmentLease = (size: number, segments: number, i: number): number => segmentQuota(size, segments, i)

export interface LeaseDeps {
  readonly store: Store
  readonly campaign: string
  readonly product: string
  /** Processes sharing the store (a block is taken only while (processes + 1) blocks are left). */
  readonly processes: number
  readonly onChange: (held: number) => void
  readonly log: (level: 'warn' | 'info', msg: string, fields: Record<string, unknown>) => void
}

/**
 * Top segment `i` up to its share of `size`, in the background, when the segment had `left` units at
 * this moment's reading. No-op while a lease call for it is in flight, the lease is full, or too few are left.
 */
export function topUp (l: Lease, d: LeaseDeps, size: number, segments: number, i: number, limit: number, left: number): void {
  const want = segmentLease(size, segments, i) - (l.units[i] ?? 0)
  if (want <= 0 || l.pending[i] === true || l.outage || l.returning !== null) return
  if (left < want * (d.processes + 1)) return
  l.pending[i] = true
  const got = (): void => {
    l.units[i] = (l.units[i] ?? 0) + want
    d.onChange(leaseHeld(l))
  }
  d.store.addIfWithin(segmentKey(d.campaign, d.product, i), want, limit, {
    // Timed out, then applied after all: the units are counted in the store, so they are this lease's.
    onLate: (r) => { if (r.ok) got() }
  }).then((r) => {
    l.pending[i] = false
    if (r.ok) got()
  }, () => { l.pending[i] = false })
}

/** One unit from the lease, from segment `prefer` when it has one; the segment, or -1 when the lease is spent. */
export function takeUnit (l: Lease, prefer: number): number {
  let s = (l.units[prefer] ?? 0) > 0 ? prefer : l.units.findIndex((u) => u > 0)
  if (s < 0) return -1
  l.units[s] = (l.units[s] ?? 0) - 1
  l.outage = true
  return s
}

/** A unit admitted from the lease whose request was not admitted downstream: back to the lease. */
export function putBack (l: Lease, s: number): void {
  if (s < l.units.length) l.units[s] = (l.units[s] ?? 0) + 1
}

/**
 * Return every unused unit to the store. The units leave the lease before the calls go out, so nothing
 * is spent twice; a call the open breaker refused (certainly not sent) puts its units back; any other
 * failure counts them as not returned (stranded: the safe direction).
 */
export function returnAll (l: Lease, d: LeaseDeps): Promise<void> {
  if (l.returning !== null) return l.returning
  l.outage = false
  const calls: Array<Promise<void>> = []
  for (let i = 0; i < l.units.length; i++) {
    const n = l.units[i] ?? 0
    if (n <= 0) continue
    l.units[i] = 0
    calls.push(d.store.addIfWithin(segmentKey(d.campaign, d.product, i), -n, Number.MAX_SAFE_INTEGER, { min: 0 }).then(() => {}, (err: unknown) => {
      if ((err as { code?: string }).code === 'FG_ERR_STORE_BREAKER_OPEN') {
        l.units[i] = (l.units[i] ?? 0) + n
        l.outage = true
      } else {
        d.log('warn', 'quota lease return failed (units stay counted as admitted)', { campaign: d.campaign, product: d.product, units: n })
      }
    }))
  }
  if (calls.length === 0) return Promise.resolve()
  const p = Promise.all(calls).then(() => {
    l.returning = null
    d.onChange(leaseHeld(l))
  })
  l.returning = p
  d.onChange(leaseHeld(l))
  return p
}

/** A reset dropped the counters the lease was taken from: the lease is gone with them. */
export function dropAll (l: Lease): void {
  l.units.fill(0)
  l.outage = false
}

/** The segment count changed on a reload: the old lease goes back first, then a lease of the new shape. */
export function reshape (l: Lease, d: LeaseDeps, segments: number): void {
  void returnAll({ ...l, units: l.units, returning: null }, d)
  l.outage = false
  l.units = new Array<number>(segments).fill(0)
  l.pending = new Array<boolean>(segments).fill(false)
}
