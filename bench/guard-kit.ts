/**
 * A quota guard (or any guard) run without the gateway's HTTP layer: a minimal Config, GuardDeps and
 * RequestContext, as the bench's in-process fault phases and the guard tests build them. The config is
 * the loader's shape written out (not parsed from YAML), so a phase can hand a guard exactly the slice it
 * needs.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { CampaignConfig, Config, GuardConfig, QuotaGuardConfig, RouteConfig, StoreConfig } from '../conf/types.js'
import { createMetrics, type Metrics } from '../gateway/metrics.js'
import type { GuardDeps, RequestContext } from '../gateway/pipeline/types.js'
import { KeptState, OverloadSignal } from '../gateway/pipeline/state.js'
import type { Store } from '../limiter/store.js'

export const storeCfg: StoreConfig = {
  kind: 'memory', url: null, nodes: [], onError: 'fail_closed', timeoutMs: 50, keyPrefix: 'fg:',
  breakerFailures: 5, breakerBackoffMs: 1000, maxKeys: 10_000
}

export function campaign (id: string, products: Array<[string, number, number?]>): CampaignConfig {
  return {
    id, startsAt: 0, endsAt: 9e15, linkRevealMs: 60_000, linkGraceMs: 60_000, linkTtlMs: null,
    products: products.map(([pid, quota, segments]) => ({ id: pid, quota, segments: segments ?? 1 }))
  }
}

export function route (guards: GuardConfig[] = []): RouteConfig {
  return { name: 'buy', match: { host: null, path: '/buy/:campaign/:product', pathPrefix: null, methods: null }, guards, upstream: 'u', maxBodySize: 1 << 20 }
}

export function config (store: StoreConfig, campaigns: CampaignConfig[] = []): Config {
  return {
    file: '/x.yaml', listen: { host: '127.0.0.1', port: 0 }, admin: null, adminToken: null, workers: 1, store,
    trustedProxies: [], identity: { user: { from: 'header', name: 'x-user-id' } },
    secrets: { linkKeys: [], session: null, pow: null },
    server: { maxHeaderSize: 16384, headersTimeoutMs: 10_000, requestTimeoutMs: 30_000, keepAliveTimeoutMs: 5000, maxConnections: 10_000, maxBodySize: 1 << 20, drainTimeoutMs: 10_000, bodyTimeoutMs: 10_000, bodyBufferSize: 128 * 1024, parser: 'node' },
    accessLog: { enabled: false, path: 'stdout' }, upstreams: new Map(),
    campaigns: new Map(campaigns.map((c) => [c.id, c])), routes: [],
    origin: { listen: { host: '127.0.0.1', port: 0 }, orderRate: 100, paymentTimeoutMs: 600_000, requeueAfterMs: 30_000 }
  }
}

export function deps (store: Store, opts: { config?: Config, clock?: () => number, metrics?: Metrics, workers?: number, kept?: KeptState } = {}): GuardDeps & { logs: string[] } {
  const metrics = opts.metrics ?? createMetrics({ defaultMetrics: false })
  const logs: string[] = []
  return {
    config: opts.config ?? config(storeCfg),
    store,
    metrics,
    registry: metrics.registry,
    clock: opts.clock ?? Date.now,
    identity: (ctx) => {
      if (ctx.user === undefined) {
        const v = ctx.req.headers['x-user-id']
        ctx.user = typeof v === 'string' ? v : null
      }
      return ctx.user
    },
    worker: { index: 0, count: opts.workers ?? 1 },
    kept: opts.kept ?? new KeptState(),
    overload: new OverloadSignal(),
    log: (level, msg) => { logs.push(`${level} ${msg}`) },
    logs
  }
}

export function ctx (now: number, opts: { ip?: string, user?: string, headers?: Record<string, string>, params?: Record<string, string> } = {}): RequestContext {
  const headers: Record<string, string> = { ...opts.headers }
  if (opts.user !== undefined) headers['x-user-id'] = opts.user
  return {
    req: { headers } as unknown as IncomingMessage,
    res: {} as unknown as ServerResponse,
    route: route(),
    method: 'POST',
    path: '/buy',
    query: '',
    host: 'localhost',
    clientIp: opts.ip ?? '192.0.2.1',
    peerTrusted: false,
    params: opts.params ?? {},
    now,
    user: undefined,
    queryParams: null,
    extraHeaders: null,
    settlers: null,
    locals: null
  }
}

/** As the loader resolves it: the guard's own on_error, else storeCfg's (fail_closed); never fail_open (the loader refuses it). */
export function qg (over: Partial<QuotaGuardConfig> = {}): QuotaGuardConfig {
  const policy = over.onError === 'local' ? 'local' : 'fail_closed'
  return {
    kind: 'quota', index: 7, shadow: false, reject: null, campaign: { from: 'param', name: 'campaign' },
    product: { from: 'param', name: 'product' }, latchTtlMs: 1000, onError: null, policy, journaled: false, lease: 10, ...over
  }
}
