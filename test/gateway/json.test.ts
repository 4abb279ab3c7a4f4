/**
 * gateway/http/json.ts is the one writer of JSON answers: every answer it writes carries the JSON
 * content type, no-store and a content-length that matches the body, with the same header order
 * the old per-module writers used. Checked on the raw bytes of a real server and of a real gateway
 * (node:http and the strict listener).
 */
import t from 'tap'
import type { Test } from 'tap'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { JSON_HEADERS, rejectionHead, sendJson, sendRejection, writeRejection } from '../../gateway/http/json.js'
import { rejection } from '../../gateway/pipeline/reject.js'
import { baseYaml, yamlConfig } from '../helpers/config.js'
import { raw, startOrigin, startTestGateway } from '../helpers/gateway.js'

interface Wire { status: number, lines: string[], headers: Map<string, string[]>, body: Buffer }

/** Split one HTTP/1.1 answer into its status, header lines (without Date), headers by name and body. */
function parse (bytes: string): Wire {
  const end = bytes.indexOf('\r\n\r\n')
  if (end < 0) throw new Error(`no complete head in ${JSON.stringify(bytes)}`)
  const [statusLine, ...lines] = bytes.slice(0, end).split('\r\n')
  const headers = new Map<string, string[]>()
  for (const l of lines) {
    const i = l.indexOf(':')
    const name = l.slice(0, i).toLowerCase()
    headers.set(name, [...(headers.get(name) ?? []), l.slice(i + 1).trim()])
  }
  return {
    status: Number((statusLine ?? '').split(' ')[1]),
    lines: lines.filter((l) => !/^date:/i.test(l)),
    headers,
    body: Buffer.from(bytes.slice(end + 4), 'latin1')
  }
}

/** The three headers every JSON answer must carry, and a length that is the body's. */
function checkJson (t: Test, w: Wire, what: string): void {
  t.same(w.headers.get('content-type'), ['application/json'], `${what}: content-type`)
  t.same(w.headers.get('cache-control'), ['no-store'], `${what}: no-store`)
  t.same(w.headers.get('content-length'), [String(w.body.length)], `${what}: content-length is the body's length`)
  t.notOk(w.headers.has('transfer-encoding'), `${what}: not chunked`)
  t.doesNotThrow(() => JSON.parse(w.body.toString('utf8')), `${what}: the body is JSON`)
}

const GET = (path: string): string => `GET ${path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n`

t.test('the writers on a bare node:http server', async (t) => {
  const r429 = rejection('RATE_LIMITED', 'slow down', { headers: ['retry-after', '1'] })
  const server = createServer((req, res) => {
    switch (req.url) {
      case '/value': sendJson(res, 200, { city: 'Zürich', n: 1 }, ['x-extra', 'yes']); return
      case '/bytes': sendJson(res, 202, Buffer.from('{"pre":"encoded"}')); return
      case '/edge-rejection': sendRejection(res, r429); return
      case '/rejection': writeRejection(res, r429); return
      case '/rejection-id': writeRejection(res, r429, ['allow', 'GET'], true, 'req-1'); return
      case '/twice': writeRejection(res, r429); writeRejection(res, rejection('BAD_REQUEST', 'x')); return
      default: res.writeHead(500); res.end()
    }
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.close() })
  const port = (server.address() as AddressInfo).port

  let w = parse(await raw(port, GET('/value')))
  t.equal(w.status, 200)
  checkJson(t, w, 'sendJson(value)')
  t.equal(w.body.toString('utf8'), '{"city":"Zürich","n":1}')
  t.equal(w.body.length, Buffer.byteLength('{"city":"Zürich","n":1}'), 'length counts bytes, not characters')
  t.same(w.lines.slice(0, 4), ['content-type: application/json', 'cache-control: no-store', `content-length: ${w.body.length}`, 'x-extra: yes'], 'JSON headers first, then the caller\'s')

  w = parse(await raw(port, GET('/bytes')))
  t.equal(w.status, 202)
  checkJson(t, w, 'sendJson(bytes)')
  t.equal(w.body.toString(), '{"pre":"encoded"}', 'pre-encoded bytes are written as they are')

  for (const path of ['/edge-rejection', '/rejection']) {
    w = parse(await raw(port, GET(path)))
    t.equal(w.status, 429, path)
    checkJson(t, w, path)
    t.same(JSON.parse(w.body.toString()), { code: 'RATE_LIMITED', message: 'slow down' })
    t.same(w.lines.slice(0, 4), ['content-type: application/json', 'cache-control: no-store', `content-length: ${w.body.length}`, 'retry-after: 1'], `${path}: the rejection's own headers after the JSON ones`)
  }

  w = parse(await raw(port, GET('/rejection-id')))
  checkJson(t, w, 'writeRejection(extra, close, id)')
  t.same(w.lines.slice(0, 7), ['content-type: application/json', 'cache-control: no-store', `content-length: ${w.body.length}`, 'retry-after: 1', 'allow: GET', 'x-request-id: req-1', 'connection: close'])
  // The cached header list of a Rejection is not changed by a call that adds a request id.
  w = parse(await raw(port, GET('/rejection')))
  t.notOk(w.headers.has('x-request-id'), 'no request id leaks into the cached header list')
  w = parse(await raw(port, GET('/twice')))
  t.equal(w.status, 429, 'a second rejection after the first is not written')

  // The raw head the clientError handler and the strict listener write is what node:http writes.
  const head = rejectionHead(r429)
  t.equal(head, `HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\ncache-control: no-store\r\ncontent-length: ${r429.body.length}\r\n`)
  t.same(JSON_HEADERS, ['content-type', 'application/json', 'cache-control', 'no-store'])
})

const ROUTES = `
  - name: buy
    match: { path: /buy/:campaign/:product, methods: [POST] }
    guards:
      - signed_link: {}
    upstream: origin
`
const CAMPAIGN = `
identity: { user: header x-user-id }
secrets:
  link_keys: { k1: "0123456789abcdef0123456789abcdef" }
campaigns:
  - id: c1
    starts_at: 2020-01-01T00:00:00Z
    ends_at: 2099-01-01T00:00:00Z
    products:
      - { id: p1, quota: 5 }
`

for (const parser of ['node', 'strict'] as const) {
  t.test(`every JSON answer of a gateway (${parser} listener)`, async (t) => {
    const origin = await startOrigin(t)
    const gw = await startTestGateway(t, { config: yamlConfig(baseYaml(origin.url, ROUTES, `server: { parser: ${parser} }\n` + CAMPAIGN)) })
    const port = gw.address.port
    const adminPort = Number(new URL(gw.adminUrl as string).port)
    const cases: Array<[number, string, number, string | null]> = [
      [port, '/_flashgate/time', 200, null],
      [port, '/_flashgate/time?campaign=c1', 200, null],
      [port, '/_flashgate/time?campaign=nope', 404, 'NOT_FOUND'],
      [port, '/_flashgate/link?campaign=c1&product=p1', 401, 'UNAUTHENTICATED'],
      [port, '/_flashgate/challenge', 404, 'NOT_FOUND'],
      [port, '/_flashgate/queue?campaign=c1', 404, 'NOT_FOUND'],
      [port, '/_flashgate/nothing', 404, 'NOT_FOUND'],
      [port, '/no/route', 404, 'NOT_FOUND'],
      [adminPort, '/healthz', 200, null],
      [adminPort, '/admin/quota/c1/p1', 200, null],
      [adminPort, '/admin/quota/c1/nope', 404, 'NOT_FOUND'],
      [adminPort, '/admin/nothing', 404, 'NOT_FOUND']
    ]
    for (const [p, path, status, code] of cases) {
      const w = parse(await raw(p, GET(path)))
      t.equal(w.status, status, `${path}: status`)
      checkJson(t, w, path)
      if (code !== null) t.equal(JSON.parse(w.body.toString()).code, code, `${path}: code`)
      if (p === port) t.equal(w.headers.get('x-request-id')?.length, 1, `${path}: one request id`)
    }
    // A 405 keeps its Allow beside the JSON headers.
    const w = parse(await raw(port, 'POST /_flashgate/time HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'))
    t.equal(w.status, 405)
    checkJson(t, w, 'POST /_flashgate/time')
    t.same(w.headers.get('allow'), ['GET, HEAD'])
    const a = parse(await raw(adminPort, 'GET /admin/reload HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n'))
    t.equal(a.status, 405)
    checkJson(t, a, 'GET /admin/reload')
    t.same(a.headers.get('allow'), ['POST'], 'admin: a header set before the answer is kept')
  })
}
