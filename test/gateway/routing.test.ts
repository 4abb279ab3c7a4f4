import t from 'tap'
import { compileRouter } from '../../gateway/http/router.js'
import { baseYaml, yamlConfig } from '../helpers/config.js'
import { client, fetchText, raw, startOrigin, startTestGateway } from '../helpers/gateway.js'

const ROUTES = `
  - name: buy
    match: { host: seckill.example.com, path: /buy/:campaign/:product, methods: [POST] }
    upstream: origin
  - name: wild
    match: { host: "*.example.com", path: /hello }
    upstream: origin
  - name: exact
    match: { path: /exact }
    upstream: origin
  - name: get-only
    match: { path: /only-get, methods: [GET] }
    upstream: origin
  - name: api
    match: { path_prefix: /api/ }
    upstream: origin
`

t.test('router table', async (t) => {
  const cfg = yamlConfig(baseYaml('http://127.0.0.1:1', ROUTES + `
  - name: site
    match: { host: www.shop.test, path_prefix: / }
    upstream: origin
`))
  const r = compileRouter(cfg.routes)
  const name = (host: string, path: string, method: string): string | number => {
    const m = r.match(host, path, method)
    return typeof m === 'number' ? m : `${cfg.routes[m.index]?.name}${JSON.stringify(m.params)}`
  }
  const table: Array<[string, string, string, string | number]> = [
    ['seckill.example.com', '/buy/nov11/153', 'POST', 'buy{"campaign":"nov11","product":"153"}'],
    ['seckill.example.com', '/buy/nov11/15%203', 'POST', 'buy{"campaign":"nov11","product":"15 3"}'],
    ['seckill.example.com', '/buy/nov11/153', 'GET', -2],
    ['seckill.example.com', '/buy/nov11/153/', 'POST', -1],
    ['seckill.example.com', '/buy/nov11', 'POST', -1],
    ['seckill.example.com', '/buy//153', 'POST', -1],
    ['other.example.com', '/buy/nov11/153', 'POST', -1],
    ['a.example.com', '/hello', 'GET', 'wild{}'],
    ['a.b.example.com', '/hello', 'DELETE', 'wild{}'],
    ['example.com', '/hello', 'GET', -1],
    ['badexample.com', '/hello', 'GET', -1],
    ['anything', '/exact', 'PUT', 'exact{}'],
    ['anything', '/exact/', 'PUT', -1],
    ['x', '/only-get', 'GET', 'get-only{}'],
    ['x', '/only-get', 'HEAD', 'get-only{}'],
    ['x', '/only-get', 'POST', -2],
    ['x', '/api/', 'GET', 'api{}'],
    ['x', '/api/v1/x', 'GET', 'api{}'],
    ['x', '/api', 'GET', -1],
    ['www.shop.test', '/anything', 'GET', 'site{}'],
    ['www.shop.test', '/exact', 'GET', 'exact{}']
  ]
  for (const [host, path, method, want] of table) t.equal(name(host, path, method), want, `${method} ${host}${path}`)
  t.same(r.allowed('seckill.example.com', '/buy/a/b'), ['POST'])
  t.same(r.allowed('x', '/only-get').sort(), ['GET', 'HEAD'])
})

t.test('serving: routing, 404, 405, malformed targets, edge time', async (t) => {
  const origin = await startOrigin(t)
  const gw = await startTestGateway(t, { config: yamlConfig(baseYaml(origin.url, ROUTES)) })
  const d = client(t)

  let a = await fetchText(d, gw.url + '/buy/nov11/153?x=1', { method: 'POST', headers: { host: 'seckill.example.com' }, body: 'hi' })
  t.equal(a.status, 200)
  t.equal(a.json.path, '/buy/nov11/153?x=1', 'query forwarded')
  t.equal(a.json.bodyBytes, 2)

  a = await fetchText(d, gw.url + '/nope')
  t.equal(a.status, 404)
  t.same(a.json, { code: 'NOT_FOUND', message: 'no route' })
  t.equal(a.headers['cache-control'], 'no-store')
  t.equal(a.headers['content-type'], 'application/json')

  a = await fetchText(d, gw.url + '/only-get', { method: 'POST', body: '' })
  t.equal(a.status, 405)
  t.equal(a.json.code, 'METHOD_NOT_ALLOWED')
  t.equal(a.headers.allow, 'GET, HEAD')


  a = await fetchText(d, gw.url + '/_flashgate/time')
  t.equal(a.status, 200)
  t.ok(Math.abs(a.json.now - Date.now()) < 5000, 'edge clock')
  t.equal(a.headers['cache-control'], 'no-store')
  a = await fetchText(d, gw.url + '/_flashgate/unknown')
  t.equal(a.status, 404)

  const port = gw.address.port
  // absolute-form to a foreign host: refused, never proxied
  const before = origin.seen.length
  let r = await raw(port, 'GET http://evil.test/exact HTTP/1.1\r\nHost: evil.test\r\n\r\n'.replace('Host: evil.test', 'Host: 127.0.0.1'))
  t.match(r, /^HTTP\/1\.1 400 /, 'absolute-form authority must equal Host')
  // absolute-form that names us: forwarded in origin-form
  r = await raw(port, 'GET http://a.example.com/hello?q=1 HTTP/1.1\r\nHost: a.example.com\r\nConnection: close\r\n\r\n')
  t.match(r, /^HTTP\/1\.1 200 /)
  t.equal(origin.seen.at(-1)?.url, '/hello?q=1', 'origin saw origin-form')
  t.equal(origin.seen.length, before + 1)
  // (clients normalise dot segments themselves, so these go raw)
  r = await raw(port, 'GET /api/../exact HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
  t.match(r, /^HTTP\/1\.1 400 /, 'dot segments refused')
  r = await raw(port, 'GET /api/%2E%2e/exact HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
  t.match(r, /^HTTP\/1\.1 400 /, 'encoded dot segments refused')
  r = await raw(port, 'GET /api/a%2fb HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
  t.match(r, /^HTTP\/1\.1 400 /, 'encoded slash refused')
  r = await raw(port, 'GET /api/.well-known/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
  t.match(r, /^HTTP\/1\.1 200 /, 'dot files are fine')
  r = await raw(port, 'OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
  t.match(r, /^HTTP\/1\.1 400 /, '* target')
  r = await raw(port, 'CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n')
  t.match(r, /^HTTP\/1\.1 400 /, 'CONNECT')
  r = await raw(port, 'GET /exact HTTP/1.1\r\nHost: bad host!\r\nConnection: close\r\n\r\n')
  t.match(r, /^HTTP\/1\.1 400 /, 'bad Host')
  t.match(r, /"code":"BAD_REQUEST"/)
  r = await raw(port, 'GET /exact HTTP/1.1\r\nConnection: close\r\n\r\n')
  t.match(r, /^HTTP\/1\.1 400 /, 'HTTP/1.1 without Host')
  r = await raw(port, 'GARBAGE\r\n\r\n')
  t.match(r, /^HTTP\/1\.1 400 /, 'unparsable request')
  r = await raw(port, 'GET /exact HTTP/1.1\r\nHost: x\r\nX-Big: ' + 'a'.repeat(20000) + '\r\n\r\n')
  t.match(r, /^HTTP\/1\.1 431 /, 'oversized headers')
  t.equal(origin.seen.filter((s) => s.url.includes('evil')).length, 0, 'nothing forwarded to a foreign host')

  const metrics = await gw.metrics.registry.getSingleMetricAsString('flashgate_requests_total')
  t.match(metrics, /flashgate_requests_total\{route="_none",outcome="NOT_FOUND"\} [1-9]/)
  t.match(metrics, /flashgate_requests_total\{route="buy",outcome="passed"\} 1/)
})
