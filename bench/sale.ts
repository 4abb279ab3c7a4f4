/**
 * The flash-sale scenario: a self-started stack (edge Redis, origin Redis, `flashgate origin`,
 * `flashgate serve` with the full funnel, a local siteverify server standing in for Turnstile), a crowd
 * of virtual users, and the correctness checks that must hold in every run.
 */
import { createServer } from 'node:http'
import type { Server } from 'node:http'
import { request } from 'undici'
import { CAMPAIGN, CAPTCHA_HEADER, USER_HEADER, saleConfigs, startGateway, startOrigin, startRedis } from './flashgate.js'
import type { ProductSpec, Secrets } from './flashgate.js'
import { runUsers } from './load/users.js'
import type { UsersResult } from './load/users.js'
import { byOutcome, deltaMap, scrape } from './prom.js'
import { cpuMicros, freePort } from './proc.js'
import { RedisProbe, commandDelta, scriptCalls, sumCommands } from './redis-stats.js'
import { watchGenerator } from './generator-health.js'
import type { GeneratorHealth } from './generator-health.js'
import { serverLatency } from './server-latency.js'
import type { ServerLatency } from './server-latency.js'
import { sampleLedger, type LedgerSampling } from './ledger-samples.js'

export interface SaleOptions {
  readonly dir: string
  readonly users: number
  readonly connections: number
  readonly durationS: number
  readonly rampS: number
  readonly products: readonly ProductSpec[]
  readonly store: 'memory' | 'redis'
  readonly workers: number
  /** The gateway's listener and upstream client (bench --parser, --client). */
  readonly parser: 'node' | 'strict'
  readonly client: 'undici' | 'raw'
  readonly captcha: boolean
  readonly botShare: number
  readonly globalRate: number
  readonly secrets: Secrets
  readonly cpus: { server: string | null, load: string | null }
  /** The load core (its busy share is reported with the generator's health), when pinned. */
  readonly loadCpu?: number | null
  /** Target an already running gateway instead (its config must match: campaign `bench`, header identity). */
  readonly target: { url: string, admin: string | null, origin: string | null } | null
  readonly onTick: (s: number, totals: Readonly<Record<string, number>>) => void
  readonly log: (m: string) => void
}

export interface ProductCheck {
  readonly product: string
  readonly quota: number
  /** Buys the crowd saw accepted (2xx) for this product. */
  readonly orders: number
  /** The edge's own count (admin API), null when unavailable. */
  readonly edgeAdmitted: number | null
  /** Units beyond stock: max(0, orders − released − quota). Must be 0. */
  readonly oversold: number
  /** Units the origin released (unpaid orders cancelled) and gave back to the edge quota (origin metric). */
  readonly released: number | null
  /** Orders beyond the quota: released units sold again to late buyers, max(0, orders − quota). */
  readonly resold: number
  /** The ledger at rest: edge admitted == origin locked + sold, and edge remaining == origin sale. */
  readonly ledgerOk: boolean | null
  readonly origin: { stock: number, sale: number, locked: number, sold: number } | null
  /** sale + locked + sold == stock at the origin. */
  readonly invariantOk: boolean | null
  /** Units the origin holds (locked + sold) equal the orders the crowd saw minus the units released. */
  readonly originMatchesOrders: boolean | null
}

export interface SaleResult {
  readonly users: UsersResult
  readonly products: readonly ProductCheck[]
  readonly gatewayOutcomes: Record<string, number> | null
  readonly gatewayRequests: number | null
  readonly cpuUsPerReq: number | null
  readonly redisCommands: Record<string, number> | null
  readonly redisCommandsPerReq: number | null
  readonly redisScriptsPerReq: number | null
  readonly storeOpsPerReq: number | null
  /** The gateway's own latency of the buy route per outcome (its histogram, scraped before and after). */
  readonly serverBuyLatency: Record<string, ServerLatency> | null
  /** The same over every route (time sync, links, pay, buy). */
  readonly serverLatency: Record<string, ServerLatency> | null
  /** The crowd's own CPU and event-loop lag: whether the generator was the bottleneck. */
  readonly generatorHealth: GeneratorHealth
  readonly correctness: { oversold: number, usersWithSeveralOrders: number, lost: number, invariantOk: boolean | null, ledgerOk: boolean | null, released: number, resold: number, ok: boolean }
  /** The ledger sampled while the sale ran (bench/ledger-samples.ts); null without admin and origin URLs. */
  readonly ledgerSamples: LedgerSampling | null
  /** Share of buyers who paid, and the origin's payment_timeout. */
  readonly unpaid: { readonly payShare: number, readonly paymentTimeoutMs: number }
  readonly stack: Record<string, string>
}

/** A local server speaking Turnstile's siteverify protocol: every token is valid (the edge refuses replays itself). */
async function startSiteverify (): Promise<{ url: string, server: Server, calls: () => number }> {
  let calls = 0
  const server = createServer((req, res) => {
    let body = ''
    req.on('data', (d: Buffer) => { body += d.toString('utf8') })
    req.on('end', () => {
      calls++
      const ok = /(^|&|")response"?[=:]/.test(body) || body.includes('response')
      const out = JSON.stringify(ok ? { success: true, challenge_ts: new Date().toISOString(), hostname: 'localhost', 'error-codes': [], action: '', cdata: '' } : { success: false, 'error-codes': ['missing-input-response'] })
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(out) })
      res.end(out)
    })
  })
  server.keepAliveTimeout = 60_000
  const port = await freePort()
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
  return { url: `http://127.0.0.1:${port}/turnstile/v0/siteverify`, server, calls: () => calls }
}

/**
 * The unpaid-order play: this share of buyers pays, the others never do, and the origin cancels their
 * orders after its payment_timeout — a sixth of the run, at least 1 s — so that late buyers (those still
 * pressing after SOLD_OUT) can get the released units within the run.
 */
const PAY_SHARE = 0.7
const paymentTimeoutMs = (durationS: number): number => Math.max(1000, Math.round(durationS * 1000 / 6))

/** Sum of a Prometheus counter's samples whose labels include these (text exposition). */
async function metricSum (url: string, name: string, labels: Record<string, string>): Promise<number | null> {
  try {
    const r = await request(url, { headersTimeout: 5000, bodyTimeout: 5000 })
    const text = await r.body.text()
    if (r.statusCode !== 200) return null
    let sum = 0
    for (const line of text.split('\n')) {
      const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line)
      if (m === null || m[1] !== name) continue
      if (Object.entries(labels).every(([k, v]) => (m[2] ?? '').includes(`${k}="${v}"`))) sum += Number(m[3])
    }
    return sum
  } catch { return null }
}

async function getJson (url: string): Promise<Record<string, unknown> | null> {
  try {
    const r = await request(url, { headersTimeout: 5000, bodyTimeout: 5000 })
    const text = await r.body.text()
    if (r.statusCode !== 200) return null
    return JSON.parse(text) as Record<string, unknown>
  } catch { return null }
}

export async function runSale (o: SaleOptions): Promise<SaleResult> {
  const stack: Record<string, string> = {}
  let gatewayUrl: string
  let admin: string | null
  let originUrl: string | null
  let gwPid: number | null = null
  let edgeRedis: RedisProbe | null = null
  let verify: Awaited<ReturnType<typeof startSiteverify>> | null = null
  // The sale opens after the ramp: users arrive, sync clocks and fetch links first, then the spike.
  const startsAt = Date.now() + (o.rampS + 3) * 1000
  if (o.target === null) {
    const edge = o.store === 'redis' ? await startRedis(o.dir, 'redis-edge', o.cpus.load) : null
    const originRedis = o.store === 'redis' ? await startRedis(o.dir, 'redis-origin', o.cpus.load) : null
    if (o.captcha) verify = await startSiteverify()
    const [listen, adminPort, originPort] = [await freePort(), await freePort(), await freePort()]
    const cfg = saleConfigs({
      listen,
      admin: adminPort,
      origin: `http://127.0.0.1:${originPort}`,
      originListen: originPort,
      store: edge === null ? { kind: 'memory', url: null } : { kind: 'redis', url: edge.url },
      originStore: originRedis === null ? { kind: 'memory', url: null } : { kind: 'redis', url: originRedis.url },
      secrets: o.secrets,
      verifyUrl: verify?.url ?? null,
      workers: o.workers,
      startsAt,
      endsAt: startsAt + 3600_000,
      products: o.products,
      globalRate: o.globalRate,
      globalBurst: Math.max(1, Math.round(o.globalRate / 5)),
      perUserRate: '5/s',
      orderRate: 5000,
      paymentTimeout: `${paymentTimeoutMs(o.durationS)}ms`,
      parser: o.parser,
      client: o.client
    })
    // Both start at once (each loads its code for a second or two); the gateway connects to the origin
    // on its first proxied request, and nobody sends one before both listen.
    const [origin, gw] = await Promise.all([
      // The origin has its own store: it gives released units back through the gateway's admin API.
      startOrigin({ dir: o.dir, yaml: cfg.origin, listen: originPort, cpus: o.cpus.load, releaseTo: `http://127.0.0.1:${adminPort}` }),
      startGateway({ dir: o.dir, name: 'gateway-sale', yaml: cfg.gateway, listen, admin: adminPort, workers: o.workers, cpus: o.cpus.server })
    ])
    gatewayUrl = gw.url
    admin = gw.admin
    originUrl = origin.url
    gwPid = gw.proc.pid
    edgeRedis = edge === null ? null : new RedisProbe(edge.url)
    stack.gateway = `${gw.url} (config ${gw.configFile}, ${o.workers} worker(s), store ${o.store})`
    stack.origin = `${origin.url} (config ${origin.configFile})`
    if (edge !== null) stack.redisEdge = edge.url
    if (originRedis !== null) stack.redisOrigin = originRedis.url
    if (verify !== null) stack.siteverify = verify.url
  } else {
    gatewayUrl = o.target.url
    admin = o.target.admin
    originUrl = o.target.origin
    stack.gateway = `${gatewayUrl} (running; not started by the bench)`
  }

  const metA = admin === null ? null : await scrape(admin)
  const redisA = edgeRedis === null ? null : await edgeRedis.commandStats()
  const cpuA = gwPid === null ? null : cpuMicros(gwPid)
  const watch = watchGenerator('virtual users (undici)', { inProcess: true, loadCpu: o.loadCpu ?? null })
  const sampler = admin === null || originUrl === null ? null : sampleLedger({ admin, origin: originUrl, campaign: CAMPAIGN, products: o.products.map((p) => p.id), connections: o.connections, everyMs: 250 })
  const users = await runUsers({
    baseUrl: gatewayUrl,
    users: o.users,
    connections: o.connections,
    campaign: CAMPAIGN,
    products: o.products.map((p, i) => ({ id: p.id, weight: i === 0 ? 3 : 1 })),
    startsAt,
    rampS: o.rampS,
    durationS: o.durationS,
    identityHeader: USER_HEADER,
    captcha: o.captcha ? { kind: 'token', header: CAPTCHA_HEADER } : { kind: 'none' },
    botShare: o.botShare,
    maxAttempts: 40,
    thinkMs: [200, 800],
    spikeJitterMs: 300,
    signedLinks: true,
    buyPath: (c, p) => `/buy/${c}/${p}`,
    timeoutMs: 10_000,
    onTick: o.onTick,
    payShare: PAY_SHARE
  })
  const generatorHealth = watch.stop()
  const cpuB = gwPid === null ? null : cpuMicros(gwPid)
  const ledgerSamples = sampler === null ? null : await sampler.stop()
  const redisB = edgeRedis === null ? null : await edgeRedis.commandStats()
  const metB = admin === null ? null : await scrape(admin)
  await edgeRedis?.close()
  if (verify !== null) {
    stack.siteverifyCalls = String(verify.calls())
    await new Promise((resolve) => verify?.server.close(resolve))
  }

  let gatewayOutcomes: Record<string, number> | null = null
  let gatewayRequests: number | null = null
  let storeOps: number | null = null
  if (metA !== null && metB !== null) {
    gatewayOutcomes = byOutcome(deltaMap(metA.requests, metB.requests))
    gatewayRequests = Object.values(gatewayOutcomes).reduce((a, b) => a + b, 0)
    storeOps = [...deltaMap(metA.storeOps, metB.storeOps).values()].reduce((a, b) => a + b, 0)
  }
  const n = gatewayRequests ?? users.answered
  const cmds = commandDelta(redisA, redisB)
  const cmdSum = sumCommands(cmds)

  const check = async (p: ProductSpec): Promise<ProductCheck> => {
    const orders = users.ordersByProduct[p.id] ?? 0
    const q = admin === null ? null : await getJson(`${admin}/admin/quota/${CAMPAIGN}/${p.id}`)
    const s = originUrl === null ? null : await getJson(`${originUrl}/stock/${CAMPAIGN}/${p.id}`)
    const released = originUrl === null ? null : await metricSum(`${originUrl}/metrics`, 'flashgate_origin_edge_released_total', { campaign: CAMPAIGN, product: p.id })
    const origin = s === null ? null : { stock: Number(s.stock), sale: Number(s.sale), locked: Number(s.locked), sold: Number(s.sold) }
    const edgeAdmitted = typeof q?.admitted === 'number' ? q.admitted : null
    return {
      product: p.id,
      quota: p.quota,
      orders,
      edgeAdmitted,
      oversold: Math.max(0, orders - (released ?? 0) - p.quota),
      released,
      resold: Math.max(0, orders - p.quota),
      ledgerOk: origin === null || edgeAdmitted === null ? null : edgeAdmitted === origin.locked + origin.sold && q?.remaining === origin.sale,
      origin,
      invariantOk: origin === null ? null : origin.sale + origin.locked + origin.sold === origin.stock,
      originMatchesOrders: origin === null ? null : origin.locked + origin.sold === orders - (released ?? 0)
    }
  }
  // At rest: a release the origin is handing over as the run ends takes a moment (bounded: 3 s).
  let products: ProductCheck[] = []
  for (const until = Date.now() + 3000; ;) {
    products = []
    for (const p of o.products) products.push(await check(p))
    if (products.every((p) => p.ledgerOk !== false && p.originMatchesOrders !== false) || Date.now() > until) break
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
  const oversold = products.reduce((a, p) => a + p.oversold, 0)
  const inv = products.every((p) => p.invariantOk === null) ? null : products.every((p) => p.invariantOk !== false && p.originMatchesOrders !== false)
  const ledgerOk = products.every((p) => p.ledgerOk === null) ? null : products.every((p) => p.ledgerOk !== false)
  return {
    users,
    products,
    gatewayOutcomes,
    gatewayRequests,
    cpuUsPerReq: cpuA !== null && cpuB !== null && n > 0 ? (cpuB - cpuA) / n : null,
    redisCommands: cmds,
    redisCommandsPerReq: cmdSum !== null && n > 0 ? cmdSum / n : null,
    redisScriptsPerReq: cmds !== null && n > 0 ? scriptCalls(cmds) / n : null,
    storeOpsPerReq: storeOps !== null && n > 0 ? storeOps / n : null,
    serverBuyLatency: serverLatency(metA, metB, 'buy'),
    serverLatency: serverLatency(metA, metB),
    generatorHealth,
    correctness: {
      oversold,
      usersWithSeveralOrders: users.usersWithSeveralOrders,
      lost: users.lost,
      invariantOk: inv,
      ledgerOk,
      released: products.reduce((a, p) => a + (p.released ?? 0), 0),
      resold: products.reduce((a, p) => a + p.resold, 0),
      ok: oversold === 0 && users.usersWithSeveralOrders === 0 && users.lost === 0 && inv !== false && ledgerOk !== false && (ledgerSamples === null || ledgerSamples.violations === 0)
    },
    ledgerSamples,
    unpaid: { payShare: PAY_SHARE, paymentTimeoutMs: paymentTimeoutMs(o.durationS) },
    stack
  }
}
