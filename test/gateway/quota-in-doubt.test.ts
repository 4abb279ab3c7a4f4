/**
 * A buy that reached the upstream and got no complete answer is in doubt: the origin may have taken it.
 * Its quota unit must stay taken — given back, the edge admits one more buyer than the origin has units
 * (one ledger: edge admitted ≥ origin locked + sold). A buy that never left the gateway gives its unit
 * back. Real gateway, real origin on a socket, quota 1:
 * - the origin takes the buy, then answers after the upstream timeout → 504, the next buyer is SOLD_OUT;
 * - the client leaves while the origin works → the next buyer is SOLD_OUT;
 * - the upstream's port refuses connections → 502, the unit is back (remaining 1);
 * - a journaled buy whose replay times out at the origin is sent once (not resent to a backend that may
 *   have taken it), ends FAILED/UPSTREAM_TIMEOUT, and its unit stays taken.
 */
import t, { type Test } from 'tap'
import { join } from 'node:path'
import { connect } from 'node:net'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Dispatcher } from 'undici'
import { client, fetchText, startOrigin, startTestGateway, type Answer } from '../helpers/gateway.js'
import { tempDir, yamlConfig } from '../helpers/config.js'
import { freePort, startRedis } from '../helpers/redis.js'
import { needTools } from '../helpers/tools.js'

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

function yaml (originUrl: string, store = 'store: { kind: memory }'): string {
  return `listen: 127.0.0.1:0
admin: 127.0.0.1:0
access_log: { enabled: false }
${store}
identity: { user: header x-user-id }
upstreams:
  origin:
    targets: [{ url: ${originUrl} }]
    retries: 0
    timeout: 300ms
campaigns:
  - id: c1
    starts_at: 2020-01-01T00:00:00Z
    ends_at: 2099-01-01T00:00:00Z
    products:
      - { id: p1, quota: 1 }
routes:
  - name: buy
    match: { path: /buy/:campaign/:product, methods: [POST] }
    guards:
      - dedupe: { ttl: 1h }
      - quota: {}
    upstream: origin
`
}

/** An origin that takes every buy at once and answers after `delayMs` (never, when the client is gone first). */
async function slowOrigin (t: Test, delayMs: number): Promise<{ url: string, taken: string[] }> {
  const taken: string[] = []
  const o = await startOrigin(t, (req: IncomingMessage, res: ServerResponse) => {
    req.resume()
    req.on('end', () => {
      taken.push(String(req.headers['x-user-id']))
      const timer = setTimeout(() => {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ status: 'QUEUED' }))
      }, delayMs)
      res.on('close', () => { clearTimeout(timer) })
    })
  })
  return { url: o.url, taken }
}

const buy = async (d: Dispatcher, base: string, user: string): Promise<Answer> =>
  await fetchText(d, `${base}/buy/c1/p1`, { method: 'POST', headers: { 'x-user-id': user, 'content-type': 'application/json' }, body: '{}' })

const metric = (text: string, name: string): number => {
  const m = new RegExp(`^${name}\\{campaign="c1",product="p1"\\} (\\d+)`, 'm').exec(text)
  return m === null ? 0 : Number(m[1])
}

t.test('upstream timeout after the buy was sent: the unit stays taken, the next buyer is SOLD_OUT', async (t) => {
  const o = await slowOrigin(t, 2000)
  const gw = await startTestGateway(t, { config: yamlConfig(yaml(o.url)) })
  const d = client(t)
  const a = await buy(d, gw.url, 'alice')
  t.equal(a.status, 504, 'alice: the origin did not answer within the upstream timeout')
  t.equal(a.json?.code, 'UPSTREAM_TIMEOUT')
  t.same(o.taken, ['alice'], 'the origin took alice\'s buy')
  const b = await buy(d, gw.url, 'bob')
  t.equal(b.status, 409, 'bob is not admitted: the only unit may be alice\'s')
  t.equal(b.json?.code, 'SOLD_OUT')
  t.same(o.taken, ['alice'], 'the origin saw one buy for one unit')
  const q = await fetchText(d, gw.adminUrl + '/admin/quota/c1/p1')
  t.same(q.json, { quota: 1, admitted: 1, remaining: 0 })
  const m = (await fetchText(d, gw.adminUrl + '/metrics')).text
  t.equal(metric(m, 'flashgate_quota_in_doubt_total'), 1, 'counted in doubt')
  t.equal(metric(m, 'flashgate_quota_released_total'), 0, 'nothing given back')
  // The operator's way out once the origin says it has no such order.
  const r = await fetchText(d, gw.adminUrl + '/admin/quota/c1/p1/release', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"units":1}' })
  t.equal(r.status, 200, 'the admin release gives an in-doubt unit back')
  t.same(r.json, { quota: 1, admitted: 0, remaining: 1 })
})

t.test('the client leaves while the origin works on its buy: the unit stays taken', async (t) => {
  const o = await slowOrigin(t, 1000)
  const gw = await startTestGateway(t, { config: yamlConfig(yaml(o.url).replace('timeout: 300ms', 'timeout: 5s')) })
  const port = Number(new URL(gw.url).port)
  // alice sends her buy on a raw socket and resets it once the origin has it (a FIN alone is a half-close:
  // both listeners would still deliver the answer).
  await new Promise<void>((resolve) => {
    const s = connect(port, '127.0.0.1', () => {
      s.write('POST /buy/c1/p1 HTTP/1.1\r\nHost: x\r\nx-user-id: alice\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}')
    })
    s.on('error', () => {})
    const iv = setInterval(() => { if (o.taken.length > 0) { clearInterval(iv); s.resetAndDestroy(); resolve() } }, 5)
  })
  await sleep(200)
  const d = client(t)
  const b = await buy(d, gw.url, 'bob')
  t.equal(b.status, 409, 'bob is not admitted')
  t.equal(b.json?.code, 'SOLD_OUT')
  t.same(o.taken, ['alice'], 'one buy reached the origin for one unit')
  const m = (await fetchText(d, gw.adminUrl + '/metrics')).text
  t.equal(metric(m, 'flashgate_quota_in_doubt_total'), 1, 'counted in doubt')
})

t.test('a buy that never reached the upstream (connection refused) gives its unit back', async (t) => {
  const closed = `http://127.0.0.1:${await freePort()}`
  const gw = await startTestGateway(t, { config: yamlConfig(yaml(closed)) })
  const d = client(t)
  const a = await buy(d, gw.url, 'alice')
  t.equal(a.status, 502, 'nothing listens upstream')
  t.equal(a.json?.code, 'UPSTREAM_UNAVAILABLE')
  await sleep(100)
  const q = await fetchText(d, gw.adminUrl + '/admin/quota/c1/p1')
  t.same(q.json, { quota: 1, admitted: 0, remaining: 1 }, 'the unit is back')
  const m = (await fetchText(d, gw.adminUrl + '/metrics')).text
  t.equal(metric(m, 'flashgate_quota_in_doubt_total'), 0, 'nothing in doubt')
  t.equal(metric(m, 'flashgate_quota_released_total'), 1, 'one unit given back')
})

t.test('journal replay: a buy sent without an answer is not resent, and its unit stays taken', async (t) => {
  if (!needTools(t, 'redis-server', 'redis-cli')) return
  const redis = await startRedis({ args: ['--appendonly', 'yes', '--appendfsync', 'always'] })
  t.teardown(async () => { await redis.stop() })
  const o = await slowOrigin(t, 2000)
  const { dir, write } = tempDir(t)
  const store = `store:
  kind: redis
  url: ${redis.url}
  timeout: 250ms
  breaker_failures: 2
  breaker_backoff: 200ms
  on_error: journal
  journal: { path: ${join(dir, 'journal')}, max_entries: 100 }`
  const gw = await startTestGateway(t, { configFile: write('flashgate.yaml', yaml(o.url, store)) })
  await gw.store.ready?.()
  const d = client(t)
  redis.kill()
  const a = await buy(d, gw.url, 'alice')
  t.equal(a.status, 202, 'journaled while the store is down')
  await redis.restart()
  let fin: Answer | null = null
  const end = Date.now() + 20_000
  while (Date.now() < end) {
    fin = await fetchText(d, `${gw.url}/_flashgate/pending/${String(a.json?.ticket)}`, { headers: { 'x-user-id': 'alice' } })
    if (fin.json?.status !== 'PENDING') break
    await sleep(50)
  }
  t.equal(fin?.json?.status, 'FAILED', 'no answer from the origin: the ticket ends FAILED')
  t.equal(fin?.json?.code, 'UPSTREAM_TIMEOUT')
  await sleep(1500) // a resend (the old behaviour: 3 tries) would have reached the origin by now
  t.same(o.taken, ['alice'], 'the replay sent the buy once')
  const q = await fetchText(d, gw.adminUrl + '/admin/quota/c1/p1')
  t.same(q.json, { quota: 1, admitted: 1, remaining: 0 }, 'the unit stays taken (in doubt)')
  const m = (await fetchText(d, gw.adminUrl + '/metrics')).text
  t.match(m, /^flashgate_journal_in_doubt_total 1$/m, 'counted in doubt')
  const b = await buy(d, gw.url, 'bob')
  t.equal(b.json?.code, 'SOLD_OUT', 'the next buyer is not admitted')
})
