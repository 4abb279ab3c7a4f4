/**
 * `routes:` (first match wins): each route's match, upstream or static files, body cap and guards;
 * then the checks across routes: a route after a catch-all can never match (a warning), and a route
 * that sends a guarded route's paths to the same upstream without its guards is a funnel bypass
 * (conf/bypass.ts; an error unless accepted with allow_bypass_of).
 */
import { findBypasses } from '../bypass.js'
import { didYouMean } from '../check.js'
import { checkJournalOrder } from '../journal.js'
import type { Checker } from '../check.js'
import { quote } from '../quote.js'
import { fmtPos } from '../tree.js'
import type { PNode, Pos, PScalar } from '../tree.js'
import type { GuardConfig, RouteConfig } from '../types.js'
import { NAME_RE } from './defaults.js'
import { readGuard } from './guards/index.js'
import type { GuardEnv, RouteCtx } from './guards/env.js'
import { readMatch, readStatic } from './match.js'
import { size } from './values.js'

/** Positions of each route and of its allow_bypass_of entries, for the bypass check. */
type RouteInfo = Map<string, { pos: Pos, allow: ReadonlyArray<{ name: string, pos: Pos }> }>

/** `file` places warnings that have no node of their own (line 1 of the main file). */
export function readRoutes (env: GuardEnv, nodes: readonly PNode[], upstreams: ReadonlyMap<string, Pos>, defaultBody: number, file: string): RouteConfig[] {
  const routes: RouteConfig[] = []
  const routePos = new Map<string, Pos>()
  const info: RouteInfo = new Map()
  for (const n of nodes) {
    const r = readRoute(env, n, upstreams, defaultBody, routePos, info)
    if (r !== undefined) routes.push(r)
  }
  const top: Pos = { file, line: 1, col: 1 }
  checkReachability(env.ck, routes, nodes, top)
  checkBypasses(env.ck, routes, info, top)
  return routes
}

function readRoute (env: GuardEnv, n: PNode, upstreams: ReadonlyMap<string, Pos>, defaultBody: number, routePos: Map<string, Pos>, info: RouteInfo): RouteConfig | undefined {
  const { ck } = env
  const m = ck.map(n, 'route', ['name', 'match', 'guards', 'upstream', 'static', 'max_body_size', 'allow_bypass_of'])
  if (m === undefined) return undefined
  const name = ck.str(m.get('name'), 'name', { pattern: NAME_RE, patternHelp: 'must be letters, digits, and . _ - (it is a metrics label)' })
  if (m.get('name') === undefined) ck.error(m.pos, 'route is missing required key "name"')
  if (name !== undefined) {
    const first = routePos.get(name)
    if (first !== undefined) ck.error(m.get('name')!.pos, `duplicate route name ${quote(name)} (first defined at ${fmtPos(first)})`)
    else routePos.set(name, m.get('name')!.pos)
  }
  const match = readMatch(ck, m.get('match'))
  const upstream = ck.str(m.get('upstream'), 'upstream')
  const staticNode = m.get('static')
  const files = staticNode === undefined ? undefined : readStatic(ck, staticNode, match)
  if (staticNode !== undefined && m.get('upstream') !== undefined) ck.error(staticNode.pos, `route${name === undefined ? '' : ' ' + quote(name)}: use either upstream or static, not both`)
  else if (staticNode !== undefined) { /* a static route: no upstream */ }
  else if (m.get('upstream') === undefined) ck.error(m.pos, `route${name === undefined ? '' : ' ' + quote(name)} is missing required key "upstream"`)
  else if (upstream !== undefined && !upstreams.has(upstream)) {
    const known = [...upstreams.keys()]
    ck.error(m.get('upstream')!.pos, `upstream ${ck.show(m.get('upstream') as PScalar)} is not defined${didYouMean(upstream, known) || (known.length > 0 ? ` (defined: ${known.join(', ')})` : ' (no upstreams are defined)')}`)
  }
  const maxBodySize = size(ck, m.get('max_body_size'), 'max_body_size') ?? defaultBody
  const params = match.path === null ? null : new Set(match.path.split('/').filter((s) => s.startsWith(':')).map((s) => s.slice(1)))
  const rc: RouteCtx = { name: name ?? '?', pos: m.pos, params, pathText: match.path }
  const guards: GuardConfig[] = []
  const placed: Array<{ g: GuardConfig, pos: Pos }> = []
  ck.list(m.get('guards'), 'guards', (it, i) => {
    const g = readGuard(env, it, i, rc)
    if (g !== undefined) { guards.push(g); placed.push({ g, pos: it.kind === 'map' ? it.entries[0]?.keyPos ?? it.pos : it.pos }) }
    return undefined
  })
  checkJournalOrder(ck, rc.name, placed)
  const allow: Array<{ name: string, pos: Pos }> = []
  ck.list(m.get('allow_bypass_of'), 'allow_bypass_of', (it) => {
    const s = ck.str(it, 'allow_bypass_of')
    if (s !== undefined) allow.push({ name: s, pos: it.pos })
    return undefined
  })
  if (name === undefined) return undefined
  info.set(name, { pos: m.pos, allow })
  const bypass = allow.length === 0 ? {} : { allowBypassOf: allow.map((a) => a.name) }
  if (staticNode !== undefined) return files === undefined ? undefined : { name, match, guards, upstream: null, static: files, maxBodySize, ...bypass }
  if (upstream === undefined) return undefined
  return { name, match, guards, upstream, maxBodySize, ...bypass }
}

function checkReachability (ck: Checker, routes: readonly RouteConfig[], nodes: readonly PNode[], top: Pos): void {
  const catchAll = routes.findIndex((r) => r.match.host === null && r.match.methods === null && r.match.pathPrefix === '/')
  if (catchAll === -1 || catchAll === routes.length - 1) return
  const r = routes[catchAll] as RouteConfig
  const later = routes[catchAll + 1] as RouteConfig
  const node = nodes.find((n) => n.kind === 'map' && n.entries.some((e) => e.key === 'name' && e.value.kind === 'scalar' && e.value.value === later.name))
  ck.warn(node?.pos ?? top, `route ${quote(later.name)} can never match: route ${quote(r.name)} before it matches every request (first match wins)`)
}

/** Funnel bypasses (conf/bypass.ts) are errors at the open route, naming both routes. */
function checkBypasses (ck: Checker, routes: readonly RouteConfig[], info: RouteInfo, top: Pos): void {
  const names = new Set(routes.map((r) => r.name))
  for (const [name, ri] of info) {
    for (const a of ri.allow) {
      if (a.name === name) ck.error(a.pos, `allow_bypass_of: route ${quote(name)} cannot bypass itself`)
      else if (!names.has(a.name)) ck.error(a.pos, `allow_bypass_of: route ${quote(a.name)} is not defined${didYouMean(a.name, names)}`)
    }
  }
  for (const b of findBypasses(routes)) {
    const g = routes[b.guarded] as RouteConfig
    const r = routes[b.open] as RouteConfig
    const at = info.get(r.name)?.pos ?? top
    const gAt = info.get(g.name)?.pos ?? top
    ck.error(at, `funnel bypass: route ${quote(r.name)} sends paths of route ${quote(g.name)} (${fmtPos(gAt)}) to the same upstream ${quote(g.upstream)} for ${b.via}, without its ${b.missing.join(', ')} guard${b.missing.length === 1 ? '' : 's'}; narrow ${quote(r.name)}'s match, or accept it with allow_bypass_of: [${g.name}] on route ${quote(r.name)}`)
  }
}
