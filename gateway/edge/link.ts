/**
 * `GET /_flashgate/link?campaign=C&product=P[&route=NAME]` — needs identity (401 without); from
 * `starts_at - link_reveal` until `ends_at` answers `{"url","expires_at"}`: the purchase path of the
 * route carrying a `signed_link` guard (its `:campaign` / `:product` pattern filled in), signed for this
 * user, campaign and product. Before → 409 NOT_STARTED (with `now`, `starts_in`, `reveal_in`), from
 * `ends_at` → 409 ENDED, unknown campaign/product/route → 404 NOT_FOUND. The link expires at
 * `ends_at + link_grace`, or `link_ttl` after issue when that is sooner.
 */
import type { RouteConfig, SignedLinkGuardConfig } from '../../conf/types.js'
import type { EdgeHandler, GuardDeps } from '../pipeline/types.js'
import { rejection } from '../pipeline/reject.js'
import { linkKeys, newNonce, signLinkQuery } from '../../antibot/signed-link.js'
import { sendJson } from '../http/json.js'
import { METHOD, UNAUTH, identityCtx, reject } from './respond.js'

const NO_CAMPAIGN = rejection('NOT_FOUND', 'no such campaign or product')
const NO_ROUTE = rejection('NOT_FOUND', 'no purchase route with a signed_link guard')
const BAD = rejection('BAD_REQUEST', 'campaign and product are required')

interface LinkRoute {
  readonly route: RouteConfig
  readonly guard: SignedLinkGuardConfig
  /** Path segments: literal strings, or the name of a `:param`. */
  readonly segments: ReadonlyArray<{ lit: string } | { param: string }>
  readonly method: string
}

function linkRoutes (deps: GuardDeps): LinkRoute[] {
  const out: LinkRoute[] = []
  for (const route of deps.config.routes) {
    const g = route.guards.find((x): x is SignedLinkGuardConfig => x.kind === 'signed_link' && x.mode === 'hmac')
    const pattern = route.match.path
    if (g === undefined || pattern === null) continue
    const segments = pattern.split('/').map((s) => s.startsWith(':') ? { param: s.slice(1) } : { lit: s })
    out.push({ route, guard: g, segments, method: route.match.methods?.[0] ?? '*' })
  }
  return out
}

/** The link endpoint for a config (built once per load). */
export function linkHandler (deps: GuardDeps): EdgeHandler {
  const routes = linkRoutes(deps)
  const signer = routes.length > 0 ? linkKeys(deps.config).signer : null

  return (req, res, e) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return reject(res, METHOD)
    if (signer === null) return reject(res, NO_ROUTE)
    const user = deps.identity(identityCtx(req, res, e, '/_flashgate/link', e.query))
    if (user === null) return reject(res, UNAUTH)
    const cid = e.query.get('campaign')
    const pid = e.query.get('product')
    if (cid === null || pid === null || cid === '' || pid === '') return reject(res, BAD)
    const rname = e.query.get('route')
    const lr = rname === null ? routes[0] : routes.find((r) => r.route.name === rname)
    if (lr === undefined) return reject(res, NO_ROUTE)
    const c = deps.config.campaigns.get(cid)
    if (c === undefined || !c.products.some((p) => p.id === pid)) return reject(res, NO_CAMPAIGN)
    const now = e.now
    const revealAt = c.startsAt - c.linkRevealMs
    if (now < revealAt) {
      const revealIn = Math.ceil((revealAt - now) / 1000)
      return reject(res, rejection('NOT_STARTED', 'purchase links are not issued yet', {
        headers: ['retry-after', String(revealIn)],
        extra: { campaign: c.id, now, starts_at: c.startsAt, starts_in: Math.ceil((c.startsAt - now) / 1000), reveal_in: revealIn }
      }))
    }
    if (now >= c.endsAt) return reject(res, rejection('ENDED', 'campaign has ended', { extra: { campaign: c.id } }))

    // Fill the route's path; campaign/product read from query params go into the link's query.
    const g = lr.guard
    const extraQuery: string[] = []
    const put = (src: SignedLinkGuardConfig['campaign'], v: string): boolean => {
      if (src.from === 'literal') return src.value === v
      if (src.from === 'query') { extraQuery.push(`${encodeURIComponent(src.name)}=${encodeURIComponent(v)}`); return true }
      return src.from === 'param'
    }
    if (!put(g.campaign, cid) || !put(g.product, pid)) return reject(res, NO_ROUTE)
    let path = ''
    for (const s of lr.segments) {
      if ('lit' in s) { path += (path === '' && s.lit === '' ? '' : '/') + s.lit; continue }
      let v: string | null = null
      if (g.campaign.from === 'param' && g.campaign.name === s.param) v = cid
      else if (g.product.from === 'param' && g.product.name === s.param) v = pid
      if (v === null) return reject(res, NO_ROUTE)
      path += '/' + encodeURIComponent(v)
    }
    if (path === '') path = '/'
    let expiresAt = c.endsAt + c.linkGraceMs
    if (c.linkTtlMs !== null) expiresAt = Math.min(expiresAt, now + c.linkTtlMs)
    const claims = { method: lr.method, path, user, campaign: cid, product: pid, expiresAt }
    const q = signLinkQuery(signer.kid, signer.key, g.singleUse ? { ...claims, nonce: newNonce() } : claims)
    const url = `${path}?${extraQuery.length > 0 ? extraQuery.join('&') + '&' : ''}${q}`
    sendJson(res, 200, { url, expires_at: expiresAt, method: lr.method === '*' ? null : lr.method })
  }
}
