/**
 * Shared by the antibot tests: configs loaded from YAML by the real loader, guard deps built the way
 * the composition root builds them (real memory store or a real Redis store), and request contexts.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { loadConfigText } from '../../conf/load.js'
import type { Config, GuardConfig, RouteConfig } from '../../conf/types.js'
import { createMetrics } from '../../gateway/metrics.js'
import type { GuardDeps, RequestContext, Outcome } from '../../gateway/pipeline/types.js'
import { createStore } from '../../limiter/index.js'
import type { Store } from '../../limiter/store.js'
import { createIdentity } from '../../gateway/guards/identity.js'
import { KeptState, OverloadSignal } from '../../gateway/pipeline/state.js'

export const LINK_KEY = 'k1-link-key-0123456789abcdef'
export const LINK_KEY2 = 'k2-link-key-fedcba9876543210'
export const SESSION_KEY = 'session-key-0123456789abcdef'

export const ENV = { FG_LINK_K1: LINK_KEY, FG_LINK_K2: LINK_KEY2, FG_SESSION: SESSION_KEY }

/** Load a config from YAML text with the real loader; throws with the loader's messages. */
export function loadYaml (text: string, env: Record<string, string> = {}): Config {
  const r = loadConfigText(text, '/tmp/antibot-test.yaml', { ...ENV, ...env })
  if (!r.ok) throw new Error(r.errors.join('\n'))
  return r.config
}

/** A config with one campaign `c1` (products p1, p2) open [startsAt, endsAt) and a `buy` route with the given guards (YAML list items). */
export function routeYaml (guards: string, opts: { startsAt?: number, endsAt?: number, extra?: string, identity?: string, linkKeys?: string, store?: string } = {}): string {
  const startsAt = new Date(opts.startsAt ?? Date.UTC(2030, 0, 1, 12)).toISOString()
  const endsAt = new Date(opts.endsAt ?? Date.UTC(2030, 0, 1, 13)).toISOString()
  return `
listen: 127.0.0.1:0
${opts.store ?? 'store: { kind: memory }'}
identity: { user: ${opts.identity ?? 'header x-user-id'} }
secrets:
  link_keys: ${opts.linkKeys ?? '{ k1: "${FG_LINK_K1}", k2: "${FG_LINK_K2}" }'}
  session: "\${FG_SESSION}"
upstreams:
  purchase:
    targets: [{ url: http://127.0.0.1:9 }]
campaigns:
  - id: c1
    starts_at: ${startsAt}
    ends_at: ${endsAt}
    link_reveal: 60s
    products:
      - { id: p1, quota: 100 }
      - { id: p2, quota: 100 }
routes:
  - name: buy
    match: { path: /buy/:campaign/:product, methods: [POST] }
    guards:
${guards.split('\n').filter((l) => l.trim() !== '').map((l) => '      ' + l.trim()).join('\n')}
    upstream: purchase
${opts.extra ?? ''}
`
}

export interface TestDeps extends GuardDeps {
  logs: Array<{ level: string, msg: string, fields?: Record<string, unknown> }>
  setNow (ms: number): void
}

/** Deps as the composition root builds them, with a settable clock and the configured store. */
export function makeDeps (config: Config, opts: { store?: Store, now?: number } = {}): TestDeps {
  let now = opts.now ?? Date.UTC(2030, 0, 1, 12, 30)
  const clock = (): number => now
  const metrics = createMetrics({ defaultMetrics: false })
  const logs: TestDeps['logs'] = []
  const store = opts.store ?? createStore(config.store, { metrics, clock })
  return {
    config,
    store,
    metrics,
    registry: metrics.registry,
    clock,
    identity: createIdentity(config),
    worker: { index: 0, count: 1 },
    kept: new KeptState(),
    overload: new OverloadSignal(),
    log: (level, msg, fields) => { logs.push(fields === undefined ? { level, msg } : { level, msg, fields }) },
    logs,
    setNow: (ms) => { now = ms }
  }
}

/** The route and its guard config of kind K (first). */
export function guardOf<K extends GuardConfig['kind']> (config: Config, kind: K, route = 'buy'): { route: RouteConfig, cfg: Extract<GuardConfig, { kind: K }> } {
  const r = config.routes.find((x) => x.name === route)
  if (r === undefined) throw new Error(`no route ${route}`)
  const g = r.guards.find((x) => x.kind === kind)
  if (g === undefined) throw new Error(`no ${kind} guard`)
  return { route: r, cfg: g as Extract<GuardConfig, { kind: K }> }
}

export interface CtxInit {
  method?: string
  path?: string
  query?: string
  headers?: Record<string, string>
  clientIp?: string
  params?: Record<string, string>
  now?: number
  route?: RouteConfig
  encrypted?: boolean
}

/**
 * A request context as the pipeline hands it to a guard. The guard reads only the context (and
 * `req.headers`); request bodies are tested through real HTTP servers.
 */
export function makeCtx (init: CtxInit = {}): RequestContext {
  const path = init.path ?? '/buy/c1/p1'
  const headers: Record<string, string> = {}
  for (const [k, v] of Object.entries(init.headers ?? {})) headers[k.toLowerCase()] = v
  const req = { method: init.method ?? 'POST', url: path, headers, socket: { encrypted: init.encrypted === true } } as unknown as IncomingMessage
  let params = init.params
  if (params === undefined) {
    const m = /^\/buy\/([^/]+)\/([^/]+)$/.exec(path)
    params = m === null ? {} : { campaign: m[1] as string, product: m[2] as string }
  }
  return {
    req,
    res: {} as ServerResponse,
    route: init.route ?? ({} as RouteConfig),
    method: init.method ?? 'POST',
    path,
    query: init.query ?? '',
    host: 'shop.example',
    clientIp: init.clientIp ?? '198.51.100.7',
    peerTrusted: false,
    params,
    now: init.now ?? Date.UTC(2030, 0, 1, 12, 30),
    user: undefined,
    queryParams: null,
    extraHeaders: null,
    settlers: null,
    locals: null
  }
}

/** Run a context's settlers as the runner does when the request's fate is known. */
export function settle (ctx: RequestContext, outcome: Outcome): void {
  for (const s of ctx.settlers ?? []) s(ctx, outcome)
}

/** The code of a verdict (undefined = pass). */
export async function codeOf (v: unknown): Promise<string | undefined> {
  const r = await v as { code?: string } | undefined
  return r?.code
}

/** Wait for a Redis store's first connection (as the gateway does before /readyz). */
export async function ready (store: unknown): Promise<void> {
  await (store as { ready?: () => Promise<void> }).ready?.()
}
