/**
 * Ctx.renew (the strict listener's lane reuses one context per connection, issue 18) must leave a
 * context exactly as a new one: a field added to Ctx and forgotten in renew would carry one request's
 * state (its user, settlers, outcome, request id…) into the next.
 */
import t from 'tap'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { RouteConfig } from '../../conf/types.js'
import { Ctx } from '../../gateway/http/context.js'

const req = {} as IncomingMessage
const res = {} as ServerResponse
const route = { name: 'r' } as unknown as RouteConfig

t.test('a renewed context equals a new one, field for field', async (t) => {
  const args = [req, res, route, 'GET', '/a', 'q=1', 'h', '1.2.3.4', true, { p: 'x' }, 1_700_000_000_123, 12.5] as const
  const fresh = new Ctx(...args)
  const used = new Ctx({} as IncomingMessage, {} as ServerResponse, { name: 'o' } as unknown as RouteConfig, 'POST', '/b', '', 'g', '::1', false, {}, 1, 2)
  // Dirty every field a request may write.
  for (const k of Object.keys(used) as Array<keyof Ctx>) {
    const v = used[k]
    ;(used as unknown as Record<string, unknown>)[k] = typeof v === 'number' ? 7 : typeof v === 'boolean' ? !v : typeof v === 'string' ? 'dirty' : { dirty: true }
  }
  used.renew(...args)
  t.same(Object.keys(used), Object.keys(fresh), 'the same fields, in the same order (the same hidden shape)')
  for (const k of Object.keys(fresh) as Array<keyof Ctx>) t.equal(used[k], fresh[k], `${String(k)} as new`)
})
