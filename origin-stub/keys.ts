/**
 * Key layout and order ids.
 *
 * Every key of one campaign × product carries the same Redis Cluster hash tag `{C:P}` (C and P
 * percent-encoded, so `:` `{` `}` in an id can neither collide nor break the tag), hence they all live
 * in one slot and each Lua script touches one slot only — it runs unchanged on Redis Cluster:
 *
 * | key                          | type   | holds |
 * |------------------------------|--------|-------|
 * | `<prefix>stock:{C:P}`        | hash   | `stock` (initial units), `sale`, `locked`, `sold`, `seq` (last order number) |
 * | `<prefix>buyers:{C:P}`       | hash   | user id → order number (one order per user and product) |
 * | `<prefix>orders:{C:P}`       | hash   | order number → JSON order record |
 * | `<prefix>queue:{C:P}`        | stream | `o` = order number; consumer group `origin`; entries are XACKed and XDELed when the order is created |
 * | `<prefix>paydue:{C:P}`       | zset   | order number scored by its payment deadline (CREATED orders only) |
 *
 * An order id is `C:P:N` (C and P percent-encoded, N the order number): it names its slot, so
 * `GET /orders/:id` needs no global index. The prefix must not contain `{`.
 */
import type { ProductRef } from './types.js'

export interface ProductKeys {
  readonly stock: string
  readonly buyers: string
  readonly orders: string
  readonly queue: string
  readonly paydue: string
}

/** The consumer group of every order queue. */
export const GROUP = 'origin'

export function tag (ref: ProductRef): string {
  return `{${encodeURIComponent(ref.campaign)}:${encodeURIComponent(ref.product)}}`
}

export function productKeys (prefix: string, ref: ProductRef): ProductKeys {
  const t = tag(ref)
  return {
    stock: `${prefix}stock:${t}`,
    buyers: `${prefix}buyers:${t}`,
    orders: `${prefix}orders:${t}`,
    queue: `${prefix}queue:${t}`,
    paydue: `${prefix}paydue:${t}`
  }
}

export function orderId (ref: ProductRef, seq: number | string): string {
  return `${encodeURIComponent(ref.campaign)}:${encodeURIComponent(ref.product)}:${seq}`
}

/** `C:P:N` → its product and order number; null when malformed (never throws). */
export function parseOrderId (id: string): { ref: ProductRef, seq: number } | null {
  if (id.length === 0 || id.length > 512) return null
  const parts = id.split(':')
  if (parts.length !== 3) return null
  const [c, p, n] = parts as [string, string, string]
  if (c === '' || p === '' || !/^[1-9]\d{0,15}$/.test(n)) return null
  try {
    return { ref: { campaign: decodeURIComponent(c), product: decodeURIComponent(p) }, seq: Number(n) }
  } catch {
    return null
  }
}

/** A stable map key for a product (memory store, metrics). */
export function refKey (ref: ProductRef): string {
  return tag(ref)
}
