/**
 * Query parameters, read one at a time. Guards read two to four parameters of a request (a signed link:
 * expires, kid, sig), and `new URLSearchParams(query)` decodes every pair into a list first; these scan the
 * raw query in place and decode only the value asked for. Answers are exactly those of
 * `new URLSearchParams(query).get(name)` (test/gateway/query.test.ts compares them on generated queries).
 */
import type { RequestContext } from '../pipeline/types.js'

/** What guards need of a parsed query: URLSearchParams has this shape too (the edge endpoints pass one). */
export interface QueryParams {
  get (name: string): string | null
}

/** The first value of `name` in a raw query string (no `#fragment`), decoded as URLSearchParams does. */
export function queryParam (query: string, name: string): string | null {
  const n = query.length
  // URLSearchParams drops one leading '?'.
  let i = n > 0 && query.charCodeAt(0) === 63 ? 1 : 0
  while (i < n) {
    let end = query.indexOf('&', i)
    if (end === -1) end = n
    if (end > i) {
      let eq = query.indexOf('=', i)
      if (eq === -1 || eq > end) eq = end
      if (keyIs(query, i, eq, name)) return eq === end ? '' : decode(query.slice(eq + 1, end))
    }
    i = end + 1
  }
  return null
}

/** Whether the raw key query[start, end) decodes to `name`. */
function keyIs (query: string, start: number, end: number, name: string): boolean {
  for (let j = start; j < end; j++) {
    const c = query.charCodeAt(j)
    if (c === 37 || c === 43 || (c >= 0xd800 && c <= 0xdfff)) return decode(query.slice(start, end)) === name
  }
  return end - start === name.length && query.startsWith(name, start)
}

/**
 * A raw value as URLSearchParams decodes it: '+' is a space, %XX a byte, the bytes UTF-8 (malformed
 * sequences kept or replaced exactly as URLSearchParams does, by letting it decode that one value).
 * A value with none of '%', '+' or a UTF-16 surrogate decodes to itself.
 */
function decode (raw: string): string {
  if (!NEEDS_DECODING.test(raw)) return raw
  return new URLSearchParams('v=' + raw).get('v') as string
}
const NEEDS_DECODING = /[%+\uD800-\uDFFF]/

/** Parameters of a raw query, looked up on demand (see queryParam). */
class RawQuery implements QueryParams {
  constructor (private readonly query: string) {}
  get (name: string): string | null { return queryParam(this.query, name) }
}

/** The request's query parameters, made on first use and kept on the context. */
export function queryOf (ctx: RequestContext): QueryParams {
  let q = ctx.queryParams
  if (q === null) {
    q = new RawQuery(ctx.query)
    ctx.queryParams = q
  }
  return q
}
