/**
 * The waiting room under `store.on_error: journal` (issue 17), with real parts: one redis-server (AOF)
 * shared by two gateway nodes, each with its own journal, a real origin. Buyers queue, get their pass
 * while the store is up; redis-server is SIGKILLed; a buy with a valid pass is journaled (202 PENDING)
 * instead of refused 503 — the pass is marked used at replay, before the unit counts — and the same pass
 * is refused again on the node that journaled it; the same pass journaled on the other node meanwhile is
 * answered DUPLICATE at replay: one pass, one buy, across nodes. After the restart the pass is used (403
 * QUEUE_REQUIRED) and no user bought twice.
 *
 * What the room itself does during the outage is not changed: no new passes are handed out while the
 * store is down (its cursor and counters live in the store), so the room's cap holds; the polls that
 * need the store answer 503 STORE_UNAVAILABLE, the others answer from the node's cached view.
 */
import t, { type Test } from 'tap'
import { join } from 'node:path'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Dispatcher } from 'undici'
import { client, fetchText, startOrigin, startTestGateway, type Answer } from '../helpers/gateway.js'
import { tempDir } from '../helpers/config.js'
import { startRedis } from '../helpers/redis.js'
import { needTools } from '../helpers/tools.js'

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

function yaml (redisUrl: string, originUrl: string, dir: string): string {
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
  journal: { path: ${dir} }
identity: { user: header x-user-id }
upstreams:
  origin:
    targets: [{ url: ${originUrl} }]
    retries: 0
campaigns:
  - id: c1
    starts_at: 2020-01-01T00:00:00Z
    ends_at: 2099-01-01T00:00:00Z
    products: [{ id: p1, quota: 10 }]
    waiting_room: { prequeue: 30s, admit: 50/s, pass_ttl: 60s, overbook: 1, poll: 1s }
routes:
  - name: buy
    match: { path: /buy/:campaign/:product, methods: [POST] }
    guards:
      - waiting_room: {}
      - quota: {}
    upstream: origin
`
}

async function passOf (d: Dispatcher, base: string, user: string): Promise<string> {
  const end = Date.now() + 15_000
  let cookie = ''
  for (;;) {
    const a = await fetchText(d, `${base}/_flashgate/queue?campaign=c1`, { headers: { 'x-user-id': user, ...(cookie !== '' ? { cookie } : {}) } })
    const sc = a.headers['set-cookie']
    for (const c of sc === undefined ? [] : Array.isArray(sc) ? sc : [sc]) {
      const kv = c.split(';')[0] as string
      if (kv.startsWith('fgq_c1=')) cookie = kv
    }
    if (a.json?.status === 'admitted' && typeof a.json?.pass === 'string') return a.json.pass as string
    if (Date.now() > end) throw new Error(`no pass for ${user}: ${a.text}`)
    await sleep(100)
  }
}

const buy = (d: Dispatcher, base: string, user: string, pass: string): Promise<Answer> =>
  fetchText(d, `${base}/buy/c1/p1`, { method: 'POST', headers: { 'x-user-id': user, cookie: `fgp_c1=${pass}`, 'content-type': 'application/json' }, body: '{}' })

async function final (d: Dispatcher, base: string, ticket: string, user: string, ms = 20_000): Promise<Answer> {
  const end = Date.now() + ms
  for (;;) {
    const a = await fetchText(d, `${base}/_flashgate/pending/${ticket}`, { headers: { 'x-user-id': user } })
    if (a.status !== 200 || a.json?.status !== 'PENDING' || Date.now() > end) return a
    await sleep(100)
  }
}

async function origin (t: Test): Promise<{ url: string, users: string[] }> {
  const users: string[] = []
  const o = await startOrigin(t, (req: IncomingMessage, res: ServerResponse) => {
    req.resume()
    req.on('end', () => {
      users.push(String(req.headers['x-user-id']))
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end('{"status":"QUEUED"}')
    })
  })
  return { url: o.url, users }
}

t.test('a waiting-room pass through a store outage: journaled, used once across two nodes', async (t) => {
  if (!needTools(t, 'redis-server', 'redis-cli')) return
  const redis = await startRedis({ args: ['--appendonly', 'yes', '--appendfsync', 'always'] })
  t.teardown(async () => { await redis.stop() })
  const o = await origin(t)
  const { dir, write } = tempDir(t)
  const gwA = await startTestGateway(t, { configFile: write('a.yaml', yaml(redis.url, o.url, join(dir, 'ja'))) })
  const gwB = await startTestGateway(t, { configFile: write('b.yaml', yaml(redis.url, o.url, join(dir, 'jb'))) })
  await gwA.store.ready?.()
  await gwB.store.ready?.()
  const d = client(t)
  const passes = new Map<string, string>()
  // Both nodes have loaded the room (its key comes from the store): w2 queues on B.
  for (const u of ['w1', 'w2', 'w3']) passes.set(u, await passOf(d, u === 'w2' ? gwB.url : gwA.url, u))

  // Bought live before the outage: the pass is used.
  const w3 = await buy(d, gwA.url, 'w3', passes.get('w3') as string)
  t.equal(w3.status, 200, 'a live buy with a pass')

  redis.kill()
  const a1 = await buy(d, gwA.url, 'w1', passes.get('w1') as string)
  t.equal(a1.status, 202, 'store down: a valid pass is journaled (202 PENDING), not refused 503')
  const a1again = await buy(d, gwA.url, 'w1', passes.get('w1') as string)
  t.equal(a1again.status, 403, 'the same pass again on the same node: refused')
  t.equal(a1again.json?.code, 'QUEUE_REQUIRED')
  const b1 = await buy(d, gwB.url, 'w1', passes.get('w1') as string)
  t.equal(b1.status, 202, 'the same pass on another node during the outage: journaled there too')
  const a2 = await buy(d, gwA.url, 'w2', passes.get('w2') as string)
  t.equal(a2.status, 202)
  const w3again = await buy(d, gwB.url, 'w3', passes.get('w3') as string)
  t.equal(w3again.status, 202, 'a pass used before the outage cannot be checked: journaled')

  await redis.restart()
  const fa1 = await final(d, gwA.url, a1.json.ticket, 'w1')
  const fb1 = await final(d, gwB.url, b1.json.ticket, 'w1')
  const fa2 = await final(d, gwA.url, a2.json.ticket, 'w2')
  const fw3 = await final(d, gwB.url, w3again.json.ticket, 'w3')
  const w1s = [fa1.json?.status, fb1.json?.status].sort()
  t.same(w1s, ['ADMITTED', 'DUPLICATE'], `one pass, one buy across the two nodes' journals: ${w1s.join(',')}`)
  t.equal(fa2.json?.status, 'ADMITTED', 'w2: replayed, admitted')
  t.equal(fw3.json?.status, 'DUPLICATE', 'w3: its pass was used live before the outage')
  const after = await buy(d, gwA.url, 'w2', passes.get('w2') as string)
  t.equal(after.status, 403, 'after the replay the pass is used in the store')
  t.equal(after.json?.code, 'QUEUE_REQUIRED')
  t.same([...o.users].sort(), ['w1', 'w2', 'w3'], 'the origin took one buy per user')
  const q = await fetchText(d, gwA.adminUrl + '/admin/quota/c1/p1')
  t.equal(q.json?.admitted, 3, 'three units admitted (the DUPLICATEs gave theirs back)')
})
