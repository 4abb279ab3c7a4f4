/**
 * The one writer of the gateway's JSON answers: the edge, queue, pending and admin endpoints
 * (`sendJson`) and the rejections the pipeline and the server answer (`writeRejection`, from bytes
 * encoded once per Rejection). Every answer carries `content-type: application/json`,
 * `cache-control: no-store` and a `content-length`.
 */
import { STATUS_CODES, type ServerResponse } from 'node:http'
import type { Rejection } from '../pipeline/types.js'

/** The headers every JSON answer starts with, in this order. */
export const JSON_HEADERS: readonly string[] = ['content-type', 'application/json', 'cache-control', 'no-store']

/**
 * Write a JSON answer: `body` is stringified, or written as is when it is already-encoded bytes (a
 * Rejection's body, an answer built once). `headers` (a flat name/value list) follow the JSON headers.
 */
export function sendJson (res: ServerResponse, status: number, body: unknown, headers: readonly string[] = []): void {
  const data = body instanceof Uint8Array ? body : JSON.stringify(body)
  const length = typeof data === 'string' ? Buffer.byteLength(data) : data.length
  res.writeHead(status, [...JSON_HEADERS, 'content-length', String(length), ...headers])
  res.end(data)
}

/**
 * A Rejection as an edge endpoint's JSON answer (unless an answer was started): its status, pre-encoded
 * body, own headers and `extra`, through `writeHead`, where the server adds the endpoint's request id
 * and reads the outcome (so never the strict listener's fast path, which writes around both).
 */
export function sendRejection (res: ServerResponse, r: Rejection, extra: readonly string[] = []): void {
  if (res.headersSent || res.destroyed) return
  sendJson(res, r.status, r.body, r.headers === null ? extra : [...r.headers, ...extra])
}

/** Flat header list of a rejection (JSON headers, length, its own headers), cached per Rejection. */
const headerCache = new WeakMap<Rejection, string[]>()
function rejectionHeaders (r: Rejection, extra: readonly string[] | null, close: boolean, requestId: string | null): string[] {
  if (extra === null && !close) {
    let h = headerCache.get(r)
    if (h === undefined) {
      h = [...JSON_HEADERS, 'content-length', String(r.body.length)]
      if (r.headers !== null) h.push(...r.headers)
      headerCache.set(r, h)
    }
    if (requestId === null) return h
    const out = h.slice()
    out.push('x-request-id', requestId)
    return out
  }
  const h = [...JSON_HEADERS, 'content-length', String(r.body.length)]
  if (r.headers !== null) h.push(...r.headers)
  if (extra !== null) h.push(...extra)
  if (requestId !== null) h.push('x-request-id', requestId)
  if (close) h.push('connection', 'close')
  return h
}

type RejectFast = (this: ServerResponse, r: Rejection, extra: readonly string[] | null, close: boolean, requestId: string | null) => void

/**
 * Write a rejection unless an answer was already started or the client is gone. `close` asks for
 * `connection: close` on HTTP/1.1 (an HTTP/2 answer carries no connection header).
 */
export function writeRejection (res: ServerResponse, r: Rejection, extra: readonly string[] | null = null, close = false, requestId: string | null = null): void {
  if (res.headersSent || res.destroyed) return
  // The strict listener's response (gateway/http/raw-server.ts) writes the pre-encoded bytes itself.
  const fast = (res as { rejectFast?: RejectFast }).rejectFast
  if (fast !== undefined) { fast.call(res, r, extra, close, requestId); return }
  res.writeHead(r.status, rejectionHeaders(r, extra, close && !('stream' in res), requestId))
  res.end(r.body)
}

/**
 * A rejection's HTTP/1.1 status line and JSON headers, each line ending in CRLF, for the writers that
 * put the head on a socket themselves (node:http's clientError answers, the strict listener): the same
 * fields, in the same order, as `writeRejection` gives node:http.
 */
export function rejectionHead (r: Rejection): string {
  return `HTTP/1.1 ${r.status} ${STATUS_CODES[r.status] ?? 'unknown'}\r\ncontent-type: application/json\r\ncache-control: no-store\r\ncontent-length: ${r.body.length}\r\n`
}
