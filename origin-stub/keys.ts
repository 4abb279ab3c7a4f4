/**
 * Key layout and order ids.
 *
 * Every key of one campaign × product carries the same Redis Cluster hash tag `{C:P}` (C and P
 * percent-encoded, so `:` `{` `}` in an id can neither collide nor break the tag), hence they all live
 * in one slot and each Lua script touches one slot only — it runs unchanged on Redis Cluster:
 *
 * | key                          | type   | holds |
 * |------------------------------|--------|-------|
 * | `<prefix>stock:{C:P}`        | hash   | `stock` (initial units), `sale`, `locked`, `sold`, `seq` (orders made) |
 * | `<prefix>buyers:{C:P}`       | hash   | user id → order token (one order per user and product) |
 * | `<prefix>orders:{C:P}`       | hash   | order token → JSON order record |
 * | `<prefix>queue:{C:P}`        | stream | `o` = order token; consumer group `origin`; entries are XACKed and XDELed when the order is created |
 * | `<prefix>paydue:{C:P}`       | zset   | order token scored by its payment deadline (CREATED orders only) |
 * | `<prefix>dead:{C:P}`         | stream | dead letters: `o` order token, `reason`, `attempts`, `at` (origin-stub/dead-letter.ts) |
 * | `<prefix>queued:{C:P}`       | zset   | QUEUED order tokens scored by when their notice was last known sent (origin-stub/requeue.ts) |
 *
 * An order id is `C:P:T` (C and P percent-encoded, T the order token: 128 random bits from the CSPRNG,
 * base64url, 22 characters): it names its slot, so `GET /orders/:id` needs no global index, and it
 * cannot be guessed from another (sequential ids let anyone enumerate the orders). The prefix must not
 * contain `{`.
 */
import { randomBytes } from 'node:crypto'
import type { ProductRef } from './types.js'

export interface ProductKeys {
  readonly stock: string
  readonly buyers: string
  readonly orders: string
  readonly queue: string
  readonly paydue: string
  readonly dead: string
  readonly queued: string
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
    paydue: `${prefix}paydue:${t}`,
    dead: `${prefix}dead:${t}`,
    queued: `${prefix}queued:${t}`
  }
}

/** A new order token: 128 random bits, base64url (22 characters). */
export function newOrderToken (): string {
  return randomBytes(16).toString('base64url')
}

const TOKEN_RE = /^[A-Za-z0-9_-]{22}$/

export function orderId (ref: ProductRef, token: string): string {
  return `${encodeURIComponent(ref.campaign)}:${encodeURIComponent(ref.product)}:${token}`
}

/** `C:P:T` → its product and order token; null when malformed (never throws). */
export function parseOrderId (id: string): { ref: ProductRef, token: string } | null {
  if (id.length === 0 || id.length > 512) return null
  const parts = id.split(':')
  if (parts.length !== 3) return null
  const [c, p, n] = parts as [string, string, string]
  if (c === '' || p === '' || !TOKEN_RE.test(n)) return null
  try {
    return { ref: { campaign: decodeURIComponent(c), product: decodeURIComponent(p) }, token: n }
  } catch {
    return null
  }
}

/** A stable map key for a product (memory store, metrics). */
export function refKey (ref: ProductRef): string {
  return tag(ref)
}
