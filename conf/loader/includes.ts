/**
 * `include:` and the gathering of upstreams, campaigns and routes from the main file and the included
 * ones, in the order the main file's keys are written (routes: first match wins, so order matters).
 * Within `include:`, patterns are taken in list order and each glob's matches in alphabetical order;
 * included files may hold only routes, upstreams and campaigns, and include nothing themselves.
 */
import { readFileSync } from 'node:fs'
import { dirname, isAbsolute, join, resolve } from 'node:path'
import { didYouMean, MapView } from '../check.js'
import type { Checker } from '../check.js'
import { globSync, hasMagic } from '../glob.js'
import { quote } from '../quote.js'
import { fmtPos, parseYaml } from '../tree.js'
import type { PNode, Pos } from '../tree.js'

export const TOP_KEYS = ['include', 'listen', 'admin', 'admin_token', 'workers', 'store', 'trusted_proxies', 'identity', 'secrets', 'server', 'access_log', 'upstreams', 'campaigns', 'routes', 'origin', 'tracing'] as const
const INCLUDED_KEYS = ['routes', 'upstreams', 'campaigns'] as const

/** The parts of the config that may come from several files, in load order. */
export interface Parts {
  readonly upstreams: Array<{ name: string, keyPos: Pos, value: PNode }>
  readonly campaigns: PNode[]
  readonly routes: PNode[]
}

/** The parts of `top` and of the files it includes; undefined when an included file has a YAML syntax error (the rest would only add noise). */
export function gatherParts (ck: Checker, top: MapView, file: string, env: NodeJS.ProcessEnv): Parts | undefined {
  const includedFiles = new Map<string, Pos>([[resolve(file), top.pos]])
  const parts: Parts = { upstreams: [], campaigns: [], routes: [] }
  let syntaxBroken = false
  const takeParts = (m: MapView, where: string): void => {
    for (const key of m.keys()) {
      const v = m.get(key)
      if (key === 'routes') parts.routes.push(...(ck.seq(v, 'routes')?.items ?? []))
      else if (key === 'campaigns') parts.campaigns.push(...(ck.seq(v, 'campaigns')?.items ?? []))
      else if (key === 'upstreams') {
        const um = v === undefined ? undefined : v.kind === 'map' ? v : ck.error(v.pos, `upstreams: expected a map of name → upstream, got ${v.kind === 'seq' ? 'a list' : 'a value'}`)
        for (const e of um?.entries ?? []) parts.upstreams.push({ name: e.key, keyPos: e.keyPos, value: e.value })
      } else if (key === 'include' && where === 'main') {
        const inc = readIncludes(ck, top.get('include'), file, env, includedFiles)
        if (!inc.ok) syntaxBroken = true
        for (const m of inc.maps) takeParts(m, 'included')
      }
    }
  }
  takeParts(top, 'main')
  return syntaxBroken ? undefined : parts
}

/**
 * The included files' top maps; `ok` is false when one has a YAML syntax error. `includedFiles`
 * (absolute path → where it was named) refuses a file named twice.
 */
function readIncludes (ck: Checker, n: PNode | undefined, file: string, env: NodeJS.ProcessEnv, includedFiles: Map<string, Pos>): { ok: boolean, maps: MapView[] } {
  const included: MapView[] = []
  if (n === undefined) return { ok: true, maps: included }
  const items: PNode[] = n.kind === 'seq' ? [...n.items] : [n]
  if (n.kind === 'map') { ck.error(n.pos, 'include: expected a list of file patterns'); return { ok: true, maps: included } }
  let ok = true
  const base = dirname(file)
  for (const it of items) {
    const pattern = ck.str(it, 'include')
    if (pattern === undefined) continue
    let files: string[]
    try {
      files = hasMagic(pattern) ? globSync(pattern, base) : [isAbsolute(pattern) ? pattern : join(base, pattern)]
    } catch (err) {
      ck.error(it.pos, `include: ${(err as Error).message}`)
      continue
    }
    if (files.length === 0) { ck.warn(it.pos, `include: ${quote(pattern)} matched no files`); continue }
    for (const f of files) {
      const abs = resolve(f)
      const first = includedFiles.get(abs)
      if (first !== undefined) {
        ck.error(it.pos, abs === resolve(file) ? `include: ${quote(f)} is the main config file` : `include: ${quote(f)} is included twice (first at ${fmtPos(first)})`)
        continue
      }
      includedFiles.set(abs, it.pos)
      let text: string
      try {
        text = readFileSync(f, 'utf8')
      } catch (err) {
        ck.error(it.pos, `include: cannot read ${quote(f)}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
        continue
      }
      const root = parseYaml(text, f, env, ck.d)
      if (root === null) { ok = false; continue }
      if (root.kind !== 'map') { ck.error(root.pos, 'an included file must be a map with routes, upstreams and/or campaigns'); continue }
      for (const e of root.entries) {
        if (!(INCLUDED_KEYS as readonly string[]).includes(e.key)) {
          ck.error(e.keyPos, `key ${quote(e.key)} is not allowed in an included file (only routes, upstreams and campaigns)${(TOP_KEYS as readonly string[]).includes(e.key) ? '' : didYouMean(e.key, INCLUDED_KEYS)}`)
        }
      }
      included.push(new MapView(root))
    }
  }
  return { ok, maps: included }
}
