/**
 * Static routes (`static: DIR`, gateway/http/static.ts) with real requests to a real gateway: validators and
 * 304s, HEAD, 405, Cache-Control, content types, precompressed variants, index.html and the directory
 * redirect, guards before the file, streaming a large file, and every way out of DIR we could think of
 * (dot segments plain and encoded, backslashes, NUL, dotfiles, symlinks out) — refused without the
 * secret outside DIR ever appearing in an answer. The loader's checks of the key are here too.
 */
import { mkdirSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { brotliCompressSync, gzipSync } from 'node:zlib'
import { request } from 'undici'
import t from 'tap'
import type { Test } from 'tap'
import { Ajv } from 'ajv'
import { parse } from 'yaml'
import { loadConfigText } from '../../conf/load.js'
import { acceptsEncoding, noneMatch, safeSegments } from '../../gateway/http/static.js'
import { yamlConfig, tempDir } from '../helpers/config.js'
import { client, fetchText, raw, startTestGateway } from '../helpers/gateway.js'

const SECRET = 'TOP-SECRET-OUTSIDE-THE-ROOT'
const MTIME = new Date('2026-11-01T10:00:00Z')

/** A site directory `site/` beside an outside secret, with variants, an index, a sub-directory and symlinks. */
function makeSite (dir: string): { root: string, big: Buffer } {
  const root = join(dir, 'site')
  mkdirSync(join(root, 'sub'), { recursive: true })
  mkdirSync(join(root, 'assets'), { recursive: true })
  writeFileSync(join(dir, 'secret.txt'), SECRET)
  mkdirSync(join(dir, 'outside'))
  writeFileSync(join(dir, 'outside', 'x.txt'), SECRET)
  writeFileSync(join(root, 'index.html'), '<!doctype html><title>home</title>')
  writeFileSync(join(root, 'sub', 'index.html'), '<!doctype html><title>sub</title>')
  const js = 'console.log("hello from app.js");\n'.repeat(50)
  writeFileSync(join(root, 'assets', 'app.js'), js)
  writeFileSync(join(root, 'assets', 'app.js.br'), brotliCompressSync(js))
  writeFileSync(join(root, 'assets', 'app.js.gz'), gzipSync(js))
  writeFileSync(join(root, 'assets', 'style.css'), 'body { color: red }')
  writeFileSync(join(root, 'assets', 'only-gz.txt'), 'plain text')
  writeFileSync(join(root, 'assets', 'only-gz.txt.gz'), gzipSync('plain text'))
  writeFileSync(join(root, 'assets', 'data.bin'), Buffer.from([0, 1, 2, 3]))
  writeFileSync(join(root, 'assets', 'empty.txt'), '')
  writeFileSync(join(root, '.hidden'), SECRET)
  writeFileSync(join(root, 'a b.txt'), 'spaced')
  const big = Buffer.alloc(5 * 1024 * 1024 + 123)
  for (let i = 0; i < big.length; i++) big[i] = (i * 7 + 3) & 0xff
  writeFileSync(join(root, 'assets', 'big.bin'), big)
  symlinkSync(join(dir, 'secret.txt'), join(root, 'link-out.txt'))
  symlinkSync(join(dir, 'outside'), join(root, 'dir-out'))
  symlinkSync(join(root, 'assets', 'style.css'), join(root, 'link-in.css'))
  for (const f of ['index.html', 'sub/index.html', 'assets/app.js', 'assets/app.js.br', 'assets/app.js.gz', 'assets/style.css']) utimesSync(join(root, f), MTIME, MTIME)
  return { root, big }
}

async function siteGateway (t: Test, routes: string): Promise<{ url: string, port: number, root: string, big: Buffer, dir: string }> {
  const tmp = tempDir(t)
  const { root, big } = makeSite(tmp.dir)
  const file = tmp.write('flashgate.yaml', `listen: 127.0.0.1:0
admin: 127.0.0.1:0
access_log: { enabled: false }
routes:
${routes}
`)
  const r = loadConfigText((await import('node:fs')).readFileSync(file, 'utf8'), file, {})
  if (!r.ok) throw new Error(r.errors.join('\n'))
  const gw = await startTestGateway(t, { config: r.config })
  return { url: gw.url, port: gw.address.port, root, big, dir: tmp.dir }
}

const SITE_ROUTES = `  - name: page
    match: { path_prefix: / }
    static: { dir: ./site, cache_control: "public, max-age=600" }
`

t.test('a file: 200 with type, length, validators, caching headers; HEAD; 405', async (t) => {
  const s = await siteGateway(t, SITE_ROUTES)
  const d = client(t)
  const css = await fetchText(d, s.url + '/assets/style.css')
  t.equal(css.status, 200)
  t.equal(css.text, 'body { color: red }')
  t.equal(css.headers['content-type'], 'text/css; charset=utf-8')
  t.equal(css.headers['content-length'], String('body { color: red }'.length))
  t.match(css.headers.etag, /^"[0-9a-f]+-[0-9a-f]+"$/, 'strong ETag')
  t.equal(css.headers['last-modified'], MTIME.toUTCString())
  t.equal(css.headers['cache-control'], 'public, max-age=600', 'cache_control from the config')
  t.equal(css.headers.vary, 'Accept-Encoding')
  t.equal(css.headers['x-content-type-options'], 'nosniff')
  t.equal(css.headers['content-encoding'], undefined)

  const home = await fetchText(d, s.url + '/')
  t.equal(home.status, 200)
  t.match(home.text, /<title>home<\/title>/, '/ is index.html')
  t.equal(home.headers['content-type'], 'text/html; charset=utf-8')
  t.equal(home.headers['cache-control'], 'no-cache', 'HTML documents default to no-cache (revalidate)')

  const bin = await fetchText(d, s.url + '/assets/data.bin')
  t.equal(bin.headers['content-type'], 'application/octet-stream', 'unknown extension')
  t.equal((await fetchText(d, s.url + '/assets/app.js')).headers['content-type'], 'text/javascript; charset=utf-8')
  const empty = await fetchText(d, s.url + '/assets/empty.txt')
  t.equal(empty.status, 200)
  t.equal(empty.headers['content-length'], '0')
  t.equal((await fetchText(d, s.url + '/a%20b.txt')).text, 'spaced', 'a percent-encoded name')

  const head = await fetchText(d, s.url + '/assets/style.css', { method: 'HEAD' })
  t.equal(head.status, 200)
  t.equal(head.text, '', 'HEAD: no body')
  t.equal(head.headers['content-length'], css.headers['content-length'], 'HEAD: the GET length')
  t.equal(head.headers.etag, css.headers.etag)

  for (const method of ['POST', 'PUT', 'DELETE']) {
    const r = await fetchText(d, s.url + '/assets/style.css', { method, body: method === 'DELETE' ? null : 'x' })
    t.equal(r.status, 405, method)
    t.equal(r.json?.code, 'METHOD_NOT_ALLOWED')
    t.equal(r.headers.allow, 'GET, HEAD')
  }
})

t.test('If-None-Match and If-Modified-Since answer 304', async (t) => {
  const s = await siteGateway(t, SITE_ROUTES)
  const d = client(t)
  const first = await fetchText(d, s.url + '/assets/style.css')
  const etag = first.headers.etag as string
  for (const inm of [etag, `W/${etag}`, `"nope", ${etag}`, '*']) {
    const r = await fetchText(d, s.url + '/assets/style.css', { headers: { 'if-none-match': inm } })
    t.equal(r.status, 304, `If-None-Match: ${inm}`)
    t.equal(r.text, '')
    t.equal(r.headers.etag, etag)
    t.equal(r.headers['cache-control'], 'public, max-age=600')
    t.equal(r.headers['last-modified'], MTIME.toUTCString())
  }
  const changed = await fetchText(d, s.url + '/assets/style.css', { headers: { 'if-none-match': '"other"' } })
  t.equal(changed.status, 200, 'another ETag: the file')
  t.equal(changed.text, 'body { color: red }')

  t.equal((await fetchText(d, s.url + '/assets/style.css', { headers: { 'if-modified-since': MTIME.toUTCString() } })).status, 304, 'not modified since its mtime')
  t.equal((await fetchText(d, s.url + '/assets/style.css', { headers: { 'if-modified-since': new Date(MTIME.getTime() + 3600_000).toUTCString() } })).status, 304, 'nor since later')
  t.equal((await fetchText(d, s.url + '/assets/style.css', { headers: { 'if-modified-since': new Date(MTIME.getTime() - 1000).toUTCString() } })).status, 200, 'modified since a second earlier')
  t.equal((await fetchText(d, s.url + '/assets/style.css', { headers: { 'if-modified-since': 'not a date' } })).status, 200, 'an unreadable date is ignored')
  t.equal((await fetchText(d, s.url + '/assets/style.css', { headers: { 'if-none-match': '"other"', 'if-modified-since': MTIME.toUTCString() } })).status, 200,
    'If-None-Match decides when both are sent')

  // touching the file changes the ETag: the old one no longer matches
  utimesSync(join(s.root, 'assets', 'style.css'), new Date(MTIME.getTime() + 5000), new Date(MTIME.getTime() + 5000))
  const after = await fetchText(d, s.url + '/assets/style.css', { headers: { 'if-none-match': etag } })
  t.equal(after.status, 200, 'a changed mtime is a new ETag')
  t.not(after.headers.etag, etag)
})

t.test('precompressed variants by Accept-Encoding', async (t) => {
  const s = await siteGateway(t, SITE_ROUTES)
  const d = client(t)
  const js = 'console.log("hello from app.js");\n'.repeat(50)
  const get = async (ae: string | null, path = '/assets/app.js'): Promise<{ status: number, headers: Record<string, unknown>, body: Buffer }> => {
    const r = await request(s.url + path, { dispatcher: d, headers: ae === null ? {} : { 'accept-encoding': ae } })
    return { status: r.statusCode, headers: r.headers, body: Buffer.from(await r.body.arrayBuffer()) }
  }
  const br = await get('gzip, deflate, br')
  t.equal(br.headers['content-encoding'], 'br', 'br preferred when accepted')
  t.equal((await import('node:zlib')).brotliDecompressSync(br.body).toString(), js)
  t.equal(br.headers['content-type'], 'text/javascript; charset=utf-8', 'the type of the original')
  t.equal(br.headers.vary, 'Accept-Encoding')
  t.match(br.headers.etag, /-br"$/, 'the variant has its own ETag')
  const gz = await get('gzip')
  t.equal(gz.headers['content-encoding'], 'gzip')
  t.equal((await import('node:zlib')).gunzipSync(gz.body).toString(), js)
  t.match(gz.headers.etag, /-gz"$/)
  t.equal((await get('br;q=0, gzip;q=0.5')).headers['content-encoding'], 'gzip', 'br refused with q=0')
  t.equal((await get('*')).headers['content-encoding'], 'br', '* accepts br')
  t.equal((await get('*, br;q=0')).headers['content-encoding'], 'gzip', 'an explicit q=0 beats *')
  const plain = await get(null)
  t.equal(plain.headers['content-encoding'], undefined, 'no Accept-Encoding: the file itself')
  t.equal(plain.body.toString(), js)
  t.equal(plain.headers.vary, 'Accept-Encoding')
  const identity = await get('identity')
  t.equal(identity.headers['content-encoding'], undefined)
  t.equal((await get('br', '/assets/only-gz.txt')).headers['content-encoding'], undefined, 'no .br beside it: the file')
  t.equal((await get('gzip', '/assets/only-gz.txt')).headers['content-encoding'], 'gzip')
  t.equal((await get('gzip', '/assets/style.css')).headers['content-encoding'], undefined, 'no variant at all')
  // a variant's ETag revalidates the variant
  const r = await request(s.url + '/assets/app.js', { dispatcher: d, headers: { 'accept-encoding': 'br', 'if-none-match': br.headers.etag as string } })
  await r.body.dump()
  t.equal(r.statusCode, 304)
})

t.test('index.html, the directory redirect, 404 as JSON', async (t) => {
  const s = await siteGateway(t, SITE_ROUTES)
  const d = client(t)
  const sub = await fetchText(d, s.url + '/sub/')
  t.equal(sub.status, 200)
  t.match(sub.text, /<title>sub<\/title>/)
  const redirect = await fetchText(d, s.url + '/sub?x=1')
  t.equal(redirect.status, 301)
  t.equal(redirect.headers.location, '/sub/?x=1', 'a directory without its slash is redirected to it')
  const assets = await fetchText(d, s.url + '/assets/')
  t.equal(assets.status, 404, 'a directory without index.html: 404 (no listing)')
  t.equal(assets.json?.code, 'NOT_FOUND')
  const missing = await fetchText(d, s.url + '/nothing-here.js')
  t.equal(missing.status, 404)
  t.equal(missing.json?.code, 'NOT_FOUND')
  t.equal(missing.headers['content-type'], 'application/json')
  t.equal(missing.headers['cache-control'], 'no-store')
  t.equal((await fetchText(d, s.url + '/assets/style.css/')).status, 404, 'a file named as a directory')
  t.equal((await fetchText(d, s.url + '/link-in.css')).text, 'body { color: red }', 'a symlink inside DIR to a file inside DIR is served')
})

t.test('no way out of DIR, however the path is spelled', async (t) => {
  const s = await siteGateway(t, SITE_ROUTES)
  const attempts = [
    '/../secret.txt', '/site/../secret.txt', '/%2e%2e/secret.txt', '/%2E%2E/secret.txt', '/.%2e/secret.txt',
    '/%2e%2e%2fsecret.txt', '/assets/%2e%2e/%2e%2e/secret.txt', '/..%2fsecret.txt', '/..%5csecret.txt', '/..\\secret.txt',
    '/assets\\..\\..\\secret.txt', '/%5c..%5csecret.txt', '/secret.txt%00.html', '/%00', '/index.html%00',
    '/.hidden', '/%2ehidden', '/link-out.txt', '/dir-out/x.txt', '/dir-out/', '//secret.txt', '/%252e%252e/secret.txt',
    '/%c0%ae%c0%ae/secret.txt', '/%e0%80%ae%e0%80%ae/secret.txt', '/assets/..;/..;/secret.txt', '/%2e%2e'
  ]
  for (const path of attempts) {
    const answer = await raw(s.port, `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`, 3000)
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1] ?? 0)
    t.ok(status >= 400 && status < 500, `${path}: refused with a 4xx (got ${status})`)
    t.notMatch(answer, SECRET, `${path}: nothing from outside DIR`)
    if (status !== 400) t.match(answer, /"code":"NOT_FOUND"/, `${path}: 404 NOT_FOUND`)
  }
  // the gateway still serves afterwards
  t.equal((await fetchText(client(t), s.url + '/assets/style.css')).status, 200)
})

t.test('safeSegments: what reaches the file system', async (t) => {
  t.same(safeSegments('/a/b.js'), { segments: ['a', 'b.js'], dir: false })
  t.same(safeSegments('/'), { segments: [], dir: true })
  t.same(safeSegments('//a//b/'), { segments: ['a', 'b'], dir: true }, 'empty segments are skipped')
  t.same(safeSegments('/a%20b'), { segments: ['a b'], dir: false })
  t.same(safeSegments('/%252e%252e'), { segments: ['%2e%2e'], dir: false }, 'decoded once only')
  for (const bad of ['/..', '/a/../b', '/%2e%2e/x', '/a%2f..%2fb', '/a\\b', '/a%5cb', '/a%00', '/.git/config', '/a/.env', '/%', '/%zz', '/%c0%ae', 'x/y']) {
    t.equal(safeSegments(bad), null, bad)
  }
})

t.test('Accept-Encoding and If-None-Match parsing', async (t) => {
  t.ok(acceptsEncoding('gzip, br', 'br'))
  t.ok(acceptsEncoding('BR;q=0.1', 'br'))
  t.notOk(acceptsEncoding('br;q=0', 'br'))
  t.notOk(acceptsEncoding('br;q=0.0', 'br'))
  t.notOk(acceptsEncoding('gzip', 'br'))
  t.notOk(acceptsEncoding(undefined, 'br'))
  t.ok(acceptsEncoding('*', 'gzip'))
  t.notOk(acceptsEncoding('*;q=0', 'gzip'))
  t.notOk(acceptsEncoding('*, gzip;q=0', 'gzip'))
  t.notOk(acceptsEncoding('gzipx', 'gzip'))
  t.ok(noneMatch('"a", "b"', '"b"'))
  t.ok(noneMatch('W/"b"', '"b"'))
  t.notOk(noneMatch('"a"', '"b"'))
  t.ok(noneMatch(' * ', '"b"'))
})

t.test('guards run before the file', async (t) => {
  const s = await siteGateway(t, `  - name: blocked
    match: { path_prefix: /sub/ }
    guards:
      - deny: { ips: [127.0.0.0/8] }
    static: ./site
  - name: limited
    match: { path_prefix: /assets/, methods: [GET, HEAD] }
    guards:
      - rate_limit: { name: assets, key: ip, rate: 1/m, burst: 2 }
    static: ./site
`)
  const d = client(t)
  const blocked = await fetchText(d, s.url + '/sub/')
  t.equal(blocked.status, 403)
  t.equal(blocked.json?.code, 'BLOCKED', 'a deny guard answers before the file')
  t.equal((await fetchText(d, s.url + '/assets/style.css')).status, 200)
  t.equal((await fetchText(d, s.url + '/assets/style.css')).status, 200)
  const limited = await fetchText(d, s.url + '/assets/style.css')
  t.equal(limited.status, 429, 'the third within the burst is limited')
  t.equal(limited.json?.code, 'RATE_LIMITED')
  t.ok(limited.headers['retry-after'] !== undefined, 'with Retry-After')
  t.equal((await fetchText(d, s.url + '/index.html')).status, 404, 'no route for the rest: 404')
})

t.test('a large file streams whole; a client leaving mid-way costs nothing', async (t) => {
  const s = await siteGateway(t, SITE_ROUTES)
  const d = client(t)
  const r = await request(s.url + '/assets/big.bin', { dispatcher: d })
  t.equal(r.statusCode, 200)
  t.equal(r.headers['content-length'], String(s.big.length))
  const got = Buffer.from(await r.body.arrayBuffer())
  t.equal(got.length, s.big.length)
  t.ok(got.equals(s.big), 'byte for byte')
  // A client that reads a little and leaves: the gateway keeps serving.
  for (let i = 0; i < 5; i++) {
    const partial = await raw(s.port, 'GET /assets/big.bin HTTP/1.1\r\nHost: x\r\n\r\n', 300)
    t.match(partial, /^HTTP\/1\.1 200/)
  }
  const again = await request(s.url + '/assets/big.bin', { dispatcher: d })
  t.equal(Buffer.from(await again.body.arrayBuffer()).length, s.big.length, 'still serving after clients left mid-file')
})

t.test('the loader: static DIR relative to the file, exactly one of upstream and static, FILE:LINE:COL errors', async (t) => {
  const tmp = tempDir(t)
  makeSite(tmp.dir)
  writeFileSync(join(tmp.dir, 'plain.txt'), 'x')
  const file = join(tmp.dir, 'f.yaml')
  const load = (routes: string): ReturnType<typeof loadConfigText> => loadConfigText(`upstreams:
  u: { targets: ["http://127.0.0.1:7001"] }
routes:
${routes}`, file, {})
  const ok = load('  - { name: p, static: site }\n')
  t.ok(ok.ok, ok.ok ? '' : ok.errors.join('\n'))
  if (ok.ok) {
    const r = ok.config.routes[0]
    t.equal(r?.upstream, null)
    t.same(r?.static, { dir: join(tmp.dir, 'site'), cacheControl: 'public, max-age=60', htmlCacheControl: 'no-cache' }, 'defaults; DIR relative to the config file')
  }
  const long = load('  - name: p\n    static: { dir: ./site, cache_control: "public, max-age=31536000, immutable", html_cache_control: "private, max-age=5" }\n')
  t.ok(long.ok && long.config.routes[0]?.static?.cacheControl === 'public, max-age=31536000, immutable' && long.config.routes[0]?.static?.htmlCacheControl === 'private, max-age=5')
  const cases: Array<[string, RegExp]> = [
    ['  - name: p\n    static: ./nope\n', /f\.yaml:5:13: static: directory "\.\/nope" does not exist/],
    ['  - name: p\n    static: ./plain.txt\n', /f\.yaml:5:13: static: "\.\/plain\.txt" is not a directory/],
    ['  - name: p\n    upstream: u\n    static: ./site\n', /f\.yaml:6:13: route "p": use either upstream or static, not both/],
    ['  - name: p\n    match: { methods: [GET, POST] }\n    static: ./site\n', /f\.yaml:6:13: static: a static route answers GET and HEAD only, but its match\.methods has POST/],
    ['  - name: p\n    static: { dir: ./site, cache: x }\n', /f\.yaml:5:28: unknown key "cache" in static/],
    ['  - name: p\n    static: { cache_control: x }\n', /f\.yaml:5:13: static: missing required key "dir"/],
    ['  - name: p\n    static: { dir: ./site, cache_control: "a\\r\\nset-cookie: x" }\n', /f\.yaml:5:43: cache_control: must be printable ASCII/],
    ['  - name: p\n    static: ""\n', /f\.yaml:5:13: static/],
    ['  - name: p\n', /f\.yaml:4:5: route "p" is missing required key "upstream"/]
  ]
  for (const [routes, re] of cases) {
    const r = load(routes)
    t.notOk(r.ok, routes.trim())
    if (!r.ok) t.match(r.errors.join('\n'), re, re.source)
  }
  // from an included file, DIR is relative to that file
  mkdirSync(join(tmp.dir, 'routes'))
  mkdirSync(join(tmp.dir, 'routes', 'www'))
  writeFileSync(join(tmp.dir, 'routes', 'page.yaml'), 'routes:\n  - { name: p, static: www }\n')
  const inc = loadConfigText('include: [routes/page.yaml]\n', file, {})
  t.ok(inc.ok && inc.config.routes[0]?.static?.dir === join(tmp.dir, 'routes', 'www'), 'relative to the included file')
})

t.test('a reload that breaks the static route keeps the old config serving', async (t) => {
  const tmp = tempDir(t)
  makeSite(tmp.dir)
  const text = (dir: string): string => `listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\naccess_log: { enabled: false }\nroutes:\n  - { name: p, static: ${dir} }\n`
  const file = tmp.write('f.yaml', text('./site'))
  const gw = await startTestGateway(t, { configFile: file, config: yamlConfig(text('./site'), file) })
  const d = client(t)
  t.equal((await fetchText(d, gw.url + '/assets/style.css')).status, 200)
  writeFileSync(file, text('./gone'))
  const r = await gw.reload()
  t.notOk(r.ok, 'the reload is refused')
  t.match(JSON.stringify(r), /f\.yaml:5:24: static: directory/)
  t.equal((await fetchText(d, gw.url + '/assets/style.css')).status, 200, 'the old config keeps serving')
})

t.test('the JSON schema knows static: exactly one of upstream and static', async (t) => {
  const schema = JSON.parse((await import('node:fs')).readFileSync(new URL('../../conf/flashgate.schema.json', import.meta.url), 'utf8')) as Record<string, unknown>
  const validate = new Ajv({ allErrors: true, validateFormats: false }).compile(schema)
  const ok = (routes: string): boolean => validate(parse(`routes:\n${routes}`))
  t.ok(ok('  - { name: p, static: ./site }\n'), 'static: DIR')
  t.ok(ok('  - { name: p, static: { dir: ./site, cache_control: "public, max-age=60", html_cache_control: no-cache } }\n'), 'the map form')
  t.notOk(ok('  - { name: p, static: ./site, upstream: u }\n'), 'not both')
  t.notOk(ok('  - { name: p }\n'), 'not neither')
  t.notOk(ok('  - { name: p, static: { cache_control: x } }\n'), 'dir is required')
  t.notOk(ok('  - { name: p, static: { dir: ./site, cache: x } }\n'), 'unknown keys')
  t.notOk(ok('  - { name: p, static: { dir: ./site, cache_control: "a\\nb" } }\n'), 'no control characters in the header value')
})
