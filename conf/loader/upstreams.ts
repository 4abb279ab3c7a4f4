/** `upstreams:` (from the main file and the included ones): each a balance and its targets. */
import { didYouMean } from '../check.js'
import type { Checker } from '../check.js'
import { quote } from '../quote.js'
import { fmtPos } from '../tree.js'
import type { PNode, Pos, PScalar } from '../tree.js'
import type { BalanceConfig, UpstreamConfig, UpstreamTarget } from '../types.js'
import { DEFAULTS, HEADER_NAME, NAME_RE } from './defaults.js'
import type { Parts } from './includes.js'
import { duration } from './values.js'

const UPSTREAM_CLIENTS = ['undici', 'raw'] as const

/** The upstreams by name, and where each name was first written (routes refer to them). */
export function readUpstreams (ck: Checker, entries: Parts['upstreams']): { upstreams: Map<string, UpstreamConfig>, positions: Map<string, Pos> } {
  const upstreams = new Map<string, UpstreamConfig>()
  const positions = new Map<string, Pos>()
  for (const e of entries) {
    const first = positions.get(e.name)
    if (first !== undefined) { ck.error(e.keyPos, `duplicate upstream ${quote(e.name)} (first defined at ${fmtPos(first)})`); continue }
    positions.set(e.name, e.keyPos)
    if (!NAME_RE.test(e.name)) ck.error(e.keyPos, `upstream name ${quote(e.name)} must be letters, digits, and . _ - (starting with a letter or digit)`)
    const u = readUpstream(ck, e.value, e.name)
    if (u !== undefined) upstreams.set(e.name, u)
  }
  return { upstreams, positions }
}

function readUpstream (ck: Checker, n: PNode, name: string): UpstreamConfig | undefined {
  const D = DEFAULTS.upstream
  const m = ck.map(n, `upstream ${quote(name)}`, ['balance', 'targets', 'max_fails', 'fail_timeout', 'connect_timeout', 'timeout', 'retries', 'connections', 'keepalive_timeout', 'queue', 'client'])
  if (m === undefined) return undefined
  let balance: BalanceConfig = { kind: 'round_robin' }
  const b = m.get('balance')
  if (b !== undefined) {
    const s = ck.str(b, 'balance')
    const hm = s === undefined ? null : /^hash\s+header\s+(\S+)$/.exec(s.trim())
    if (s === 'round_robin' || s === 'least_conn') balance = { kind: s }
    else if (hm !== null && HEADER_NAME.test(hm[1] as string)) balance = { kind: 'hash', header: (hm[1] as string).toLowerCase() }
    else if (s !== undefined) ck.error(b.pos, `balance: expected round_robin, least_conn or hash header NAME, got ${ck.show(b as PScalar)}${didYouMean(s, ['round_robin', 'least_conn'])}`)
  }
  const tn = m.get('targets')
  const targets = ck.list(tn, 'targets', (it) => readTarget(ck, it)) ?? []
  if (tn === undefined) ck.error(m.pos, `upstream ${quote(name)} is missing required key "targets"`)
  else if (tn.kind === 'seq' && tn.items.length === 0) ck.error(tn.pos, 'targets: needs at least one target')
  const seen = new Set<string>()
  if (tn?.kind === 'seq') {
    targets.forEach((t, i) => {
      if (seen.has(t.url)) ck.error((tn.items[i] as PNode).pos, `targets: duplicate target ${t.url}`)
      seen.add(t.url)
    })
  }
  return {
    name,
    balance,
    targets,
    maxFails: ck.num(m.get('max_fails'), 'max_fails', 0, 1_000_000) ?? D.maxFails,
    failTimeoutMs: duration(ck, m.get('fail_timeout'), 'fail_timeout') ?? D.failTimeoutMs,
    connectTimeoutMs: duration(ck, m.get('connect_timeout'), 'connect_timeout', { min: 1 }) ?? D.connectTimeoutMs,
    timeoutMs: duration(ck, m.get('timeout'), 'timeout', { min: 1 }) ?? D.timeoutMs,
    retries: ck.num(m.get('retries'), 'retries', 0, 100) ?? D.retries,
    connections: ck.num(m.get('connections'), 'connections', 1, 100_000) ?? D.connections,
    keepAliveTimeoutMs: duration(ck, m.get('keepalive_timeout'), 'keepalive_timeout', { min: 1 }) ?? D.keepAliveTimeoutMs,
    queue: ck.num(m.get('queue'), 'queue', 0, 1_000_000) ?? D.queue,
    ...upstreamClient(ck, m.get('client'), targets)
  }
}

/** `client: undici | raw` (absent: undici, and no field); raw speaks plain http only. */
function upstreamClient (ck: Checker, n: PNode | undefined, targets: readonly UpstreamTarget[]): { client?: 'undici' | 'raw' } {
  const c = ck.oneOf(n, 'client', UPSTREAM_CLIENTS)
  if (c === undefined || n === undefined) return {}
  const tls = targets.find((t) => t.url.startsWith('https:'))
  if (c === 'raw' && tls !== undefined) ck.error(n.pos, `client: raw speaks http:// only (target ${tls.url}); use client: undici for https targets`)
  return { client: c }
}

function readTarget (ck: Checker, n: PNode): UpstreamTarget | undefined {
  let urlNode: PNode | undefined = n
  let weight: number = DEFAULTS.upstream.weight
  if (n.kind === 'map') {
    const m = ck.map(n, 'target', ['url', 'weight'])
    urlNode = m?.get('url')
    weight = ck.num(m?.get('weight'), 'weight', 1, 1_000_000) ?? weight
    if (urlNode === undefined) return ck.error(n.pos, 'target is missing required key "url"')
  }
  const s = ck.str(urlNode, 'url')
  if (s === undefined || urlNode === undefined) return undefined
  const shown = ck.show(urlNode as PScalar)
  let u: URL
  try { u = new URL(s) } catch { return ck.error(urlNode.pos, `url: ${shown} is not a URL (expected http://HOST:PORT)`) }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return ck.error(urlNode.pos, `url: ${shown} must be http:// or https://`)
  if (u.username !== '' || u.password !== '') return ck.error(urlNode.pos, 'url: credentials in a target URL are not supported')
  if ((u.pathname !== '/' && u.pathname !== '') || u.search !== '' || u.hash !== '' || /[?#]/.test(s)) {
    return ck.error(urlNode.pos, `url: ${shown} must have no path, query or fragment (expected http://HOST:PORT)`)
  }
  if (u.port === '' && !/:\d+\/?$/.test(s)) return ck.error(urlNode.pos, `url: ${shown} needs a port (expected http://HOST:PORT)`)
  return { url: u.origin, weight }
}
