/**
 * `store.on_error: journal` end to end, with real parts: a real redis-server (AOF, fsync always)
 * SIGKILLed mid-sale and restarted, a real origin on port 0, the gateway in-process. Oversold 0, lost 0
 * (every 202 PENDING ticket reaches a final answer), admitted == min(quota, demand), replay order ==
 * arrival order; a gateway restarted with a journal on disk (and a torn last record) replays it and
 * sends the original requests; a full journal answers 503; another user's ticket is 404.
 */
import t, { type Test } from 'tap'
import { appendFileSync } from 'node:fs'
import { join } from 'node:path'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { encodeFrame } from '../../limiter/journal.js'
import { journalFileOf } from '../../gateway/pending.js'
import { client, fetchText, startOrigin, startTestGateway, type Answer } from '../helpers/gateway.js'
import { tempDir } from '../helpers/config.js'
import { parseSamples, samples } from '../helpers/prom.js'
import { startRedis, type RedisHandle } from '../helpers/redis.js'
import { needTools } from '../helpers/tools.js'
import type { Dispatcher } from 'undici'

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

interface Buy { user: string | undefined, requestId: string | undefined, note: string | undefined, url: string | undefined, body: string }

/** An origin that takes every buy (200 with an order number) and records it. */
async function recordingOrigin (t: Test): Promise<{ url: string, buys: Buy[] }> {
  const buys: Buy[] = []
  const o = await startOrigin(t, (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const h = (n: string): string | undefined => { const v = req.headers[n]; return typeof v === 'string' ? v : undefined }
      buys.push({ user: h('x-user-id'), requestId: h('x-request-id'), note: h('x-order-note'), url: req.url, body: Buffer.concat(chunks).toString() })
      const body = JSON.stringify({ status: 'QUEUED', order: buys.length })
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
      res.end(body)
    })
  })
  return { url: o.url, buys }
}

function yaml (redisUrl: string, originUrl: string, dir: string, quota: number, maxEntries = 10_000): string {
  return `listen: 127.0.0.1:0
admin: 127.0.0.1:0
access_log: { enabled: false }
store:
  kind: redis
  url: ${redisUrl}
  timeout: 250ms
  breaker_failures: 2
  breaker_backoff: 200ms
  on_error: journal
  journal: { path: ${dir}, max_entries: ${maxEntries} }
identity: { user: header x-user-id }
upstreams:
  origin:
    targets: [{ url: ${originUrl} }]
    retries: 0
campaigns:
  - id: c1
    starts_at: 2020-01-01T00:00:00Z
    ends_at: 2099-01-01T00:00:00Z
    products:
      - { id: p1, quota: ${quota} }
routes:
  - name: buy
    match: { path: /buy/:campaign/:product, methods: [POST] }
    guards:
      - dedupe: { ttl: 1h }
      - quota: {}
    upstream: origin
`
}

const buy = (d: Dispatcher, base: string, user: string, note = ''): Promise<Answer> =>
  fetchText(d, base + '/buy/c1/p1?src=test', { method: 'POST', headers: { 'x-user-id': user, 'content-type': 'application/json', 'x-order-note': note }, body: JSON.stringify({ user, note }) })

/** Poll a ticket until it is final (or `ms` pass); the last answer. */
async function final (d: Dispatcher, base: string, ticket: string, user: string, ms = 20_000): Promise<Answer> {
  const end = Date.now() + ms
  for (;;) {
    const a = await fetchText(d, `${base}/_flashgate/pending/${ticket}`, { headers: { 'x-user-id': user } })
    if (a.status !== 200 || a.json?.status !== 'PENDING' || Date.now() > end) return a
    await sleep(100)
  }
}

async function metric (d: Dispatcher, adminUrl: string, name: string, match: Record<string, string> = {}): Promise<number> {
  const text = (await fetchText(d, adminUrl + '/metrics')).text
  return samples(parseSamples(text), name, match).reduce((a, s) => a + s.value, 0)
}

async function aofRedis (t: Test): Promise<RedisHandle> {
  const r = await startRedis({ args: ['--appendonly', 'yes', '--appendfsync', 'always'] })
  t.teardown(async () => { await r.stop() })
  return r
}

t.test('redis SIGKILLed mid-sale and restarted (AOF): oversold 0, lost 0, replay in arrival order', async (t) => {
  if (!needTools(t, 'redis-server', 'redis-cli')) return
  const QUOTA = 70
  const redis = await aofRedis(t)
  const origin = await recordingOrigin(t)
  const { dir, write } = tempDir(t)
  const file = write('flashgate.yaml', yaml(redis.url, origin.url, join(dir, 'journal'), QUOTA))
  const gw = await startTestGateway(t, { configFile: file })
  await gw.store.ready?.()
  const d = client(t)
  const answers: Array<{ user: string, a: Answer, phase: string }> = []
  const users = Array.from({ length: 150 }, (_, i) => `u${i}`)

  // A: the store is up — 30 buyers, 10 at a time.
  for (let i = 0; i < 30; i += 10) {
    const batch = users.slice(i, i + 10)
    for (const [j, a] of (await Promise.all(batch.map(async (u) => await buy(d, gw.url, u)))).entries()) answers.push({ user: batch[j] as string, a, phase: 'A' })
  }
  t.ok(answers.every((x) => x.a.status === 200), `before the outage every buy is proxied: ${answers.map((x) => x.a.status).join(',')}`)

  // B1: 20 buyers at once, Redis SIGKILLed while they are in flight.
  const b1 = users.slice(30, 50)
  const inflight = Promise.all(b1.map(async (u) => await buy(d, gw.url, u)))
  await sleep(3)
  redis.kill()
  for (const [j, a] of (await inflight).entries()) answers.push({ user: b1[j] as string, a, phase: 'B1' })

  // B2: the store is down — 40 new buyers one by one, then 10 repeated attempts (5 bought before, 5 journaled).
  const b2 = [...users.slice(50, 90), 'u0', 'u1', 'u2', 'u3', 'u4', 'u50', 'u51', 'u52', 'u53', 'u54']
  for (const u of b2) answers.push({ user: u, a: await buy(d, gw.url, u, `note-${u}`), phase: 'B2' })
  const pending = answers.filter((x) => x.a.status === 202)
  // A repeated attempt of a buy this node holds PENDING is DUPLICATE at once (the journal owns the mark).
  const againPending = new Set(['u50', 'u51', 'u52', 'u53', 'u54'])
  const b2Answers = answers.filter((x) => x.phase === 'B2')
  t.ok(b2Answers.every((x, i) => x.a.status === 202 || (i >= 45 && againPending.has(x.user) && x.a.json?.code === 'DUPLICATE')), 'during the outage every buy is answered 202 PENDING (a repeat of a PENDING buy: 409 DUPLICATE)')
  for (const p of pending) {
    t.equal(p.a.json?.status, 'PENDING')
    t.match(p.a.json?.ticket, /^0-[0-9a-f]{32}$/)
  }
  t.ok(answers.every((x) => x.a.status === 200 || x.a.status === 202 || x.a.json?.code === 'DUPLICATE'), `no 5xx, no other answer: ${JSON.stringify([...new Set(answers.map((x) => x.a.status))])}`)

  // While down: the ticket says PENDING; another user gets the same 404 as an unknown ticket.
  const first = pending[pending.length - 1] as (typeof pending)[number]
  const still = await fetchText(d, `${gw.url}/_flashgate/pending/${first.a.json.ticket}`, { headers: { 'x-user-id': first.user } })
  t.equal(still.json?.status, 'PENDING')
  t.match(still.json?.message, /in progress/)
  const other = await fetchText(d, `${gw.url}/_flashgate/pending/${first.a.json.ticket}`, { headers: { 'x-user-id': 'someone-else' } })
  const unknown = await fetchText(d, `${gw.url}/_flashgate/pending/0-${'0'.repeat(32)}`, { headers: { 'x-user-id': first.user } })
  t.equal(other.status, 404)
  t.equal(other.json?.code, 'NOT_FOUND')
  t.equal(other.text, unknown.text, 'another user\'s ticket answers exactly as an unknown one (no existence leak)')
  t.equal((await fetchText(d, `${gw.url}/_flashgate/pending/../../etc`, { headers: { 'x-user-id': first.user } })).status, 404)

  // Redis back (AOF): the journal is replayed.
  await redis.restart()
  const finals = new Map<string, Answer>()
  for (const p of pending) finals.set(p.a.json.ticket as string, await final(d, gw.url, p.a.json.ticket, p.user))
  const lost = [...finals.values()].filter((a) => a.json?.status === 'PENDING' || a.status !== 200)
  t.equal(lost.length, 0, 'lost 0: every PENDING ticket reached a final answer')

  // C: after the replay, the remaining buyers.
  for (const u of users.slice(90)) answers.push({ user: u, a: await buy(d, gw.url, u), phase: 'C' })

  const status = (x: { a: Answer }): string => x.a.status === 202 ? (finals.get(x.a.json.ticket)?.json?.status as string) : x.a.status === 200 ? 'ADMITTED' : (x.a.json?.code as string)
  const admitted = answers.filter((x) => status(x) === 'ADMITTED')
  t.equal(admitted.length, QUOTA, 'admitted == min(quota, demand)')
  t.equal(origin.buys.length, QUOTA, 'the origin took exactly the quota (oversold 0)')
  t.equal(new Set(origin.buys.map((b) => b.user)).size, origin.buys.length, 'no user bought twice')
  t.ok(answers.filter((x) => x.phase === 'C').every((x) => status(x) === 'SOLD_OUT'), 'after sell-out: SOLD_OUT')
  for (const u of ['u0', 'u1', 'u2', 'u3', 'u4', 'u50', 'u51', 'u52', 'u53', 'u54']) {
    const tries = answers.filter((x) => x.user === u)
    t.equal(tries.filter((x) => status(x) === 'DUPLICATE').length, 1, `${u}: the repeated attempt is DUPLICATE`)
  }
  // Replay order = arrival order: among the new buyers journaled one by one, the admitted ones are a prefix.
  const seq = answers.filter((x) => x.phase === 'B2').slice(0, 40).map(status)
  const firstRefused = seq.findIndex((s) => s !== 'ADMITTED')
  t.ok(firstRefused >= 0 && seq.slice(firstRefused).every((s) => s === 'SOLD_OUT'), `admitted entries are the earliest arrivals: ${seq.join(',')}`)
  // An admitted ticket carries the upstream's answer; the origin got the original request.
  const adm = [...finals.values()].find((a) => a.json?.status === 'ADMITTED') as Answer
  t.equal(adm.json.upstream.status, 200)
  t.equal(adm.json.upstream.body.status, 'QUEUED')
  const journaledBuy = origin.buys.find((b) => b.note !== undefined && b.note.startsWith('note-'))
  t.ok(journaledBuy !== undefined, 'a journaled buy reached the origin')
  t.equal(journaledBuy?.url, '/buy/c1/p1?src=test', 'same path and query')
  t.same(JSON.parse(journaledBuy?.body ?? '{}'), { user: journaledBuy?.user, note: journaledBuy?.note }, 'same body')

  // The store's own ledger agrees, and the metrics count it.
  const q = await fetchText(d, gw.adminUrl + '/admin/quota/c1/p1')
  t.same(q.json, { quota: QUOTA, admitted: QUOTA, remaining: 0 })
  const admin = gw.adminUrl as string
  t.equal(await metric(d, admin, 'flashgate_journal_appended_total'), pending.length)
  t.equal(await metric(d, admin, 'flashgate_journal_replayed_total'), pending.length)
  t.equal(await metric(d, admin, 'flashgate_journal_depth'), 0)
  t.ok(await metric(d, admin, 'flashgate_journal_fsync_seconds_count') >= 1)
  t.comment(`answers: ${answers.length}, journaled ${pending.length}, admitted ${admitted.length} (${admitted.filter((x) => x.a.status === 202).length} through the journal)`)
})

t.test('a gateway restarted with a journal on disk replays it; a torn last record is dropped', async (t) => {
  if (!needTools(t, 'redis-server', 'redis-cli')) return
  const redis = await aofRedis(t)
  const origin = await recordingOrigin(t)
  const { dir, write } = tempDir(t)
  const jdir = join(dir, 'journal')
  const file = write('flashgate.yaml', yaml(redis.url, origin.url, jdir, 10))
  const d = client(t)
  redis.kill()
  const gw1 = await startTestGateway(t, { configFile: file })
  const tickets: Array<{ user: string, ticket: string, requestId: string }> = []
  for (let i = 0; i < 5; i++) {
    const a = await buy(d, gw1.url, `r${i}`, `restart-${i}`)
    t.equal(a.status, 202)
    tickets.push({ user: `r${i}`, ticket: a.json.ticket, requestId: a.headers['x-request-id'] as string })
  }
  await gw1.close()
  // A crash mid-write: half a record at the end of the file (never acknowledged).
  const half = encodeFrame({ t: 'e', id: '0-' + 'f'.repeat(32), garbage: true })
  appendFileSync(journalFileOf(jdir, 0), half.subarray(0, 20))
  await redis.restart()
  const gw2 = await startTestGateway(t, { configFile: file })
  for (const k of tickets) {
    const a = await final(d, gw2.url, k.ticket, k.user)
    t.equal(a.json?.status, 'ADMITTED', `${k.user}: replayed by the restarted gateway`)
  }
  t.equal(origin.buys.length, 5, 'each journaled buy sent once')
  for (const k of tickets) {
    const b = origin.buys.find((x) => x.user === k.user)
    t.equal(b?.note, `restart-${k.user.slice(1)}`, 'the original headers')
    t.equal(b?.requestId, k.requestId, 'the original X-Request-Id')
  }
  t.equal(await metric(d, gw2.adminUrl as string, 'flashgate_journal_torn_total'), 1, 'the torn tail counted')
  t.equal((await fetchText(d, `${gw2.url}/_flashgate/pending/0-${'f'.repeat(32)}`, { headers: { 'x-user-id': 'r0' } })).status, 404, 'the torn record is no ticket')
  // Replayed once: a third start finds every entry final and sends nothing again.
  await gw2.close()
  const gw3 = await startTestGateway(t, { configFile: file })
  await sleep(500)
  t.equal(origin.buys.length, 5, 'nothing replayed twice')
  t.equal((await final(d, gw3.url, tickets[0]?.ticket as string, 'r0')).json?.status, 'ADMITTED', 'final answers survive a restart (compacted journal)')
})

t.test('a full journal answers 503 STORE_UNAVAILABLE', async (t) => {
  if (!needTools(t, 'redis-server', 'redis-cli')) return
  const redis = await aofRedis(t)
  const origin = await recordingOrigin(t)
  const { dir, write } = tempDir(t)
  const file = write('flashgate.yaml', yaml(redis.url, origin.url, join(dir, 'journal'), 10, 2))
  const gw = await startTestGateway(t, { configFile: file })
  const d = client(t)
  redis.kill()
  t.equal((await buy(d, gw.url, 'f1')).status, 202)
  t.equal((await buy(d, gw.url, 'f2')).status, 202)
  const full = await buy(d, gw.url, 'f3')
  t.equal(full.status, 503)
  t.equal(full.json?.code, 'STORE_UNAVAILABLE')
  t.equal(await metric(d, gw.adminUrl as string, 'flashgate_journal_refused_total', { reason: 'full' }), 1)
  t.equal(await metric(d, gw.adminUrl as string, 'flashgate_journal_depth'), 2)
  t.equal(origin.buys.length, 0)
})

t.test('workers: one journal file per worker; a worker answers another worker\'s ticket from that worker\'s file', async (t) => {
  if (!needTools(t, 'redis-server', 'redis-cli')) return
  // Two gateways started as `--workers 2` starts its workers (worker index 0 and 1, one journal directory).
  const redis = await aofRedis(t)
  const origin = await recordingOrigin(t)
  const { dir, write } = tempDir(t)
  const jdir = join(dir, 'journal')
  const file = write('flashgate.yaml', yaml(redis.url, origin.url, jdir, 10))
  const w0 = await startTestGateway(t, { configFile: file, worker: { index: 0, count: 2 } })
  const w1 = await startTestGateway(t, { configFile: file, worker: { index: 1, count: 2 } })
  const d = client(t)
  redis.kill()
  const a0 = await buy(d, w0.url, 'wa')
  const a1 = await buy(d, w1.url, 'wb')
  t.match(a0.json?.ticket, /^0-/, 'worker 0 names itself in its tickets')
  t.match(a1.json?.ticket, /^1-/, 'worker 1 names itself in its tickets')
  const { existsSync } = await import('node:fs')
  t.ok(existsSync(journalFileOf(jdir, 0)) && existsSync(journalFileOf(jdir, 1)), 'one journal file per worker')
  // Asked of the other worker (the kernel spreads connections): PENDING, and still 404 for another user.
  t.equal((await fetchText(d, `${w0.url}/_flashgate/pending/${a1.json.ticket}`, { headers: { 'x-user-id': 'wb' } })).json?.status, 'PENDING')
  t.equal((await fetchText(d, `${w0.url}/_flashgate/pending/${a1.json.ticket}`, { headers: { 'x-user-id': 'wa' } })).status, 404)
  t.equal((await fetchText(d, `${w1.url}/_flashgate/pending/2-${'a'.repeat(32)}`, { headers: { 'x-user-id': 'wa' } })).status, 404, 'a worker that does not exist')
  await redis.restart()
  // Each worker replays its own file; the final answer is visible through the other one.
  t.equal((await final(d, w0.url, a1.json.ticket, 'wb')).json?.status, 'ADMITTED')
  t.equal((await final(d, w1.url, a0.json.ticket, 'wa')).json?.status, 'ADMITTED')
  t.same(origin.buys.map((b) => b.user).sort(), ['wa', 'wb'], 'each buy replayed once, by the worker that journaled it')
})
