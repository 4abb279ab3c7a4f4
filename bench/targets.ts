/**
 * The throughput targets of each scenario (flashgate's routes and the peers they are compared with) and
 * the comparisons the issues ask for, with their goals.
 */
import { createSecretKey } from 'node:crypto'
import { signClearance } from '../antibot/captcha/clearance.js'
import { signLinkQuery } from '../antibot/signed-link.js'
import { CAMPAIGN, CLEARANCE_COOKIE, DEDUPE_TTL_S, USER_HEADER, funnelGuards } from './flashgate.js'
import type { Secrets } from './flashgate.js'
import type { RequestSpec } from './load/types.js'
import type { Target } from './measure.js'
import { PEER_TARGETS } from './peers.js'
import type { RedisProbe } from './redis-stats.js'

export type Scenario = 'flash-sale' | 'proxy' | 'reject' | 'funnel' | 'waiting-room' | 'spike' | 'capacity' | 'faults'
export const SCENARIOS: readonly Scenario[] = ['flash-sale', 'proxy', 'reject', 'funnel', 'waiting-room', 'spike', 'capacity', 'faults']

export const FUNNEL_STEPS = funnelGuards({ verifyUrl: '', dedupeTtl: `${DEDUPE_TTL_S}s` }).map((s) => s.name)
/** The first funnel step with the dedupe guard (route fN has the first N guards). */
const DEDUPE_STEP = FUNNEL_STEPS.indexOf('dedupe') + 1

/** Which peers each scenario is compared with. */
export const PEERS_OF: Readonly<Record<Scenario, readonly string[]>> = {
  proxy: ['node-hello', 'node-undici-proxy', 'nginx-proxy', 'fastify-proxy'],
  reject: ['node-net-fixed', 'node-hello', 'nginx-limit-req-reject', 'lua-bucket-reject', 'lua-redis-soldout', 'lua-redis-pass', 'fastify-rl-reject'],
  funnel: ['node-undici-proxy', 'nginx-proxy'],
  'waiting-room': [],
  // The open-loop spike: flashgate's sold-out and quota paths beside OpenResty doing the same (bench/spike.ts).
  spike: ['lua-redis-soldout', 'lua-redis-pass'],
  capacity: [],
  faults: [],
  'flash-sale': PEER_TARGETS.map((p) => p.name)
}

export interface Comparison {
  readonly target: string
  readonly reference: string
  /** The ratio the issue asks for (≥), or null when it only asks to report it. */
  readonly goal: number | null
  readonly what: string
}

export const COMPARISONS: readonly Comparison[] = [
  // Goals are issue 18's (ratios in one run beside the peers); the earlier issues' goals were lower.
  { target: 'fg-proxy', reference: 'node-undici-proxy', goal: 1.5, what: 'plain proxy path (issue 18)' },
  { target: 'fg-proxy', reference: 'nginx-proxy', goal: null, what: 'plain proxy path' },
  { target: 'fg-proxy', reference: 'fastify-proxy', goal: null, what: 'plain proxy path' },
  { target: 'fg-reject-429', reference: 'node-hello', goal: 1.6, what: 'reject path: global 429 (issue 18)' },
  { target: 'fg-soldout', reference: 'node-hello', goal: 1.6, what: 'reject path: sold-out latch (issue 18)' },
  { target: 'fg-link-forged', reference: 'node-hello', goal: 1.6, what: 'reject path: an antibot verdict, forged link (issue 18)' },
  // Node's own floor on net.Socket (bench/floor/net-fixed.mjs): what the reject goals above ask in its terms.
  { target: 'node-net-fixed', reference: 'node-hello', goal: null, what: 'Node\'s I/O floor vs node:http (what 1.6× node hello asks)' },
  { target: 'fg-reject-429', reference: 'node-net-fixed', goal: null, what: 'reject path: global 429 vs Node\'s I/O floor' },
  { target: 'fg-soldout', reference: 'node-net-fixed', goal: null, what: 'reject path: sold-out latch vs Node\'s I/O floor' },
  { target: 'fg-reject-429', reference: 'nginx-limit-req-reject', goal: 0.6, what: 'reject path vs nginx limit_req (issue 18)' },
  { target: 'fg-reject-429', reference: 'lua-bucket-reject', goal: null, what: 'reject path vs OpenResty bucket' },
  { target: 'fg-soldout', reference: 'lua-redis-soldout', goal: null, what: 'sold out vs OpenResty INCRBY' },
  { target: 'fg-quota-redis', reference: 'lua-redis-pass', goal: null, what: 'bucket + quota on Redis + proxy vs OpenResty\'s' },
  { target: 'fg-funnel', reference: 'lua-redis-pass', goal: 1.0, what: 'whole funnel on Redis vs OpenResty bucket + INCRBY + proxy (issue 18)' },
  { target: 'fg-funnel', reference: 'fg-proxy', goal: 0.6, what: 'whole funnel vs plain proxy, pass path (issue 4)' },
  { target: 'fg-funnel', reference: 'node-undici-proxy', goal: null, what: 'whole funnel vs smallest Node proxy' }
]

interface FgCtx {
  readonly baseUrl: string
  readonly admin: string
  readonly pid: number | null
  readonly redis: RedisProbe | null
  readonly secrets: Secrets
  /** Users cycled on the funnel pass path (`--requests-per-step`): more than requests/s × the dedupe TTL (1 s). */
  readonly funnelUsers: number
}

function fg (c: FgCtx, name: string, role: string, route: string, requests: RequestSpec[], expectStatus: number, bodyFragment: string): Target {
  return { name, kind: 'flashgate', role, baseUrl: c.baseUrl, requests, expectStatus, bodyFragment, pid: c.pid, admin: c.admin, redis: c.redis, route }
}

/** Funnel step n as a target: its request list, and the dedupe TTL its users must not come back within. */
function step (c: FgCtx, name: string, role: string, n: number): Target {
  const t = fg(c, name, role, `f${n}`, funnelRequests(c, n), 200, '"ok":true')
  return n >= DEDUPE_STEP ? { ...t, repeatAfterS: DEDUPE_TTL_S } : t
}

/** A well-formed purchase link for a real user and product, signed with a key the gateway does not have. */
function forgedLink (c: FgCtx): RequestSpec {
  const path = `/link/${CAMPAIGN}/big`
  const user = 'forger'
  const wrong = createSecretKey(Buffer.from(c.secrets.linkKey + '-not-it', 'utf8'))
  const q = signLinkQuery('k1', wrong, { method: '*', path, user, campaign: CAMPAIGN, product: 'big', expiresAt: Date.now() + 6 * 3600_000 })
  return { method: 'GET', path: `${path}?${q}`, headers: { [USER_HEADER]: user } }
}

/** Requests for funnel step n (its first n guards): one per user, each with what the guards need to pass. */
export function funnelRequests (c: FgCtx, n: number): RequestSpec[] {
  const path = `/f${n}/buy/${CAMPAIGN}/big`
  // Key objects: the key is imported once, not at every HMAC (the lists are tens of thousands long).
  const linkKey = createSecretKey(Buffer.from(c.secrets.linkKey, 'utf8'))
  const sessionKey = createSecretKey(Buffer.from(c.secrets.session, 'utf8'))
  const expiresAt = Date.now() + 6 * 3600_000
  const users = n >= 4 ? c.funnelUsers : 1
  const out: RequestSpec[] = []
  for (let i = 0; i < users; i++) {
    // Users are distinct per step: dedupe marks are per campaign × product × user, shared by all routes.
    const user = `f${n}u${i}`
    const headers: Record<string, string> = { [USER_HEADER]: user }
    if (n >= 5) headers.cookie = `${CLEARANCE_COOKIE}=${signClearance(sessionKey, CLEARANCE_COOKIE, user, '127.0.0.1', expiresAt)}`
    const q = n >= 6 ? '?' + signLinkQuery('k1', linkKey, { method: '*', path, user, campaign: CAMPAIGN, product: 'big', expiresAt }) : ''
    out.push({ method: 'GET', path: path + q, headers })
  }
  return out
}

export function flashgateTargets (scenario: Scenario, c: FgCtx): Target[] {
  const proxy = fg(c, 'fg-proxy', 'flashgate plain proxy', 'proxy', [{ method: 'GET', path: '/' }], 200, '"ok":true')
  const reject = fg(c, 'fg-reject-429', 'global rate_limit rejecting (no store call)', 'reject', [{ method: 'GET', path: '/deny' }], 429, 'RATE_LIMITED')
  const soldout = fg(c, 'fg-soldout', 'quota sold out, answered from the latch', 'soldout', [{ method: 'GET', path: `/soldout/${CAMPAIGN}/soldout` }], 409, 'SOLD_OUT')
  const quota = fg(c, 'fg-quota-redis', 'bucket + quota (INCRBY-and-compare) then proxy', 'quota', [{ method: 'GET', path: `/quota/${CAMPAIGN}/big` }], 200, '"ok":true')
  const forged = fg(c, 'fg-link-forged', 'signed_link: a forged link refused (HMAC checked)', 'link', [forgedLink(c)], 403, 'LINK_INVALID')
  const last = FUNNEL_STEPS.length
  // Built only where measured: its list is --requests-per-step signed requests.
  const funnel = (role: string): Target => step(c, 'fg-funnel', role, last)
  switch (scenario) {
    case 'proxy': return [proxy]
    case 'reject': return [reject, soldout, forged, quota]
    case 'funnel': {
      const steps: Target[] = []
      for (let n = 0; n < last; n++) steps.push(step(c, `fg-f${n}`, n === 0 ? 'route with params, no guard' : `+ ${FUNNEL_STEPS[n - 1] ?? ''}`, n))
      return [proxy, ...steps, funnel(`+ ${FUNNEL_STEPS[last - 1] ?? ''} (whole funnel)`)]
    }
    case 'flash-sale': return [proxy, reject, soldout, forged, quota, funnel(`all ${last} guards passing, then proxy`)]
    case 'waiting-room': return [] // its own run: bench/waiting-room.ts
    case 'spike': return [soldout, quota]
    // One target per outcome the capacity model prices (bench/capacity-run.ts adds the mixed run).
    case 'capacity': return [soldout, reject, quota]
    case 'faults': return [] // its own run: bench/faults.ts
  }
}

export function peerTargets (scenario: Scenario, kitPid: (server: string) => number | null, redis: RedisProbe | null): Target[] {
  const names = PEERS_OF[scenario]
  return PEER_TARGETS.filter((p) => names.includes(p.name)).map((p) => ({
    name: p.name,
    kind: 'peer' as const,
    role: p.role,
    baseUrl: `http://127.0.0.1:${p.port}`,
    requests: [p.request],
    expectStatus: p.expectStatus,
    bodyFragment: p.bodyFragment,
    pid: kitPid(p.server),
    admin: null,
    redis: p.server === 'lua' || p.server === 'fastify-rl-redis' ? redis : null,
    route: null
  }))
}
