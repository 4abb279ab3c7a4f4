// Path normalisation before routing (nginx-style): a table over normalizePath, then a real gateway where
// an /admin route denies everyone and a catch-all goes to the same origin: every spelling of /admin must
// hit the /admin route, and what reaches the origin is the normalised path.
import t from 'tap'
import { normalizePath, parseTarget } from '../../gateway/http/context.js'
import { baseYaml, yamlConfig } from '../helpers/config.js'
import { raw, startOrigin, startTestGateway } from '../helpers/gateway.js'

t.test('normalizePath table', async (t) => {
  const table: Array<[string, string | null]> = [
    ['/', '/'],
    ['/buy/nov11/153', '/buy/nov11/153'],
    ['/%61dmin/x', '/admin/x'],
    ['/%41dmin/x', '/Admin/x'], // case stays significant
    ['//admin/x', '/admin/x'],
    ['///admin//x//', '/admin/x/'],
    ['/a%2Db%5Fc%2ed%7E', '/a-b_c.d~'],
    ['/caf%c3%a9', '/caf%C3%A9'],
    ['/a%20b', '/a%20b'],
    ['/a%3fb', '/a%3Fb'],
    ['/.well-known/x', '/.well-known/x'],
    ['/a/.b/c', '/a/.b/c'],
    ['/a/..b', '/a/..b'],
    ['/a/./b', null],
    ['/a/../b', null],
    ['/a/..', null],
    ['/a/.', null],
    ['/a/%2e%2e/b', null],
    ['/a/%2E/b', null],
    ['/a/.%2e', null],
    ['/a%2fb', null],
    ['/a%2Fb', null],
    ['/a%5cb', null],
    ['/a\\b', null],
    ['/a%00b', null],
    ['/a%', null],
    ['/a%4', null],
    ['/a%zz', null],
    ['/a%g1', null],
    ['/%', null]
  ]
  for (const [input, want] of table) t.equal(normalizePath(input), want, JSON.stringify(input))
  t.same(parseTarget('//x?a=%2F'), { path: '/x', query: 'a=%2F', authority: null, rewritten: true }, 'the query is left alone')
  t.same(parseTarget('/x?a'), { path: '/x', query: 'a', authority: null, rewritten: false })
})

t.test('every spelling of /admin hits the /admin route; the origin sees the normalised path', async (t) => {
  const origin = await startOrigin(t)
  const config = yamlConfig(baseYaml(origin.url, `
  - name: admin
    match: { path_prefix: /admin }
    guards:
      - deny: { ips: [0.0.0.0/0, "::/0"] }
    upstream: origin
  - name: site
    match: { path_prefix: / }
    upstream: origin
`))
  const gw = await startTestGateway(t, { config })
  const port = gw.address.port
  const get = async (target: string): Promise<{ status: number, body: string }> => {
    const r = await raw(port, `GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(r)?.[1] ?? 0)
    return { status, body: r.slice(r.indexOf('\r\n\r\n') + 4) }
  }
  for (const target of ['/admin/x', '/%61dmin/x', '//admin/x', '/%2561dmin'.replace('%25', '%'), '///%61%64min//x', 'http://x//%61dmin/x']) {
    const r = await get(target)
    t.equal(r.status, 403, `${target} → 403`)
    t.match(r.body, /"code":"BLOCKED"/, `${target}: the admin route's deny answered`)
  }
  t.equal(origin.seen.length, 0, 'nothing reached the origin')
  for (const target of ['/a/%2e%2e/admin/x', '/x%2fadmin', '/x%00', '/x%zz', '/x\\admin']) {
    const r = await get(target)
    t.equal(r.status, 400, `${target} → 400`)
    t.match(r.body, /"code":"BAD_REQUEST"/)
  }
  t.equal(origin.seen.length, 0, 'nothing reached the origin')
  const ok = await get('//shop//%41%62c/caf%c3%a9?q=%2F%61')
  t.equal(ok.status, 200)
  t.equal(origin.seen.at(-1)?.url, '/shop/Abc/caf%C3%A9?q=%2F%61', 'the origin received the normalised path, the query untouched')
  const plain = await get('/shop/x?y=1')
  t.equal(plain.status, 200)
  t.equal(origin.seen.at(-1)?.url, '/shop/x?y=1')
})
