/**
 * A gateway on a Redis store connects before it takes traffic. The store fails fast while it is not
 * connected, so a gateway that listened first answered its first buyers 503 STORE_UNAVAILABLE (seen in
 * CI: a funnel test's early buyer). Real redis-server behind a real TCP relay that holds each new
 * connection for 300 ms (a slow network or a Redis still loading), real origin, real sockets:
 * - the very first buy after start reaches the origin;
 * - a store that refuses connections does not hold the start: the gateway comes up at once, answers
 *   under the store's outage policy, and /readyz says not ready.
 */
import t from 'tap'
import { createServer, connect, type Socket } from 'node:net'
import type { AddressInfo } from 'node:net'
import { client, fetchText, startOrigin, startTestGateway } from '../helpers/gateway.js'
import { yamlConfig } from '../helpers/config.js'
import { freePort, startRedis } from '../helpers/redis.js'
import { needTools } from '../helpers/tools.js'

function yaml (originUrl: string, store: string): string {
  return `listen: 127.0.0.1:0
admin: 127.0.0.1:0
access_log: { enabled: false }
${store}
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
      - { id: p1, quota: 5 }
routes:
  - name: buy
    match: { path: /buy/:campaign/:product, methods: [POST] }
    guards:
      - dedupe: { ttl: 1h }
      - quota: {}
    upstream: origin
`
}

/** A TCP relay to `port` that holds every new connection `holdMs` before it connects through. */
async function slowRelay (t: { teardown: (fn: () => void | Promise<void>) => void }, port: number, holdMs: number): Promise<number> {
  const sockets = new Set<Socket>()
  const server = createServer((down) => {
    sockets.add(down)
    down.pause()
    setTimeout(() => {
      const up = connect(port, '127.0.0.1', () => { down.pipe(up); up.pipe(down); down.resume() })
      sockets.add(up)
      const end = (): void => { down.destroy(); up.destroy() }
      up.on('error', end); up.on('close', end)
      down.on('error', end); down.on('close', end)
    }, holdMs)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    for (const s of sockets) s.destroy()
    await new Promise<void>((resolve) => server.close(() => { resolve() }))
  })
  return (server.address() as AddressInfo).port
}

t.test('the first buy after start reaches the origin, though Redis answers the connection late', async (t) => {
  if (!needTools(t, 'redis-server')) return
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const relay = await slowRelay(t, redis.port, 300)
  const origin = await startOrigin(t)
  const gw = await startTestGateway(t, { config: yamlConfig(yaml(origin.url, `store: { kind: redis, url: "redis://127.0.0.1:${relay}", timeout: 100ms }`)) })
  const http = client(t)
  const r = await fetchText(http, `${gw.url}/buy/c1/p1`, { method: 'POST', headers: { 'x-user-id': 'u1', 'content-type': 'application/json' }, body: '{}' })
  t.equal(r.status, 200, `the first buyer passed (${r.status} ${r.text.slice(0, 80)})`)
  t.equal(origin.seen.length, 1, 'and reached the origin')
  t.equal(gw.ready(), true, 'the gateway is ready once started')
})

t.test('a store refusing connections does not hold the start', async (t) => {
  const closed = await freePort()
  const origin = await startOrigin(t)
  // timeout 2s: the start's bound is 40 s, so coming up within 10 s means it stopped at the refusal
  const t0 = Date.now()
  const gw = await startTestGateway(t, { config: yamlConfig(yaml(origin.url, `store: { kind: redis, url: "redis://127.0.0.1:${closed}", timeout: 2s }`)) })
  const took = Date.now() - t0
  t.ok(took < 10_000, `started in ${took} ms`)
  t.equal(gw.ready(), false, 'not ready: the store is down')
  const http = client(t)
  const r = await fetchText(http, `${gw.url}/buy/c1/p1`, { method: 'POST', headers: { 'x-user-id': 'u1', 'content-type': 'application/json' }, body: '{}' })
  t.equal(r.status, 503, 'the buy is answered under the outage policy')
  t.equal(r.json?.code, 'STORE_UNAVAILABLE')
  t.equal(origin.seen.length, 0, 'and did not reach the origin')
})
