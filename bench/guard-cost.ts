/**
 * Cost per request of each antibot guard's check on its pass path, in microseconds (not a test):
 * built from a YAML config by the real loader, with the memory store; one core, after warm-up.
 *
 *   npx tsx bench/guard-cost.ts [iterations=200000]
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { loadConfigText } from '../conf/load.js'
import type { GuardConfig } from '../conf/types.js'
import { createMetrics } from '../gateway/metrics.js'
import type { Guard, GuardDeps, RequestContext } from '../gateway/pipeline/types.js'
import { createStore } from '../limiter/index.js'
import { captchaGuard } from '../gateway/guards/captcha.js'
import { signClearance } from '../antibot/captcha/clearance.js'
import { campaignWindowGuard } from '../gateway/guards/campaign-window.js'
import { dedupeGuard } from '../gateway/guards/dedupe.js'
import { denyGuard } from '../gateway/guards/deny.js'
import { createIdentity, signSession } from '../gateway/guards/identity.js'
import { signLinkQuery } from '../antibot/signed-link.js'
import { KeptState, OverloadSignal } from '../gateway/pipeline/state.js'
import { numberArg, scriptOptions } from '../gateway/cli-args.js'

const N = scriptOptions({
  prog: 'bench/guard-cost.ts',
  usage: 'Usage: npx tsx bench/guard-cost.ts [ITERATIONS]\n\n  ITERATIONS   checks per guard, 1000..10000000 (default 200000)',
  flags: {},
  positionals: 1
}, ({ positionals }) => numberArg(positionals[0], 'ITERATIONS', 1000, 10_000_000) ?? 200_000)
const NOW = Date.UTC(2030, 0, 1, 12, 30)
const LINK = 'k1-link-key-0123456789abcdef'
const SESSION = 'session-key-0123456789abcdef'
const deny = Array.from({ length: 1000 }, (_, i) => `10.${i >> 8}.${i & 255}.0/24`).concat(['2001:db8::/32'])
const r = loadConfigText(`
listen: 127.0.0.1:0
identity: { user: cookie sid }
secrets: { link_keys: { k1: "${LINK}" }, session: "${SESSION}" }
upstreams: { purchase: { targets: [{ url: http://127.0.0.1:9 }] } }
campaigns:
  - { id: c1, starts_at: 2030-01-01T12:00:00Z, ends_at: 2030-01-01T13:00:00Z, products: [{ id: p1, quota: 100000000 }] }
routes:
  - name: buy
    match: { path: /buy/:campaign/:product, methods: [POST] }
    guards:
      - deny: { ips: [${deny.join(', ')}], users: [mallory] }
      - captcha: { provider: turnstile, secret: s, verify_url: "http://127.0.0.1:9/", clearance: 120s }
      - signed_link: {}
      - campaign_window: {}
      - dedupe: { ttl: 1h }
    upstream: purchase
`, '/tmp/guard-cost.yaml', {})
if (!r.ok) throw new Error(r.errors.join('\n'))
const config = r.config
const metrics = createMetrics({ defaultMetrics: false })
const deps: GuardDeps = {
  config, metrics, registry: metrics.registry, clock: () => NOW, identity: createIdentity(config),
  store: createStore(config.store, { metrics, clock: () => NOW }),
  worker: { index: 0, count: 1 }, kept: new KeptState(), overload: new OverloadSignal(), log: () => {}
}
const route = config.routes[0]!
const g = (k: GuardConfig['kind']): GuardConfig => route.guards.find((x) => x.kind === k)!
const session = signSession(Buffer.from(SESSION), 'alice', NOW + 3_600_000)
const clearance = signClearance(Buffer.from(SESSION), 'fg_clearance', 'alice', '198.51.100.7', NOW + 60_000)
const q = signLinkQuery('k1', Buffer.from(LINK), { method: 'POST', path: '/buy/c1/p1', user: 'alice', campaign: 'c1', product: 'p1', expiresAt: NOW + 600_000 })
const headers = { cookie: `sid=${session}; fg_clearance=${clearance}` }
const req = { method: 'POST', headers, socket: {} } as unknown as IncomingMessage

let seq = 0
function ctx (user?: string): RequestContext {
  return {
    req, res: {} as ServerResponse, route, method: 'POST', path: '/buy/c1/p1', query: q, host: 'x', clientIp: '198.51.100.7',
    peerTrusted: false, params: { campaign: 'c1', product: 'p1' }, now: NOW, user: user ?? undefined, queryParams: null,
    extraHeaders: null, settlers: null, locals: null
  }
}

async function measure (name: string, guard: Guard, make: () => RequestContext): Promise<void> {
  for (let i = 0; i < Math.min(N, 20_000); i++) { const v = guard.check(make()); if (v instanceof Promise) await v }
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < N; i++) {
    const v = guard.check(make())
    if (v instanceof Promise) { if (await v !== undefined) throw new Error(name + ' rejected') } else if (v !== undefined) throw new Error(`${name} rejected: ${v.code}`)
  }
  const us = Number(process.hrtime.bigint() - t0) / 1000 / N
  console.log(`${name.padEnd(44)} ${us.toFixed(2).padStart(7)} µs`)
}

const empty = (): RequestContext => ctx()
await measure('empty context (allocation only, baseline)', { kind: 'x', id: 'x', check: () => undefined }, empty)
await measure('identity: signed session cookie', { kind: 'x', id: 'x', check: (c) => { deps.identity(c); return undefined } }, empty)
await measure('deny: 1,001 CIDRs + users (miss)', denyGuard(g('deny') as never, route, deps), () => ctx('alice'))
await measure('captcha via clearance cookie', captchaGuard(g('captcha') as never, route, deps), () => ctx('alice'))
await measure('signed_link (HMAC verify)', (await import('../gateway/guards/signed-link.js')).signedLinkGuard(g('signed_link') as never, route, deps), () => ctx('alice'))
await measure('campaign_window', campaignWindowGuard(g('campaign_window') as never, route, deps), () => ctx('alice'))
await measure('dedupe (memory store setIfAbsent, new user each)', dedupeGuard(g('dedupe') as never, route, deps), () => ctx(`u${seq++}`))
await deps.store.close()
