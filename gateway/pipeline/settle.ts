/**
 * Registering a settler: what a guard calls when it took something (a quota unit, a dedupe mark, a
 * token) that must be given back if the request is not admitted after all. The runner calls each
 * settler exactly once with the request's Outcome.
 */
import type { Outcome, RequestContext, Settler } from './types.js'

/** Register a settler on the request (the array is created on first use: most requests have none). */
export function onSettle (ctx: RequestContext, fn: Settler): void {
  if (ctx.settlers === null) ctx.settlers = [fn]
  else ctx.settlers.push(fn)
}

/**
 * Codes of rejections after which a limit's token goes back: a later *limit* rejected the request, or the
 * store or the upstream failed it. A guard that judged the client (BLOCKED, CAPTCHA_*, LINK_*, DUPLICATE,
 * NOT_STARTED, ENDED, SOLD_OUT, QUEUE_REQUIRED, UNAUTHENTICATED, BAD_REQUEST...) keeps the token spent,
 * so per-IP and per-user limits slow link and captcha guessing and DUPLICATE hammering.
 */
const LIMIT_GIVE_BACK: ReadonlySet<string> = new Set([
  'RATE_LIMITED', 'STORE_UNAVAILABLE', 'OVERLOADED', 'INTERNAL_ERROR', 'UPSTREAM_UNAVAILABLE', 'UPSTREAM_TIMEOUT'
])

/**
 * Whether a rate limit's token goes back for a request that ended this way (lua-resty-limit-traffic's
 * `uncommit`, which resty's `traffic.combine` calls only when a later limiter rejects): a later limit's
 * 429 or a store/upstream failure (no upstream answer other than the client leaving, an upstream 5xx, or
 * an upstream 429 — the backend's own limit). Not when a guard judged the client, nor on the client's
 * own abort, nor on any other upstream answer.
 */
export function limitGivesBack (o: Outcome): boolean {
  switch (o.kind) {
    case 'rejected': return LIMIT_GIVE_BACK.has(o.rejection.code)
    case 'failed': return o.code !== 'CLIENT_ABORTED'
    case 'upstream': return o.status >= 500 || o.status === 429
  }
}
