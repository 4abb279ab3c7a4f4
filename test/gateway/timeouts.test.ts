// Bounded waits on the request path, on a real gateway and a real origin: the wait for an upstream
// connection counts against the upstream timeout (504), a full wait queue answers 503 OVERLOADED at once,
// a paused request body gets 408 REQUEST_TIMEOUT, a small body is read whole before a pool connection is
// taken, and headers_timeout / request_timeout fire within a second of their value.
import t from 'tap'
import { connect } from 'node:net'
import type { ServerResponse } from 'node:http'
import { baseYaml, yamlConfig } from '../helpers/config.js'
import { client, fetchText, startOrigin, startTestGateway } from '../helpers/gateway.js'

/** Write `parts` on a fresh socket with `gapMs` between them; resolve with what came back and when. */
function send (port: number, parts: string[], gapMs: number, maxMs = 8000): Promise<{ text: string, ms: number }> {
  return new Promise((resolve) => {
    const t0 = performance.now()
    const s = connect(port, '127.0.0.1')
    let out = ''
    let firstAt = -1
    let i = 0
    const timer = setInterval(() => { if (i < parts.length && !s.destroyed) s.write(parts[i++] as string) }, gapMs)
    const end = setTimeout(() => { s.destroy() }, maxMs)
    s.on('connect', () => { s.write(parts[i++] as string) })
    s.on('data', (c) => { if (firstAt < 0) firstAt = performance.now() - t0; out += c.toString('latin1') })
    s.on('error', () => {})
    s.on('close', () => { clearInterval(timer); clearTimeout(end); resolve({ text: out, ms: firstAt < 0 ? performance.now() - t0 : firstAt }) })
  })
}

t.test('upstream connection wait: bounded by the upstream timeout and the queue', async (t) => {
  const drips = new Set<ServerResponse>()
  const origin = await startOrigin(t, (req, res) => {
    req.resume()
    if (req.url === '/drip') {
      // Holds its connection: a head, then a byte every 200 ms until the gateway goes away.
      res.writeHead(200, { 'content-type': 'text/plain' })
      drips.add(res)
      const iv = setInterval(() => res.write('.'), 200)
      res.on('close', () => { clearInterval(iv); drips.delete(res) })
      return
    }
    req.on('end', () => { res.writeHead(200, { 'content-type': 'text/plain' }); res.end('fast') })
  })
  const config = yamlConfig(baseYaml(origin.url, `
  - name: all
    match: { path_prefix: / }
    upstream: origin
`).replace('    retries: 0', '    retries: 0\n    connections: 2\n    queue: 2\n    timeout: 1s'))
  const gw = await startTestGateway(t, { config })
  const d = client(t, { connections: 16 })
  const { request } = await import('undici')
  const held = await Promise.all([0, 1].map(async () => await request(gw.url + '/drip', { dispatcher: d })))
  t.same(held.map((r) => r.statusCode), [200, 200], 'two dripping answers hold both connections')
  const t0 = performance.now()
  const waiting = [0, 1].map(async () => { const a = await fetchText(d, gw.url + '/fast'); return { a, ms: performance.now() - t0 } })
  await new Promise((resolve) => setTimeout(resolve, 100))
  const full = await fetchText(d, gw.url + '/fast')
  const fullMs = performance.now() - t0
  t.equal(full.status, 503, 'a third waiter: the queue (2) is full')
  t.equal(full.json?.code, 'OVERLOADED')
  t.ok(fullMs < 600, `answered at once (${fullMs.toFixed(0)} ms)`)
  for (const { a, ms } of await Promise.all(waiting)) {
    t.equal(a.status, 504, 'a request waiting for a connection ends at the upstream timeout')
    t.equal(a.json?.code, 'UPSTREAM_TIMEOUT')
    t.ok(ms >= 900 && ms < 1800, `after ${ms.toFixed(0)} ms (timeout 1s)`)
  }
  for (const r of held) r.body.destroy()
  for (const r of drips) r.destroy()
  await new Promise((resolve) => setTimeout(resolve, 200))
  t.equal((await fetchText(d, gw.url + '/fast')).text, 'fast', 'connections free again: served')
  const m = await fetchText(d, gw.adminUrl + '/metrics')
  t.match(m.text, /flashgate_upstream_requests_total\{upstream="origin",target="[^"]+",status="queue_timeout"\} 2/)
  t.match(m.text, /flashgate_upstream_requests_total\{upstream="origin",target="[^"]+",status="overloaded"\} 1/)
})

t.test('request bodies: read timeout (408) and buffering before the upstream', async (t) => {
  const origin = await startOrigin(t)
  const config = yamlConfig(baseYaml(origin.url, `
  - name: all
    match: { path_prefix: / }
    upstream: origin
`, `server:
  body_timeout: 500ms
  body_buffer_size: 1kb
  headers_timeout: 1s
  request_timeout: 2s
`).replace('    retries: 0', '    retries: 0\n    connections: 1'))
  const gw = await startTestGateway(t, { config })
  const port = gw.address.port

  // A buffered body (Content-Length 100 <= 1kb) that stops after 10 bytes.
  let r = await send(port, ['POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789'], 10_000)
  t.match(r.text, /^HTTP\/1\.1 408 /, 'paused body: 408')
  t.match(r.text, /"code":"REQUEST_TIMEOUT"/)
  t.match(r.text, /connection: close/i)
  t.ok(r.ms >= 400 && r.ms < 1500, `within ~body_timeout (${r.ms.toFixed(0)} ms)`)
  t.equal(origin.seen.length, 0, 'nothing reached the origin: the body was being read whole first')

  // While a slow buffered body trickles in, the one upstream connection stays free for others.
  const slow = send(port, ['POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n', 'ab', 'cd', 'ef', 'gh'], 300)
  await new Promise((resolve) => setTimeout(resolve, 350))
  const d = client(t)
  const quick = await fetchText(d, gw.url + '/quick')
  t.equal(quick.status, 200, 'a normal request is served meanwhile (connections: 1)')
  r = await slow
  t.match(r.text, /^HTTP\/1\.1 200 /, 'the slow body arrives and is forwarded whole')
  t.equal(origin.seen.find((s) => s.url === '/b')?.bodyBytes, 8)

  // A streamed (chunked) body that pauses: cut with 408 while forwarding.
  r = await send(port, ['POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n'], 10_000)
  t.match(r.text, /^HTTP\/1\.1 408 /, 'paused chunked body: 408')
  t.ok(r.ms >= 400 && r.ms < 1500, `within ~body_timeout (${r.ms.toFixed(0)} ms)`)

  // headers_timeout 1s: a head that never ends.
  r = await send(port, ['GET / HTTP/1.1\r\n', 'Host: x\r\n', 'X-A: 1\r\n', 'X-B: 2\r\n', 'X-C: 3\r\n', 'X-D: 4\r\n', 'X-E: 5\r\n', 'X-F: 6\r\n'], 300)
  t.match(r.text, /^HTTP\/1\.1 408 /, 'slow head: 408')
  t.ok(r.ms >= 900 && r.ms < 2000, `headers_timeout 1s fired after ${r.ms.toFixed(0)} ms`)

  // request_timeout 2s: a body that never pauses long enough for body_timeout but never ends.
  const parts = ['POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 900\r\n\r\n', ...Array<string>(30).fill('x')]
  r = await send(port, parts, 200)
  t.match(r.text, /^HTTP\/1\.1 408 /, 'endless body: 408')
  t.ok(r.ms >= 1900 && r.ms < 3000, `request_timeout 2s fired after ${r.ms.toFixed(0)} ms`)
})
