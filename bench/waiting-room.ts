/**
 * Bench scenario `waiting-room`: `--users` virtual users (default 20,000) join a campaign's waiting room
 * during its pre-queue and poll it as told; at starts_at the order is drawn and the room admits at
 * `--admit`/s; an admitted user buys at once (one unit each) until the product sells out. Against a
 * gateway process of its own on a Redis of its own (or the memory store with `--store memory`: no
 * command counts then).
 *
 * Reported, each with the window it is measured over:
 * - admission rate: the room's own count of admitted users (the `flashgate_waiting_room_users{state=
 *   "admitted"}` gauge, sampled every 250 ms) over [starts_at + 1 s, starts_at + 9 s] (the product has
 *   30 × admit units, so the stock cap does not bind there), against `admit` (goal: within 5 %);
 * - admitted order == the audited shuffle: the join log and the revealed seed recomputed with
 *   antibot/audit-queue.ts (mismatches must be 0), and the users admitted, ordered by their admission
 *   time (in the pass: expiry − pass_ttl), come in non-decreasing audited position;
 * - sell-out: the last unit's answer time (the bench's Q-th 200), then the latest poll started after it
 *   that was not told sold_out (goal: < 1 s), and the time until the last waiter was told;
 * - store calls per poll: the gateway's own store-operation counts (`flashgate_store_duration_seconds_count`)
 *   and Redis `INFO commandstats` over the pre-queue's polling window (polls only, no joins, no buys);
 * - gateway µs per poll: the gateway process's CPU time over the same window ÷ polls answered.
 * The machine is shared: CPU figures are noisy; the load generator runs beside the gateway.
 */
import { Pool } from 'undici'
import { auditQueue } from '../antibot/audit-queue.js'
import { preQueueOrder } from '../limiter/waiting-room.js'
import { startGateway, startRedis } from './flashgate.js'
import { cpuMicros, freePort, sleep } from './proc.js'
import { RedisProbe, commandDelta, scriptCalls, sumCommands } from './redis-stats.js'
import { startUpstream } from './upstream.js'

export interface WaitingRoomOptions {
  readonly dir: string
  readonly users: number
  /** Admissions per second. */
  readonly admit: number
  /** Units of the one product. */
  readonly quota: number
  /** Seconds of pre-queue polling measured (after every user joined). */
  readonly steady: number
  readonly store: 'memory' | 'redis'
  readonly serverCpus: string | null
  readonly log: (line: string) => void
}

export interface WaitingRoomResult {
  readonly users: number
  readonly admit: number
  readonly quota: number
  readonly pollMs: number
  readonly joined: number
  readonly polls: number
  readonly errors: number
  /** measured: the room's admitted count (its gauge, sampled); passes: admission instants of the passes users saw (misses the admitted who never polled again). */
  readonly admission: { readonly measured: number | null, readonly passes: number, readonly target: number, readonly deviation: number | null, readonly window: string }
  readonly order: { readonly auditMismatches: number, readonly admitted: number, readonly outOfOrder: number, readonly expired: number }
  readonly soldOut: { readonly lastUnitAt: number | null, readonly latestNotToldMs: number | null, readonly lastToldMs: number | null, readonly waitersTold: number, readonly bought: number }
  readonly steady: { readonly seconds: number, readonly polls: number, readonly storeCalls: number | null, readonly storeCallsPerPoll: number | null, readonly redisCommands: number | null, readonly redisRoundTrips: number | null, readonly redisRoundTripsPerPoll: number | null, readonly gatewayUsPerPoll: number | null }
}

const CAMPAIGN = 'wr'

interface VU {
  readonly id: string
  cookie: string
  next: number
  done: boolean
  status: string
  admittedAt: number
  passExp: number
  /** The room's ETA for this user (ms), after the draw. */
  eta: number
}

async function metricsOf (admin: string): Promise<string> {
  const r = await fetch(`${admin}/metrics`)
  return await r.text()
}

function metric (text: string, re: RegExp): number | null {
  const m = re.exec(text)
  return m === null ? null : Number(m[1])
}

function storeOps (text: string): number {
  let n = 0
  for (const m of text.matchAll(/^flashgate_store_duration_seconds_count\{op="[^"]+"\} (\d+)/gm)) n += Number(m[1])
  return n
}

export async function runWaitingRoom (o: WaitingRoomOptions): Promise<WaitingRoomResult> {
  const redis = o.store === 'redis' ? await startRedis(o.dir, 'redis-wr', null) : null
  const up = await startUpstream(o.dir, null)
  const listen = await freePort()
  const adminPort = await freePort()
  // What one load generator beside the gateway keeps up with on a 2-core box (~1,000 requests/s when the
  // machine is busy): joins spread over users/1000 s, and clients told to poll every max(4 s, users/1000 s)
  // (20,000 users: every 20 s, so silent for a minute = place lost). A waiting user whose ETA is shorter
  // polls at its ETA (at least 300 ms apart), as a sale page would, so the admitted learn it promptly.
  const POLL_S = Math.max(4, Math.ceil(o.users / 1000))
  const joinWindowMs = Math.max(3000, o.users)
  // Room for the gateway to start (tsx compiles the sources when there is no build: seconds on a busy
  // machine), then the joins, then the measured pre-queue window.
  const startsAt = Date.now() + 25_000 + joinWindowMs + 3000 + o.steady * 1000
  const iso = (ms: number): string => new Date(ms).toISOString()
  const passTtlS = 60
  const yaml = `listen: 127.0.0.1:${listen}
admin: 127.0.0.1:${adminPort}
access_log: { enabled: false }
store: ${redis === null ? '{ kind: memory }' : `{ kind: redis, url: "${redis.url}", timeout: 1s }`}
identity: { user: header x-user-id }
upstreams:
  shop: { targets: [{ url: ${up.url} }], retries: 0 }
campaigns:
  - id: ${CAMPAIGN}
    starts_at: ${iso(startsAt)}
    ends_at: ${iso(startsAt + 3600_000)}
    products: [{ id: p1, quota: ${o.quota} }]
    waiting_room: { prequeue: 1h, admit: ${o.admit}/s, pass_ttl: ${passTtlS}s, overbook: 2, poll: ${POLL_S}s }
routes:
  - name: buy
    match: { path: /buy/:campaign/:product, methods: [POST] }
    guards:
      - waiting_room: {}
      - quota: {}
    upstream: shop
`
  const gw = await startGateway({ dir: o.dir, name: 'gateway-wr', yaml, listen, admin: adminPort, workers: 1, cpus: o.serverCpus })
  const probe = redis === null ? null : new RedisProbe(redis.url)
  // A join waits for the node's next sync (≤ 100 ms, more on a busy machine): many connections, or the
  // joins are bounded by connections / sync time rather than by the gateway.
  const pool = new Pool(gw.url, { connections: 1024, keepAliveTimeout: 60_000 })
  const vus: VU[] = Array.from({ length: o.users }, (_, i) => ({ id: `v${i}`, cookie: '', next: 0, done: false, status: '', admittedAt: 0, passExp: 0, eta: Infinity }))
  const t0 = Date.now()
  if (t0 + joinWindowMs + 3000 + 1000 > startsAt) throw new Error('waiting-room: the gateway took too long to start; nothing measured')
  vus.forEach((v, i) => { v.next = t0 + Math.floor(i * joinWindowMs / o.users) })
  let polls = 0
  let errors = 0
  let bought = 0
  let lastUnitAt: number | null = null
  let latestNotTold: number | null = null
  let lastTold: number | null = null
  let waitersTold = 0
  let inFlight = 0
  const MAX_IN_FLIGHT = 1024

  const poll = async (v: VU): Promise<void> => {
    const sent = Date.now()
    try {
      const r = await pool.request({ path: `/_flashgate/queue?campaign=${CAMPAIGN}`, method: 'GET', headers: { 'x-user-id': v.id, cookie: v.cookie } })
      const text = await r.body.text()
      polls++
      const sc = r.headers['set-cookie']
      for (const c of sc === undefined ? [] : Array.isArray(sc) ? sc : [sc]) {
        const kv = c.split(';')[0] as string
        const name = kv.slice(0, kv.indexOf('='))
        v.cookie = [...v.cookie.split('; ').filter((x) => x !== '' && !x.startsWith(name + '=')), kv].join('; ')
      }
      if (r.statusCode !== 200) { errors++; return }
      const a = JSON.parse(text) as { status: string, pass?: string, poll_ms: number, eta_ms: number, position: number }
      v.status = a.status
      v.eta = a.status === 'waiting' && a.position > 0 ? a.eta_ms : Infinity
      if (lastUnitAt !== null && sent > lastUnitAt && a.status !== 'sold_out' && a.status !== 'closed' && a.status !== 'admitted') latestNotTold = Math.max(latestNotTold ?? 0, sent - lastUnitAt)
      if (a.status === 'sold_out') {
        v.done = true
        if (lastUnitAt !== null) { waitersTold++; lastTold = Math.max(lastTold ?? 0, Date.now() - lastUnitAt) }
        return
      }
      if (a.status === 'closed') { v.done = true; return }
      if (a.status === 'admitted' && a.pass !== undefined) {
        v.admittedAt = Date.now()
        v.passExp = Number(a.pass.split('.')[0])
        const b = await pool.request({ path: `/buy/${CAMPAIGN}/p1`, method: 'POST', headers: { 'x-user-id': v.id, cookie: v.cookie } })
        await b.body.text()
        if (b.statusCode === 200) {
          bought++
          if (bought === o.quota) lastUnitAt = Date.now()
        }
        v.done = true
      }
    } catch {
      errors++
    } finally {
      v.next = Date.now() + Math.max(300, Math.min(v.eta, POLL_S * 1000 * (0.8 + 0.2 * Math.random())))
    }
  }

  let stop = false
  const loop = (async () => {
    while (!stop) {
      const now = Date.now()
      for (const v of vus) {
        if (inFlight >= MAX_IN_FLIGHT) break
        if (v.done || v.next > now) continue
        v.next = Infinity
        inFlight++
        void poll(v).finally(() => { inFlight-- })
      }
      await sleep(20)
    }
  })()

  const joinedBy = t0 + joinWindowMs + 3000
  o.log(`waiting-room: ${o.users} users joining over ${(joinWindowMs / 1000).toFixed(1)} s; draw at ${iso(startsAt)}`)
  while (Date.now() < joinedBy) await sleep(100)
  // The steady window: everyone joined, nobody admitted yet: status polls only.
  const m0 = await metricsOf(gw.admin)
  const r0 = probe === null ? null : await probe.commandStats()
  const c0 = cpuMicros(gw.proc.pid)
  const p0 = polls
  const s0 = Date.now()
  const steadyEnd = startsAt - 1000
  while (Date.now() < steadyEnd) await sleep(100)
  const c1 = cpuMicros(gw.proc.pid)
  const p1 = polls
  const m1 = await metricsOf(gw.admin)
  const r1 = probe === null ? null : await probe.commandStats()
  const s1 = Date.now()
  const steadyPolls = p1 - p0
  const storeCalls = storeOps(m1) - storeOps(m0)
  const rd = commandDelta(r0, r1)
  const redisCommands = sumCommands(rd)
  // Round trips: every script call once, plus the plain commands (GET, SET…) no script ran.
  const roundTrips = rd === null ? null : scriptCalls(rd) + (rd.get ?? 0) + (rd.set ?? 0)
  o.log(`waiting-room: steady window ${((s1 - s0) / 1000).toFixed(1)} s, ${steadyPolls} polls, ${storeCalls} store calls`)

  // The sale: admissions sampled from the room's gauge.
  while (Date.now() < startsAt + 1000) await sleep(50)
  const samples: Array<[number, number]> = []
  const sampleUntil = startsAt + 9000
  while (Date.now() < sampleUntil) {
    const a = metric(await metricsOf(gw.admin), /^flashgate_waiting_room_users\{campaign="wr",state="admitted"\} (\d+)/m)
    if (a !== null) samples.push([Date.now(), a])
    await sleep(250)
  }
  const first = samples[0]
  const last = samples[samples.length - 1]
  const gauge = first !== undefined && last !== undefined && last[0] > first[0] ? (last[1] - first[1]) * 1000 / (last[0] - first[0]) : null
  // Until sold out and every waiter told (bounded).
  const hardEnd = Date.now() + 60_000
  while (Date.now() < hardEnd && (lastUnitAt === null || vus.some((v) => !v.done && v.status === 'waiting'))) await sleep(100)
  if (lastUnitAt !== null) await sleep(POLL_S * 1000 + 500)
  stop = true
  await loop
  while (inFlight > 0 && Date.now() < hardEnd + 10_000) await sleep(20)

  // Audit: the join log and the revealed seed.
  const seed = (await (await fetch(`${gw.url}/_flashgate/queue/seed?campaign=${CAMPAIGN}`)).json() as { seed?: string }).seed ?? ''
  const log = await (await fetch(`${gw.admin}/admin/queue/${CAMPAIGN}/joins`)).text()
  let auditMismatches = -1
  let expired = 0
  try {
    auditMismatches = auditQueue(CAMPAIGN, seed, log).mismatches.length
    expired = (JSON.parse(log.split('\n')[0] as string) as { expired: number }).expired
  } catch (err) {
    o.log(`waiting-room: audit failed: ${(err as Error).message}`)
  }
  const preUsers = log.split('\n').slice(1).filter((l) => l.includes('"phase":"pre"')).map((l) => (JSON.parse(l) as { user: string }).user)
  const order = preQueueOrder(Buffer.from(seed, 'hex'), CAMPAIGN, preUsers)
  const rank = new Map(order.map((u, i) => [u, i + 1]))
  // Users skipped as abandoned who joined again are admitted later from the back: left out of the order check.
  const rejoined = new Set(log.split('\n').slice(1).filter((l) => l.includes('"phase":"after"')).map((l) => (JSON.parse(l) as { user: string }).user))
  const admitted = vus.filter((v) => v.passExp > 0)
  // One sync admits a batch at one instant (one pass expiry): batches in time order must come in audited
  // order, i.e. every user of a batch ranks after every user of the batches before it.
  const batches = new Map<number, number[]>()
  for (const v of admitted) {
    const r = rank.get(v.id)
    if (r === undefined || rejoined.has(v.id)) continue
    const b = batches.get(v.passExp)
    if (b === undefined) batches.set(v.passExp, [r]); else b.push(r)
  }
  let outOfOrder = 0
  let maxBefore = 0
  for (const exp of [...batches.keys()].sort((a, b) => a - b)) {
    const ranks = batches.get(exp) as number[]
    for (const r of ranks) if (r < maxBefore) outOfOrder++
    maxBefore = Math.max(maxBefore, ...ranks)
  }
  // The admission rate from the store's own admission instants (pass expiry − pass_ttl).
  const w0 = startsAt + 1000
  const w1 = startsAt + 9000
  const inWindow = admitted.filter((v) => v.passExp - passTtlS * 1000 >= w0 && v.passExp - passTtlS * 1000 < w1).length
  await pool.close()
  await probe?.close()
  return {
    users: o.users,
    admit: o.admit,
    quota: o.quota,
    pollMs: POLL_S * 1000,
    joined: preUsers.length,
    polls,
    errors,
    admission: { measured: gauge, passes: inWindow / ((w1 - w0) / 1000), target: o.admit, deviation: gauge === null ? null : Math.abs(gauge - o.admit) / o.admit, window: 'starts_at + 1 s … + 9 s' },
    order: { auditMismatches, admitted: admitted.length, outOfOrder, expired },
    soldOut: { lastUnitAt, latestNotToldMs: latestNotTold, lastToldMs: lastTold, waitersTold, bought },
    steady: {
      seconds: (s1 - s0) / 1000,
      polls: steadyPolls,
      storeCalls: redis === null ? null : storeCalls,
      storeCallsPerPoll: redis === null || steadyPolls === 0 ? null : storeCalls / steadyPolls,
      redisCommands,
      redisRoundTrips: roundTrips,
      redisRoundTripsPerPoll: roundTrips === null || steadyPolls === 0 ? null : roundTrips / steadyPolls,
      gatewayUsPerPoll: steadyPolls === 0 ? null : (c1 - c0) / steadyPolls
    }
  }
}

/** The scenario's checks (name, value, ok). */
export function waitingRoomChecks (r: WaitingRoomResult): Array<{ name: string, value: number | string | boolean | null, ok: boolean | null }> {
  return [
    { name: `users joined in the pre-queue (of ${r.users})`, value: r.joined, ok: r.joined === r.users },
    { name: 'queue requests failed (non-200 or socket errors; must be 0)', value: r.errors, ok: r.errors === 0 },
    { name: `admission rate within 5 % of admit ${r.admit}/s (${r.admission.window})`, value: r.admission.measured === null ? null : `${r.admission.measured.toFixed(1)}/s`, ok: r.admission.deviation === null ? null : r.admission.deviation <= 0.05 },
    { name: 'audit-queue mismatches between the join log and the seed (must be 0)', value: r.order.auditMismatches, ok: r.order.auditMismatches === 0 },
    { name: `admitted users (${r.order.admitted}) out of audited order (must be 0)`, value: r.order.outOfOrder, ok: r.order.outOfOrder === 0 },
    { name: `units bought (quota ${r.quota})`, value: r.soldOut.bought, ok: r.soldOut.bought === r.quota },
    { name: 'latest poll started after the last unit and not told sold_out, ms after it (< 1000)', value: r.soldOut.latestNotToldMs ?? 0, ok: r.soldOut.lastUnitAt === null ? null : (r.soldOut.latestNotToldMs ?? 0) < 1000 },
    { name: 'store calls per status poll, pre-queue window (goal ≤ 0.01)', value: r.steady.storeCallsPerPoll, ok: r.steady.storeCallsPerPoll === null ? null : r.steady.storeCallsPerPoll <= 0.01 }
  ]
}

export function waitingRoomTable (r: WaitingRoomResult): string {
  const f = (v: number | null, d = 4): string => v === null ? '–' : v.toFixed(d)
  return [
    '| measure | value |',
    '|---|---:|',
    `| users (all joined in the pre-queue) | ${r.joined} / ${r.users} |`,
    `| admission rate (${r.admission.window}) | ${f(r.admission.measured, 1)}/s vs admit ${r.admit}/s (${r.admission.deviation === null ? '–' : (r.admission.deviation * 100).toFixed(1) + ' %'}), the room's admitted count sampled; from the passes users saw: ${f(r.admission.passes, 1)}/s |`,
    `| audit-queue mismatches / admitted out of order | ${r.order.auditMismatches} / ${r.order.outOfOrder} of ${r.order.admitted} (positions skipped as abandoned: ${r.order.expired}) |`,
    `| last unit → latest poll not told sold_out | ${r.soldOut.latestNotToldMs ?? 0} ms |`,
    `| last unit → last waiter told sold_out | ${r.soldOut.lastToldMs ?? '–'} ms (${r.soldOut.waitersTold} waiters told; clients poll every ${r.pollMs} ms) |`,
    `| status polls in the pre-queue window | ${r.steady.polls} in ${r.steady.seconds.toFixed(1)} s |`,
    `| store calls per poll (gateway's count) | ${f(r.steady.storeCallsPerPoll)} (${r.steady.storeCalls ?? '–'} calls) |`,
    `| Redis round trips per poll (INFO commandstats) | ${f(r.steady.redisRoundTripsPerPoll)} (${r.steady.redisCommands ?? '–'} commands incl. inside scripts) |`,
    `| gateway CPU per poll | ${f(r.steady.gatewayUsPerPoll, 1)} µs |`
  ].join('\n')
}
