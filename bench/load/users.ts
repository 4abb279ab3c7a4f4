/**
 * Virtual users for the flash-sale scenario: undici with per-user state, because a buyer is a sequence
 * (clock sync → signed link → captcha → buy → retry on 429 / keep pressing after SOLD_OUT) that a
 * fixed-request generator cannot play. Every user is an async loop; all of them share one undici Pool
 * with `connections` sockets, so concurrency toward the gateway is bounded and the event loop of the
 * bench (pinned to the load core) is not what limits the gateway.
 *
 * Timeline: users arrive over `rampS` seconds (fetch the server time and their link as soon as links
 * are revealed), the sale opens at `startsAt` and everybody presses "buy" within `spikeJitterMs` (the
 * spike), then those without an order keep pressing with a think time until the run ends (sustained
 * overload). Bots (a share of the crowd) skip the link, replay someone else's captcha token, or hammer.
 * Every loop is bounded: by the end of the run and by `maxAttempts` per user. In-flight requests are
 * awaited at the end, so sent = answered + lost exactly.
 */
import { Pool } from 'undici'
import { Histogram, latencyOf } from '../hist.js'
import type { LoadResult, TimelinePoint } from './types.js'

export type CaptchaMode =
  | { readonly kind: 'none' }
  /** A third-party provider (turnstile, ...) whose siteverify the bench fakes: any fresh token passes. */
  | { readonly kind: 'token', readonly header: string }

export interface UsersOptions {
  readonly baseUrl: string
  readonly users: number
  readonly connections: number
  readonly campaign: string
  /** Products and the share of users who want each (weights). */
  readonly products: ReadonlyArray<{ readonly id: string, readonly weight: number }>
  /** Epoch ms (server clock) when the sale opens. */
  readonly startsAt: number
  readonly rampS: number
  /** Whole run bound, from start; users stop pressing at this point and in-flight requests are awaited. */
  readonly durationS: number
  readonly identityHeader: string
  readonly captcha: CaptchaMode
  /** Share of users that are bots (0..1). */
  readonly botShare: number
  readonly maxAttempts: number
  readonly thinkMs: readonly [number, number]
  readonly spikeJitterMs: number
  /** Whether to ask /_flashgate/link (signed links configured); otherwise users POST the plain buy path. */
  readonly signedLinks: boolean
  /** Plain buy path when no link is used: `/buy/${campaign}/${product}`. */
  readonly buyPath: (campaign: string, product: string) => string
  readonly timeoutMs: number
  readonly onTick?: (elapsedS: number, totals: Readonly<Record<string, number>>) => void
  /** Seed for the deterministic user mix. */
  readonly seed?: number
  /**
   * Share of buyers (non-bots with an order) who pay it (`POST /orders/:id/pay` through the gateway,
   * retried while the order is still QUEUED); the others never pay, so the origin cancels their orders
   * after its payment_timeout and the units go back to the edge for late buyers. Default 1.
   */
  readonly payShare?: number
}

export interface Order { readonly user: string, readonly product: string, readonly orderId: string | null }

export interface UsersResult extends LoadResult {
  /** Outcome → answers (`passed` for 2xx buys, a reject code, `link`/`time` for the edge endpoints). */
  readonly outcomes: Readonly<Record<string, number>>
  /** Outcomes of the buy requests only. */
  readonly buyOutcomes: Readonly<Record<string, number>>
  readonly orders: readonly Order[]
  /** Users with more than one accepted buy. */
  readonly usersWithSeveralOrders: number
  /** Per product: accepted buys. */
  readonly ordersByProduct: Readonly<Record<string, number>>
  readonly bots: number
  /** Latency of the buy requests by outcome (ms). */
  readonly buyLatencyMs: Readonly<Record<string, ReturnType<typeof latencyOf>>>
  /** Lost requests by error message (first few kinds). */
  readonly lostBy: Readonly<Record<string, number>>
  /** Orders paid (200 PAID), orders left unpaid on purpose, and pay attempts that found the order cancelled. */
  readonly payments: { readonly paid: number, readonly unpaid: number, readonly cancelled: number }
}

type BotKind = 'nolink' | 'replay' | 'hammer'

/** A small deterministic PRNG (mulberry32), so the crowd is the same from run to run. */
function prng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const sleep = async (ms: number): Promise<void> => { if (ms > 0) await new Promise((resolve) => setTimeout(resolve, ms)) }

export async function runUsers (o: UsersOptions): Promise<UsersResult> {
  const url = new URL(o.baseUrl)
  const pool = new Pool(url.origin, { connections: o.connections, pipelining: 1, keepAliveTimeout: 30_000, headersTimeout: o.timeoutMs, bodyTimeout: o.timeoutMs })
  const rand = prng(o.seed ?? 42)
  const t0 = Date.now()
  const endAt = t0 + o.durationS * 1000
  const total = new Histogram()
  const statuses: Record<string, number> = {}
  const outcomes: Record<string, number> = {}
  const buyOutcomes: Record<string, number> = {}
  const buyHist = new Map<string, Histogram>()
  const lostBy: Record<string, number> = {}
  const orders: Order[] = []
  const ordersPerUser = new Map<string, number>()
  const payments = { paid: 0, unpaid: 0, cancelled: 0 }
  const payShare = o.payShare ?? 1
  const spentTokens: string[] = []
  let sent = 0
  let answered = 0
  let lost = 0
  let sec = new Map<string, Histogram>()
  const timeline: TimelinePoint[] = []
  let ticks = 0
  const timer = setInterval(() => {
    ticks++
    const outs: Record<string, { count: number, p99: number | null }> = {}
    for (const [k, h] of sec) outs[k] = { count: h.count, p99: Math.round(h.percentile(99)) / 1000 }
    timeline.push({ t: Math.round((Date.now() - t0) / 100) / 10, outcomes: outs })
    sec = new Map()
    o.onTick?.(ticks, buyOutcomes)
  }, 1000)

  const weights = o.products.reduce((a, p) => a + p.weight, 0)
  const pickProduct = (): string => {
    let r = rand() * weights
    for (const p of o.products) { r -= p.weight; if (r <= 0) return p.id }
    return o.products[o.products.length - 1]?.id ?? ''
  }

  interface Answer { status: number, code: string, json: Record<string, unknown> | null, setCookie: string[], retryAfterS: number | null }

  const call = async (kind: string, method: 'GET' | 'POST', path: string, headers: Record<string, string>): Promise<Answer | null> => {
    sent++
    const start = performance.now()
    try {
      const res = await pool.request({ method, path, headers, body: method === 'POST' ? '' : null })
      const text = await res.body.text()
      const us = (performance.now() - start) * 1000
      answered++
      statuses[String(res.statusCode)] = (statuses[String(res.statusCode)] ?? 0) + 1
      let json: Record<string, unknown> | null = null
      try { json = JSON.parse(text) as Record<string, unknown> } catch {}
      const code = res.statusCode < 300 ? 'passed' : (typeof json?.code === 'string' ? json.code : `HTTP_${res.statusCode}`)
      const outcome = kind === 'buy' ? code : `${kind} ${code === 'passed' ? 'ok' : code}`
      outcomes[outcome] = (outcomes[outcome] ?? 0) + 1
      total.record(us)
      if (kind === 'buy') {
        buyOutcomes[code] = (buyOutcomes[code] ?? 0) + 1
        let h = buyHist.get(code)
        if (h === undefined) { h = new Histogram(); buyHist.set(code, h) }
        h.record(us)
      }
      let s = sec.get(outcome)
      if (s === undefined) { s = new Histogram(); sec.set(outcome, s) }
      s.record(us)
      const sc = res.headers['set-cookie']
      const ra = Number(res.headers['retry-after'])
      return { status: res.statusCode, code, json, setCookie: sc === undefined ? [] : Array.isArray(sc) ? sc : [sc], retryAfterS: Number.isFinite(ra) ? ra : null }
    } catch (err) {
      lost++
      const m = (err as Error).message?.slice(0, 80) ?? 'error'
      lostBy[m] = (lostBy[m] ?? 0) + 1
      return null
    }
  }

  /** Pay an order as its buyer, retrying (bounded) while the origin has not created it yet. */
  const pay = async (base: Record<string, string>, orderId: string): Promise<void> => {
    // Bounded by count and by 5 s past the end of the run (a buyer who got the order at the last moment still pays).
    for (let tries = 0; tries < 50 && Date.now() < endAt + 5000; tries++) {
      const a = await call('pay', 'POST', `/orders/${encodeURIComponent(orderId)}/pay`, base)
      if (a?.status === 200) { payments.paid++; return }
      if (a?.code === 'ORDER_CANCELLED') { payments.cancelled++; return }
      await sleep(100)
    }
    payments.unpaid++
  }

  const user = async (i: number): Promise<void> => {
    const id = `u${i}`
    const bot: BotKind | null = rand() < o.botShare ? (['nolink', 'replay', 'hammer'] as const)[i % 3] ?? 'hammer' : null
    const product = pickProduct()
    const arrive = t0 + rand() * o.rampS * 1000
    const jitter = rand() * o.spikeJitterMs
    const think = (): number => bot === 'hammer' ? 20 : o.thinkMs[0] + rand() * (o.thinkMs[1] - o.thinkMs[0])
    await sleep(arrive - Date.now())
    if (Date.now() >= endAt) return
    const base: Record<string, string> = { [o.identityHeader]: id }
    // 1. clock sync
    let offset = 0
    const before = Date.now()
    const time = await call('time', 'GET', '/_flashgate/time', base)
    const n = Number(time?.json?.now)
    if (Number.isFinite(n)) offset = n - (before + Date.now()) / 2
    const serverNow = (): number => Date.now() + offset
    // 2. the signed purchase link (bots of kind `nolink` guess the plain path)
    let buyPath = o.buyPath(o.campaign, product)
    if (o.signedLinks && bot !== 'nolink') {
      for (let tries = 0; tries < 20 && Date.now() < endAt; tries++) {
        const a = await call('link', 'GET', `/_flashgate/link?campaign=${encodeURIComponent(o.campaign)}&product=${encodeURIComponent(product)}`, base)
        const u = a?.json?.url
        if (a?.status === 200 && typeof u === 'string') {
          const parsed = new URL(u, url.origin)
          buyPath = parsed.pathname + parsed.search
          break
        }
        await sleep(Math.min(1000, Math.max(50, (a?.retryAfterS ?? 0.2) * 1000)))
      }
    }
    // 3. wait for the sale to open (server clock), then the spike
    await sleep(o.startsAt - serverNow() + jitter)
    const cookies = new Map<string, string>()
    let attempts = 0
    // Hammering bots keep pressing after an order too: a second order for one user must never happen.
    while (attempts < o.maxAttempts && Date.now() < endAt) {
      attempts++
      const h: Record<string, string> = { ...base }
      if (o.captcha.kind === 'token' && cookies.size === 0) {
        // A fresh token from the (faked) provider widget; replaying bots reuse a token someone already spent.
        const spent = spentTokens[Math.floor(rand() * spentTokens.length)]
        const token = bot === 'replay' && spent !== undefined ? spent : `tok-${id}-${attempts}-${Math.floor(rand() * 1e9)}`
        h[o.captcha.header] = token
        if (bot !== 'replay' && spentTokens.length < 10_000) spentTokens.push(token)
      }
      if (cookies.size > 0) h.cookie = [...cookies].map(([k, v]) => `${k}=${v}`).join('; ')
      const a = await call('buy', 'POST', buyPath, h)
      if (a === null) { await sleep(think()); continue }
      for (const c of a.setCookie) {
        const m = /^([^=;\s]+)=([^;]*)/.exec(c)
        if (m !== null) cookies.set(m[1] ?? '', m[2] ?? '')
      }
      if (a.status >= 200 && a.status < 300) {
        const orderId = typeof a.json?.order_id === 'string' || typeof a.json?.order_id === 'number' ? String(a.json.order_id) : null
        orders.push({ user: id, product, orderId })
        ordersPerUser.set(id, (ordersPerUser.get(id) ?? 0) + 1)
        if (bot !== 'hammer') {
          if (orderId !== null && rand() < payShare) await pay(base, orderId)
          else payments.unpaid++
          break
        }
      }
      if (a.status === 429 && a.retryAfterS !== null) await sleep(Math.min(a.retryAfterS * 1000, 2000) + think())
      else await sleep(think())
    }
  }

  const users = Array.from({ length: o.users }, async (_, i) => { await user(i) })
  await Promise.all(users)
  clearInterval(timer)
  await pool.close()
  const seconds = (Date.now() - t0) / 1000
  const ordersByProduct: Record<string, number> = {}
  for (const ord of orders) ordersByProduct[ord.product] = (ordersByProduct[ord.product] ?? 0) + 1
  const buyLatencyMs: Record<string, ReturnType<typeof latencyOf>> = {}
  for (const [k, h] of buyHist) buyLatencyMs[k] = latencyOf(h)
  const non2xx = Object.entries(statuses).filter(([s]) => !/^[23]/.test(s)).reduce((a, [, n]) => a + n, 0)
  return {
    generator: 'users',
    seconds,
    sent,
    answered,
    lost,
    rps: answered / seconds,
    latencyMs: latencyOf(total),
    statuses,
    non2xx,
    timeline,
    outcomes,
    buyOutcomes,
    orders,
    usersWithSeveralOrders: [...ordersPerUser.values()].filter((n) => n > 1).length,
    ordersByProduct,
    bots: Math.round(o.users * o.botShare),
    buyLatencyMs,
    lostBy,
    payments
  }
}
