/**
 * Funnel-bypass detection, judged at load so `validate`, `serve` and reload refuse the same configs.
 *
 * A guarded route that restricts `host` or `methods` leaves the other hosts and methods to whatever
 * route comes next. When a route with fewer guards takes some of the same paths, for some of those other
 * hosts or methods, to the same upstream, a client reaches that upstream with the guarded route's paths
 * and none of its guards just by sending another Host header or method (the upstream usually does not
 * look at Host, and may treat GET and POST alike). That pair is reported unless the open route says
 * `allow_bypass_of: [guarded-route]`.
 *
 * "Fewer guards": the open route lacks at least one guard kind the guarded route has (counted per kind).
 * Paths overlap when some request path matches both routes' path rules (exact, `:param` pattern or
 * prefix). Pure functions over RouteConfig; the loader attaches positions.
 */
import type { GuardConfig, RouteConfig, RouteMatch } from './types.js'

export interface Bypass {
  /** Index of the guarded route in the list. */
  readonly guarded: number
  /** Index of the route that walks around it. */
  readonly open: number
  /** What the open route takes that the guarded one restricts away: e.g. `other hosts than a.example.com`. */
  readonly via: string
  /** Guard kinds the open route lacks. */
  readonly missing: readonly string[]
}

/** Every (guarded, open) pair that is a funnel bypass and not accepted by `allow_bypass_of`. */
export function findBypasses (routes: readonly RouteConfig[]): Bypass[] {
  const out: Bypass[] = []
  // Cheapest tests first: a large config (1,000 routes) is a million pairs.
  const rules = routes.map((r) => rule(r.match))
  for (let gi = 0; gi < routes.length; gi++) {
    const g = routes[gi] as RouteConfig
    if (g.guards.length === 0 || (g.match.host === null && g.match.methods === null)) continue
    for (let ri = 0; ri < routes.length; ri++) {
      const r = routes[ri] as RouteConfig
      if (ri === gi || r.upstream === null || r.upstream !== g.upstream) continue
      const otherHost = g.match.host !== null && hostEscapes(r.match.host, g.match.host)
      const otherMethod = g.match.methods !== null && methodsEscape(r.match.methods, g.match.methods)
      if (!otherHost && !otherMethod) continue
      if (!rulesOverlap(rules[gi] as PathRule, rules[ri] as PathRule)) continue
      if (r.allowBypassOf?.includes(g.name) === true) continue
      const missing = missingKinds(r.guards, g.guards)
      if (missing.length === 0) continue
      const via: string[] = []
      if (otherHost) via.push(`other hosts than ${g.match.host as string}`)
      if (otherMethod) via.push(`methods other than ${(g.match.methods as readonly string[]).join(', ')}`)
      out.push({ guarded: gi, open: ri, via: via.join(' and '), missing })
    }
  }
  return out
}

function missingKinds (have: readonly GuardConfig[], need: readonly GuardConfig[]): string[] {
  const count = new Map<string, number>()
  for (const g of have) count.set(g.kind, (count.get(g.kind) ?? 0) + 1)
  const missing: string[] = []
  for (const g of need) {
    const n = count.get(g.kind) ?? 0
    if (n > 0) count.set(g.kind, n - 1)
    else if (!missing.includes(g.kind)) missing.push(g.kind)
  }
  return missing
}

/** Does `open` (null = any) take some host that `guarded` does not? */
export function hostEscapes (open: string | null, guarded: string): boolean {
  if (open === null) return true
  if (guarded.startsWith('*.')) {
    const suffix = guarded.slice(1)
    if (open.startsWith('*.')) return !open.slice(1).endsWith(suffix)
    return !(open.length > suffix.length && open.endsWith(suffix))
  }
  return open !== guarded
}

/** Does `open` (null = any) take some method that `guarded` does not? (GET implies HEAD on both.) */
export function methodsEscape (open: readonly string[] | null, guarded: readonly string[]): boolean {
  if (open === null) return true
  for (const m of open) if (!takes(guarded, m)) return true
  return open.includes('GET') && !takes(guarded, 'HEAD')
}

function takes (methods: readonly string[], m: string): boolean {
  return methods.includes(m) || (m === 'HEAD' && methods.includes('GET'))
}

type PathRule = { kind: 'prefix', prefix: string } | { kind: 'segments', segs: ReadonlyArray<string | null> }

function rule (m: RouteMatch): PathRule {
  if (m.pathPrefix !== null) return { kind: 'prefix', prefix: m.pathPrefix }
  const p = m.path ?? '/'
  // null = a :param (any non-empty segment)
  return { kind: 'segments', segs: p.slice(1).split('/').map((s) => s.startsWith(':') ? null : s) }
}

/** Is there a request path both match rules accept? */
export function pathsOverlap (a: RouteMatch, b: RouteMatch): boolean {
  return rulesOverlap(rule(a), rule(b))
}

function rulesOverlap (x: PathRule, y: PathRule): boolean {
  if (x.kind === 'prefix' && y.kind === 'prefix') return x.prefix.startsWith(y.prefix) || y.prefix.startsWith(x.prefix)
  if (x.kind === 'prefix' && y.kind === 'segments') return prefixMeets(x.prefix, y.segs)
  if (x.kind === 'segments' && y.kind === 'prefix') return prefixMeets(y.prefix, x.segs)
  const s = (x as { segs: ReadonlyArray<string | null> }).segs
  const t = (y as { segs: ReadonlyArray<string | null> }).segs
  if (s.length !== t.length) return false
  return s.every((p, i) => {
    const q = t[i] as string | null
    if (p === null && q === null) return true
    if (p === null) return q !== ''
    if (q === null) return p !== ''
    return p === q
  })
}

/** Does some path of the segment pattern start with `prefix`? */
function prefixMeets (prefix: string, segs: ReadonlyArray<string | null>): boolean {
  const parts = prefix.slice(1).split('/')
  if (parts.length > segs.length) return false
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i] as string
    const seg = segs[i] as string | null
    const last = i === parts.length - 1
    if (seg === null) { if (!last && part === '') return false; continue }
    if (last ? !seg.startsWith(part) : seg !== part) return false
  }
  return true
}
