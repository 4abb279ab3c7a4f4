/** A route's `match:` (host, exact path with `:params` or a prefix, methods) and its `static:` directory. */
import { realpathSync, statSync } from 'node:fs'
import { dirname, isAbsolute, resolve } from 'node:path'
import type { Checker } from '../check.js'
import { quote } from '../quote.js'
import type { PNode, PScalar } from '../tree.js'
import type { RouteMatch, StaticConfig } from '../types.js'
import { DEFAULTS } from './defaults.js'

export function readMatch (ck: Checker, n: PNode | undefined): RouteMatch {
  const m = ck.map(n, 'match', ['host', 'path', 'path_prefix', 'methods'])
  let host: string | null = null
  const hn = m?.get('host')
  const hs = ck.str(hn, 'host')
  if (hs !== undefined && hn !== undefined) {
    const h = hs.toLowerCase()
    if (!/^(\*\.)?([a-z0-9]([a-z0-9-]*[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.?$/.test(h) && !/^\[?[0-9a-f:.]+\]?$/.test(h)) {
      ck.error(hn.pos, `host: ${ck.show(hn as PScalar)} must be a host name or *.domain (no port, no scheme)`)
    } else host = h.replace(/\.$/, '')
  }
  const pathNode = m?.get('path')
  const prefixNode = m?.get('path_prefix')
  let path: string | null = null
  let pathPrefix: string | null = null
  const ps = ck.str(pathNode, 'path')
  if (ps !== undefined && pathNode !== undefined) {
    const problem = pathProblem(ps)
    if (problem !== null) ck.error(pathNode.pos, `path: ${problem}`)
    else path = ps
  }
  const pp = ck.str(prefixNode, 'path_prefix')
  if (pp !== undefined && prefixNode !== undefined) {
    if (!pp.startsWith('/')) ck.error(prefixNode.pos, 'path_prefix: must start with /')
    else if (/[?#\s]/.test(pp)) ck.error(prefixNode.pos, 'path_prefix: must not contain spaces, ? or #')
    else if (pp.includes('/:')) ck.error(prefixNode.pos, 'path_prefix: :param segments belong in path:, not path_prefix:')
    else pathPrefix = pp
  }
  if (pathNode !== undefined && prefixNode !== undefined) ck.error(prefixNode.pos, 'match: use either path or path_prefix, not both')
  if (path === null && pathPrefix === null && pathNode === undefined && prefixNode === undefined) pathPrefix = '/'
  let methods: string[] | null = null
  const mn = m?.get('methods')
  if (mn !== undefined) {
    const list = mn.kind === 'scalar' ? [mn] : ck.seq(mn, 'methods')?.items ?? []
    const out: string[] = []
    for (const it of list) {
      const s = ck.str(it, 'methods')
      if (s === undefined) continue
      if (!/^[A-Za-z]+$/.test(s)) { ck.error(it.pos, `methods: ${ck.show(it as PScalar)} is not an HTTP method`); continue }
      if (!out.includes(s.toUpperCase())) out.push(s.toUpperCase())
    }
    if (mn.kind === 'seq' && mn.items.length === 0) ck.error(mn.pos, 'methods: needs at least one method (leave methods out to match any)')
    methods = out
  }
  return { host, path, pathPrefix, methods }
}

/** `/buy/:campaign/:product` checks; null when fine. */
function pathProblem (p: string): string | null {
  if (!p.startsWith('/')) return 'must start with /'
  if (/[?#\s]/.test(p)) return 'must not contain spaces, ? or #'
  const seen = new Set<string>()
  for (const seg of p.split('/').slice(1)) {
    if (!seg.startsWith(':')) { if (seg.includes(':')) return `segment ${quote(seg)}: a :param must be a whole segment`; continue }
    const name = seg.slice(1)
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) return `invalid param ${quote(seg)} (letters, digits and _)`
    if (seen.has(name)) return `param :${name} appears twice`
    seen.add(name)
  }
  return null
}

/**
 * `static: DIR` or `static: { dir: DIR, cache_control: "...", html_cache_control: "..." }`. DIR is relative
 * to the file that names it and must be a directory; it is kept as its real path (symlinks resolved),
 * the root no served file may leave. A static route answers GET and HEAD only.
 */
export function readStatic (ck: Checker, n: PNode, match: RouteMatch): StaticConfig | undefined {
  const D = DEFAULTS.static
  let dirNode: PNode | undefined = n
  let cacheControl: string = D.cacheControl
  let htmlCacheControl: string = D.htmlCacheControl
  if (n.kind === 'map') {
    const m = ck.map(n, 'static', ['dir', 'cache_control', 'html_cache_control'])
    if (m === undefined) return undefined
    dirNode = m.get('dir')
    if (dirNode === undefined) return ck.error(n.pos, 'static: missing required key "dir"')
    for (const [key, set] of [['cache_control', (v: string) => { cacheControl = v }], ['html_cache_control', (v: string) => { htmlCacheControl = v }]] as const) {
      const cn = m.get(key)
      const v = ck.str(cn, key, { nonEmpty: true })
      if (v === undefined || cn === undefined) continue
      // A header value: printable ASCII and spaces only (no CR/LF to split the answer).
      if (!/^[\x20-\x7e]+$/.test(v)) ck.error(cn.pos, `${key}: must be printable ASCII (a Cache-Control header value)`)
      else set(v.trim())
    }
  }
  const d = ck.str(dirNode, 'static', { nonEmpty: true })
  if (d === undefined || dirNode === undefined) return undefined
  const abs = isAbsolute(d) ? d : resolve(dirname(dirNode.pos.file), d)
  let st
  try { st = statSync(abs) } catch (err) {
    return ck.error(dirNode.pos, `static: directory ${quote(d)} does not exist (${(err as NodeJS.ErrnoException).code ?? 'cannot stat'}; looked for in ${quote(dirname(abs))})`)
  }
  if (!st.isDirectory()) return ck.error(dirNode.pos, `static: ${quote(d)} is not a directory`)
  if (match.methods !== null) {
    const other = match.methods.filter((x) => x !== 'GET' && x !== 'HEAD')
    if (other.length > 0) ck.error(dirNode.pos, `static: a static route answers GET and HEAD only, but its match.methods has ${other.join(', ')}`)
  }
  return { dir: realpathSync(abs), cacheControl, htmlCacheControl }
}
