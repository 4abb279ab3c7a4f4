/**
 * Sentinel failover through a real HTTP gateway (issue 17): test/limiter/failover.test.ts drives the quota
 * guard and the store directly; here the gateway is started from a YAML config with
 * `store: { kind: redis, sentinels, name, wait }`, the buyers are HTTP clients, and the units sold are
 * counted by a real origin. A primary, two replicas whose replication links run through relays (paused:
 * the replicas lag), three redis-sentinel processes; the primary is SIGKILLed under load and what it had
 * not sent is dropped; Sentinel promotes a replica.
 *
 * Asserted: 200s ≤ quota, the origin's buys ≤ quota, nothing admitted while no replica could confirm it,
 * the new primary's counter never above the quota, and the gateway admits again within 10 s of the kill
 * (the time is printed: Sentinel's down-after is 1 s here, plus the election and ioredis finding the new
 * primary).
 */
import t from 'tap'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { client, fetchText, startOrigin, startTestGateway, type Answer } from '../helpers/gateway.js'
import { tempDir } from '../helpers/config.js'
import { redisCli } from '../helpers/redis.js'
import { startSentinelSetup } from '../../bench/procs/sentinel.js'
import { needTools } from '../helpers/tools.js'

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))
const QUOTA = 100

t.test('Sentinel failover through the gateway over HTTP, store.wait on: admitted <= quota, serving again within seconds', async (t) => {
  if (!needTools(t, 'redis-server', 'redis-sentinel', 'redis-cli')) return
  const s = await startSentinelSetup()
  t.teardown(async () => { await s.stop() })
  const bought: string[] = []
  const origin = await startOrigin(t, (req: IncomingMessage, res: ServerResponse) => {
    req.resume()
    req.on('end', () => {
      bought.push(String(req.headers['x-user-id']))
      const body = JSON.stringify({ status: 'QUEUED', order: bought.length })
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
      res.end(body)
    })
  })
  const { write } = tempDir(t)
  const file = write('flashgate.yaml', `listen: 127.0.0.1:0
admin: 127.0.0.1:0
access_log: { enabled: false }
store:
  kind: redis
  sentinels: [${s.sentinels.map((x) => `"${x.host}:${x.port}"`).join(', ')}]
  name: ${s.name}
  wait: { replicas: 1, timeout: 100ms }
  timeout: 300ms
  breaker_failures: 3
  breaker_backoff: 200ms
  on_error: fail_closed
identity: { user: header x-user-id }
upstreams:
  origin:
    targets: [{ url: ${origin.url} }]
    retries: 0
campaigns:
  - id: c1
    starts_at: 2020-01-01T00:00:00Z
    ends_at: 2099-01-01T00:00:00Z
    products:
      - { id: p1, quota: ${QUOTA} }
routes:
  - name: buy
    match: { path: /buy/:campaign/:product, methods: [POST] }
    guards:
      - dedupe: { ttl: 1h }
      - quota: { latch_ttl: 100ms }
    upstream: origin
`)
  const gw = await startTestGateway(t, { configFile: file })
  await gw.store.ready?.(10_000)
  const d = client(t)
  let n = 0
  const codes = new Map<string, number>()
  let ok = 0
  const one = async (): Promise<boolean> => {
    const user = `u${n++}`
    let a: Answer
    try {
      a = await fetchText(d, `${gw.url}/buy/c1/p1`, { method: 'POST', headers: { 'x-user-id': user, 'content-type': 'application/json' }, body: '{}' })
    } catch (err) {
      codes.set('CLIENT_ERROR', (codes.get('CLIENT_ERROR') ?? 0) + 1)
      return false
    }
    if (a.status === 200) { ok++; return true }
    const code = `${a.status} ${String(a.json?.code)}`
    codes.set(code, (codes.get(code) ?? 0) + 1)
    return false
  }
  const burst = async (k: number): Promise<number> => (await Promise.all(Array.from({ length: k }, one))).filter(Boolean).length

  for (let i = 0; i < 3; i++) await burst(10)
  const beforeKill = ok
  await sleep(300)
  s.link.pause()
  for (let i = 0; i < 4; i++) { await burst(10); await sleep(20) }
  const duringLag = ok - beforeKill
  s.primary.kill()
  s.link.cut()
  const killedAt = Date.now()
  let recoveryMs = -1
  let afterKill = 0
  while (Date.now() - killedAt < 20_000) {
    const got = await burst(10)
    afterKill += 10
    if (got > 0 && recoveryMs < 0) recoveryMs = Date.now() - killedAt
    if (recoveryMs >= 0 && got === 0 && (codes.get('409 SOLD_OUT') ?? 0) > 0) {
      for (let i = 0; i < 5; i++) { await burst(10); await sleep(50) }
      break
    }
    await sleep(50)
  }
  const masterPort = await s.masterPort()
  const counter = Number((await redisCli(masterPort, 'get', 'fg:q:{c1:p1:0}').catch(() => '')).trim() || -1)
  const summary = { beforeKill, duringLag, recoveryMs, admitted: ok, origin: bought.length, counter, requests: n, afterKill, masterPort, promoted: s.replica.port, codes: Object.fromEntries(codes) }
  t.comment(JSON.stringify(summary))
  t.equal(beforeKill, 30, 'the first 30 buys were admitted (confirmed by a replica)')
  t.equal(duringLag, 0, 'nothing admitted while no replica could confirm it')
  t.ok((codes.get('503 STORE_UNAVAILABLE') ?? 0) >= 40, 'the lagging buys were answered 503 STORE_UNAVAILABLE')
  t.equal(masterPort, s.replica.port, 'Sentinel promoted the replica')
  t.ok(ok <= QUOTA, `admitted ${ok} <= quota ${QUOTA}`)
  t.ok(bought.length <= QUOTA, `the origin took ${bought.length} <= quota ${QUOTA}`)
  t.equal(bought.length, ok, 'every 200 is one buy at the origin')
  t.ok(new Set(bought).size === bought.length, 'no user bought twice')
  t.ok(counter <= QUOTA && counter >= ok, `the new primary's counter ${counter}: within the quota, at least the units admitted`)
  t.ok(recoveryMs > 0 && recoveryMs < 10_000, `the gateway admitted again ${recoveryMs} ms after the primary was killed`)
  t.notOk(codes.has('CLIENT_ERROR'), 'every request got an HTTP answer (no hang, no reset)')
})
