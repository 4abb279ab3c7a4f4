/**
 * Reading a guard's ValueSource off a request (valueOf, and valueReader over it: one set of rules for
 * every guard), and the process count the limiter guards split a node-local share by (their id and the
 * store's 503 are in ./common.ts; failure policies come resolved in the config).
 */
import type { ValueSource } from '../../conf/types.js'
import { StoreError } from '../../conf/errors.js'
import { cookieOf, headerOf } from '../../antibot/util.js'
import { queryOf } from '../http/query.js'
import type { GuardDeps, RequestContext } from '../pipeline/types.js'

/**
 * Compile a ValueSource into a reader; null when the request does not carry it. The same rules as
 * valueOf (one reader for every guard: a quoted cookie value is unwrapped, an empty value is absent).
 */
export function valueReader (src: ValueSource): (ctx: RequestContext) => string | null {
  return (ctx) => valueOf(ctx, src)
}

/** Processes sharing the store: gateway nodes × workers on this node. */
export function processCount (deps: GuardDeps): number {
  const nodes = deps.config.store.gatewayNodes ?? 1
  return Math.max(1, nodes) * Math.max(1, deps.worker.count)
}

/** Only StoreErrors are handled by a failure policy; anything else is a bug and propagates. */
export function asStoreError (err: unknown): StoreError {
  if (err instanceof StoreError) return err
  throw err
}

/**
 * Resolve a guard's value source against a request; null when the value is absent or empty. Cookies
 * follow antibot/util.ts cookieOf (RFC 6265: a value in double quotes is unwrapped), so `campaign="c1"`
 * reads c1 for every guard (two readers that disagree make dedupe and quota judge different campaigns).
 */
export function valueOf (ctx: RequestContext, src: ValueSource): string | null {
  switch (src.from) {
    case 'literal': return src.value
    case 'param': {
      const v = ctx.params[src.name]
      return v === undefined || v === '' ? null : v
    }
    case 'header': return headerOf(ctx.req.headers, src.name)
    case 'query': {
      const v = queryOf(ctx).get(src.name)
      return v === null || v === '' ? null : v
    }
    case 'cookie': return cookieOf(ctx.req.headers.cookie, src.name)
    case 'form': {
      const form = ctx.locals?.[FORM_FIELDS] as URLSearchParams | undefined
      const v = form?.get(src.name) ?? null
      return v === null || v === '' ? null : v
    }
  }
}

/** Key under ctx.locals where the parsed urlencoded form (when buffered) is kept. */
export const FORM_FIELDS = 'flashgate.form'
