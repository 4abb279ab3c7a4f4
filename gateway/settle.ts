/**
 * Registering a settler: what a guard calls when it took something (a quota unit, a dedupe mark, a
 * token) that must be given back if the request is not admitted after all. The runner calls each
 * settler exactly once with the request's Outcome.
 */
import type { RequestContext, Settler } from './types.js'

/** Register a settler on the request (the array is created on first use: most requests have none). */
export function onSettle (ctx: RequestContext, fn: Settler): void {
  if (ctx.settlers === null) ctx.settlers = [fn]
  else ctx.settlers.push(fn)
}
