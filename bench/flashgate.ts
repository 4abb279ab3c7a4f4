/**
 * flashgate's side of the bench: the config files the scenarios run with, and starting the gateway and
 * the origin as separate processes (`flashgate serve`, `flashgate origin`), exactly as a user would.
 * The compiled CLI (`dist/gateway/cli.js`, after `npm run build`) is used when it is there, else the
 * TypeScript sources through tsx (a devDependency).
 */
import { randomBytes } from 'node:crypto'
import { existsSync, readdirSync, statSync, writeFileSync } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { stringify } from 'yaml'
import { freePort, start, waitPort } from './proc.js'
import { SHIPPED_FLAGS } from '../gateway/node-flags.js'
import type { Managed } from './proc.js'

const HERE = join(dirname(fileURLToPath(import.meta.url)), '..')
/** The checkout's root, whether this runs from the sources (tsx) or from the build (`dist/bench/`). */
export const ROOT = basename(HERE) === 'dist' && existsSync(join(HERE, '..', 'package.json')) ? join(HERE, '..') : HERE

/** The command that runs `flashgate ARGS...`. */
export function flashgateCommand (): { cmd: string, pre: string[], how: string } {
  // FLASHGATE_BENCH_CMD="node /path/to/other/bin/flashgate.js" measures another build (split on spaces).
  const custom = process.env.FLASHGATE_BENCH_CMD?.trim()
  if (custom !== undefined && custom !== '') {
    const [cmd = 'node', ...pre] = custom.split(/\s+/)
    return { cmd, pre, how: custom }
  }
  const dist = join(ROOT, 'dist', 'gateway', 'cli.js')
  if (existsSync(dist) && statSync(dist).mtimeMs >= newestSource()) return { cmd: process.execPath, pre: [...SHIPPED_FLAGS, join(ROOT, 'bin', 'flashgate.js')], how: `node ${SHIPPED_FLAGS.join(' ')} bin/flashgate.js (compiled)` }
  // No build, or a build older than the sources: run the sources (tsx transpiles once at load).
  return { cmd: process.execPath, pre: [...SHIPPED_FLAGS, '--import', 'tsx', join(ROOT, 'gateway', 'cli.ts')], how: `node ${SHIPPED_FLAGS.join(' ')} --import tsx gateway/cli.ts (sources)` }
}

/** mtime of the newest .ts file the gateway and origin are built from. */
function newestSource (): number {
  let newest = 0
  for (const d of ['gateway', 'limiter', 'antibot', 'conf', 'origin-stub']) {
    const walk = (dir: string): void => {
      let entries: string[] = []
      try { entries = readdirSync(dir) } catch { return }
      for (const e of entries) {
        const p = join(dir, e)
        if (e.endsWith('.ts')) newest = Math.max(newest, statSync(p).mtimeMs)
        else if (!e.includes('.')) walk(p)
      }
    }
    walk(join(ROOT, d))
  }
  return newest
}

export interface Secrets { readonly linkKey: string, readonly session: string }

export function newSecrets (): Secrets {
  return { linkKey: randomBytes(24).toString('base64url'), session: randomBytes(24).toString('base64url') }
}

export const CAMPAIGN = 'bench'
export const USER_HEADER = 'x-user-id'
export const CAPTCHA_HEADER = 'cf-turnstile-response'
export const CLEARANCE_COOKIE = 'fg_clearance'

export interface ProductSpec { readonly id: string, readonly quota: number }

/** Campaign window as ISO strings (the YAML form). */
const iso = (ms: number): string => new Date(ms).toISOString()

export interface StoreSpec { readonly kind: 'memory' | 'redis', readonly url: string | null }

/**
 * Redis per-operation timeout: the throughput config uses 1s, as the nginx + Lua peer does
 * (`set_timeouts(1000, ...)`), so both do the same work when the load core is saturated; the sale uses 250ms.
 */
function storeYaml (s: StoreSpec, timeout = '250ms'): Record<string, unknown> {
  return s.kind === 'memory' ? { kind: 'memory' } : { kind: 'redis', url: s.url, on_error: 'fail_closed', timeout }
}

/**
 * The dedupe TTL of the throughput config's funnel routes (one attempt per user per second): a user of a
 * funnel request list may come back only after it, so a list must last at least this long at the run's rate.
 */
export const DEDUPE_TTL_S = 1

/** Guard lists, in funnel order; each step adds one guard (the funnel scenario measures them one by one). */
export function funnelGuards (opts: { verifyUrl: string, dedupeTtl: string }): Array<{ name: string, guard: Record<string, unknown> }> {
  return [
    { name: 'deny', guard: { deny: { ips: ['203.0.113.0/24', '2001:db8::/32'] } } },
    { name: 'rate_limit global', guard: { rate_limit: { name: 'global', rate: '10000000/s', burst: 1000000 } } },
    { name: 'rate_limit per ip', guard: { rate_limit: { name: 'per-ip', key: 'ip', rate: '10000000/s', burst: 1000000 } } },
    { name: 'rate_limit per user', guard: { rate_limit: { name: 'per-user', key: 'user', rate: '1000000/s', burst: 100000 } } },
    { name: 'captcha (clearance cookie)', guard: { captcha: { provider: 'turnstile', secret: 'bench-secret', token: `header ${CAPTCHA_HEADER}`, verify_url: opts.verifyUrl, clearance: '600s', clearance_cookie: CLEARANCE_COOKIE } } },
    { name: 'signed_link', guard: { signed_link: {} } },
    { name: 'campaign_window', guard: { campaign_window: {} } },
    { name: 'dedupe', guard: { dedupe: { ttl: opts.dedupeTtl } } },
    { name: 'quota', guard: { quota: {} } }
  ]
}

export interface ThroughputConfig {
  readonly listen: number
  readonly admin: number
  readonly upstream: string
  readonly store: StoreSpec
  readonly secrets: Secrets
  readonly verifyUrl: string
  readonly workers: number
  /** Funnel steps to expose as /f0 .. /fN (0 = none). */
  readonly funnelSteps: number
  /** server.parser of the gateway's listener (bench --parser; default node). */
  readonly parser?: 'node' | 'strict'
  /** upstreams.origin.client (bench --client; default undici). */
  readonly client?: 'undici' | 'raw'
}

/**
 * One gateway serving every throughput target at once (each its own route), so that all flashgate
 * targets of a run are measured on the same process, as the peers are:
 *   /deny               global rate_limit at 1/s → 429 (reject path, no store call)
 *   /soldout/C/P        quota on a product of quota 1 → 409 SOLD_OUT (latch: no store call)
 *   /quota/C/P          a never-rejecting global bucket + quota on a huge product → proxied (1 INCRBY-and-compare)
 *   /link/C/P           signed_link alone: a forged link (signed with another key) → 403 LINK_INVALID (an
 *                       antibot verdict: the HMAC is computed and compared, no store call)
 *   /fN/buy/C/P         the funnel's first N guards, then proxied
 *   / (prefix)          plain proxy
 */
export function throughputConfig (c: ThroughputConfig): string {
  const now = Date.now()
  const steps = funnelGuards({ verifyUrl: c.verifyUrl, dedupeTtl: `${DEDUPE_TTL_S}s` })
  const routes: Array<Record<string, unknown>> = [
    { name: 'reject', match: { path: '/deny' }, guards: [{ rate_limit: { name: 'deny', rate: '1/s', burst: 1 } }], upstream: 'origin' },
    { name: 'soldout', match: { path: '/soldout/:campaign/:product' }, guards: [{ quota: {} }], upstream: 'origin' },
    { name: 'quota', match: { path: '/quota/:campaign/:product' }, guards: [{ rate_limit: { name: 'quota-global', rate: '10000000/s', burst: 1000000 } }, { quota: {} }], upstream: 'origin' },
    { name: 'link', match: { path: '/link/:campaign/:product' }, guards: [{ signed_link: {} }], upstream: 'origin' }
  ]
  for (let n = 0; n <= c.funnelSteps && n <= steps.length; n++) {
    routes.push({ name: `f${n}`, match: { path: `/f${n}/buy/:campaign/:product` }, guards: steps.slice(0, n).map((s) => s.guard), upstream: 'origin' })
  }
  routes.push({ name: 'proxy', match: { path_prefix: '/' }, upstream: 'origin' })
  return stringify({
    listen: `127.0.0.1:${c.listen}`,
    admin: `127.0.0.1:${c.admin}`,
    workers: c.workers,
    store: storeYaml(c.store, '1s'),
    identity: { user: `header ${USER_HEADER}` },
    secrets: { link_keys: { k1: c.secrets.linkKey }, session: c.secrets.session },
    access_log: { enabled: false },
    ...(c.parser === 'strict' ? { server: { parser: 'strict' } } : {}),
    upstreams: { origin: { targets: [{ url: c.upstream }], connections: 64, max_fails: 0, ...(c.client === 'raw' ? { client: 'raw' } : {}) } },
    campaigns: [{
      id: CAMPAIGN,
      starts_at: iso(now - 3600_000),
      ends_at: iso(now + 24 * 3600_000),
      link_reveal: '60s',
      products: [{ id: 'big', quota: 1e12 }, { id: 'soldout', quota: 1 }]
    }],
    routes
  })
}

export interface SaleConfig {
  readonly listen: number
  readonly admin: number
  readonly origin: string
  readonly originListen: number
  readonly store: StoreSpec
  readonly originStore: StoreSpec
  readonly secrets: Secrets
  readonly verifyUrl: string | null
  readonly workers: number
  readonly startsAt: number
  readonly endsAt: number
  readonly products: readonly ProductSpec[]
  /** Global token bucket per node (requests/s, burst). */
  readonly globalRate: number
  readonly globalBurst: number
  readonly perUserRate: string
  readonly orderRate: number
  /** The origin's payment_timeout (unpaid orders are cancelled after it); default 10m. */
  readonly paymentTimeout?: string
  /** server.parser of the gateway's listener and the purchase upstream's client (bench --parser, --client). */
  readonly parser?: 'node' | 'strict'
  readonly client?: 'undici' | 'raw'
}

/** The full funnel in front of the purchase origin: what the flash-sale scenario's crowd goes through. */
export function saleConfigs (c: SaleConfig): { gateway: string, origin: string } {
  const guards: Array<Record<string, unknown>> = [
    { deny: { ips: ['203.0.113.0/24'] } },
    { rate_limit: { name: 'global', rate: `${c.globalRate}/s`, burst: c.globalBurst } },
    { rate_limit: { name: 'per-user', key: 'user', rate: c.perUserRate, burst: 5 } }
  ]
  if (c.verifyUrl !== null) guards.push({ captcha: { provider: 'turnstile', secret: 'bench-secret', token: `header ${CAPTCHA_HEADER}`, verify_url: c.verifyUrl, clearance: '120s', clearance_cookie: CLEARANCE_COOKIE } })
  guards.push({ signed_link: {} }, { campaign_window: {} }, { dedupe: { ttl: '24h' } }, { quota: {} })
  const campaigns = [{
    id: CAMPAIGN,
    starts_at: iso(c.startsAt),
    ends_at: iso(c.endsAt),
    link_reveal: '600s',
    products: c.products.map((p) => ({ id: p.id, quota: p.quota }))
  }]
  const gateway = stringify({
    listen: `127.0.0.1:${c.listen}`,
    admin: `127.0.0.1:${c.admin}`,
    workers: c.workers,
    store: storeYaml(c.store),
    identity: { user: `header ${USER_HEADER}` },
    secrets: { link_keys: { k1: c.secrets.linkKey }, session: c.secrets.session },
    access_log: { enabled: false },
    ...(c.parser === 'strict' ? { server: { parser: 'strict' } } : {}),
    upstreams: { purchase: { targets: [{ url: c.origin }], connections: 64, max_fails: 0, retries: 0, ...(c.client === 'raw' ? { client: 'raw' } : {}) } },
    campaigns,
    routes: [
      { name: 'buy', match: { path: '/buy/:campaign/:product', methods: ['POST'] }, guards, upstream: 'purchase' },
      // The buyers' order pages and payments go to the origin too. A load harness, not a config to copy:
      // the catch-all says it accepts being a way around the buy route (conf/bypass.ts).
      { name: 'site', match: { path_prefix: '/' }, upstream: 'purchase', allow_bypass_of: ['buy'] }
    ]
  })
  const origin = stringify({
    listen: '127.0.0.1:0',
    store: storeYaml(c.originStore),
    upstreams: { self: { targets: [{ url: c.origin }] } },
    campaigns,
    routes: [{ name: 'all', match: { path_prefix: '/' }, upstream: 'self' }],
    origin: { listen: `127.0.0.1:${c.originListen}`, order_rate: c.orderRate, payment_timeout: c.paymentTimeout ?? '10m' }
  })
  return { gateway, origin }
}

export interface Gateway { readonly url: string, readonly admin: string, readonly proc: Managed, readonly configFile: string }

export async function startGateway (o: { dir: string, name: string, yaml: string, listen: number, admin: number, workers: number, cpus: string | null }): Promise<Gateway> {
  const file = join(o.dir, `${o.name}.yaml`)
  writeFileSync(file, o.yaml)
  const fg = flashgateCommand()
  const proc = start({ name: o.name, cmd: fg.cmd, args: [...fg.pre, 'serve', '--config', file, '--workers', String(o.workers)], cpus: o.cpus, logFile: join(o.dir, `${o.name}.log`), cwd: ROOT })
  await waitPort(o.listen, `gateway (${o.name})`, proc, 30_000)
  await waitPort(o.admin, `gateway admin (${o.name})`, proc, 30_000)
  return { url: `http://127.0.0.1:${o.listen}`, admin: `http://127.0.0.1:${o.admin}`, proc, configFile: file }
}

export async function startOrigin (o: { dir: string, yaml: string, listen: number, cpus: string | null, releaseTo?: string }): Promise<{ url: string, proc: Managed, configFile: string }> {
  const file = join(o.dir, 'origin.yaml')
  writeFileSync(file, o.yaml)
  const fg = flashgateCommand()
  const proc = start({ name: 'origin', cmd: fg.cmd, args: [...fg.pre, 'origin', '--config', file, '--listen', `127.0.0.1:${o.listen}`, ...(o.releaseTo !== undefined ? ['--release-to', o.releaseTo] : [])], cpus: o.cpus, logFile: join(o.dir, 'origin.log'), cwd: ROOT })
  await waitPort(o.listen, 'origin', proc, 30_000)
  return { url: `http://127.0.0.1:${o.listen}`, proc, configFile: file }
}

/** A redis-server of our own on a free loopback port, nothing persisted. */
export async function startRedis (dir: string, name: string, cpus: string | null): Promise<{ url: string, port: number, proc: Managed }> {
  const port = await freePort()
  const proc = start({ name, cmd: 'redis-server', args: ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--dir', dir], cpus, logFile: join(dir, `${name}.log`) })
  await waitPort(port, name, proc)
  return { url: `redis://127.0.0.1:${port}`, port, proc }
}
