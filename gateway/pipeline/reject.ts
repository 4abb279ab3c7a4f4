/**
 * Rejections: built once (at config load) with their JSON body pre-encoded; gateway/http/json.ts writes them.
 */
import type { RejectOverride } from '../../conf/types.js'
import type { RejectCode, Rejection } from './types.js'

export const STATUS: Readonly<Record<RejectCode, number>> = {
  BAD_REQUEST: 400,
  UNAUTHENTICATED: 401,
  BLOCKED: 403,
  CAPTCHA_REQUIRED: 403,
  CAPTCHA_INVALID: 403,
  LINK_INVALID: 403,
  LINK_EXPIRED: 403,
  QUEUE_REQUIRED: 403,
  NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  PAYLOAD_TOO_LARGE: 413,
  SOLD_OUT: 409,
  DUPLICATE: 409,
  NOT_STARTED: 409,
  ENDED: 409,
  RATE_LIMITED: 429,
  UPSTREAM_UNAVAILABLE: 502,
  UPSTREAM_TIMEOUT: 504,
  STORE_UNAVAILABLE: 503,
  OVERLOADED: 503,
  INTERNAL_ERROR: 500,
  REQUEST_TIMEOUT: 408,
  UNSUPPORTED_VERSION: 505
}

/**
 * A rejection with the contract's default status and `{"code","message"}` body, or the guard's
 * `reject:` override (status and/or body). `extra` fields are merged into the default body.
 */
export function rejection (code: RejectCode, message: string, opts: {
  override?: RejectOverride | null
  headers?: readonly string[] | null
  extra?: Record<string, unknown>
} = {}): Rejection {
  const o = opts.override ?? null
  const status = o?.status ?? STATUS[code]
  const body = o != null && o.body !== undefined && o.body !== null
    ? (typeof o.body === 'string' ? o.body : JSON.stringify(o.body))
    : JSON.stringify({ code, message, ...opts.extra })
  return { status, code, body: Buffer.from(body), headers: opts.headers ?? null }
}
