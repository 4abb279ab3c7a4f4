/**
 * `store.on_error: journal` across the outage boundary: buyers journaled while Redis was down arrived
 * first, so live buyers arriving right after it is back must not take units ahead of them. A real
 * redis-server is killed, N buys are journaled, Redis is restarted, and live buys are sent at once and
 * for as long as the replay runs. Quota == N: every journaled buyer is ADMITTED, every later buyer ends
 * SOLD_OUT (answered live, or journaled behind the backlog and replayed after it), oversold 0, lost 0;
 * once the backlog is judged, a buy is answered live again.
 */
import t from 'tap'
import { join } from 'node:path'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { client, fetchText, startOrigin, startTestGateway, type Answer } from '../helpers/gateway.js'
import { tempDir } from '../helpers/config.js'
import { startRedis } from '../helpers/redis.js'
import { needTools } from '../helpers/tools.js'
import type { Dispatcher } from 'undici'

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

function yaml (redisUrl: string, originUrl: string, dir: string, quota: number, fused: boolean): string {
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
  journal: { path: ${dir}, max_entries: 10000 }
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
${fused ? '' : '      - campaign_window: {}\n'}      - quota: {}
    upstream: origin
`
}

const buy = (d: Dispatcher, base: string, user: string): Promise<Answer> =>
  fetchText(d, base + '/buy/c1/p1', { method: 'POST', headers: { 'x-user-id': user, 'content-type': 'application/json' }, body: JSON.stringify({ user }) })

async function final (d: Dispatcher, base: string, ticket: string, user: string, ms = 30_000): Promise<Answer> {
  const end = Date.now() + ms
  for (;;) {
    const a = await fetchText(d, `${base}/_flashgate/pending/${ticket}`, { headers: { 'x-user-id': user } })
    if (a.status !== 200 || a.json?.status !== 'PENDING' || Date.now() > end) return a
    await sleep(50)
  }
}

for (const fused of [true, false]) {
  t.test(`live buyers after recovery do not overtake the journal replay (dedupe ${fused ? 'fused with' : 'apart from'} the quota)`, async (t) => {
    if (!needTools(t, 'redis-server', 'redis-cli')) return
    const N = 60
    const redis = await startRedis({ args: ['--appendonly', 'yes', '--appendfsync', 'always'] })
    t.teardown(async () => { await redis.stop() })
    let sold = 0
    const o = await startOrigin(t, (req: IncomingMessage, res: ServerResponse) => {
      req.resume()
      req.on('end', () => {
        sold++
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ status: 'QUEUED', order: sold }))
      })
    })
    const { dir, write } = tempDir(t)
    const file = write('flashgate.yaml', yaml(redis.url, o.url, join(dir, 'journal'), N, fused))
    const gw = await startTestGateway(t, { configFile: file })
    await gw.store.ready?.()
    const d = client(t)

    redis.kill()
    const early: Array<{ user: string, a: Answer }> = []
    for (let i = 0; i < N; i++) early.push({ user: `j${i}`, a: await buy(d, gw.url, `j${i}`) })
    t.ok(early.every((x) => x.a.status === 202), `every buy during the outage is journaled: ${[...new Set(early.map((x) => x.a.status))].join(',')}`)

    await redis.restart()
    // Live buyers from the moment the store answers, in waves, for as long as the replay can take.
    const late: Array<{ user: string, a: Answer }> = []
    let k = 0
    const end = Date.now() + 1500
    while (Date.now() < end) {
      const wave = Array.from({ length: 8 }, () => `l${k++}`)
      const as = await Promise.all(wave.map(async (u) => await buy(d, gw.url, u)))
      for (const [i, a] of as.entries()) late.push({ user: wave[i] as string, a })
      await sleep(10)
    }

    const status = async (x: { user: string, a: Answer }): Promise<string> => {
      if (x.a.status === 202) return (await final(d, gw.url, x.a.json.ticket, x.user)).json?.status as string
      return x.a.status === 200 ? 'ADMITTED' : x.a.json?.code as string
    }
    const earlyS = await Promise.all(early.map(status))
    const lateS = await Promise.all(late.map(status))
    const count = (xs: string[], s: string): number => xs.filter((x) => x === s).length
    t.equal(count(earlyS, 'ADMITTED'), N, `every journaled buyer is admitted: ${earlyS.join(',')}`)
    t.equal(count(lateS, 'ADMITTED'), 0, `no later buyer took a unit ahead of them (${late.length} live buyers, ${count(late.map((x) => String(x.a.status)), '202')} journaled behind the backlog): ${[...new Set(lateS)].join(',')}`)
    t.ok(lateS.every((s) => s === 'SOLD_OUT'), 'every later buyer ends SOLD_OUT (none lost, none PENDING)')
    t.equal(sold, N, 'the origin took exactly the quota (oversold 0)')
    // The backlog judged: the live path is back (answered at once, no ticket).
    const after = await buy(d, gw.url, 'after')
    t.equal(after.status, 409, 'after the drain a buy is answered live')
    t.equal(after.json?.code, 'SOLD_OUT')
    const q = await fetchText(d, gw.adminUrl + '/admin/quota/c1/p1')
    t.same(q.json, { quota: N, admitted: N, remaining: 0 })
  })
}
