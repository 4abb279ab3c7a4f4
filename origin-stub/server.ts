/**
 * The origin's HTTP surface (CONTRACT.md, "The purchase origin"):
 *
 * | request                          | answers |
 * |----------------------------------|---------|
 * | `POST /buy/:campaign/:product`   | 202 `{"status":"QUEUED","order_id"}` · 409 SOLD_OUT · 409 DUPLICATE (+ `order_id`) · 400 BAD_REQUEST (no/invalid `x-user-id`, unknown product) · 503 STORE_UNAVAILABLE |
 * | `GET /orders/:id`                | 200 the order, to its buyer (`x-user-id`) · 403 FORBIDDEN for anyone else or no user · 404 NOT_FOUND |
 * | `GET /orders?campaign=C&product=P` | 200 the `x-user-id` user's order for that product (a buyer who lost the 202 finds it here) · 404 NOT_FOUND (no order) · 400 (no user, unknown product) |
 * | `POST /orders/:id/pay`           | 200 `{"status":"PAID",...}` (again 200 when already paid) · 409 ORDER_CANCELLED · 409 ORDER_NOT_CREATED (still QUEUED, retry) · 403 FORBIDDEN (not the buyer, or no `x-user-id`) · 404 |
 * | `GET /stock/:campaign/:product`  | 200 `{"stock","sale","locked","sold"}` · 404 |
 * | `GET /healthz` · `GET /readyz`   | 200 `{"status":"ok","store":"up"\|"down"}` · readyz 503 while the store is down |
 * | `GET /metrics`                   | Prometheus text |
 *
 * Every error is JSON `{"code","message"}` with `Cache-Control: no-store`; a store failure is 503
 * STORE_UNAVAILABLE, bounded by the store's command timeout — never a hang.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { StoreError } from '../conf/errors.js'
import { refKey } from './keys.js'
import type { OriginMetrics } from './metrics.js'
import type { NoticeBuffer } from './buffer.js'
import type { Order, OriginStore, ProductRef } from './types.js'

export interface HandlerDeps {
  readonly store: OriginStore
  readonly products: readonly ProductRef[]
  readonly metrics: OriginMetrics
  readonly clock: () => number
  /** A buy was queued here: wake the local worker. */
  readonly onQueued?: () => void
  /** The disk buffer a notice goes to when the order stream refused it (null: none yet / configured). */
  readonly buffer?: () => NoticeBuffer | null
  /** A notice was buffered: wake the buffer's sender. */
  readonly onBuffered?: () => void
  readonly log?: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void
}

const MAX_USER = 128
// Printable ASCII without spaces at the ends; ids are opaque but must be safe to echo and store.
const USER_RE = /^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/

function send (res: ServerResponse, status: number, body: unknown, headers?: Record<string, string>): void {
  const buf = Buffer.from(JSON.stringify(body))
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': buf.length,
    'cache-control': 'no-store',
    ...headers
  })
  res.end(buf)
}

function fail (res: ServerResponse, status: number, code: string, message: string, extra?: Record<string, unknown>): void {
  send(res, status, { code, message, ...extra })
}

export function orderJson (o: Order): Record<string, unknown> {
  return {
    order_id: o.orderId,
    status: o.status,
    campaign: o.campaign,
    product: o.product,
    user: o.user,
    queued_at: o.queuedAt,
    created_at: o.createdAt,
    pay_by: o.payBy,
    paid_at: o.paidAt,
    cancelled_at: o.cancelledAt
  }
}

function decode (seg: string): string | null {
  try {
    const s = decodeURIComponent(seg)
    return s.length === 0 || s.length > 256 ? null : s
  } catch {
    return null
  }
}

/** The request handler of the origin (wire it to a node:http server). */
export function createOriginHandler (deps: HandlerDeps): (req: IncomingMessage, res: ServerResponse) => void {
  const { store, metrics, clock } = deps
  const known = new Set(deps.products.map(refKey))

  const storeDown = (res: ServerResponse, op: string, err: unknown): void => {
    metrics.storeErrors.inc({ op })
    if (!(err instanceof StoreError)) deps.log?.('error', `origin ${op} failed`, { err: err instanceof Error ? err.message : String(err) })
    fail(res, 503, 'STORE_UNAVAILABLE', 'the order store is unavailable, retry later')
  }

  const productOf = (res: ServerResponse, c: string | undefined, p: string | undefined, status: number): ProductRef | null => {
    const campaign = c === undefined ? null : decode(c)
    const product = p === undefined ? null : decode(p)
    if (campaign === null || product === null || !known.has(refKey({ campaign, product }))) {
      fail(res, status, status === 404 ? 'NOT_FOUND' : 'BAD_REQUEST', 'unknown campaign or product')
      return null
    }
    return { campaign, product }
  }

  const userOf = (req: IncomingMessage): string | null | undefined => {
    const h = req.headers['x-user-id']
    if (h === undefined) return null
    if (typeof h !== 'string' || h.length > MAX_USER || !USER_RE.test(h)) return undefined
    return h
  }

  const buy = async (req: IncomingMessage, res: ServerResponse, c: string | undefined, p: string | undefined): Promise<void> => {
    const user = userOf(req)
    if (user == null) {
      metrics.buys.inc({ result: 'bad_request' })
      fail(res, 400, 'BAD_REQUEST', user === null ? 'x-user-id is required' : 'x-user-id is invalid')
      return
    }
    const ref = productOf(res, c, p, 400)
    if (ref === null) { metrics.buys.inc({ result: 'bad_request' }); return }
    let r
    try {
      r = await store.buy(ref, user, clock())
    } catch (err) {
      metrics.buys.inc({ result: 'store_unavailable' })
      storeDown(res, 'buy', err)
      return
    }
    switch (r.kind) {
      case 'queued':
        if (r.unsent === true) {
          // The unit is taken and the order QUEUED; its notice must be on disk before the buyer hears so.
          const b = deps.buffer?.() ?? null
          try {
            if (b === null) throw new Error('no disk buffer (origin.buffer)')
            await b.append(r.orderId, clock())
            // On disk: no longer a lost notice. A failed removal only means a harmless duplicate notice later.
            await deps.store.noticeKept(r.orderId).catch(() => {})
          } catch (err) {
            metrics.buffer.inc({ event: 'failed' })
            metrics.buys.inc({ result: 'store_unavailable' })
            deps.log?.('error', 'origin: an order notice could not be buffered; the order stays QUEUED with its unit locked until its notice is sent again (origin.requeue_after)', { order: r.orderId, err: err instanceof Error ? err.message : String(err) })
            fail(res, 503, 'STORE_UNAVAILABLE', 'the order queue is unavailable, retry later')
            return
          }
          metrics.buffer.inc({ event: 'buffered' })
          deps.onBuffered?.()
        }
        metrics.buys.inc({ result: 'queued' })
        metrics.orders.inc({ status: 'queued' })
        deps.onQueued?.()
        send(res, 202, { status: 'QUEUED', order_id: r.orderId })
        return
      case 'duplicate':
        metrics.buys.inc({ result: 'duplicate' })
        fail(res, 409, 'DUPLICATE', 'this user already has an order for this product', { order_id: r.orderId })
        return
      case 'sold_out':
        metrics.buys.inc({ result: 'sold_out' })
        fail(res, 409, 'SOLD_OUT', 'sold out')
    }
  }

  // Orders are shown and paid only for their buyer: an order id handed to someone else (or leaked in a
  // log) neither shows who bought what nor lets anyone else pay it.
  const getOrder = async (req: IncomingMessage, res: ServerResponse, id: string): Promise<void> => {
    const user = userOf(req)
    if (user == null) { fail(res, 403, 'FORBIDDEN', 'orders are shown to their buyer only (x-user-id)'); return }
    let o
    try {
      o = await store.order(id)
    } catch (err) {
      storeDown(res, 'order', err)
      return
    }
    if (o === null) fail(res, 404, 'NOT_FOUND', 'no such order')
    else if (o.user !== user) fail(res, 403, 'FORBIDDEN', 'this order belongs to another user')
    else send(res, 200, orderJson(o))
  }

  /** `GET /orders?campaign=C&product=P`: the caller's own order (one per user and product). */
  const myOrder = async (req: IncomingMessage, res: ServerResponse, query: string): Promise<void> => {
    const user = userOf(req)
    if (user == null) { fail(res, 400, 'BAD_REQUEST', user === null ? 'x-user-id is required' : 'x-user-id is invalid'); return }
    const q = new URLSearchParams(query)
    const c = q.get('campaign')
    const p = q.get('product')
    const ref = c === null || p === null ? null : productOf(res, encodeURIComponent(c), encodeURIComponent(p), 400)
    if (ref === null) { if (!res.headersSent) fail(res, 400, 'BAD_REQUEST', 'campaign and product are required'); return }
    let o
    try {
      o = await store.orderOf(ref, user)
    } catch (err) {
      storeDown(res, 'order', err)
      return
    }
    if (o === null) fail(res, 404, 'NOT_FOUND', 'no order of this user for this product')
    else send(res, 200, orderJson(o))
  }

  const pay = async (req: IncomingMessage, res: ServerResponse, id: string): Promise<void> => {
    const user = userOf(req)
    if (user == null) { fail(res, 403, 'FORBIDDEN', 'orders are paid by their buyer only (x-user-id)'); return }
    let r
    try {
      r = await store.pay(id, user, clock())
    } catch (err) {
      storeDown(res, 'pay', err)
      return
    }
    switch (r.kind) {
      case 'paid':
        if (!r.already) metrics.orders.inc({ status: 'paid' })
        send(res, 200, orderJson(r.order))
        return
      case 'not_found': fail(res, 404, 'NOT_FOUND', 'no such order'); return
      case 'forbidden': fail(res, 403, 'FORBIDDEN', 'this order belongs to another user'); return
      case 'not_created': fail(res, 409, 'ORDER_NOT_CREATED', 'the order is still queued; retry in a moment', { status: 'QUEUED' }); return
      case 'cancelled':
        // This call itself cancels it when the deadline has passed and the sweeper has not come by yet.
        if (r.byThisCall) metrics.orders.inc({ status: 'cancelled' })
        fail(res, 409, 'ORDER_CANCELLED', 'the order was cancelled (payment timeout)', { status: 'CANCELLED' })
    }
  }

  const getStock = async (res: ServerResponse, c: string | undefined, p: string | undefined): Promise<void> => {
    const ref = productOf(res, c, p, 404)
    if (ref === null) return
    let s
    try {
      s = await store.stock(ref)
    } catch (err) {
      storeDown(res, 'stock', err)
      return
    }
    if (s === null) fail(res, 404, 'NOT_FOUND', 'no stock for this product')
    else send(res, 200, s)
  }

  const metricsText = async (res: ServerResponse): Promise<void> => {
    const text = await metrics.registry.metrics()
    res.writeHead(200, { 'content-type': metrics.registry.contentType, 'cache-control': 'no-store' })
    res.end(text)
  }

  /**
   * The dead-letter stream's admin view and re-drive (origin-stub/dead-letter.ts): `GET
   * /admin/dead-letters/C/P[?max=N]` lists the oldest N (default 100), `POST .../redrive[?max=N]` sends
   * them back into the order queue. Loopback peers only (403 FORBIDDEN otherwise).
   */
  const deadLetterAdmin = async (req: IncomingMessage, res: ServerResponse, query: string, c: string | undefined, p: string | undefined, redrive: boolean): Promise<void> => {
    const peer = req.socket.remoteAddress ?? ''
    if (!/^(127\.|::1$|::ffff:127\.)/.test(peer)) { fail(res, 403, 'FORBIDDEN', 'admin endpoints answer loopback peers only'); return }
    const ref = productOf(res, c, p, 404)
    if (ref === null) return
    const raw = new URLSearchParams(query).get('max')
    const max = raw === null ? 100 : Number(raw)
    if (!Number.isSafeInteger(max) || max < 1 || max > 10_000) { fail(res, 400, 'BAD_REQUEST', 'max must be an integer 1..10000'); return }
    try {
      if (redrive) {
        const queued = await store.redrive(ref, max)
        if (queued > 0) deps.onQueued?.()
        send(res, 200, { queued, left: await store.deadLetterCount(ref) })
      } else {
        send(res, 200, { count: await store.deadLetterCount(ref), letters: (await store.deadLetters(ref, max)).map((l) => ({ entry_id: l.entryId, order_id: l.orderId, reason: l.reason, attempts: l.attempts, at: l.at })) })
      }
    } catch (err) {
      storeDown(res, redrive ? 'redrive' : 'dead_letters', err)
    }
  }

  const methodNotAllowed = (res: ServerResponse, allow: string): void => {
    send(res, 405, { code: 'METHOD_NOT_ALLOWED', message: `use ${allow}` }, { allow })
  }

  const route = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = req.url ?? '/'
    const q = url.indexOf('?')
    const path = q === -1 ? url : url.slice(0, q)
    if (!path.startsWith('/')) { fail(res, 400, 'BAD_REQUEST', 'bad request target'); return }
    const seg = path.split('/').slice(1)
    const m = req.method ?? 'GET'
    const [a, b, c] = seg
    if (a === 'buy' && seg.length === 3) {
      if (m !== 'POST') { methodNotAllowed(res, 'POST'); return }
      await buy(req, res, b, c); return
    }
    if (a === 'orders' && seg.length === 1) {
      if (m !== 'GET' && m !== 'HEAD') { methodNotAllowed(res, 'GET'); return }
      await myOrder(req, res, q === -1 ? '' : url.slice(q + 1)); return
    }
    if (a === 'orders' && b !== undefined && b !== '') {
      const id = decode(b)
      if (seg.length === 2) {
        if (m !== 'GET' && m !== 'HEAD') { methodNotAllowed(res, 'GET'); return }
        if (id === null) { fail(res, 404, 'NOT_FOUND', 'no such order'); return }
        await getOrder(req, res, id); return
      }
      if (seg.length === 3 && c === 'pay') {
        if (m !== 'POST') { methodNotAllowed(res, 'POST'); return }
        if (id === null) { fail(res, 404, 'NOT_FOUND', 'no such order'); return }
        await pay(req, res, id); return
      }
    }
    if (a === 'stock' && seg.length === 3) {
      if (m !== 'GET' && m !== 'HEAD') { methodNotAllowed(res, 'GET'); return }
      await getStock(res, b, c); return
    }
    if (seg.length === 1 && (a === 'healthz' || a === 'readyz')) {
      const up = store.healthy
      send(res, a === 'readyz' && !up ? 503 : 200, { status: a === 'readyz' && !up ? 'unavailable' : 'ok', store: up ? 'up' : 'down' })
      return
    }
    if (seg.length === 1 && a === 'metrics') { await metricsText(res); return }
    if (a === 'admin' && b === 'dead-letters' && (seg.length === 4 || (seg.length === 5 && seg[4] === 'redrive'))) {
      const redrive = seg.length === 5
      if (m !== (redrive ? 'POST' : 'GET')) { methodNotAllowed(res, redrive ? 'POST' : 'GET'); return }
      await deadLetterAdmin(req, res, q === -1 ? '' : url.slice(q + 1), c, seg[3], redrive); return
    }
    fail(res, 404, 'NOT_FOUND', 'no such endpoint')
  }

  return (req, res) => {
    // Bodies are not used: drain them so keep-alive connections stay usable.
    req.resume()
    route(req, res).catch((err: unknown) => {
      deps.log?.('error', 'origin handler failed', { err: err instanceof Error ? err.message : String(err) })
      if (!res.headersSent) fail(res, 500, 'INTERNAL', 'internal error')
      else res.destroy()
    })
  }
}
