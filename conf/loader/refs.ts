/**
 * Cross-references a guard makes: its campaign and product come from a route param (which the route's
 * path must have), a header, a query, a cookie, or a literal (which must be a configured campaign /
 * product).
 */
import { didYouMean } from '../check.js'
import type { MapView } from '../check.js'
import { quote } from '../quote.js'
import type { PNode } from '../tree.js'
import type { ValueSource } from '../types.js'
import type { GuardEnv, RouteCtx } from './guards/env.js'
import { source } from './values.js'

/** `campaign:` of a guard: default `param campaign`; a param must exist in the route path; a literal must be a campaign. */
export function campaignSource (env: GuardEnv, m: MapView, rc: RouteCtx, guard: string): ValueSource {
  const key = 'campaign'
  const n = m.get(key)
  const src = source(env.ck, n, key, ['param', 'header', 'query', 'cookie'], true) ?? { from: 'param', name: 'campaign' }
  checkParam(env, src, n, m, rc, guard, key)
  if (src.from === 'literal' && n !== undefined && !env.campaigns.has(src.value)) {
    const known = [...env.campaigns.keys()]
    env.ck.error(n.pos, `${guard}: campaign ${quote(src.value)} is not defined${didYouMean(src.value, known) || (known.length > 0 ? ` (defined: ${known.join(', ')})` : ' (no campaigns are defined)')}`)
  }
  return src
}

/** `product:` of a guard: as campaignSource; a literal must be a product of the (literal) campaign, or of any. */
export function productSource (env: GuardEnv, m: MapView, rc: RouteCtx, guard: string, campaign: ValueSource): ValueSource {
  const n = m.get('product')
  const src = source(env.ck, n, 'product', ['param', 'header', 'query', 'cookie'], true) ?? { from: 'param', name: 'product' }
  checkParam(env, src, n, m, rc, guard, 'product')
  if (src.from === 'literal' && n !== undefined) {
    const c = campaign.from === 'literal' ? env.campaigns.get(campaign.value) : undefined
    const exists = c !== undefined ? c.products.has(src.value) : [...env.campaigns.values()].some((x) => x.products.has(src.value))
    if (!exists && (campaign.from !== 'literal' || c !== undefined)) {
      env.ck.error(n.pos, `${guard}: product ${quote(src.value)} is not defined${c !== undefined && campaign.from === 'literal' ? ` in campaign ${quote(campaign.value)}` : ' in any campaign'}`)
    }
  }
  return src
}

function checkParam (env: GuardEnv, src: ValueSource, n: PNode | undefined, m: MapView, rc: RouteCtx, guard: string, key: string): void {
  if (src.from !== 'param') return
  if (rc.params !== null && rc.params.has(src.name)) return
  const where = n?.pos ?? m.pos
  const how = n === undefined ? ` (by default ${key} comes from param ${key}; set ${key}: to a param, header, query or a literal)` : ''
  if (rc.params === null) env.ck.error(where, `${guard}: ${key} comes from route param :${src.name} but route ${quote(rc.name)} has no path: with params${how}`)
  else env.ck.error(where, `${guard}: ${key} comes from route param :${src.name} but route ${quote(rc.name)} path ${quote(rc.pathText)} has no :${src.name}${how}`)
}
