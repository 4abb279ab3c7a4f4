/**
 * The routing table, compiled once per config load. A request walks the routes in file order and the
 * first whose host, path and method all match wins. Matching is string comparisons and one walk over
 * the path's segments for `:param` patterns — no regex, and nothing allocated unless a route has params.
 */
import type { RouteConfig } from '../../conf/types.js'

/** Shared empty params object for routes without `:param` segments. */
export const NO_PARAMS: Readonly<Record<string, string>> = Object.freeze({})

const enum HostKind { Any, Exact, Wildcard }
const enum PathKind { Exact, Prefix, Pattern }

/** One compiled `:param` pattern segment: a literal or a parameter name. */
interface Segment { readonly literal: string | null; readonly param: string | null }

/** A route compiled for matching. `T` is whatever the caller attaches (pipelines, rejections...). */
export interface CompiledMatch {
  readonly index: number
  readonly route: RouteConfig
  readonly hostKind: HostKind
  /** Exact host, or the suffix `.example.com` of `*.example.com`. */
  readonly host: string
  readonly pathKind: PathKind
  readonly path: string
  readonly segments: readonly Segment[]
  /** Upper-case methods (GET implies HEAD); null = any. */
  readonly methods: readonly string[] | null
  /** The result returned for routes without params, built once. */
  readonly fixed: RouteMatchResult
}

export interface RouteMatchResult {
  readonly index: number
  readonly params: Readonly<Record<string, string>>
}

export interface Router {
  readonly routes: readonly CompiledMatch[]
  /**
   * The first route matching host (lower-case, no port), path (no query) and method, with its params;
   * -1 when no route matches, -2 when some route matched host and path but not the method (a 405).
   * A route with params answers in one object per router, refilled by each match: read it before the
   * next call (its params object is new each time and may be kept).
   */
  match (host: string, path: string, method: string): RouteMatchResult | number
  /** Methods allowed at host+path by any route (for 405 Allow); empty when no route matches host+path. */
  allowed (host: string, path: string): string[]
}

function compileOne (route: RouteConfig, index: number): CompiledMatch {
  const m = route.match
  let hostKind = HostKind.Any
  let host = ''
  if (m.host !== null) {
    const h = m.host.toLowerCase()
    if (h.startsWith('*.')) { hostKind = HostKind.Wildcard; host = h.slice(1) } else { hostKind = HostKind.Exact; host = h }
  }
  let pathKind: PathKind
  let path: string
  let segments: Segment[] = []
  if (m.pathPrefix !== null) {
    pathKind = PathKind.Prefix
    path = m.pathPrefix
  } else {
    path = m.path ?? '/'
    if (path.includes('/:')) {
      pathKind = PathKind.Pattern
      segments = path.slice(1).split('/').map((s) => s.startsWith(':') ? { literal: null, param: s.slice(1) } : { literal: s, param: null })
    } else {
      pathKind = PathKind.Exact
    }
  }
  let methods = m.methods === null ? null : m.methods.map((x) => x.toUpperCase())
  if (methods !== null && methods.includes('GET') && !methods.includes('HEAD')) methods = [...methods, 'HEAD']
  return {
    index,
    route,
    hostKind,
    host,
    pathKind,
    path,
    segments,
    methods,
    fixed: { index, params: NO_PARAMS }
  }
}

function hostMatches (r: CompiledMatch, host: string): boolean {
  switch (r.hostKind) {
    case HostKind.Any: return true
    case HostKind.Exact: return host === r.host
    default: return host.length > r.host.length && host.endsWith(r.host)
  }
}

function decodeParam (s: string): string {
  if (!s.includes('%')) return s
  try { return decodeURIComponent(s) } catch { return s }
}

/** Walk the pattern's segments along `path`; fill `out` with params when given. */
function patternMatches (segments: readonly Segment[], path: string, out: Record<string, string> | null): boolean {
  let pos = 1 // after the leading '/'
  const n = segments.length
  for (let i = 0; i < n; i++) {
    if (pos > path.length) return false
    let end = path.indexOf('/', pos)
    if (end === -1) end = path.length
    const seg = segments[i] as Segment
    if (seg.literal !== null) {
      if (end - pos !== seg.literal.length || !path.startsWith(seg.literal, pos)) return false
    } else {
      if (end === pos) return false // empty param
      if (out !== null) out[seg.param as string] = decodeParam(path.slice(pos, end))
    }
    if (i === n - 1) return end === path.length
    if (end === path.length) return false
    pos = end + 1
  }
  return n === 0 && path === '/'
}

function pathMatches (r: CompiledMatch, path: string): boolean {
  switch (r.pathKind) {
    case PathKind.Exact: return path === r.path
    case PathKind.Prefix: return path.startsWith(r.path)
    default: return patternMatches(r.segments, path, null)
  }
}

/** Compile the routes of a config (file order kept). */
export function compileRouter (routes: readonly RouteConfig[]): Router {
  const compiled = routes.map(compileOne)
  const n = compiled.length
  // Performance (issue 18): the match of a route with params reuses this object; only params is new.
  const hit: { index: number, params: Readonly<Record<string, string>> } = { index: 0, params: {} }
  return {
    routes: compiled,
    match (host, path, method) {
      let pathOnly = false
      for (let i = 0; i < n; i++) {
        const r = compiled[i] as CompiledMatch
        if (!hostMatches(r, host)) continue
        if (!pathMatches(r, path)) continue
        if (r.methods !== null && !r.methods.includes(method)) { pathOnly = true; continue }
        if (r.pathKind !== PathKind.Pattern) return r.fixed
        const params: Record<string, string> = {}
        patternMatches(r.segments, path, params)
        hit.index = i
        hit.params = params
        return hit
      }
      return pathOnly ? -2 : -1
    },
    allowed (host, path) {
      const set = new Set<string>()
      for (const r of compiled) {
        if (hostMatches(r, host) && pathMatches(r, path) && r.methods !== null) for (const m of r.methods) set.add(m)
      }
      return [...set]
    }
  }
}
