// The loader end to end: defaults, normalised shapes, includes and route order, env substitution,
// secrets never echoed, many problems at once, warnings, and a frozen result.
import t from 'tap'
import type { Test } from 'tap'
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs'
import { availableParallelism, tmpdir } from 'node:os'
import { join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { DEFAULTS } from '../../conf/loader/defaults.js'
import { formatErrors, loadConfigFile, loadConfigOrThrow, loadConfigText } from '../../conf/load.js'
import type { LoadResult } from '../../conf/load.js'
import type { Config, GuardConfig } from '../../conf/types.js'
import { ConfigError } from '../../conf/errors.js'

const F = relative(process.cwd(), fileURLToPath(new URL('./fixtures', import.meta.url)))

const BASE = `
upstreams:
  u: { targets: [{ url: http://127.0.0.1:7001 }] }
`

function ok (t: Test, r: LoadResult): Config {
  if (!r.ok) { t.fail(`expected ok, got:\n${r.errors.join('\n')}`); throw new Error('not ok') }
  return r.config
}
function errs (r: LoadResult): string[] { return r.ok ? [] : r.errors }

t.test('an empty file is a valid config of defaults', async (t) => {
  const c = ok(t, loadConfigText('', 'empty.yaml', {}))
  t.same(c.listen, { host: '0.0.0.0', port: 8080 })
  t.equal(c.admin, null)
  t.equal(c.adminToken, null)
  t.equal(c.workers, 1)
  t.equal(c.file, resolve('empty.yaml'))
  t.same(c.store, { kind: 'memory', url: null, nodes: [], onError: 'fail_closed', timeoutMs: 50, keyPrefix: 'fg:', breakerFailures: 5, breakerBackoffMs: 1000, maxKeys: 1_000_000, gatewayNodes: 1 })
  t.same(c.server, { maxHeaderSize: 16384, headersTimeoutMs: 10_000, requestTimeoutMs: 30_000, keepAliveTimeoutMs: 5000, maxConnections: 10_000, maxBodySize: 1_048_576, drainTimeoutMs: 10_000, bodyTimeoutMs: 10_000, bodyBufferSize: 131_072, parser: 'node' })
  t.same(c.accessLog, { enabled: true, path: 'stdout' })
  t.same(c.origin, { listen: { host: '127.0.0.1', port: 7001 }, orderRate: 1000, paymentTimeoutMs: 600_000, requeueAfterMs: 30_000 })
  t.same(c.identity, { user: null })
  t.same(c.secrets, { linkKeys: [], session: null, pow: null })
  t.same(c.trustedProxies, [])
  t.equal(c.upstreams.size, 0)
  t.equal(c.campaigns.size, 0)
  t.same(c.routes, [])
})

t.test('upstream, campaign, route and guard defaults', async (t) => {
  const c = ok(t, loadConfigText(`
identity: { user: header X-User-Id }
secrets: { link_keys: { k1: "0123456789abcdef0123456789abcdef" }, session: "session-key-0123456789abcdef" }
upstreams:
  u: { targets: [http://127.0.0.1:7001, { url: "https://backend.internal:8443/" }] }
campaigns:
  - { id: c, starts_at: 2026-11-11T12:00:00+08:00, ends_at: 2026-11-11T04:30:00Z, products: [{ id: 7, quota: 3 }] }
routes:
  - name: buy
    match: { path: /buy/:campaign/:product, methods: [post, GET, post], host: "*.Example.COM" }
    upstream: u
    guards:
      - deny: { users: [bad1, 42] }
      - rate_limit: { rate: 600/m }
      - rate_limit: { rate: 10/s, algorithm: leaky_bucket, key: [ip, header X-Device] }
      - captcha: { provider: recaptcha, secret: s, min_score: 0.5, action: buy }
      - captcha: { provider: pow }
      - signed_link
      - campaign_window:
      - dedupe: {}
      - quota: {}
`, 'g.yaml', {}))
  const u = c.upstreams.get('u')
  t.same(u, {
    name: 'u',
    balance: { kind: 'round_robin' },
    targets: [{ url: 'http://127.0.0.1:7001', weight: 1 }, { url: 'https://backend.internal:8443', weight: 1 }],
    maxFails: 1, failTimeoutMs: 10_000, connectTimeoutMs: 1000, timeoutMs: 60_000, retries: 1, connections: 64, keepAliveTimeoutMs: 4000, queue: 1024
  })
  t.same(c.campaigns.get('c'), {
    id: 'c', startsAt: Date.parse('2026-11-11T04:00:00Z'), endsAt: Date.parse('2026-11-11T04:30:00Z'),
    linkRevealMs: 60_000, linkGraceMs: 60_000, linkTtlMs: null, products: [{ id: '7', quota: 3, segments: 1 }]
  })
  t.same(c.identity.user, { from: 'header', name: 'x-user-id' }, 'header names lower-cased')
  t.equal(c.secrets.linkKeys[0]?.kid, 'k1')
  t.ok(Buffer.isBuffer(c.secrets.linkKeys[0]?.key))
  t.equal(c.secrets.linkKeys[0]?.key.toString('utf8'), '0123456789abcdef0123456789abcdef')
  const r = c.routes[0]!
  t.same(r.match, { host: '*.example.com', path: '/buy/:campaign/:product', pathPrefix: null, methods: ['POST', 'GET'] })
  t.equal(r.maxBodySize, DEFAULTS.server.maxBodySize)
  const g = r.guards
  t.same(g.map((x) => [x.kind, x.index]), [['deny', 0], ['rate_limit', 1], ['rate_limit', 2], ['captcha', 3], ['captcha', 4], ['signed_link', 5], ['campaign_window', 6], ['dedupe', 7], ['quota', 8]])
  const pick = <K extends GuardConfig['kind']>(i: number, k: K): Extract<GuardConfig, { kind: K }> => {
    const x = g[i]!
    if (x.kind !== k) throw new Error(`guard ${i} is ${x.kind}`)
    return x as Extract<GuardConfig, { kind: K }>
  }
  t.same(pick(0, 'deny'), { kind: 'deny', index: 0, shadow: false, reject: null, ips: [], ipFiles: [], fileIps: [], users: ['bad1', '42'], usersSet: null, onError: null, policy: 'fail_closed' })
  t.same(pick(1, 'rate_limit'), { kind: 'rate_limit', index: 1, shadow: false, reject: null, name: 'buy.1', key: [], rate: { count: 600, periodMs: 60_000 }, burst: 600, algorithm: 'token_bucket', delay: 0, scope: 'node', maxKeys: 100_000, onError: null, policy: 'fail_closed' })
  const leaky = pick(2, 'rate_limit')
  t.equal(leaky.burst, 0, 'leaky bucket burst defaults to 0 as nginx limit_req')
  t.same(leaky.key, [{ kind: 'ip' }, { kind: 'header', name: 'x-device' }])
  const rc = pick(3, 'captcha')
  t.same(rc.token, { from: 'header', name: 'g-recaptcha-response' })
  t.equal(rc.verifyUrl, 'https://www.google.com/recaptcha/api/siteverify')
  t.equal(rc.minScore, 0.5)
  t.equal(rc.action, 'buy')
  t.equal(rc.tokenTtlMs, 300_000)
  t.equal(rc.timeoutMs, 2000)
  t.equal(rc.clearanceMs, null)
  t.equal(rc.clearanceCookie, 'fg_clearance')
  const pow = pick(4, 'captcha')
  t.equal(pow.secret, null)
  t.equal(pow.difficulty, 16)
  t.equal(pow.difficultyUnderLoad, null)
  t.equal(pow.challengeTtlMs, 60_000)
  t.same(pick(5, 'signed_link'), { kind: 'signed_link', index: 5, shadow: false, reject: null, mode: 'hmac', singleUse: false, secureLink: '$arg_md5,$arg_expires', secureLinkMd5: '', campaign: { from: 'param', name: 'campaign' }, product: { from: 'param', name: 'product' }, policy: 'fail_closed' })
  t.same(pick(6, 'campaign_window').campaign, { from: 'param', name: 'campaign' })
  t.equal(pick(7, 'dedupe').ttlMs, 86_400_000)
  t.equal(pick(8, 'quota').latchTtlMs, 1000)
})

t.test('value sources, reject overrides, shadow, literal campaign and product', async (t) => {
  const c = ok(t, loadConfigText(`${BASE}
identity: { user: cookie sid }
secrets: { session: "0123456789abcdef0123456789abcdef" }
campaigns:
  - { id: c1, starts_at: 1700000000000, ends_at: 1700000600000, products: [{ id: p1, quota: 1, segments: 1 }] }
routes:
  - name: r
    upstream: u
    match: { path_prefix: /api }
    guards:
      - quota: { campaign: c1, product: header X-Product, shadow: true, reject: { status: 410, body: { gone: [1, true, null] } } }
      - dedupe: { campaign: query c, product: cookie p, ttl: 10m }
      - captcha: { provider: turnstile, secret: s, token: form cf-turnstile-response, clearance: 2m }
`, 'v.yaml', {}))
  const [q, dd, cap] = c.routes[0]!.guards
  t.same(q, { kind: 'quota', index: 0, shadow: true, reject: { status: 410, body: { gone: [1, true, null] } }, campaign: { from: 'literal', value: 'c1' }, product: { from: 'header', name: 'x-product' }, latchTtlMs: 1000, onError: null, policy: 'fail_closed', journaled: false, lease: 10 })
  t.match(dd, { campaign: { from: 'query', name: 'c' }, product: { from: 'cookie', name: 'p' }, ttlMs: 600_000 })
  t.match(cap, { token: { from: 'form', name: 'cf-turnstile-response' }, clearanceMs: 120_000 })
  t.equal(c.campaigns.get('c1')?.startsAt, 1_700_000_000_000, 'epoch ms accepted')
})

t.test('workers: auto is the CPU count; order_rate as a rate', async (t) => {
  const c = ok(t, loadConfigText('workers: auto\norigin: { order_rate: 600/m, listen: "[::1]:7100" }\n', 'w.yaml', {}))
  t.equal(c.workers, availableParallelism())
  t.equal(c.origin.orderRate, 10)
  t.same(c.origin.listen, { host: '::1', port: 7100 })
})

t.test('store kinds', async (t) => {
  const r = ok(t, loadConfigText('store: { kind: redis }', 's.yaml', {}))
  t.equal(r.store.url, 'redis://127.0.0.1:6379', 'redis url defaults to localhost')
  const cl = ok(t, loadConfigText('store: { kind: redis-cluster, nodes: [redis://127.0.0.1:7000, redis://127.0.0.1:7001], key_prefix: "fs:", gateway_nodes: 3 }', 's.yaml', {}))
  t.equal(cl.store.gatewayNodes, 3)
  t.same(cl.store.nodes, ['redis://127.0.0.1:7000', 'redis://127.0.0.1:7001'])
  t.equal(cl.store.keyPrefix, 'fs:')
  t.same(errs(loadConfigText('store: { kind: redis-cluster }', 's.yaml', {})), ['s.yaml:1:8: store: kind redis-cluster needs nodes: [redis://HOST:PORT, ...] (seed nodes)'])
  t.same(errs(loadConfigText('store: { key_prefix: "a{b}" }', 's.yaml', {})), ['s.yaml:1:22: key_prefix: "a{b}" must not contain spaces or braces (braces are hash tags on Redis Cluster)'])
})

t.test('result is deep-frozen, maps included', async (t) => {
  const c = ok(t, loadConfigText(`${BASE}\nroutes: [{ name: r, upstream: u }]\n`, 'f.yaml', {}))
  t.ok(Object.isFrozen(c))
  t.ok(Object.isFrozen(c.routes[0]!.match))
  t.ok(Object.isFrozen(c.upstreams.get('u')!.targets[0]))
  t.throws(() => { (c.upstreams as Map<string, unknown>).set('x', {}) }, TypeError)
  t.throws(() => { (c.upstreams as Map<string, unknown>).delete('u') }, TypeError)
  t.throws(() => { (c.server as { maxBodySize: number }).maxBodySize = 1 }, TypeError)
  t.equal(c.upstreams.size, 1)
})

t.test('include: globs relative to the including file; route order follows key order', async (t) => {
  const c = ok(t, loadConfigFile(`${F}/include/main.yaml`, {}))
  t.same(c.routes.map((r) => r.name), ['buy', 'status', 'site'], 'included (a-buy, b-status in name order) before the main file routes, as include: is written first')
  t.same([...c.upstreams.keys()].sort(), ['main-up', 'purchase'])
  t.same([...c.campaigns.keys()], ['c1'])
  t.same(c.routes[0]!.match.methods, ['POST'])
  t.equal(c.routes[1]!.upstream, 'main-up', 'an included route may name an upstream of the main file')

  const dir = mkdtempSync(join(tmpdir(), 'fg-conf-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  mkdirSync(join(dir, 'r'))
  writeFileSync(join(dir, 'r', 'x.yaml'), 'routes: [{ name: x, upstream: u }]\n')
  writeFileSync(join(dir, 'main.yaml'), `${BASE}\nroutes: [{ name: first, upstream: u, match: { path: /a } }]\ninclude: [r/?.yaml, none/*.yaml]\n`)
  const r = loadConfigFile(join(dir, 'main.yaml'), {})
  const c2 = ok(t, r)
  t.same(c2.routes.map((x) => x.name), ['first', 'x'], 'routes: written before include: come first')
  t.same(r.ok && r.warnings, [`${join(dir, 'main.yaml')}:6:21: include: "none/*.yaml" matched no files`])

  writeFileSync(join(dir, 'loop.yaml'), `${BASE}\ninclude: [loop.yaml, r/x.yaml, r/*.yaml, "r/**/*.yaml"]\n`)
  t.same(errs(loadConfigFile(join(dir, 'loop.yaml'), {})), [
    `${join(dir, 'loop.yaml')}:5:11: include: "${join(dir, 'loop.yaml')}" is the main config file`,
    `${join(dir, 'loop.yaml')}:5:32: include: "${join(dir, 'r/x.yaml')}" is included twice (first at ${join(dir, 'loop.yaml')}:5:22)`,
    `${join(dir, 'loop.yaml')}:5:42: include: "**" is not supported in include patterns; use one "*" per directory level`
  ])

  writeFileSync(join(dir, 'r', 'y.yaml'), 'routes: [{ name: y, upstream: u\n')
  writeFileSync(join(dir, 'syn.yaml'), `${BASE}\ninclude: [r/y.yaml]\nroutes: [{ name: z, upstream: nope }]\n`)
  const se = errs(loadConfigFile(join(dir, 'syn.yaml'), {}))
  t.ok(se.length > 0)
  t.ok(se.every((l) => l.startsWith(`${join(dir, 'r', 'y.yaml')}:2:1: YAML: `)), 'a YAML syntax error in an included file stops before cross-reference noise (no "upstream nope")')
})

t.test('${VAR} substitution', async (t) => {
  const text = `
listen: \${LISTEN:-127.0.0.1:8080}
workers: \${WORKERS}
admin_token: "\${ADMIN_TOKEN}"
access_log: { path: "\${LOG_DIR:-/var/log}/fg-\${NODE_NAME:-a}.log" }
secrets:
  session: "$\${not-a-var}-0123456789abcdef"
  link_keys: { k1: "\${LINK_KEY}" }
upstreams:
  u: { targets: ["http://\${UP_HOST}:7001"] }
`
  const c = ok(t, loadConfigText(text, 'e.yaml', { WORKERS: '3', ADMIN_TOKEN: 'tok-tok-tok-tok-tok', LINK_KEY: 'k'.repeat(32), UP_HOST: '10.1.2.3', NODE_NAME: '', LOG_DIR: '/tmp' }))
  t.same(c.listen, { host: '127.0.0.1', port: 8080 }, 'default used when unset')
  t.equal(c.workers, 3, 'a plain scalar made of one reference is re-typed')
  t.equal(c.adminToken, 'tok-tok-tok-tok-tok')
  t.equal(c.accessLog.path, '/tmp/fg-a.log', 'several references in one value; empty takes the default')
  t.equal(c.secrets.session?.toString(), '${not-a-var}-0123456789abcdef', '$${ is a literal ${')
  t.equal(c.secrets.linkKeys[0]?.key.toString(), 'k'.repeat(32))
  t.equal(c.upstreams.get('u')?.targets[0]?.url, 'http://10.1.2.3:7001')

  const quoted = ok(t, loadConfigText('admin_token: "${N}"\n', 'q.yaml', { N: '12345678901234567890' }))
  t.equal(quoted.adminToken, '12345678901234567890', 'a quoted reference stays a string')

  t.same(errs(loadConfigText('listen: ${LISTEN}\nworkers: ${W:-x}\nadmin: "${bad name}"\nadmin_token: "${OPEN"\n', 'm.yaml', {})), [
    'm.yaml:1:9: environment variable LISTEN is not set (write ${LISTEN:-default} to give a default)',
    'm.yaml:2:10: workers: expected a number or auto, got "${W:-x}"',
    'm.yaml:3:9: invalid reference "${bad name}": expected ${NAME} or ${NAME:-default}',
    'm.yaml:4:15: unterminated ${...} reference (write $${ for a literal ${)'
  ])
})

t.test('a secret from the environment never appears in any message', async (t) => {
  const SECRET = 'hunter2-s3cr3t-VALUE'
  const env = { S: SECRET, T: SECRET, U: SECRET }
  const text = `
listen: \${S}
workers: \${T}
store: { kind: redis, url: "\${U}", timeout: "\${S}" }
identity: { user: "\${S}" }
upstreams:
  u: { targets: ["\${S}"], balance: "\${S}" }
campaigns:
  - { id: c, starts_at: "\${S}", ends_at: "\${S}" }
routes:
  - name: r
    upstream: "\${S}"
    match: { host: "\${S}", methods: ["\${S}"] }
    guards:
      - rate_limit: { rate: "\${S}", key: "\${S}", algorithm: "\${S}" }
      - captcha: { provider: "\${S}", secret: 5 }
      - quota: { campaign: "\${S}" }
`
  const r = loadConfigText(text, 's.yaml', env)
  const out = formatErrors(r)
  t.ok(errs(r).length >= 12, `many problems reported (${errs(r).length})`)
  t.notMatch(out, SECRET, 'the value is never printed')
  t.notMatch(out, 'hunter2', 'not even a part of it')
  t.match(out, 's.yaml:2:9: listen: invalid address "${S}"')
  const r2 = loadConfigText('secrets: { session: 12345 }\nadmin_token: 987654321\n', 's2.yaml', {})
  t.notMatch(formatErrors(r2), /12345|987654321/, 'literal secrets of the wrong type are not echoed either')
  t.same(errs(r2), ['s2.yaml:1:21: session: expected a string (quote the value)', 's2.yaml:2:14: admin_token: expected a string (quote the value)'])
})

t.test('several problems of different kinds are all reported at once, in position order', async (t) => {
  const r = loadConfigFile(`${F}/many.yaml`, {})
  t.equal(errs(r).length, 11)
  const lines = errs(r).map((l) => Number(l.split(':')[1]))
  t.same(lines, [...lines].sort((a, b) => a - b))
})

t.test('warnings: short secrets, unreachable routes, empty deny; valid configs still load', async (t) => {
  const r = loadConfigText(`${BASE}
secrets: { session: short }
routes:
  - { name: all, upstream: u }
  - { name: never, upstream: u, match: { path: /x }, guards: [deny] }
`, 'w.yaml', {})
  t.equal(r.ok, true)
  t.same(r.ok && r.warnings, [
    'w.yaml:5:21: session: secret is shorter than 16 bytes; use at least 32 random bytes',
    'w.yaml:8:5: route "never" can never match: route "all" before it matches every request (first match wins)',
    'w.yaml:8:63: deny: nothing to deny (set ips, ip_files, users or users_set)'
  ])
})

t.test('more cross-reference checks', async (t) => {
  const head = `${BASE}
campaigns:
  - { id: c, starts_at: 2026-01-01T00:00:00Z, ends_at: 2026-01-02T00:00:00Z, products: [{ id: p, quota: 2, segments: 3 }] }
`
  t.same(errs(loadConfigText(`${head}
identity: { user: cookie sid }
routes:
  - name: r
    upstream: u
    match: { path: /b/:campaign/:product/:campaign }
    guards:
      - rate_limit: { name: g, rate: 1/s }
      - rate_limit: { name: g, rate: 2/s }
      - rate_limit: { rate: 1/s, delay: 2 }
      - captcha: { provider: turnstile, secret: x, clearance: 1m, verify_url: "not a url", min_score: 2 }
      - captcha: { provider: pow, secret: x, difficulty: 20, difficulty_under_load: 10 }
      - signed_link: { mode: nginx_secure_link_md5, secure_link_md5: "$uri s", product: p }
`, 'x.yaml', {})), [
    'x.yaml:6:118: segments: 3 is more than the quota (2)',
    'x.yaml:8:19: identity.user: cookie sessions need secrets.session (the HMAC key that signs them)',
    'x.yaml:12:20: path: param :campaign appears twice',
    'x.yaml:15:29: rate_limit "g" is already defined with different settings at x.yaml:14:29 (guards with one name share one limit)',
    'x.yaml:16:41: delay: only applies to algorithm: leaky_bucket',
    'x.yaml:17:52: clearance: the clearance cookie is signed with secrets.session; set it',
    'x.yaml:17:79: verify_url: "not a url" is not an http(s) URL',
    'x.yaml:17:92: min_score: only applies to provider recaptcha',
    'x.yaml:17:103: min_score: 2 is out of range (0..1)',
    'x.yaml:18:9: captcha provider pow needs secrets.pow (or secrets.session) to sign its challenges',
    'x.yaml:18:35: secret: the pow provider signs its challenges with secrets.pow (or secrets.session); remove secret here',
    'x.yaml:18:85: difficulty_under_load: must be at least difficulty (20)',
    'x.yaml:19:22: signed_link: campaign comes from route param :campaign but route "r" has no path: with params (by default campaign comes from param campaign; set campaign: to a param, header, query or a literal)'
  ])
  t.same(errs(loadConfigText(`${BASE}
admin: "[::]:9090"
admin_token: "\${TOKEN:-}"
routes:
  - { name: r, upstream: u, guards: [quota] }
`, 'y.yaml', {})), [
    'y.yaml:5:8: admin: listening on non-loopback address :: needs admin_token (or bind it to 127.0.0.1)',
    'y.yaml:6:14: admin_token: must not be empty',
    'y.yaml:8:38: quota: campaign comes from route param :campaign but route "r" has no path: with params (by default campaign comes from param campaign; set campaign: to a param, header, query or a literal)',
    'y.yaml:8:38: quota: product comes from route param :product but route "r" has no path: with params (by default product comes from param product; set product: to a param, header, query or a literal)',
    'y.yaml:8:38: quota needs at least one campaign with products in campaigns:'
  ])
  const fine = ok(t, loadConfigText(`${BASE}\nadmin: 10.0.0.5:9090\nadmin_token: "\${TOKEN}"\n`, 'z.yaml', { TOKEN: 'a-long-enough-admin-token' }))
  t.same(fine.admin, { host: '10.0.0.5', port: 9090 }, 'a non-loopback admin with a token is fine')
})

t.test('server timeouts node:http would refuse are caught at load', async (t) => {
  t.same(errs(loadConfigText('server: { request_timeout: 5s }', 't.yaml', {})), ['t.yaml:1:28: request_timeout: must be at least headers_timeout (10000ms by default), or 0'])
  t.same(errs(loadConfigText('server: { request_timeout: 5s, headers_timeout: 6s }', 't.yaml', {})), ['t.yaml:1:49: headers_timeout: must not be longer than request_timeout'])
  t.equal(loadConfigText('server: { request_timeout: 0 }', 't.yaml', {}).ok, true, '0 disables the request timeout')
})

t.test('loadConfigOrThrow throws a ConfigError with the problems', async (t) => {
  const err = t.throws(() => loadConfigOrThrow(`${F}/admin-no-token.yaml`, {})) as unknown
  t.ok(err instanceof ConfigError)
  t.same((err as ConfigError).problems, [`${F}/admin-no-token.yaml:1:8: admin: listening on non-loopback address 0.0.0.0 needs admin_token (or bind it to 127.0.0.1)`])
  t.equal((err as ConfigError).code, 'FG_ERR_CONFIG_INVALID')
  t.equal(formatErrors(loadConfigFile(`${F}/admin-no-token.yaml`, {})), (err as ConfigError).problems[0])
})

t.test('YAML aliases keep working and positions point at the anchor', async (t) => {
  const c = ok(t, loadConfigText(`
upstreams:
  a: &up { targets: [http://127.0.0.1:7001], timeout: 5s }
  b: *up
`, 'al.yaml', {}))
  t.equal(c.upstreams.get('b')?.timeoutMs, 5000)
  t.same(errs(loadConfigText('x: &a { y: 1 }\nz: *a\n', 'al2.yaml', {})), [
    'al2.yaml:1:1: unknown key "x" in config',
    'al2.yaml:2:1: unknown key "z" in config'
  ])
})
