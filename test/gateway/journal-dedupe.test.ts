/**
 * The dedupe-not-adjacent gap of `store.on_error: journal` (issue 17): a dedupe that is not fused with the
 * quota — another guard between them, or any route on a Redis Cluster, where the mark and the counter live
 * on different shards — must give one user one unit through a journaled buy too.
 *
 * Real parts: a 3-master Redis Cluster (AOF); one shard is frozen (SIGSTOP: a hung server, nothing
 * answered) or SIGKILLed and restarted while the others answer, so the dedupe's call and the quota's call meet different fates; a real origin
 * counts the buys; the gateway in-process with `dedupe → campaign_window → quota`.
 *
 * Before the fix: (1) the dedupe reached its shard, the quota's call failed and the buy was journaled
 * without the mark, and the 202 gave the mark back — the same user's next attempt was journaled (or,
 * later, admitted) as a new buy: two units; (2) the mark's shard down, the dedupe marked node-locally and
 * the quota admitted live with no mark in the store — the user's next attempt after the outage was a
 * fresh one: two units.
 */
import t, { type Test } from 'tap'
import { join } from 'node:path'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { client, fetchText, startOrigin, startTestGateway, type Answer } from '../helpers/gateway.js'
import { tempDir } from '../helpers/config.js'
import { redisCli, slotOwner, startRedisCluster, type RedisClusterHandle, type RedisHandle } from '../helpers/redis.js'
import { needTools } from '../helpers/tools.js'
import type { Dispatcher } from 'undici'

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))
const PREFIX = 'fg:'
const COUNTER = `${PREFIX}q:{c1:p1:0}`
const markKey = (user: string): string => `${PREFIX}dedupe:c1:p1:${user}`

async function countingOrigin (t: Test): Promise<{ url: string, users: string[] }> {
  const users: string[] = []
  const o = await startOrigin(t, (req: IncomingMessage, res: ServerResponse) => {
    req.resume()
    req.on('end', () => {
      users.push(String(req.headers['x-user-id']))
      const body = JSON.stringify({ status: 'QUEUED', order: users.length })
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
      res.end(body)
    })
  })
  return { url: o.url, users }
}

function yaml (nodes: string[], originUrl: string, dir: string): string {
  return `listen: 127.0.0.1:0
admin: 127.0.0.1:0
access_log: { enabled: false }
store:
  kind: redis-cluster
  nodes: [${nodes.map((n) => `"${n}"`).join(', ')}]
  key_prefix: "${PREFIX}"
  timeout: 250ms
  breaker_failures: 1000
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
    products:
      - { id: p1, quota: 50 }
routes:
  - name: buy
    match: { path: /buy/:campaign/:product, methods: [POST] }
    guards:
      - dedupe: { ttl: 1h }
      - campaign_window: {}
      - quota: {}
    upstream: origin
`
}

const buy = (d: Dispatcher, base: string, user: string): Promise<Answer> =>
  fetchText(d, base + '/buy/c1/p1', { method: 'POST', headers: { 'x-user-id': user, 'content-type': 'application/json' }, body: '{}' })

async function final (d: Dispatcher, base: string, ticket: string, user: string, ms = 20_000): Promise<Answer> {
  const end = Date.now() + ms
  for (;;) {
    const a = await fetchText(d, `${base}/_flashgate/pending/${ticket}`, { headers: { 'x-user-id': user } })
    if (a.status !== 200 || a.json?.status !== 'PENDING' || Date.now() > end) return a
    await sleep(100)
  }
}

/** A user whose mark lives on a shard other than `not` (the counter's). */
async function userAway (port: number, not: number, tag: string): Promise<{ user: string, shard: number }> {
  for (let i = 0; i < 200; i++) {
    const user = `${tag}${i}`
    const shard = await slotOwner(port, markKey(user))
    if (shard !== not) return { user, shard }
  }
  throw new Error('no user off the counter\'s shard')
}

interface Setup { cluster: RedisClusterHandle, origin: { url: string, users: string[] }, gw: Awaited<ReturnType<typeof startTestGateway>>, d: Dispatcher, counterShard: RedisHandle, port0: number }

async function setup (t: Test): Promise<Setup> {
  // AOF: a killed master restarts with its data and its slots.
  const cluster = await startRedisCluster({ aof: true })
  t.teardown(async () => { await cluster.stop() })
  const origin = await countingOrigin(t)
  const { dir, write } = tempDir(t)
  const file = write('flashgate.yaml', yaml(cluster.nodes, origin.url, join(dir, 'journal')))
  const gw = await startTestGateway(t, { configFile: file })
  await gw.store.ready?.()
  const d = client(t)
  const port0 = cluster.ports[0] as number
  const owner = await slotOwner(port0, COUNTER)
  const counterShard = cluster.servers.find((s) => s.port === owner) as RedisHandle
  // Warm the route (the quota's override read, the cluster's slot map) with another user's buy.
  t.equal((await buy(d, gw.url, 'warm')).status, 200)
  return { cluster, origin, gw, d, counterShard, port0 }
}

/** Every answer a user got, as a final status (a 202's ticket polled to its end). */
async function outcomes (s: Setup, user: string, answers: Answer[]): Promise<string[]> {
  const out: string[] = []
  for (const a of answers) {
    if (a.status === 200) out.push('ADMITTED')
    else if (a.status === 202) out.push(String((await final(s.d, s.gw.url, a.json.ticket, user)).json?.status))
    else out.push(String(a.json?.code))
  }
  return out
}

t.test('mark set, counter\'s shard hung: the journaled buy keeps its mark; one user, one unit', async (t) => {
  if (!needTools(t, 'redis-server', 'redis-cli')) return
  const s = await setup(t)
  const { user } = await userAway(s.port0, s.counterShard.port, 'a')
  const answers: Answer[] = []
  s.counterShard.pause()
  try {
    answers.push(await buy(s.d, s.gw.url, user))
    t.equal(answers[0]?.status, 202, 'the quota could not be judged: journaled, 202 PENDING')
    answers.push(await buy(s.d, s.gw.url, user))
    t.equal(answers[1]?.json?.code, 'DUPLICATE', 'a second attempt while PENDING is DUPLICATE (the mark stayed)')
  } finally { s.counterShard.resume() }
  const first = await final(s.d, s.gw.url, answers[0]?.json.ticket, user)
  t.equal(first.json?.status, 'ADMITTED', 'the replay admits the journaled buy (it knows the live mark as its own)')
  answers.push(await buy(s.d, s.gw.url, user))
  const all = await outcomes(s, user, answers)
  t.same(all.filter((x) => x === 'ADMITTED').length, 1, `one unit for the user: ${all.join(',')}`)
  t.equal(s.origin.users.filter((u) => u === user).length, 1, 'the origin got the user\'s buy once')
  const q = await fetchText(s.d, s.gw.adminUrl + '/admin/quota/c1/p1')
  t.equal(q.json?.admitted, 2, 'the store counted two units: the warm-up buy and the user\'s')
})

t.test('mark\'s shard killed, counter up: no unit admitted without its mark; one user, one unit', async (t) => {
  if (!needTools(t, 'redis-server', 'redis-cli')) return
  const s = await setup(t)
  const { user, shard } = await userAway(s.port0, s.counterShard.port, 'b')
  const markShard = s.cluster.servers.find((x) => x.port === shard) as RedisHandle
  const answers: Answer[] = []
  // Killed, not frozen: a frozen server would still apply the dedupe's SET NX once thawed.
  markShard.kill()
  answers.push(await buy(s.d, s.gw.url, user))
  t.equal(answers[0]?.status, 202, 'the mark could not be set: journaled, not admitted live without it')
  await markShard.restart()
  t.equal((await final(s.d, s.gw.url, answers[0]?.json.ticket, user)).json?.status, 'ADMITTED', 'replayed once the shard answers')
  // The mark is in the store (what every other gateway node judges by), not only in this node's memory.
  t.match((await redisCli(shard, 'get', markKey(user))).trim(), /^0-[0-9a-f]{32}\/0$/, 'the store holds the user\'s mark, naming the ticket and its segment')
  answers.push(await buy(s.d, s.gw.url, user))
  t.equal(answers[1]?.json?.code, 'DUPLICATE', 'after the outage the user\'s next attempt is DUPLICATE')
  const all = await outcomes(s, user, answers)
  t.same(all.filter((x) => x === 'ADMITTED').length, 1, `one unit for the user: ${all.join(',')}`)
  t.equal(s.origin.users.filter((u) => u === user).length, 1, 'the origin got the user\'s buy once')
})
