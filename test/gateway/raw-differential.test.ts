// Differential test of the strict listener (server.parser: strict, gateway/http/raw-server.ts) against
// node:http: two real gateways with the same routes, each in front of its own recording upstream; one
// corpus of requests (valid, malformed, smuggling: the hostile suite's cases plus generated mutations
// of valid requests) sent to both at once over raw sockets. For every request both must give the same
// answers (the status of each response, in order, and the reject code of each JSON answer), and the
// upstreams must have received the same requests: method, target, header fields (names as sent, in
// order, the per-request x-request-id and traceparent aside) and body.
import t, { type Test } from 'tap'
import { connect, type AddressInfo } from 'node:net'
import { createServer, type Server } from 'node:http'
import { loadConfigText } from '../../conf/load.js'
import { baseYaml } from '../helpers/config.js'
import { startTestGateway } from '../helpers/gateway.js'

interface Seen { method: string, url: string, raw: string[], body: string }

/** Send bytes on a fresh socket; collect until the server closes, or 600 ms of silence after the last byte (3 s at most). */
function exchange (port: number, data: Buffer): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1')
    let out = ''
    const hard = setTimeout(() => { s.destroy() }, 3000)
    let quiet = setTimeout(() => { s.destroy() }, 2500)
    s.on('data', (c) => { out += c.toString('latin1'); clearTimeout(quiet); quiet = setTimeout(() => { s.destroy() }, 600) })
    s.on('close', () => { clearTimeout(hard); clearTimeout(quiet); resolve(out) })
    s.on('error', () => {})
    s.write(data)
  })
}

/**
 * Framing fields as undici chose them: it sends Content-Length for a request body stream that has
 * already ended when it writes the head, Transfer-Encoding: chunked otherwise, so either may appear for
 * the same chunked request depending on timing. The body itself is compared; these fields are named only.
 */
function framing (raw: string[]): string[] {
  const out: string[] = []
  for (let i = 0; i < raw.length; i += 2) {
    const n = (raw[i] as string).toLowerCase()
    if (n === 'content-length' || n === 'transfer-encoding') { if (n === 'transfer-encoding' || raw[i + 1] !== '0') out.push('FRAMING', 'body') } else out.push(raw[i] as string, raw[i + 1] as string)
  }
  return out
}

/** Each answer's status and, for JSON error answers, its reject code: `400 BAD_REQUEST`. */
function answers (out: string): string[] {
  const r: string[] = []
  for (const m of out.matchAll(/HTTP\/1\.1 (\d{3}) [^\r\n]*\r\n/g)) {
    const after = out.slice((m.index ?? 0) + m[0].length, (m.index ?? 0) + m[0].length + 2000)
    const body = after.indexOf('\r\n\r\n')
    const code = /^\{"code":"([A-Z_]+)"/.exec(body === -1 ? '' : after.slice(body + 4))
    r.push(code === null ? (m[1] as string) : `${m[1] as string} ${code[1] as string}`)
  }
  return r
}

async function recorder (t: Test): Promise<{ server: Server, url: string, seen: Seen[] }> {
  const seen: Seen[] = []
  const server = createServer((req, res) => {
    let body = ''
    req.setEncoding('latin1')
    req.on('data', (c: string) => { body += c })
    req.on('end', () => {
      const raw: string[] = []
      for (let i = 0; i < req.rawHeaders.length; i += 2) {
        const n = req.rawHeaders[i] as string
        if (n.toLowerCase() !== 'x-request-id' && n.toLowerCase() !== 'traceparent') raw.push(n, req.rawHeaders[i + 1] as string)
      }
      // The upstream's own address (the Host forwarded for an HTTP/1.0 request without one) differs per upstream.
      const own = `127.0.0.1:${(server.address() as AddressInfo).port}`
      for (let i = 1; i < raw.length; i += 2) if (raw[i] === own) raw[i] = 'UPSTREAM'
      seen.push({ method: req.method ?? '', url: req.url ?? '', raw: framing(raw), body })
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '2' })
      res.end('ok')
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.closeAllConnections(); server.close() })
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen }
}

const ROUTES = `
  - name: admin
    match: { path_prefix: /admin }
    guards:
      - deny: { ips: [0.0.0.0/0, "::/0"] }
    upstream: origin
  - name: limited
    match: { path_prefix: /limited }
    guards:
      - rate_limit: { key: ip, rate: 1/m, burst: 1 }
    upstream: origin
  - name: site
    match: { path_prefix: / }
    upstream: origin
`

const H = 'Host: shop.test\r\n'
/** The hostile suite's requests (test/gateway/hostile.test.ts), and a few more framing cases. */
const FIXED: Array<[string, string]> = [
  ['plain GET', `GET /a HTTP/1.1\r\n${H}Connection: close\r\n\r\n`],
  ['two pipelined GETs', `GET /p1 HTTP/1.1\r\n${H}\r\nGET /p2 HTTP/1.1\r\n${H}Connection: close\r\n\r\n`],
  ['three pipelined, a POST between', `GET /p1 HTTP/1.1\r\n${H}\r\nPOST /p2 HTTP/1.1\r\n${H}Content-Length: 3\r\n\r\nabcGET /p3 HTTP/1.1\r\n${H}Connection: close\r\n\r\n`],
  ['CL + TE', `POST /s HTTP/1.1\r\n${H}Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n${H}\r\n`],
  ['TE + CL', `POST /s HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\nGET /smuggled HTTP/1.1\r\n${H}\r\n0\r\n\r\n`],
  ['duplicate Content-Length, different', `POST /s HTTP/1.1\r\n${H}Content-Length: 3\r\nContent-Length: 30\r\n\r\nabc`],
  ['duplicate Content-Length, equal', `POST /s HTTP/1.1\r\n${H}Content-Length: 3\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc`],
  ['Content-Length list', `POST /s HTTP/1.1\r\n${H}Content-Length: 3, 3\r\n\r\nabc`],
  ['Content-Length negative', `POST /s HTTP/1.1\r\n${H}Content-Length: -1\r\n\r\n`],
  ['Content-Length plus', `POST /s HTTP/1.1\r\n${H}Content-Length: +3\r\n\r\nabc`],
  ['Content-Length hex', `POST /s HTTP/1.1\r\n${H}Content-Length: 0x3\r\n\r\nabc`],
  ['Content-Length with spaces around', `POST /s HTTP/1.1\r\n${H}Content-Length:  3 \r\nConnection: close\r\n\r\nabc`],
  ['Content-Length 0 on a GET', `GET /z HTTP/1.1\r\n${H}Content-Length: 0\r\nConnection: close\r\n\r\n`],
  ['TE: chunked, identity', `POST /s HTTP/1.1\r\n${H}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n`],
  ['TE: gzip, chunked', `POST /s HTTP/1.1\r\n${H}Transfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n`],
  ['TE: identity', `POST /s HTTP/1.1\r\n${H}Transfer-Encoding: identity\r\nConnection: close\r\n\r\n`],
  ['TE: CHUNKED', `POST /s HTTP/1.1\r\n${H}Transfer-Encoding: CHUNKED\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n`],
  ['TE twice', `POST /s HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n`],
  ['TE: xchunked', `POST /s HTTP/1.1\r\n${H}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n`],
  ['TE space before colon', `POST /s HTTP/1.1\r\n${H}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n`],
  ['TE obs-folded', `POST /s HTTP/1.1\r\n${H}Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n`],
  ['obs-fold', `GET /f HTTP/1.1\r\n${H}X-A: 1\r\n 2\r\n\r\n`],
  ['bare LF line ends', `GET /lf HTTP/1.1\n${H.replace('\r\n', '\n')}\n`],
  ['bare LF after a field', `GET /lf HTTP/1.1\r\n${H}X-A: 1\nConnection: close\r\n\r\n`],
  ['bare LF ending the head', `GET /lf HTTP/1.1\r\n${H}Connection: close\r\n\n`],
  ['bare CR', `GET /cr HTTP/1.1\r${H}\r\n`],
  ['bare CR in a value', `GET /cr HTTP/1.1\r\n${H}X-A: a\rb\r\n\r\n`],
  ['NUL in a value', `GET /n HTTP/1.1\r\n${H}X-A: a\0b\r\n\r\n`],
  ['NUL in the target', `GET /n\0x HTTP/1.1\r\n${H}\r\n`],
  ['control in a name', `GET /n HTTP/1.1\r\n${H}X\x01A: a\r\n\r\n`],
  ['space in a name', `GET /n HTTP/1.1\r\n${H}X A: a\r\n\r\n`],
  ['empty name', `GET /n HTTP/1.1\r\n${H}: a\r\n\r\n`],
  ['empty value', `GET /ev HTTP/1.1\r\n${H}X-Empty:\r\nConnection: close\r\n\r\n`],
  ['value with tabs and obs-text', Buffer.from(`GET /ot HTTP/1.1\r\n${H}X-A: \ta\xe9\xff b\t \r\nConnection: close\r\n\r\n`, 'latin1').toString('latin1')],
  ['leading empty lines', `\r\n\r\nGET /lead HTTP/1.1\r\n${H}Connection: close\r\n\r\n`],
  ['two spaces after the method', `GET  /sp HTTP/1.1\r\n${H}\r\n`],
  ['two spaces before the version', `GET /sp  HTTP/1.1\r\n${H}Connection: close\r\n\r\n`],
  ['tab after the method', `GET\t/sp HTTP/1.1\r\n${H}\r\n`],
  ['space at the end of the request line', `GET /sp HTTP/1.1 \r\n${H}\r\n`],
  ['lower-case http', `GET /v http/1.1\r\n${H}\r\n`],
  ['chunk size not hex', `POST /c HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n`],
  ['chunk size overflow', `POST /c HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nabc\r\n0\r\n\r\n`],
  ['chunk without CRLF after data', `POST /c HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n`],
  ['chunk extension with a bare LF', `POST /c HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n3;a=b\nabc\r\n0\r\n\r\n`],
  ['chunk size with a space', `POST /c HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n3 \r\nabc\r\n0\r\n\r\n`],
  ['chunk size with a sign', `POST /c HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n+3\r\nabc\r\n0\r\n\r\n`],
  ['chunk extensions', `POST /c HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n3;a=b;c="d e"\r\nabc\r\n0;z\r\n\r\n`],
  ['trailers', `POST /c HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\nX-U: 2\r\n\r\n`],
  ['a bad trailer', `POST /c HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\nX T: 1\r\n\r\n`],
  ['100 KB of headers', `GET /big HTTP/1.1\r\n${H}X-Big: ${'a'.repeat(100 * 1024)}\r\n\r\n`],
  ['100 KB request line', `GET /${'a'.repeat(100 * 1024)} HTTP/1.1\r\n${H}\r\n`],
  ['3,000 small headers', `GET /many HTTP/1.1\r\n${H}${'X-A: b\r\n'.repeat(3000)}\r\n`],
  ['1,200 tiny headers', `GET /many HTTP/1.1\r\n${H}${'X: b\r\n'.repeat(1200)}Connection: close\r\n\r\n`],
  ['absolute-form, Host matches', `GET http://shop.test/abs?q=1 HTTP/1.1\r\n${H}Connection: close\r\n\r\n`],
  ['absolute-form, another host', `GET http://evil.test/x HTTP/1.1\r\n${H}\r\n`],
  ['absolute-form with userinfo', `GET http://a@shop.test/x HTTP/1.1\r\n${H}\r\n`],
  ['absolute-form, other scheme', `GET ftp://shop.test/x HTTP/1.1\r\n${H}\r\n`],
  ['asterisk-form', `OPTIONS * HTTP/1.1\r\n${H}\r\n`],
  ['CONNECT', 'CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n'],
  ['authority-form with GET', `GET evil.test:443 HTTP/1.1\r\n${H}\r\n`],
  ['dot segments', `GET /a/../admin/x HTTP/1.1\r\n${H}\r\n`],
  ['encoded dot segments', `GET /a/%2e%2E/admin/x HTTP/1.1\r\n${H}\r\n`],
  ['encoded slash', `GET /admin%2fx HTTP/1.1\r\n${H}\r\n`],
  ['backslash', `GET /x\\..\\admin HTTP/1.1\r\n${H}\r\n`],
  ['invalid escape', `GET /x%G0 HTTP/1.1\r\n${H}\r\n`],
  ['obs-text in the target', Buffer.from(`GET /\xe9 HTTP/1.1\r\n${H}Connection: close\r\n\r\n`, 'latin1').toString('latin1')],
  ['DEL in the target', `GET /\x7f HTTP/1.1\r\n${H}Connection: close\r\n\r\n`],
  ['fragment in the target', `GET /f#x HTTP/1.1\r\n${H}Connection: close\r\n\r\n`],
  ['%61dmin', `GET /%61dmin/x HTTP/1.1\r\n${H}\r\n`],
  ['//admin', `GET //admin/x HTTP/1.1\r\n${H}\r\n`],
  ['/%2561dmin', `GET /%2561dmin HTTP/1.1\r\n${H}Connection: close\r\n\r\n`],
  ['/ADMIN', `GET /ADMIN HTTP/1.1\r\n${H}Connection: close\r\n\r\n`],
  ['HTTP/2.0', `GET /v HTTP/2.0\r\n${H}\r\n`],
  ['no version', 'GET /v\r\n\r\n'],
  ['HTTP/0.9', `GET /v HTTP/0.9\r\n${H}\r\n`],
  ['HTTP/3', `GET /v HTTP/3\r\n${H}\r\n`],
  ['HTTP/1.2', `GET /v HTTP/1.2\r\n${H}\r\n`],
  ['HTTP/11.1', `GET /v HTTP/11.1\r\n${H}\r\n`],
  ['h2 preface', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'],
  ['HTTP/1.0 without Host', 'GET /old HTTP/1.0\r\n\r\n'],
  ['HTTP/1.0 keep-alive', 'GET /old1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /old2 HTTP/1.0\r\n\r\n'],
  ['HTTP/1.1 without Host', 'GET /nohost HTTP/1.1\r\n\r\n'],
  ['two Host headers', `GET /h HTTP/1.1\r\n${H}Host: admin.internal\r\n\r\n`],
  ['two Host headers, case', `GET /h HTTP/1.1\r\n${H}hOST: shop.test\r\n\r\n`],
  ['Host with a path', 'GET /h HTTP/1.1\r\nHost: shop.test/admin\r\n\r\n'],
  ['Host with userinfo', 'GET /h HTTP/1.1\r\nHost: a@shop.test\r\n\r\n'],
  ['Host empty', 'GET /h HTTP/1.1\r\nHost: \r\n\r\n'],
  ['Host with a port', 'GET /h HTTP/1.1\r\nHost: shop.test:8080\r\nConnection: close\r\n\r\n'],
  ['method with a control', `G\x01T /m HTTP/1.1\r\n${H}\r\n`],
  ['lower-case method', `get /m HTTP/1.1\r\n${H}\r\n`],
  ['unknown method', `FROB /m HTTP/1.1\r\n${H}\r\n`],
  ['PATCH', `PATCH /m HTTP/1.1\r\n${H}Content-Length: 1\r\nConnection: close\r\n\r\nx`],
  ['HEAD', `HEAD /m HTTP/1.1\r\n${H}Connection: close\r\n\r\n`],
  ['planted forwarding headers', `GET /fwd HTTP/1.1\r\n${H}X-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nForwarded: for=6.6.6.6;host=evil\r\nX-Forwarded-Host: evil\r\nConnection: close\r\n\r\n`],
  ['hop-by-hop headers', `GET /hop HTTP/1.1\r\n${H}Connection: close, X-Secret\r\nX-Secret: s\r\nProxy-Authorization: Basic x\r\nKeep-Alive: 5\r\nTE: trailers\r\nUpgrade: h2c\r\n\r\n`],
  ['duplicate fields joined', `GET /dup HTTP/1.1\r\n${H}Cookie: a=1\r\nCookie: b=2\r\nX-D: 1\r\nX-D: 2\r\nUser-Agent: u1\r\nUser-Agent: u2\r\nConnection: close\r\n\r\n`],
  ['a body after a GET', `GET /g HTTP/1.1\r\n${H}Content-Length: ${'GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n'.length}\r\nConnection: close\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n`],
  ['chunked body forwarded whole', `POST /ch HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n`],
  ['Expect: 100-continue', `POST /e HTTP/1.1\r\n${H}Expect: 100-continue\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi`],
  ['Expect: something else', `POST /e HTTP/1.1\r\n${H}Expect: 200-ok\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi`],
  ['Upgrade: websocket', `GET /ws HTTP/1.1\r\n${H}Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n`],
  ['rate limited twice', `GET /limited/a HTTP/1.1\r\n${H}\r\nGET /limited/b HTTP/1.1\r\n${H}\r\nGET /limited/c HTTP/1.1\r\n${H}Connection: close\r\n\r\n`],
  ['too large body', `POST /big HTTP/1.1\r\n${H}Content-Length: 99999999\r\n\r\nabc`],
  ['huge Content-Length', `POST /big HTTP/1.1\r\n${H}Content-Length: 99999999999999999999\r\n\r\nabc`],
  ['edge endpoint pipelined after a reject', `GET /admin/x HTTP/1.1\r\n${H}\r\nGET /_flashgate/nope HTTP/1.1\r\n${H}Connection: close\r\n\r\n`]
]

/** Valid requests the mutations start from. */
const BASES = [
  `GET /a/b?x=1&y=%20 HTTP/1.1\r\n${H}User-Agent: t/1\r\nAccept: */*\r\nCookie: s=1; t=2\r\nConnection: close\r\n\r\n`,
  `POST /buy HTTP/1.1\r\n${H}Content-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello`,
  `POST /chunk HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n1;e=1\r\n!\r\n0\r\n\r\n`,
  'GET /old HTTP/1.0\r\nHost: shop.test\r\nX-A: 1\r\n\r\n'
]
const BYTES = ['\0', '\t', ' ', '\r', '\n', ':', ',', ';', '"', '\x7f', '\x80', '\xff', 'A', 'a', '0', 'f', '-', '/', '?', '%', '#', '\\', '@']
const FIELDS = ['Content-Length: 0', 'Content-Length: 5', 'Transfer-Encoding: chunked', 'Host: other.test', 'Expect: 100-continue',
  'Connection: keep-alive', 'Transfer-Encoding: gzip, chunked', 'Transfer-Encoding: identity', 'Cookie: a=1', 'X-Dup: 1', ' folded', 'Content-Length: 05', 'Content-Length:5']

t.test('strict and node:http listeners: same answers, same requests upstream', async (t) => {
  const up = { node: await recorder(t), strict: await recorder(t) }
  const server = 'server: { max_header_size: 16kb, headers_timeout: 1s, request_timeout: 3s, body_timeout: 1s, max_body_size: 1kb, parser: PARSER }\n'
  const gw = {
    node: await startTestGateway(t, { config: load(baseYaml(up.node.url, ROUTES, server.replace('PARSER', 'node'))) }),
    strict: await startTestGateway(t, { config: load(baseYaml(up.strict.url, ROUTES, server.replace('PARSER', 'strict'))) })
  }
  // A deterministic generator (xorshift), so a failure names a reproducible case.
  let seed = 0x2545f491
  const rnd = (n: number): number => { seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5; return (seed >>> 0) % n }
  const pick = <T>(xs: readonly T[]): T => xs[rnd(xs.length)] as T
  const corpus: Array<[string, Buffer]> = FIXED.map(([n, s]) => [n, Buffer.from(s, 'latin1')])
  for (let i = 0; i < 160; i++) {
    const base = pick(BASES)
    let s = base
    const op = rnd(5)
    const at = rnd(s.length)
    if (op === 0) s = s.slice(0, at) + pick(BYTES) + s.slice(at + 1)
    else if (op === 1) s = s.slice(0, at) + pick(BYTES) + s.slice(at)
    else if (op === 2) s = s.slice(0, at) + s.slice(at + 1)
    else if (op === 3) {
      const lines = s.split('\r\n')
      const l = 1 + rnd(Math.max(1, lines.indexOf('') - 1))
      lines.splice(l, 0, lines[l] as string)
      s = lines.join('\r\n')
    } else s = s.replace('\r\n', '\r\n' + pick(FIELDS) + '\r\n')
    corpus.push([`mutation ${i} (op ${op} at ${at}) ${JSON.stringify(s.slice(0, 200))}`, Buffer.from(s, 'latin1')])
  }
  let accepted = 0
  let refused = 0
  let diverged = 0
  for (const [name, data] of corpus) {
    up.node.seen.length = 0
    up.strict.seen.length = 0
    const [a, b] = await Promise.all([exchange(gw.node.address.port, data), exchange(gw.strict.address.port, data)])
    const an = answers(a)
    const bn = answers(b)
    // node:http answers a few malformed heads itself without a body (HTTP/1.1 without Host): the strict
    // listener gives them the JSON BAD_REQUEST the contract asks for; the statuses must still agree.
    const bs = bn.map((x, i) => an[i] !== undefined && !an[i]!.includes(' ') ? x.split(' ')[0] as string : x)
    if (closedThenJunk(data) && an.length === 1 && an[0] === '400 BAD_REQUEST' && bs.length === 1 && up.node.seen.length === 1) {
      // The one known divergence: bytes after a request with `Connection: close`. node:http parses
      // them, answers 400 to the junk and loses the forwarded request's answer; the strict listener
      // answers that request and reads nothing after it (RFC 9112 §9.6). Both forward the same request.
      t.equal(bs[0], '200', `${name}: the strict listener answers the request before Connection: close`)
      diverged++
    } else {
      t.same(bs, an, `${name}: same answers (${an.join(', ') || 'none'})`)
    }
    // Pipelined requests reach the upstream in a different order (node:http hands the next head over
    // while the previous request is forwarded; the strict listener takes one at a time): compare as sets.
    const order = (xs: Seen[]): Seen[] => [...xs].sort((x, y) => (x.url < y.url ? -1 : x.url > y.url ? 1 : 0))
    t.same(order(up.strict.seen), order(up.node.seen), `${name}: the same requests reached the upstream`)
    if (up.node.seen.length > 0) accepted++; else refused++
  }
  t.ok(accepted >= 40 && refused >= 60, `both kinds in the corpus: ${accepted} forwarded, ${refused} answered at the edge (${corpus.length} requests)`)
  t.ok(diverged <= 5, `${diverged} cases of bytes after Connection: close (the known divergence), few`)
  // Both still serve.
  for (const g of [gw.node, gw.strict]) {
    t.same(answers(await exchange(g.address.port, Buffer.from(`GET /alive HTTP/1.1\r\n${H}Connection: close\r\n\r\n`))), ['200'], 'alive after the corpus')
  }
})

/** A request whose head says `Connection: close`, followed by bytes that are not part of its body. */
function closedThenJunk (data: Buffer): boolean {
  const s = data.toString('latin1')
  const end = s.indexOf('\r\n\r\n')
  if (end === -1 || !/\r\nConnection: close\r\n/i.test(s.slice(0, end + 2))) return false
  const head = s.slice(0, end)
  const cl = /\r\nContent-Length: *(\d+)/i.exec(head)
  return !/\r\nTransfer-Encoding:/i.test(head) && s.length > end + 4 + (cl === null ? 0 : Number(cl[1]))
}

function load (text: string): ReturnType<typeof loadOk> { return loadOk(text) }
function loadOk (text: string): import('../../conf/types.js').Config {
  const r = loadConfigText(text, '/virtual/flashgate.yaml', {})
  if (!r.ok) throw new Error(r.errors.join('\n'))
  return r.config
}

t.test('a rejected request with a large unread body, then a pipelined one: both answered on both listeners', async (t) => {
  const up = { node: await recorder(t), strict: await recorder(t) }
  const server = 'server: { body_timeout: 2s, parser: PARSER }\n'
  const gw = {
    node: await startTestGateway(t, { config: load(baseYaml(up.node.url, ROUTES, server.replace('PARSER', 'node'))) }),
    strict: await startTestGateway(t, { config: load(baseYaml(up.strict.url, ROUTES, server.replace('PARSER', 'strict'))) })
  }
  // 200 KB, answered before any of it is read: the rest is read and dropped, and the next request served.
  const body = 'x'.repeat(200 * 1024)
  const data = Buffer.from(`POST /admin/up HTTP/1.1\r\n${H}Content-Length: ${body.length}\r\n\r\n${body}GET /after HTTP/1.1\r\n${H}Connection: close\r\n\r\n`, 'latin1')
  const [a, b] = await Promise.all([exchange(gw.node.address.port, data), exchange(gw.strict.address.port, data)])
  t.same(answers(a), ['403 BLOCKED', '200'], 'node:http: 403, then the next request')
  t.same(answers(b), answers(a), 'strict: the same')
  t.same(up.strict.seen.map((s) => s.url), ['/after'], 'only the second request reached the upstream')
})
