/**
 * The upstream side through real sockets: origins are node:http servers on port 0, the gateway is the
 * harness's minimal node:http server calling forward().
 */
import { request as httpRequest } from 'node:http'
import type { IncomingMessage } from 'node:http'
import { createServer } from 'node:http'
import net from 'node:net'
import t from 'tap'
import { Pool } from 'undici'
import { blackHole, closedPort, gateway, listen, metricValue, origin, upstreamConfig } from './upstream-harness.js'

interface Reply { status: number, headers: IncomingMessage['headers'], rawHeaders: string[], body: string, informational: number }

/** One request with node:http (a fresh connection, so the gateway's socket peer is 127.0.0.1). */
async function call (url: string, opts: { method?: string, path?: string, headers?: Record<string, string | string[]>, body?: string | Buffer } = {}): Promise<Reply> {
  return await new Promise((resolve, reject) => {
    let informational = 0
    const req = httpRequest(url + (opts.path ?? '/'), { method: opts.method ?? 'GET', headers: opts.headers ?? {}, agent: false }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, rawHeaders: res.rawHeaders, body: Buffer.concat(chunks).toString(), informational }))
      res.on('error', reject)
    })
    req.on('information', () => informational++)
    req.on('error', reject)
    req.end(opts.body)
  })
}

/** `n` GETs through one client pool, `concurrency` at a time; returns bodies by count. */
async function load (url: string, n: number, concurrency: number, headers: (i: number) => Record<string, string> = () => ({})): Promise<Map<string, number>> {
  const pool = new Pool(url, { connections: concurrency })
  const counts = new Map<string, number>()
  let next = 0
  try {
    await Promise.all(Array.from({ length: concurrency }, async () => {
      while (next < n) {
        const i = next++
        const r = await pool.request({ path: '/', method: 'GET', headers: headers(i) })
        const body = await r.body.text()
        const key = r.statusCode === 200 ? body : String(r.statusCode)
        counts.set(key, (counts.get(key) ?? 0) + 1)
      }
    }))
  } finally {
    await pool.close()
  }
  return counts
}

t.test('proxies a request and reports the answer once', async (t) => {
  const o = await origin(t, 'o1', (req, res) => {
    res.writeHead(201, 'Made It', { 'x-origin': 'o1', 'content-type': 'text/plain' })
    res.end(`${req.method} ${req.url}`)
  })
  const gw = await gateway(t, [upstreamConfig('u', [o.url])])
  const r = await call(gw.url, { path: '/a/b?x=1&y=%2F' })
  t.equal(r.status, 201)
  t.equal(r.body, 'GET /a/b?x=1&y=%2F', 'path and query forwarded as sent')
  t.equal(r.headers['x-origin'], 'o1')
  await gw.settled(1)
  t.same(gw.outcomes[0], { outcome: { kind: 'upstream', status: 201 }, target: o.url, path: '/a/b?x=1&y=%2F' })
  t.equal(await metricValue(gw.metrics, 'flashgate_upstream_requests_total', { upstream: 'u', target: o.url, status: '201' }), 1)
  t.equal(await metricValue(gw.metrics, 'flashgate_upstream_up', { upstream: 'u', target: o.url }), 1)
  t.same(gw.upstreams.status(), [{ upstream: 'u', target: o.url, up: true, fails: 0, active: 0 }])
})

t.test('unknown upstream name: UPSTREAM_UNAVAILABLE at once', async (t) => {
  const o = await origin(t, 'o1')
  const gw = await gateway(t, [upstreamConfig('u', [o.url])], { upstream: 'nope' })
  const r = await call(gw.url)
  t.equal(r.status, 502)
  t.same(gw.outcomes[0]?.outcome, { kind: 'failed', code: 'UPSTREAM_UNAVAILABLE' })
  t.equal(o.seen.length, 0)
})

t.test('weighted round robin 5:1:1 over 10k requests, nginx order', async (t) => {
  const a = await origin(t, 'a')
  const b = await origin(t, 'b')
  const c = await origin(t, 'c')
  const gw = await gateway(t, [upstreamConfig('u', [{ url: a.url, weight: 5 }, { url: b.url, weight: 1 }, { url: c.url, weight: 1 }])])
  // Sequentially first: the exact smooth sequence.
  let seq = ''
  for (let i = 0; i < 7; i++) seq += (await call(gw.url)).body
  t.equal(seq, 'aabacaa')
  const n = 10_000
  const counts = await load(gw.url, n, 32)
  t.equal((counts.get('a') ?? 0) + (counts.get('b') ?? 0) + (counts.get('c') ?? 0), n, 'every request answered 200')
  t.ok(Math.abs((counts.get('a') ?? 0) / n - 5 / 7) < 0.02, `a ${counts.get('a')}`)
  t.ok(Math.abs((counts.get('b') ?? 0) / n - 1 / 7) < 0.02, `b ${counts.get('b')}`)
  t.ok(Math.abs((counts.get('c') ?? 0) / n - 1 / 7) < 0.02, `c ${counts.get('c')}`)
})

t.test('least_conn sends most requests to the target that finishes them fastest', async (t) => {
  const slow = await origin(t, 'slow', (req, res) => { req.resume(); setTimeout(() => res.end('slow'), 40) })
  const fast = await origin(t, 'fast')
  const gw = await gateway(t, [upstreamConfig('u', [slow.url, fast.url], { balance: { kind: 'least_conn' } })])
  const counts = await load(gw.url, 400, 8)
  t.equal((counts.get('slow') ?? 0) + (counts.get('fast') ?? 0), 400)
  t.ok((counts.get('fast') ?? 0) > 3 * (counts.get('slow') ?? 0), `fast ${counts.get('fast')} vs slow ${counts.get('slow')}`)
  t.same(gw.upstreams.status().map((s) => s.active), [0, 0], 'active counts back to zero')
})

t.test('hash on a header: sticky per key, round robin without it, remap only of a removed target', async (t) => {
  const origins = await Promise.all(['a', 'b', 'c'].map(async (n) => await origin(t, n)))
  const cfg = upstreamConfig('u', origins.map((o) => o.url), { balance: { kind: 'hash', header: 'X-User-Id' } })
  const gw = await gateway(t, [cfg])
  const owner = new Map<string, string>()
  for (let i = 0; i < 60; i++) {
    const user = `user-${i % 30}`
    const r = await call(gw.url, { headers: { 'x-user-id': user } })
    if (owner.has(user)) t.equal(r.body, owner.get(user), `${user} sticks`)
    else owner.set(user, r.body)
  }
  t.equal(new Set(owner.values()).size, 3, 'keys spread over every target')
  let noKey = ''
  for (let i = 0; i < 3; i++) noKey += (await call(gw.url)).body
  t.equal([...noKey].sort().join(''), 'abc', 'no header: round robin')
  // Remove b: users of a and c stay, users of b move.
  gw.upstreams.update(new Map([['u', { ...cfg, targets: [{ url: origins[0]!.url, weight: 1 }, { url: origins[2]!.url, weight: 1 }] }]]))
  for (const [user, was] of owner) {
    const r = await call(gw.url, { headers: { 'x-user-id': user } })
    if (was === 'b') t.not(r.body, 'b', `${user} moved off b`)
    else t.equal(r.body, was, `${user} stays on ${was}`)
  }
})

t.test('passive health: ejection after max_fails, probe after fail_timeout, recovery', async (t) => {
  const good = await origin(t, 'good')
  const deadPort = await closedPort()
  const dead = `http://127.0.0.1:${deadPort}`
  const gw = await gateway(t, [upstreamConfig('u', [dead, good.url], { maxFails: 2, failTimeoutMs: 10_000, retries: 0 })])
  // POST is never retried: each attempt on the dead target is a 502.
  const first = await call(gw.url, { method: 'POST', body: 'x' })
  t.equal(first.status, 502)
  t.equal((await call(gw.url, { method: 'POST', body: 'x' })).body, 'good')
  t.equal((await call(gw.url, { method: 'POST', body: 'x' })).status, 502, 'second failure (max_fails 2)')
  t.equal(await metricValue(gw.metrics, 'flashgate_upstream_up', { upstream: 'u', target: dead }), 0, 'marked down')
  t.match(gw.upstreams.status()[0], { up: false, fails: 2 })
  for (let i = 0; i < 6; i++) t.equal((await call(gw.url, { method: 'POST', body: 'x' })).body, 'good', 'down target skipped')
  t.equal(await metricValue(gw.metrics, 'flashgate_upstream_requests_total', { upstream: 'u', target: dead, status: 'connect_error' }), 2)
  // fail_timeout passes while the target is still dead: one probe fails, down again.
  gw.clock.advance(10_001)
  const probe = [await call(gw.url, { method: 'POST', body: 'x' }), await call(gw.url, { method: 'POST', body: 'x' })]
  t.same(probe.map((r) => r.status).sort(), [200, 502], 'one probe, one normal request')
  for (let i = 0; i < 4; i++) t.equal((await call(gw.url, { method: 'POST', body: 'x' })).body, 'good')
  // The target comes back; after fail_timeout the probe succeeds and it is up again.
  const back = createServer((req, res) => { req.resume(); res.end('back') })
  await new Promise<void>((resolve) => back.listen(deadPort, '127.0.0.1', resolve))
  t.teardown(async () => { back.closeAllConnections(); await new Promise((resolve) => back.close(resolve)) })
  gw.clock.advance(10_001)
  const bodies = new Set<string>()
  for (let i = 0; i < 4; i++) bodies.add((await call(gw.url, { method: 'POST', body: 'x' })).body)
  t.same([...bodies].sort(), ['back', 'good'])
  t.equal(await metricValue(gw.metrics, 'flashgate_upstream_up', { upstream: 'u', target: dead }), 1, 'up again')
  t.match(gw.upstreams.status()[0], { up: true, fails: 0 })
})

t.test('retries: GET to the next target on connect refused; POST never; retries: 0 never', async (t) => {
  const good = await origin(t, 'good', (req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => res.end(`good:${req.method}:${Buffer.concat(chunks).toString()}`))
  })
  const dead = `http://127.0.0.1:${await closedPort()}`
  const gw = await gateway(t, [upstreamConfig('u', [dead, good.url], { maxFails: 0, retries: 1 })])
  // Round robin alternates dead, good: every request that lands on dead first is retried.
  const gets = [await call(gw.url), await call(gw.url)]
  t.same(gets.map((r) => r.body), ['good:GET:', 'good:GET:'], 'GET retried onto the live target')
  t.equal(await metricValue(gw.metrics, 'flashgate_upstream_retries_total', { upstream: 'u' }), 1)
  const put = [await call(gw.url, { method: 'PUT', body: 'payload' }), await call(gw.url, { method: 'PUT', body: 'payload' })]
  t.same(put.map((r) => r.body), ['good:PUT:payload', 'good:PUT:payload'], 'PUT with a body retried, body intact')
  const posts = [await call(gw.url, { method: 'POST', body: 'p' }), await call(gw.url, { method: 'POST', body: 'p' })]
  t.same(posts.map((r) => r.status).sort(), [200, 502], 'POST on the dead target is not retried')
  const patch = [await call(gw.url, { method: 'PATCH', body: 'p' }), await call(gw.url, { method: 'PATCH', body: 'p' })]
  t.same(patch.map((r) => r.status).sort(), [200, 502], 'PATCH is not retried')
  t.equal(await metricValue(gw.metrics, 'flashgate_upstream_retries_total', { upstream: 'u' }), 2)
  const failed = gw.outcomes.filter((o) => o.outcome.kind === 'failed')
  t.same(failed.map((o) => o.outcome), [{ kind: 'failed', code: 'UPSTREAM_UNAVAILABLE' }, { kind: 'failed', code: 'UPSTREAM_UNAVAILABLE' }])
  t.same(failed.map((o) => o.target), [dead, dead])

  const gw0 = await gateway(t, [upstreamConfig('u', [dead, good.url], { maxFails: 0, retries: 0 })])
  const r0 = [await call(gw0.url), await call(gw0.url)]
  t.same(r0.map((r) => r.status).sort(), [200, 502], 'retries: 0 → no retry')

  // Retries never go beyond the targets: both dead → one retry, then 502.
  const dead2 = `http://127.0.0.1:${await closedPort()}`
  const gw2 = await gateway(t, [upstreamConfig('u', [dead, dead2], { maxFails: 0, retries: 5 })])
  t.equal((await call(gw2.url)).status, 502)
  t.equal(await metricValue(gw2.metrics, 'flashgate_upstream_retries_total', { upstream: 'u' }), 1, 'each target tried once')
})

t.test('connect timeout → 502 UPSTREAM_UNAVAILABLE (connect_timeout)', async (t) => {
  const port = await blackHole(t)
  const target = `http://127.0.0.1:${port}`
  const gw = await gateway(t, [upstreamConfig('u', [target], { connectTimeoutMs: 200, retries: 0 })])
  const r = await call(gw.url)
  t.equal(r.status, 502)
  t.same(gw.outcomes[0]?.outcome, { kind: 'failed', code: 'UPSTREAM_UNAVAILABLE' })
  t.equal(await metricValue(gw.metrics, 'flashgate_upstream_requests_total', { upstream: 'u', target, status: 'connect_timeout' }), 1)
  t.equal(await metricValue(gw.metrics, 'flashgate_upstream_up', { upstream: 'u', target }), 0, 'a connect timeout is a failure (max_fails 1)')
})

t.test('response timeout → 504; a stalled body cuts the client response', async (t) => {
  const silent = await origin(t, 'silent', (req) => { req.resume() }) // never answers
  const gw = await gateway(t, [upstreamConfig('u', [silent.url], { timeoutMs: 300, retries: 1 })])
  const r = await call(gw.url)
  t.equal(r.status, 504)
  t.same(gw.outcomes[0]?.outcome, { kind: 'failed', code: 'UPSTREAM_TIMEOUT', sent: true })
  t.equal(silent.seen.length, 1, 'a timeout after the request was sent is not retried')
  t.equal(await metricValue(gw.metrics, 'flashgate_upstream_requests_total', { upstream: 'u', target: silent.url, status: 'timeout' }), 1)

  const stall = await origin(t, 'stall', (req, res) => { req.resume(); res.writeHead(200, { 'content-length': '100' }); res.write('partial') })
  const gw2 = await gateway(t, [upstreamConfig('u', [stall.url], { timeoutMs: 300 })])
  const err = await call(gw2.url).then(() => null, (e: Error) => e)
  t.ok(err !== null, 'client sees the response cut short')
  await gw2.settled(1)
  t.same(gw2.outcomes[0]?.outcome, { kind: 'failed', code: 'UPSTREAM_TIMEOUT', sent: true })
  t.equal(await metricValue(gw2.metrics, 'flashgate_upstream_requests_total', { upstream: 'u', target: stall.url, status: '200' }), 1, 'the attempt counted once, by its status')
})

t.test('client abort propagates to the upstream request', async (t) => {
  let upstreamClosed: () => void = () => {}
  const closed = new Promise<void>((resolve) => { upstreamClosed = resolve })
  const hold = await origin(t, 'hold', (req, res) => { req.resume(); res.on('close', () => { if (!res.writableFinished) upstreamClosed() }) })
  const gw = await gateway(t, [upstreamConfig('u', [hold.url])])
  const req = httpRequest(gw.url + '/', { agent: false })
  req.on('error', () => {})
  req.end()
  while (hold.seen.length === 0) await new Promise((resolve) => setTimeout(resolve, 10))
  req.destroy()
  await closed
  await gw.settled(1)
  t.same(gw.outcomes[0]?.outcome, { kind: 'failed', code: 'CLIENT_ABORTED', sent: true })
  t.same(gw.upstreams.status()[0]?.active, 0)
  t.match(gw.upstreams.status()[0], { up: true, fails: 0 }, 'a client abort is not a target failure')

  // While the body streams: the client reads a little, then leaves; the origin's endless stream stops.
  let streamClosed: () => void = () => {}
  const stopped = new Promise<void>((resolve) => { streamClosed = resolve })
  const endless = await origin(t, 'endless', (req, res) => {
    req.resume()
    res.writeHead(200)
    const chunk = Buffer.alloc(16 * 1024, 97)
    const pump = (): void => { while (!res.destroyed && res.write(chunk)); }
    res.on('drain', pump)
    res.on('close', () => streamClosed())
    pump()
  })
  const gw2 = await gateway(t, [upstreamConfig('u', [endless.url])])
  await new Promise<void>((resolve) => {
    const r = httpRequest(gw2.url + '/', { agent: false }, (res) => {
      let got = 0
      res.on('data', (c: Buffer) => { got += c.length; if (got > 1 << 20) { r.destroy(); resolve() } })
    })
    r.on('error', () => {})
    r.end()
  })
  await stopped
  await gw2.settled(1)
  t.same(gw2.outcomes[0]?.outcome, { kind: 'failed', code: 'CLIENT_ABORTED', sent: true })
})

t.test('client gone while the upstream is still connecting: done at once, attempt aborted later', async (t) => {
  const port = await blackHole(t)
  const gw = await gateway(t, [upstreamConfig('u', [`http://127.0.0.1:${port}`], { connectTimeoutMs: 400, retries: 0 })])
  const req = httpRequest(gw.url + '/', { agent: false })
  req.on('error', () => {})
  req.end()
  await new Promise((resolve) => setTimeout(resolve, 100))
  const before = Date.now()
  req.destroy()
  await gw.settled(1)
  t.ok(Date.now() - before < 300, 'settled without waiting for the connect timeout')
  t.same(gw.outcomes[0]?.outcome, { kind: 'failed', code: 'CLIENT_ABORTED' }, 'never sent: no `sent`')
  while (gw.upstreams.status()[0]!.active !== 0) await new Promise((resolve) => setTimeout(resolve, 20))
  t.equal(gw.outcomes.length, 1, 'done called once')
})

t.test('1xx interim responses are not relayed; the final head is written once', async (t) => {
  const o = await origin(t, 'o', (req, res) => {
    req.resume()
    res.writeEarlyHints({ link: '</style.css>; rel=preload; as=style' })
    res.writeProcessing()
    setTimeout(() => res.end('final'), 10)
  })
  const gw = await gateway(t, [upstreamConfig('u', [o.url])])
  const r = await call(gw.url)
  t.equal(r.status, 200)
  t.equal(r.body, 'final')
  t.equal(r.informational, 0)
  t.same(gw.outcomes.map((x) => x.outcome), [{ kind: 'upstream', status: 200 }])
})

t.test('hop-by-hop headers are dropped both ways; Host passes through; guard headers are added', async (t) => {
  let seen: IncomingMessage | null = null
  const o = await origin(t, 'o', (req, res) => {
    seen = req
    req.resume()
    res.setHeader('connection', 'x-secret-hop')
    res.setHeader('x-secret-hop', '1')
    res.setHeader('proxy-authenticate', 'Basic')
    res.setHeader('trailer', 'x-checksum')
    res.setHeader('upgrade', 'h2c')
    res.setHeader('x-end-to-end', 'kept')
    res.setHeader('set-cookie', ['a=1', 'b=2'])
    res.end('ok')
  })
  const gw = await gateway(t, [upstreamConfig('u', [o.url])], { extra: ['RateLimit', 'limit=5', 'set-cookie', 'fg=1'] })
  // A raw request so every header is exactly what we say.
  const sock = net.connect(gw.port, '127.0.0.1')
  t.teardown(() => sock.destroy())
  sock.write([
    'GET /h HTTP/1.1', 'Host: shop.example.com:8443', 'Connection: keep-alive, x-drop-me', 'X-Drop-Me: 1',
    'Keep-Alive: timeout=5', 'TE: trailers', 'Proxy-Authorization: Basic Zm9v', 'Proxy-Connection: keep-alive',
    'Upgrade: websocket', 'X-Keep: yes', 'Transfer-Encoding: chunked', '', '3', 'abc', '0', '', ''
  ].join('\r\n'))
  const raw = await new Promise<string>((resolve) => {
    let buf = ''
    sock.on('data', (d: Buffer) => { buf += d.toString('latin1'); if (buf.includes('\r\n\r\n') && buf.endsWith('\r\n\r\n')) resolve(buf) })
  })
  const req = seen as IncomingMessage | null
  t.ok(req !== null)
  const h = req!.headers
  for (const name of ['x-drop-me', 'keep-alive', 'te', 'proxy-authorization', 'proxy-connection', 'upgrade', 'transfer-encoding']) {
    t.equal(h[name], undefined, `request ${name} dropped`)
  }
  t.equal(h['x-keep'], 'yes')
  t.equal(h.host, 'shop.example.com:8443', 'Host passed through')
  t.equal(h['x-forwarded-host'], 'shop.example.com:8443')
  t.not(h.connection, 'keep-alive, x-drop-me', 'Connection not copied')
  const head = raw.split('\r\n\r\n')[0]!.toLowerCase().split('\r\n')
  const names = head.slice(1).map((l) => l.slice(0, l.indexOf(':')))
  for (const name of ['x-secret-hop', 'proxy-authenticate', 'trailer', 'upgrade']) t.notOk(names.includes(name), `response ${name} dropped`)
  t.ok(head.includes('x-end-to-end: kept'))
  t.equal(names.filter((n) => n === 'set-cookie').length, 3, 'both upstream cookies and the guard cookie')
  t.ok(head.includes('ratelimit: limit=5'), 'extra headers added')
  t.notOk(head.some((l) => l.startsWith('connection:') && l.includes('x-secret-hop')), 'gateway writes its own Connection')
})

t.test('X-Forwarded-For/-Proto/-Host: kept and extended from a trusted peer, replaced from an untrusted one', async (t) => {
  const heads: IncomingMessage['headers'][] = []
  const o = await origin(t, 'o', (req, res) => { heads.push(req.headers); req.resume(); res.end() })
  const incoming = { 'x-forwarded-for': '203.0.113.7, 10.0.0.1', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'public.example', host: 'inner:8080' }
  const untrusted = await gateway(t, [upstreamConfig('u', [o.url])], { peerTrusted: false })
  const trusted = await gateway(t, [upstreamConfig('u', [o.url])], { peerTrusted: true })
  await call(untrusted.url, { headers: incoming })
  await call(trusted.url, { headers: incoming })
  await call(trusted.url, { headers: { host: 'inner:8080' } })
  await call(untrusted.url, { headers: { 'x-forwarded-for': ['1.1.1.1', '2.2.2.2'], host: 'h' } })
  t.match(heads[0], { 'x-forwarded-for': '127.0.0.1', 'x-forwarded-proto': 'http', 'x-forwarded-host': 'inner:8080' })
  t.match(heads[1], { 'x-forwarded-for': '203.0.113.7, 10.0.0.1, 127.0.0.1', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'public.example' })
  t.match(heads[2], { 'x-forwarded-for': '127.0.0.1', 'x-forwarded-proto': 'http', 'x-forwarded-host': 'inner:8080' })
  t.match(heads[3], { 'x-forwarded-for': '127.0.0.1' }, 'several incoming lines from an untrusted peer are all dropped')
})

t.test('update() keeps Pools and keep-alive connections of remaining targets, closes removed ones', async (t) => {
  const conns = { a: 0, b: 0, c: 0 }
  const mk = async (n: 'a' | 'b' | 'c'): Promise<string> => {
    const o = await origin(t, n)
    o.server.on('connection', () => { conns[n]++ })
    return o.url
  }
  const [a, b, c] = [await mk('a'), await mk('b'), await mk('c')]
  const dead = `http://127.0.0.1:${await closedPort()}`
  const cfg = upstreamConfig('u', [a, b, dead], { maxFails: 3, retries: 0 })
  const gw = await gateway(t, [cfg])
  for (let i = 0; i < 6; i++) await call(gw.url) // a, b, dead, a, b, dead
  t.same(conns, { a: 1, b: 1, c: 0 }, 'one keep-alive connection per target')
  t.match(gw.upstreams.status()[2], { target: dead, fails: 2 })
  gw.upstreams.update(new Map([['u', { ...cfg, targets: [{ url: a, weight: 1 }, { url: dead, weight: 1 }, { url: c, weight: 1 }] }]]))
  t.match(gw.upstreams.status()[1], { target: dead, fails: 2 }, 'health state survives the reload')
  t.same(gw.upstreams.status().map((s) => s.target), [a, dead, c])
  for (let i = 0; i < 6; i++) await call(gw.url)
  t.equal(conns.a, 1, 'a reused its keep-alive connection')
  t.equal(conns.c, 1)
  t.equal(await metricValue(gw.metrics, 'flashgate_upstream_up', { upstream: 'u', target: b }), undefined, 'removed target has no gauge')
  t.equal(gw.upstreams.status()[1]?.up, false, 'dead reached max_fails 3 after the reload')
  // A change of pool options (connections) rebuilds that Pool: a new connection.
  gw.upstreams.update(new Map([['u', { ...cfg, connections: 4, targets: [{ url: a, weight: 1 }] }]]))
  await call(gw.url)
  t.equal(conns.a, 2, 'new Pool for new connection options')
  // Removing the whole upstream: forward() says unavailable.
  gw.upstreams.update(new Map())
  t.equal((await call(gw.url)).status, 502)
})

t.test('a request undici refuses as built (OPTIONS *) is a 400 BAD_REQUEST, not a target failure', async (t) => {
  const o = await origin(t, 'o')
  const gw = await gateway(t, [upstreamConfig('u', [o.url], { retries: 3 })])
  const status = await new Promise<number>((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port: gw.port, method: 'OPTIONS', path: '*', agent: false }, (res) => { res.resume(); resolve(res.statusCode!) })
    req.on('error', reject)
    req.end()
  })
  t.equal(status, 400)
  t.same(gw.outcomes[0]?.outcome, { kind: 'failed', code: 'BAD_REQUEST' })
  t.equal(o.seen.length, 0)
  t.match(gw.upstreams.status()[0], { up: true, fails: 0 })
  t.equal(await metricValue(gw.metrics, 'flashgate_upstream_retries_total', { upstream: 'u' }), undefined, 'not retried')
})

t.test('a body already read into ctx.body is sent instead of the stream, with its own Content-Length', async (t) => {
  const o = await origin(t, 'o', (req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => res.end(JSON.stringify({ body: Buffer.concat(chunks).toString(), cl: req.headers['content-length'] ?? null, te: req.headers['transfer-encoding'] ?? null })))
  })
  const gw = await gateway(t, [upstreamConfig('u', [o.url])], { bufferBody: true })
  const r = await call(gw.url, { method: 'POST', headers: { 'transfer-encoding': 'chunked' }, body: 'captcha=tok&qty=1' })
  t.same(JSON.parse(r.body), { body: 'captcha=tok&qty=1', cl: '17', te: null })
})

t.test('a connection lost before any answer: bodyless idempotent requests go to the next target', async (t) => {
  const drop = await origin(t, 'drop', (req) => { req.socket.destroy() })
  const good = await origin(t, 'good')
  const gw = await gateway(t, [upstreamConfig('u', [drop.url, good.url], { maxFails: 0, retries: 1 })])
  const gets = [await call(gw.url), await call(gw.url)]
  t.same(gets.map((r) => r.body), ['good', 'good'], 'GET retried after the reset')
  t.equal(drop.seen.length, 1)
  t.equal(await metricValue(gw.metrics, 'flashgate_upstream_requests_total', { upstream: 'u', target: drop.url, status: 'error' }), 1)
  const posts = [await call(gw.url, { method: 'POST' }), await call(gw.url, { method: 'POST' })]
  t.same(posts.map((r) => r.status).sort(), [200, 502], 'POST not retried')
  const puts = [await call(gw.url, { method: 'PUT', body: 'b' }), await call(gw.url, { method: 'PUT', body: 'b' })]
  t.same(puts.map((r) => r.status).sort(), [200, 502], 'PUT whose body was sent is not retried')
})
