/**
 * The waiting room end to end: real gateways on loopback (memory store; two gateways on one real
 * redis-server; a real 3-master cluster), a real origin, a fake clock shared by the gateways. Covers
 * the pre-queue shuffle (positions = the HMAC order, recomputed by audit-queue from the revealed seed
 * and the exported join log), admission at the rate and under the overbook cap, passes bound to the
 * user and used once, abandonment, sell-out, and the config errors.
 */
import t from 'tap'
import type { Test } from 'tap'
import { createHash, createHmac } from 'node:crypto'
import type { Dispatcher } from 'undici'
import { loadConfigText } from '../../conf/load.js'
import { auditQueue } from '../../antibot/audit-queue.js'
import { admitBudget, commitmentOf, defaultBurst, etaMs, preQueueOrder, shuffleScore, stockCap } from '../../limiter/waiting-room.js'
import type { Gateway } from '../../gateway/main.js'
import { client, fetchText, startOrigin, startTestGateway, type Answer } from '../helpers/gateway.js'
import { tempDir, yamlConfig } from '../helpers/config.js'
import { startRedis, startRedisCluster } from '../helpers/redis.js'
import { spawnCli } from '../helpers/process.js'

const T0 = Date.parse('2030-01-01T00:00:00Z')
const STARTS = T0 + 60_000
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * Run `fn` until `done(result)` or `ms` pass (the room syncs every 100 ms; a loaded machine may take
 * longer), and return the last result. The clock is fake, so nothing else moves meanwhile.
 */
async function until<T> (fn: () => Promise<T>, done: (r: T) => boolean, ms = 20_000): Promise<T> {
  const end = Date.now() + ms
  for (;;) {
    const r = await fn()
    if (done(r) || Date.now() > end) return r
    await sleep(100)
  }
}
const statuses = (a: Answer[]): string[] => a.map((x) => x.json.status as string)

function yaml (origin: string, store: string, quota = 3): string {
  return `listen: 127.0.0.1:0
admin: 127.0.0.1:0
access_log: { enabled: false }
${store}
identity: { user: header x-user-id }
upstreams:
  origin:
    targets: [{ url: ${origin} }]
    retries: 0
campaigns:
  - id: c1
    starts_at: 2030-01-01T00:01:00Z
    ends_at: 2030-01-01T01:00:00Z
    products: [{ id: p1, quota: ${quota} }]
    waiting_room: { prequeue: 30s, admit: 2/s, pass_ttl: 5s, overbook: 1, poll: 1s }
routes:
  - name: buy
    match: { path: /buy/:campaign/:product, methods: [POST] }
    guards:
      - waiting_room: {}
      - quota: {}
    upstream: origin
`
}

/** One user's cookie jar and polls. */
class User {
  cookies = new Map<string, string>()
  constructor (readonly id: string, readonly gw: Gateway, readonly d: Dispatcher) {}
  private cookieHeader (): string { return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ') }
  private keep (a: Answer): void {
    const sc = a.headers['set-cookie']
    for (const c of sc === undefined ? [] : Array.isArray(sc) ? sc : [sc]) {
      const [kv] = c.split(';')
      const eq = (kv as string).indexOf('=')
      const v = (kv as string).slice(eq + 1)
      if (v === '') this.cookies.delete((kv as string).slice(0, eq))
      else this.cookies.set((kv as string).slice(0, eq), v)
    }
  }

  async poll (): Promise<Answer> {
    const a = await fetchText(this.d, `${this.gw.url}/_flashgate/queue?campaign=c1`, { headers: { 'x-user-id': this.id, cookie: this.cookieHeader() } })
    this.keep(a)
    return a
  }

  async buy (headers: Record<string, string> = {}): Promise<Answer> {
    const a = await fetchText(this.d, `${this.gw.url}/buy/c1/p1`, { method: 'POST', headers: { 'x-user-id': this.id, cookie: this.cookieHeader(), ...headers } })
    this.keep(a)
    return a
  }
}

t.test('pure parts: score, ETA, admission budget, cap', async (t) => {
  const seed = Buffer.alloc(32, 1)
  const s = shuffleScore(seed, 'c1', 'alice')
  t.ok(Number.isSafeInteger(s) && s >= 0 && s < 2 ** 48, 'a 48-bit integer')
  t.equal(s, parseInt(createHmacHex(seed, 'c1\nalice').slice(0, 12), 16), 'first 6 bytes of HMAC-SHA256(seed, campaign\\nuser)')
  t.equal(commitmentOf(seed), createHash('sha256').update(seed).digest('hex'))
  const rate = { count: 600, periodMs: 60_000 }
  t.equal(defaultBurst(rate), 10)
  const table: Array<[number, number, number, number, number, { credit: number, last: number, k: number }]> = [
    // credit, last, now, cap, outstanding → result
    [0, 1000, 1000, 100, 0, { credit: 0, last: 1000, k: 0 }],
    [0, 1000, 1100, 100, 0, { credit: 60_000, last: 1100, k: 1 }],
    [0, 1000, 1150, 100, 0, { credit: 90_000, last: 1150, k: 1 }],
    [0, 1000, 61_000, 100, 0, { credit: 600_000, last: 61_000, k: 10 }],
    [0, 1000, 61_000, 5, 2, { credit: 600_000, last: 61_000, k: 3 }],
    [0, 1000, 61_000, 5, 9, { credit: 600_000, last: 61_000, k: 0 }],
    [30_000, 2000, 1000, 100, 0, { credit: 30_000, last: 2000, k: 0 }]
  ]
  for (const [credit, last, now, cap, out, want] of table) t.same(admitBudget(credit, last, now, rate, 10, cap, out), want, `credit ${credit} last ${last} now ${now} cap ${cap} out ${out}`)
  t.equal(etaMs(0, rate), 0)
  t.equal(etaMs(10, rate), 1000)
  t.equal(etaMs(1, { count: 2, periodMs: 1000 }), 500)
  t.equal(stockCap(3, 1.5), 4)
  t.equal(stockCap(0, 1.5), 0)
  t.equal(stockCap(10, 1.1), 11, 'no float drift below the exact product')
})

/** Written out with node:crypto directly, as an auditor would. */
function createHmacHex (key: Buffer, msg: string): string {
  return createHmac('sha256', key).update(msg).digest('hex')
}

t.test('config: FILE:LINE:COL errors', async (t) => {
  const base = (room: string, guard = '      - waiting_room: {}', campaignKey = ''): string => `identity: { user: header x-user-id }
upstreams: { o: { targets: [{ url: "http://127.0.0.1:9" }] } }
campaigns:
  - id: c1
    starts_at: 2030-01-01T00:01:00Z
    ends_at: 2030-01-01T01:00:00Z
    products: [{ id: p1, quota: 3 }]
${room}
  - id: c2
    starts_at: 2030-01-01T00:01:00Z
    ends_at: 2030-01-01T01:00:00Z
    products: [{ id: p1, quota: 3 }]
routes:
  - name: buy
    match: { path: /buy/:campaign/:product, methods: [POST] }
    guards:
${guard}${campaignKey}
    upstream: o
`
  const errs = (text: string): string[] => { const r = loadConfigText(text, 'f.yaml', {}); return r.ok ? [] : r.errors }
  t.same(errs(base('    waiting_room: { admit: 600/m }')), [], 'valid')
  t.same(errs(base('    waiting_room: { prequeue: 10m, admit: 600/m, pass_ttl: 5m, overbook: 1.5 }')), [], 'the contract example')
  t.same(errs(base('    waiting_room: { admit: 0/m }')), ['f.yaml:8:28: admit: rate "0/m": the count must be at least 1'])
  t.same(errs(base('    waiting_room: { admit: 600 }')), ['f.yaml:8:28: admit: a rate needs a period, e.g. 600/s or 600/m'])
  t.same(errs(base('    waiting_room: { prequeue: 10m }')), ['f.yaml:8:19: waiting_room is missing required key "admit" (users let in per unit of time, e.g. 600/m)'])
  t.same(errs(base('    waiting_room: { admit: 600/m, overbook: 0.5 }')), ['f.yaml:8:45: overbook: 0.5 is out of range (1..100)'])
  t.same(errs(base('    waiting_room: { admit: 600/m, pass_ttl: 10ms }')), ['f.yaml:8:45: pass_ttl: must be at least 1000ms'])
  t.same(errs(base('    waiting_room: { admit: 600/m, shuffle: yes }')), ['f.yaml:8:35: unknown key "shuffle" in waiting_room'], 'unknown keys are errors')
  t.same(errs(base('')), ['f.yaml:17:9: waiting_room: no campaign has a waiting_room (add campaigns[].waiting_room: { admit: 600/m })'], 'a waiting_room guard, but no room anywhere')
  t.same(errs(base('    waiting_room: { admit: 600/m }', '      - waiting_room: { campaign: c2 }')), ['f.yaml:17:35: waiting_room: campaign "c2" has no waiting_room (add campaigns[].waiting_room: { admit: 600/m })'], 'the literal campaign has no room')
})

async function scenario (t: Test, gws: Gateway[], d: Dispatcher, setNow: (ms: number) => void): Promise<void> {
  const ids = ['ann', 'bob', 'cat', 'dan', 'eve']
  const users = ids.map((id, i) => new User(id, gws[i % gws.length] as Gateway, d))

  setNow(STARTS - 40_000)
  let a = await (users[0] as User).poll()
  t.same([a.status, a.json.status], [200, 'not_open'], 'before the pre-queue opens')
  t.equal(a.json.eta_ms, 10_000, 'eta: until the pre-queue opens')

  setNow(STARTS - 20_000)
  const pre = await Promise.all(users.map(async (u) => await u.poll()))
  t.same(pre.map((x) => [x.json.status, x.json.position]), ids.map(() => ['waiting', 0]), 'pre-queue: waiting, order not drawn')
  t.equal(pre[0]?.json.poll_ms, 1000)
  t.ok(String(pre[0]?.headers['set-cookie']).includes('fgq_c1='), 'the ticket in a cookie')
  a = await (users[1] as User).poll()
  t.same([a.json.status, a.json.position, a.json.eta_ms], ['waiting', 0, 20_000], 'a poll with the ticket: answered from it')
  t.notOk(a.headers['set-cookie'], 'no new ticket needed')

  a = await fetchText(d, `${(gws[0] as Gateway).url}/_flashgate/queue/seed?campaign=c1`)
  t.same(Object.keys(a.json), ['commitment'], 'before starts_at: the commitment only')
  const commitment = a.json.commitment as string
  const early = await (users[0] as User).buy()
  t.same([early.status, early.json.code], [403, 'QUEUE_REQUIRED'], 'no pass, no buy')

  setNow(STARTS)
  const drawn = await Promise.all(users.map(async (u) => await u.poll()))
  a = await fetchText(d, `${(gws[gws.length - 1] as Gateway).url}/_flashgate/queue/seed?campaign=c1`)
  t.equal(a.json.commitment, commitment, 'the same commitment on every node')
  const seed = Buffer.from(a.json.seed as string, 'hex')
  t.equal(createHash('sha256').update(seed).digest('hex'), commitment, 'from starts_at: the seed, which matches the commitment')
  const order = preQueueOrder(seed, 'c1', ids)
  t.same(drawn.map((x) => x.json.position), ids.map((id) => order.indexOf(id) + 1), 'positions at the draw = the HMAC order (on every node)')
  t.same(drawn.map((x) => x.json.status), ids.map(() => 'waiting'), 'nobody admitted at the draw itself')
  const byOrder = order.map((id) => users[ids.indexOf(id)] as User)

  // 1 s at 2/s: the first two are admitted.
  setNow(STARTS + 1000)
  // Every node's cached cursor catches up within a sync or two: wait for the whole picture.
  let now = await until(async () => await Promise.all(byOrder.map(async (u) => await u.poll())), (a) => a[1]?.json.status === 'admitted' && a[2]?.json.position === 1 && a[4]?.json.position === 3)
  t.same(now.map((x) => x.json.status), ['admitted', 'admitted', 'waiting', 'waiting', 'waiting'], '2/s: the first two in the drawn order are admitted')
  t.same(now.slice(2).map((x) => x.json.position), [1, 2, 3], 'the others: their place in line')
  t.ok(String(now[0]?.headers['set-cookie']).includes(`fgp_c1=${now[0]?.json.pass as string}`), 'the pass in the answer and in a cookie')

  const [first, second, third] = byOrder as [User, User, User]
  const replay = await third.buy({ cookie: `fgp_c1=${now[1]?.json.pass as string}` })
  t.same([replay.status, replay.json.code], [403, 'QUEUE_REQUIRED'], "another user's pass: QUEUE_REQUIRED")
  const forged = await third.buy({ cookie: `fgp_c1=${String(STARTS + 5000)}.${'A'.repeat(43)}` })
  t.same([forged.status, forged.json.code], [403, 'QUEUE_REQUIRED'], 'a forged pass: QUEUE_REQUIRED')
  let b = await first.buy()
  t.equal(b.status, 200, 'an admitted user buys')
  b = await first.buy()
  t.same([b.status, b.json.code], [403, 'QUEUE_REQUIRED'], 'a pass buys once')
  b = await first.buy({ 'x-flashgate-pass': now[0]?.json.pass as string, cookie: '' })
  t.same([b.status, b.json.code], [403, 'QUEUE_REQUIRED'], '... also when sent in the header')

  // Quota 3, one sold: 2 left × overbook 1 = 2 passes at most; one is held (second) → one more admitted.
  setNow(STARTS + 2000)
  now = await until(async () => await Promise.all(byOrder.map(async (u) => await u.poll())), (a) => a[2]?.json.status === 'admitted' && a[0]?.json.status === 'closed')
  t.same(now.map((x) => x.json.status), ['closed', 'admitted', 'admitted', 'waiting', 'waiting'], 'overbook cap: one admitted, not two (the buyer sees closed)')
  setNow(STARTS + 3000)
  await Promise.all(users.map(async (u) => await u.poll()))
  await sleep(400)
  now = await Promise.all(byOrder.map(async (u) => await u.poll()))
  t.same(now.slice(3).map((x) => x.json.status), ['waiting', 'waiting'], 'still capped while the passes are unused')

  t.equal((await second.buy()).status, 200)
  t.equal((await third.buy()).status, 200)
  now = await until(async () => await Promise.all(byOrder.slice(3).map(async (u) => await u.poll())), (a) => statuses(a).every((x) => x === 'sold_out'))
  t.same(now.map((x) => x.json.status), ['sold_out', 'sold_out'], 'sold out: every waiting user is told')

  // The join log, exported and audited.
  const admin = (gws[0] as Gateway).adminUrl as string
  const log = await fetchText(d, `${admin}/admin/queue/c1/joins`)
  t.equal(log.status, 200)
  const lines = log.text.trim().split('\n').map((l) => JSON.parse(l))
  t.same(lines.slice(1).map((l) => l.user), order, 'the join log lists the pre-queue in served order')
  t.same(auditQueue('c1', seed.toString('hex'), log.text).mismatches, [], 'audit: no mismatch')
  const tampered = log.text.replace(`"position":1,"user":"${order[0] as string}"`, `"position":1,"user":"${order[1] as string}"`)
    .replace(`"position":2,"user":"${order[1] as string}"`, `"position":2,"user":"${order[0] as string}"`)
  t.ok(auditQueue('c1', seed.toString('hex'), tampered).mismatches.length > 0, 'audit: a log that was not the draw mismatches')
  t.ok(auditQueue('c1', 'ab'.repeat(32), log.text).mismatches.some((m) => m.includes('commitment')), 'audit: another seed fails the commitment')
  // Three admitted users bought the three units. A fourth may have been admitted too: a buyer's pass is
  // spent at the waiting_room guard just before the quota takes the unit, and a room sync in that moment
  // sees one pass fewer out and the unit still free (the cap then holds for the counter it read); that
  // user is told sold_out (above). Never more.
  const m = await until(async () => await fetchText(d, `${admin}/metrics`), (x) => /state="admitted"\} [34]\n/.test(x.text))
  t.match(m.text, /flashgate_waiting_room_users\{campaign="c1",state="admitted"\} [34]\n/)
}

t.test('memory store: one node end to end, and the audit command', async (t) => {
  let now = T0
  const origin = await startOrigin(t)
  const gw = await startTestGateway(t, { config: yamlConfig(yaml(origin.url, '')), clock: () => now })
  const d = client(t)
  await scenario(t, [gw], d, (ms) => { now = ms })

  // The CLI on the exported log.
  const dir = tempDir(t)
  const log = await fetchText(d, `${gw.adminUrl as string}/admin/queue/c1/joins`)
  const seed = (await fetchText(d, `${gw.url}/_flashgate/queue/seed?campaign=c1`)).json.seed as string
  const file = dir.write('joins.ndjson', log.text)
  let p = spawnCli(t, ['audit-queue', '--campaign', 'c1', '--seed', seed, '--joins', file])
  t.equal(await p.exited, 0, 'audit-queue: exit 0 on the served log')
  t.equal(p.stdout().trim().split('\n').length, 5, 'prints the order')
  const bad = dir.write('bad.ndjson', log.text.replace(/"position":1,/, '"position":9,'))
  p = spawnCli(t, ['audit-queue', '--campaign', 'c1', '--seed', seed, '--joins', bad])
  t.equal(await p.exited, 1, 'audit-queue: exit 1 on a mismatch')
  t.match(p.stderr(), /mismatch: user .*: served position 9, recomputed 1/)
  p = spawnCli(t, ['audit-queue', '--campaign', 'c1', '--joins', bad])
  t.equal(await p.exited, 2, 'usage error: exit 2')
})

t.test('abandonment: a user silent for 3 × poll is skipped, and joins again at the back', async (t) => {
  let now = T0
  const origin = await startOrigin(t)
  // One unit, overbook 1, passes of 4 s: the first user admitted holds the only pass, so the cursor
  // waits 4 s (> 3 × poll) at the second position while two users go silent and two keep polling.
  const cfg = yaml(origin.url, '', 1).replace('pass_ttl: 5s', 'pass_ttl: 4s')
  const gw = await startTestGateway(t, { config: yamlConfig(cfg), clock: () => now })
  const d = client(t)
  const users = ['u0', 'u1', 'u2', 'u3', 'u4'].map((id) => new User(id, gw, d))
  const [u0, u1, , u3, u4] = users as [User, User, User, User, User]
  now = STARTS + 100
  for (const u of users) { await u.poll(); await sleep(150) } // one per sync: FCFS positions 1..5
  t.same(await Promise.all(users.map(async (u) => (await u.poll()).json.position)), [1, 2, 3, 4, 5])
  now = STARTS + 600
  const a0 = await until(async () => await u0.poll(), (a) => a.json.status === 'admitted')
  t.equal(a0.json.status, 'admitted', 'the first is admitted and holds the only pass')
  // Time moves on in 500 ms steps; only u3 and u4 poll (a mark arriving a step late is still recent).
  for (let step = 1100; step <= 5100; step += 500) {
    now = STARTS + step
    await Promise.all([u3, u4].map(async (u) => await u.poll()))
    await sleep(150)
  }
  const a3 = await until(async () => await u3.poll(), (a) => a.json.status === 'admitted')
  t.equal(a3.json.status, 'admitted', 'once the pass expired, the cursor skipped the two silent users')
  const a4 = await u4.poll()
  t.same([a4.json.status, a4.json.position], ['waiting', 1], 'the next one waits (the cap: one unit)')
  const back = await u1.poll()
  t.same([back.json.status, back.json.position], ['waiting', 2], 'a silent user comes back: in line again, at the back')
  const m = await fetchText(d, `${gw.adminUrl as string}/metrics`)
  t.match(m.text, /flashgate_waiting_room_users\{campaign="c1",state="expired"\} 2/)
})

t.test('redis: two gateways on one Redis agree on positions and admissions', async (t) => {
  const r = await startRedis()
  t.teardown(async () => { await r.stop() })
  let now = T0
  const origin = await startOrigin(t)
  const cfg = yamlConfig(yaml(origin.url, `store: { kind: redis, url: "${r.url}", timeout: 2s }`))
  const g1 = await startTestGateway(t, { config: cfg, clock: () => now })
  const g2 = await startTestGateway(t, { config: cfg, clock: () => now })
  await g1.store.ready?.()
  await g2.store.ready?.()
  await scenario(t, [g1, g2], client(t), (ms) => { now = ms })
})

t.test('redis-cluster: the room on one hash tag', async (t) => {
  const c = await startRedisCluster()
  t.teardown(async () => { await c.stop() })
  let now = T0
  const origin = await startOrigin(t)
  const cfg = yamlConfig(yaml(origin.url, `store: { kind: redis-cluster, nodes: [${c.nodes.map((n) => `"${n}"`).join(', ')}], timeout: 2s }`))
  const g1 = await startTestGateway(t, { config: cfg, clock: () => now })
  const g2 = await startTestGateway(t, { config: cfg, clock: () => now })
  await g1.store.ready?.()
  await g2.store.ready?.()
  await scenario(t, [g1, g2], client(t), (ms) => { now = ms })
})
