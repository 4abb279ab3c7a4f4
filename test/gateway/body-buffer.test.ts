// Every request body is read whole before an upstream pool connection is taken (gateway/http/server.ts
// readBody): sized or chunked, up to server.body_buffer_size in memory and beyond that in a spool file
// (mode 0600 in the temp directory, removed when the exchange ends). So a client that sends a chunked
// or large body slowly holds only its own socket. On a real gateway and a real origin whose upstream has
// ONE connection: the origin gets the exact bytes with a Content-Length (no chunked framing), a normal
// request is answered while slow chunked and slow large bodies trickle in, an over-limit chunked body
// is answered 413 while it is read, and no spool file is left behind.
import t from 'tap'
import { createHash } from 'node:crypto'
import { readdirSync, statSync } from 'node:fs'
import type { IncomingMessage } from 'node:http'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { baseYaml, yamlConfig } from '../helpers/config.js'
import { client, fetchText, startOrigin, startTestGateway } from '../helpers/gateway.js'

const spools = (): string[] => readdirSync(tmpdir()).filter((n) => n.startsWith(`flashgate-body-${process.pid}-`))

/** Write `parts` on a fresh socket, `gapMs` apart; resolve with what came back. */
function send (port: number, parts: Array<string | Buffer>, gapMs: number, maxMs = 15_000): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1')
    let out = ''
    let i = 0
    let timer: NodeJS.Timeout | undefined
    const end = setTimeout(() => { s.destroy() }, maxMs)
    s.on('connect', () => {
      s.write(parts[i++]!)
      timer = setInterval(() => { if (i < parts.length && !s.destroyed) s.write(parts[i++]!) }, gapMs)
    })
    s.on('data', (c: Buffer) => {
      out += c.toString('latin1')
      // one whole answer (head and Content-Length body) read: done
      const head = out.indexOf('\r\n\r\n')
      const len = /\r\ncontent-length: (\d+)/i.exec(out)
      if (head >= 0 && len !== null && out.length >= head + 4 + Number(len[1])) s.destroy()
    })
    s.on('error', () => {})
    s.on('close', () => { clearInterval(timer); clearTimeout(end); resolve(out) })
  })
}

const chunk = (b: Buffer | string): Buffer => {
  const x = typeof b === 'string' ? Buffer.from(b) : b
  return Buffer.concat([Buffer.from(x.length.toString(16) + '\r\n'), x, Buffer.from('\r\n')])
}

t.test('bodies are read whole (memory, then a spool file) before a pool connection is taken', async (t) => {
  const got: Array<{ url: string, headers: IncomingMessage['headers'], sha: string, bytes: number }> = []
  const origin = await startOrigin(t, (req, res) => {
    const h = createHash('sha256')
    let bytes = 0
    req.on('data', (c: Buffer) => { h.update(c); bytes += c.length })
    req.on('end', () => {
      got.push({ url: req.url ?? '', headers: req.headers, sha: h.digest('hex'), bytes })
      const body = JSON.stringify({ ok: true, bytes })
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
      res.end(body)
    })
  })
  const config = yamlConfig(baseYaml(origin.url, `
  - name: all
    match: { path_prefix: / }
    upstream: origin
    max_body_size: 512kb
`, `server:
  body_timeout: 2s
  body_buffer_size: 1kb
  request_timeout: 30s
`).replace('    retries: 0', '    retries: 0\n    connections: 1\n    timeout: 2s'))
  const gw = await startTestGateway(t, { config })
  const port = gw.address.port
  const d = client(t)
  const before = spools()

  // A large sized body (300 KB > 1 KB in memory: spooled), sent at once: the exact bytes arrive.
  const big = Buffer.alloc(300_000)
  for (let i = 0; i < big.length; i++) big[i] = (i * 7 + 3) & 0xff
  const bigSha = createHash('sha256').update(big).digest('hex')
  let r = await fetchText(d, gw.url + '/sized', { method: 'POST', body: big, headers: { 'content-type': 'application/octet-stream' } })
  t.equal(r.status, 200)
  let seen = got.find((g) => g.url === '/sized')
  t.equal(seen?.sha, bigSha, 'a spooled sized body reaches the origin byte for byte')
  t.equal(seen?.headers['content-length'], '300000')

  // A chunked body of 200 KB: forwarded with a Content-Length, no chunked framing.
  const parts = [big.subarray(0, 50_000), big.subarray(50_000, 120_000), big.subarray(120_000, 200_000)]
  const chunked = await send(port, ['POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n', ...parts.map(chunk), '0\r\n\r\n'], 5)
  t.match(chunked, /^HTTP\/1\.1 200 /)
  seen = got.find((g) => g.url === '/chunked')
  t.equal(seen?.sha, createHash('sha256').update(big.subarray(0, 200_000)).digest('hex'), 'a spooled chunked body arrives byte for byte')
  t.equal(seen?.headers['content-length'], '200000', 'sent with its length')
  t.equal(seen?.headers['transfer-encoding'], undefined, 'not chunked upstream')

  // A small chunked body: from memory, with its length.
  const small = await send(port, ['POST /small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n', chunk('hello '), chunk('world'), '0\r\n\r\n'], 5)
  t.match(small, /^HTTP\/1\.1 200 /)
  seen = got.find((g) => g.url === '/small')
  t.equal(seen?.bytes, 11)
  t.equal(seen?.headers['content-length'], '11')

  // Slow bodies, chunked (small) and sized (spooled), trickling in; the one upstream connection stays
  // free: normal requests are answered before either body is complete.
  const slowChunked = send(port, ['POST /slow-chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n', chunk('a'), chunk('b'), chunk('c'), chunk('d'), chunk('e'), '0\r\n\r\n'], 400)
  const slowBig = send(port, ['POST /slow-big HTTP/1.1\r\nHost: x\r\nContent-Length: 4000\r\n\r\n', 'x'.repeat(1500), 'x'.repeat(1000), 'x'.repeat(1000), 'x'.repeat(500)], 500)
  await new Promise((resolve) => setTimeout(resolve, 700))
  const during: number[] = []
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now()
    r = await fetchText(d, gw.url + '/normal')
    t.equal(r.status, 200, 'a normal request is served while slow bodies arrive (connections: 1)')
    during.push(performance.now() - t0)
  }
  t.equal(got.filter((g) => g.url.startsWith('/slow')).length, 0, 'neither slow body had reached the origin yet')
  const now = spools().filter((f) => !before.includes(f))
  t.equal(now.length, 1, 'the slow large body is being spooled to a file')
  for (const f of now) t.equal(statSync(join(tmpdir(), f)).mode & 0o777, 0o600, 'the spool file is private (0600)')
  const [a, b] = await Promise.all([slowChunked, slowBig])
  t.match(a, /^HTTP\/1\.1 200 /, 'the slow chunked body is forwarded once complete')
  t.match(b, /^HTTP\/1\.1 200 /, 'the slow spooled body is forwarded once complete')
  t.equal(got.find((g) => g.url === '/slow-chunked')?.bytes, 5)
  t.equal(got.find((g) => g.url === '/slow-big')?.bytes, 4000)
  t.comment(`normal requests during the slow bodies: ${during.map((ms) => ms.toFixed(0)).join(', ')} ms`)

  // A chunked body over max_body_size (512 KB): 413 while it is read, nothing forwarded.
  const n = got.length
  // (sent as one write that then stops: the gateway closes after its answer without reading the rest,
  // and a client still writing then may see a reset instead of the answer, as with nginx)
  const huge = await send(port, [Buffer.concat([Buffer.from('POST /huge HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n'), ...Array.from({ length: 6 }, () => chunk(Buffer.alloc(100_000, 1)))])], 5)
  t.match(huge, /^HTTP\/1\.1 413 /, 'over-limit chunked body: 413')
  t.match(huge, /"code":"PAYLOAD_TOO_LARGE"/)
  t.equal(got.length, n, 'nothing reached the origin')

  // A spooled body whose client stops: 408, and its spool file is removed.
  const stopped = await send(port, ['POST /stopped HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n' + 'y'.repeat(3000)], 60_000)
  t.match(stopped, /^HTTP\/1\.1 408 /, 'a spooled body that stops: 408 after body_timeout')
  await new Promise((resolve) => setTimeout(resolve, 200))
  t.same(spools(), before, 'no spool file is left behind')
})
