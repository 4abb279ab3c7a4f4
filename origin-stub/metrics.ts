/**
 * The origin's metrics, on a Registry of its own (the gateway's style: never prom-client's global one).
 * Counters count what THIS process did (sum them over processes); the stock and queue gauges read the
 * shared store when scraped (a failed read keeps the last values and counts a store error).
 */
import { Counter, Gauge, Registry } from 'prom-client'
import { defaultMetrics } from '../conf/default-metrics.js'
import type { OriginStore, ProductRef } from './types.js'

export type BuyOutcome = 'queued' | 'sold_out' | 'duplicate' | 'bad_request' | 'store_unavailable'

export interface OriginMetrics {
  readonly registry: Registry
  /** Buys answered, by result. */
  readonly buys: Counter<'result'>
  /** Order transitions made by this process: queued, created, paid, cancelled. */
  readonly orders: Counter<'status'>
  readonly storeErrors: Counter<'op'>
  /** Released units this process gave back to the edge's counters on a shared store. */
  readonly edgeReleased: Counter<'campaign' | 'product'>
  /** The disk buffer of order notices: buffered (the stream refused it), sent (direct call), dead_lettered, failed (the disk refused it: 503). */
  readonly buffer: Counter<'event'>
  /** Lost order notices (origin-stub/requeue.ts) sent again: to the stream, to the buffer, or none (refused; looked at again later). */
  readonly requeued: Counter<'to'>
}

export function createOriginMetrics (opts: {
  store: OriginStore
  products: readonly ProductRef[]
  defaultMetrics?: boolean
}): OriginMetrics {
  const registry = new Registry()
  if (opts.defaultMetrics !== false) defaultMetrics(registry) // without the gauges promtool rejects
  const r = [registry]
  const storeErrors = new Counter({ name: 'flashgate_origin_store_errors_total', help: 'Origin store operations that failed or timed out.', labelNames: ['op'], registers: r })
  const buys = new Counter({ name: 'flashgate_origin_buys_total', help: 'Buy requests answered by the origin, by result.', labelNames: ['result'], registers: r })
  const orders = new Counter({ name: 'flashgate_origin_orders_total', help: 'Order transitions made by this origin process, by new status.', labelNames: ['status'], registers: r })
  for (const s of ['queued', 'sold_out', 'duplicate', 'bad_request', 'store_unavailable']) buys.inc({ result: s }, 0)
  for (const s of ['queued', 'created', 'paid', 'cancelled', 'dead_lettered']) orders.inc({ status: s }, 0)

  const { store, products } = opts
  // eslint-disable-next-line no-new
  new Gauge({
    name: 'flashgate_origin_stock',
    help: 'Units per product by state: stock (initial), sale, locked (ordered, unpaid), sold.',
    labelNames: ['campaign', 'product', 'state'],
    registers: r,
    async collect () {
      await Promise.all(products.map(async (p) => {
        try {
          const s = await store.stock(p)
          if (s === null) return
          for (const state of ['stock', 'sale', 'locked', 'sold'] as const) this.set({ campaign: p.campaign, product: p.product, state }, s[state])
        } catch {
          storeErrors.inc({ op: 'metrics' })
        }
      }))
    }
  })
  // eslint-disable-next-line no-new
  new Gauge({
    name: 'flashgate_origin_queue_depth',
    help: 'Queued buys whose order is not created yet (new + pending entries).',
    labelNames: ['campaign', 'product'],
    registers: r,
    async collect () {
      await Promise.all(products.map(async (p) => {
        try {
          this.set({ campaign: p.campaign, product: p.product }, await store.queueDepth(p))
        } catch {
          storeErrors.inc({ op: 'metrics' })
        }
      }))
    }
  })
  // eslint-disable-next-line no-new
  new Gauge({
    name: 'flashgate_origin_store_up',
    help: '1 while the origin store is reachable.',
    registers: r,
    collect () { this.set(store.healthy ? 1 : 0) }
  })
  const edgeReleased = new Counter({ name: 'flashgate_origin_edge_released_total', help: "Released units (cancelled orders) this origin process gave back to the edge quota (shared store or --release-to).", labelNames: ['campaign', 'product'], registers: r })
  for (const p of products) edgeReleased.inc({ campaign: p.campaign, product: p.product }, 0)
  const buffer = new Counter({ name: 'flashgate_origin_buffer_notices_total', help: 'Order notices of the disk buffer (the order stream refused them): buffered, sent (by direct call), dead_lettered, failed (the disk refused it; the buy answered 503).', labelNames: ['event'], registers: r })
  for (const e of ['buffered', 'sent', 'dead_lettered', 'failed']) buffer.inc({ event: e }, 0)
  const requeued = new Counter({ name: 'flashgate_origin_requeued_notices_total', help: 'Lost order notices (a QUEUED order whose notice was not known to be in the stream or a disk buffer after origin.requeue_after) sent again: to="stream", to="buffer", or to="none" (refused; looked at again after the bound).', labelNames: ['to'], registers: r })
  for (const e of ['stream', 'buffer', 'none']) requeued.inc({ to: e }, 0)
  return { registry, buys, orders, storeErrors, edgeReleased, buffer, requeued }
}
