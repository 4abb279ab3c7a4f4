// TLS and HTTP/2 listeners: curl over h2 and HTTP/1.1 (TLS and cleartext) gets the same answers from
// every guard and edge endpoint, proxied requests look the same to the origin, h2load runs clean, and
// certificates reload (SIGHUP) with a bad new one refused while the old keeps serving.
import t from 'tap'
import { execFile, spawn } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { tempDir } from '../helpers/config.js'
import { startOrigin, startTestGateway } from '../helpers/gateway.js'
import { spawnCli } from '../helpers/process.js'
import { needTools } from '../helpers/tools.js'
import { loadConfigText } from '../../conf/load.js'

const run = promisify(execFile)

/** A self-signed certificate for 127.0.0.1 with a chosen serial, and its key, in `dir`. */
export async function makeCert (dir: string, name: string, serial: string): Promise<{ cert: string, key: string }> {
  const cert = join(dir, `${name}.crt`)
  const key = join(dir, `${name}.key`)
  await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=127.0.0.1', '-set_serial', serial,
    '-addext', 'subjectAltName=IP:127.0.0.1'])
  return { cert, key }
}

interface CurlAnswer { version: string, status: number, headers: Record<string, string[]>, body: string, json: any }

/** One curl request: `proto` is --http2 or --http1.1; the answer's version, status, headers, body. */
async function curl (dir: string, proto: '--http2' | '--http1.1', url: string, extra: string[] = []): Promise<CurlAnswer> {
  const hdr = join(dir, `h-${Math.random().toString(36).slice(2)}`)
  const bodyFile = hdr + '.body'
  const { stdout } = await run('curl', ['-sk', proto, '--max-time', '10', '-D', hdr, '-o', bodyFile, '-w', '%{http_version} %{http_code}', ...extra, url])
  const [version, code] = stdout.trim().split(' ')
  const headers: Record<string, string[]> = {}
  for (const line of readFileSync(hdr, 'utf8').split('\r\n').slice(1)) {
    const i = line.indexOf(':')
    if (i <= 0) continue
    const k = line.slice(0, i).trim().toLowerCase()
    ;(headers[k] ??= []).push(line.slice(i + 1).trim())
  }
  const body = readFileSync(bodyFile, 'utf8')
  let json: any = null
  try { json = JSON.parse(body) } catch {}
  return { version: version ?? '', status: Number(code), headers, body, json }
}

const ROUTES = `
  - name: blocked
    match: { path: /blocked }
    guards:
      - deny: { ips: [127.0.0.1/32] }
    upstream: origin
  - name: limited
    match: { path: /limited }
    guards:
      - rate_limit: { name: one, key: ip, rate: 1/h, burst: 1 }
    upstream: origin
  - name: early
    match: { path: /buy/:campaign/:product, methods: [POST] }
    guards:
      - campaign_window: {}
    upstream: origin
  - name: small
    match: { path_prefix: /small/ }
    max_body_size: 16
    upstream: origin
  - name: proxy
    match: { path_prefix: /p/ }
    upstream: origin
`

/**
 * FLASHGATE_TEST_UPSTREAM_CLIENT / FLASHGATE_TEST_PARSER (set by test/gateway/upstream-raw.test.ts) put the
 * upstream on that client and the cleartext listener on that parser, as yamlConfig does for in-memory
 * configs: h2 and TLS requests then reach the origin through flashgate's raw HTTP/1.1 client.
 */
function yaml (originUrl: string, listen: string, extra = ''): string {
  const client = process.env.FLASHGATE_TEST_UPSTREAM_CLIENT
  const parser = process.env.FLASHGATE_TEST_PARSER
  return `listen: ${listen}
admin: 127.0.0.1:0
access_log: { enabled: false }
identity: { user: header x-user-id }
${parser === 'strict' || parser === 'node' ? `server: { parser: ${parser} }\n` : ''}upstreams:
  origin:
    targets:
      - { url: ${originUrl} }
    retries: 0
${client === 'raw' || client === 'undici' ? `    client: ${client}\n` : ''}campaigns:
  - id: later
    starts_at: 2099-01-01T00:00:00Z
    ends_at: 2099-01-02T00:00:00Z
    products:
      - { id: "1", quota: 10 }
${extra}
routes:
${ROUTES}
`
}

t.test('config: listen lists, TLS files checked at load with FILE:LINE:COL', async (t) => {
  if (!needTools(t, 'openssl')) return
  const d = tempDir(t)
  const a = await makeCert(d.dir, 'a', '0x1001')
  const b = await makeCert(d.dir, 'b', '0x2002')
  const ok = loadConfigText(`listen: [127.0.0.1:8080, { address: 127.0.0.1:8443, tls: { cert: a.crt, key: a.key }, http2: true }]\n`, join(d.dir, 'gw.yaml'), {})
  t.ok(ok.ok, JSON.stringify(ok))
  if (ok.ok) {
    t.same(ok.config.listen, { host: '127.0.0.1', port: 8080 })
    t.same(ok.config.listeners, [
      { address: { host: '127.0.0.1', port: 8080 }, tls: null, http2: false },
      { address: { host: '127.0.0.1', port: 8443 }, tls: { cert: a.cert, key: a.key }, http2: true }
    ])
  }
  const errs = (text: string): string[] => { const r = loadConfigText(text, join(d.dir, 'gw.yaml'), {}); return r.ok ? [] : r.errors }
  const mismatched = errs(`listen:\n  - address: 127.0.0.1:8443\n    tls: { cert: a.crt, key: b.key }\n`)
  t.match(mismatched, [/gw\.yaml:3:\d+: tls: the key does not match the certificate/])
  t.match(errs(`listen:\n  - { address: 127.0.0.1:8443, tls: { cert: missing.crt, key: a.key } }\n`), [/gw\.yaml:2:\d+: cert: cannot read "missing\.crt": ENOENT/])
  writeFileSync(join(d.dir, 'junk.pem'), 'not a certificate\n')
  t.match(errs(`listen:\n  - { address: 127.0.0.1:8443, tls: { cert: junk.pem, key: a.key } }\n`), [/gw\.yaml:2:\d+: tls: /])
  t.match(errs(`listen:\n  - { address: 127.0.0.1:8443, http2: true }\n`), [/gw\.yaml:2:\d+: http2: needs tls/])
  t.match(errs(`listen:\n  - { address: 127.0.0.1:8443, tls: { cert: a.crt } }\n`), [/gw\.yaml:2:\d+: tls: key is required/])
  t.match(errs(`listen:\n  - { adress: 127.0.0.1:8443 }\n`), [/a listener needs an address/, /unknown key "adress" in listen \(did you mean "address"\?\)/])
  t.match(errs(`listen: [127.0.0.1:8080, 127.0.0.1:8080]\n`), [/listed twice/])
  t.match(errs(`listen: []\n`), [/at least one address/])
  // No key material in any message.
  const keyText = readFileSync(b.key, 'utf8').split('\n')[1] ?? 'x'
  t.notOk(mismatched.join('\n').includes(keyText))
})

t.test('every answer is the same over h2, HTTP/1.1 over TLS and cleartext HTTP/1.1', async (t) => {
  if (!needTools(t, 'openssl', 'curl', 'h2load')) return
  const d = tempDir(t)
  const c = await makeCert(d.dir, 'gw', '0x1001')
  const origin = await startOrigin(t)
  const file = d.write('gw.yaml', yaml(origin.url, `
  - 127.0.0.1:0
  - { address: 127.0.0.1:0, tls: { cert: gw.crt, key: gw.key }, http2: true }
  - { address: 127.0.0.1:0, tls: { cert: gw.crt, key: gw.key } }`))
  void c
  const gw = await startTestGateway(t, { configFile: file })
  t.equal(gw.listeners.length, 3)
  const [plain, h2, tls1] = gw.listeners
  t.match(plain?.url, /^http:\/\//)
  t.match(h2?.url, /^https:\/\//)
  t.match(tls1?.url, /^https:\/\//)

  // Warm the per-IP bucket: its one token is spent, so every protocol below sees 429.
  await curl(d.dir, '--http1.1', plain!.url + '/limited')
  const cases: Array<{ name: string, path: string, args?: string[], status: number, code: string | null }> = [
    { name: 'deny', path: '/blocked', status: 403, code: 'BLOCKED' },
    { name: 'rate limit', path: '/limited', status: 429, code: 'RATE_LIMITED' },
    { name: 'campaign window', path: '/buy/later/1', args: ['-X', 'POST', '-H', 'x-user-id: u1'], status: 409, code: 'NOT_STARTED' },
    { name: 'body limit', path: '/small/x', args: ['--data-binary', 'x'.repeat(100)], status: 413, code: 'PAYLOAD_TOO_LARGE' },
    { name: 'no route', path: '/nothing', status: 404, code: 'NOT_FOUND' },
    { name: 'method', path: '/buy/later/1', status: 405, code: 'METHOD_NOT_ALLOWED' },
    { name: 'dot segment', path: '/p/%2e%2e/x', args: ['--path-as-is'], status: 400, code: 'BAD_REQUEST' },
    { name: 'edge time', path: '/_flashgate/time', status: 200, code: null },
    { name: 'edge unknown', path: '/_flashgate/nope', status: 404, code: 'NOT_FOUND' }
  ]
  const ids = new Set<string>()
  for (const k of cases) {
    const answers = [
      await curl(d.dir, '--http2', h2!.url + k.path, k.args),
      await curl(d.dir, '--http1.1', h2!.url + k.path, k.args),
      await curl(d.dir, '--http1.1', tls1!.url + k.path, k.args),
      await curl(d.dir, '--http1.1', plain!.url + k.path, k.args)
    ]
    t.same(answers.map((a) => a.version), ['2', '1.1', '1.1', '1.1'], `${k.name}: protocols negotiated`)
    for (const a of answers) {
      t.equal(a.status, k.status, `${k.name} over ${a.version}: status`)
      if (k.code !== null) t.equal(a.json?.code, k.code, `${k.name} over ${a.version}: code`)
      else t.type(a.json?.now, 'number')
      t.equal(a.headers['content-type']?.[0], 'application/json')
      const id = a.headers['x-request-id']
      t.equal(id?.length, 1, `${k.name} over ${a.version}: one x-request-id`)
      ids.add(id?.[0] ?? '')
    }
    const h2a = answers[0]!
    for (const hop of ['connection', 'keep-alive', 'transfer-encoding', 'upgrade']) t.notOk(hop in h2a.headers, `${k.name}: no ${hop} on h2`)
    if (k.code === 'RATE_LIMITED') for (const a of answers) t.ok(a.headers['retry-after'] !== undefined, 'Retry-After on every protocol')
  }
  t.equal(ids.size, cases.length * 4, 'request ids are unique')

  // A proxied request: the origin sees the same request whatever the client spoke.
  const before = origin.seen.length
  const viaH2 = await curl(d.dir, '--http2', h2!.url + '/p/buy?x=1', ['-H', 'x-user-id: u7', '-H', 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', '--data-binary', '{"n":1}', '-H', 'content-type: application/json'])
  const viaH1 = await curl(d.dir, '--http1.1', tls1!.url + '/p/buy?x=1', ['-H', 'x-user-id: u7', '-H', 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', '--data-binary', '{"n":1}', '-H', 'content-type: application/json'])
  t.equal(viaH2.status, 200)
  t.equal(viaH1.status, 200)
  for (const hop of ['connection', 'keep-alive', 'transfer-encoding']) t.notOk(hop in viaH2.headers, `proxied h2 answer has no ${hop}`)
  t.match(viaH2.headers['x-request-id']?.[0], /^[0-9a-f]{12}-[0-9a-z]+$/)
  const [s2, s1] = origin.seen.slice(before)
  for (const [name, s] of [['h2', s2], ['h1', s1]] as const) {
    t.equal(s?.method, 'POST', `${name}: method`)
    t.equal(s?.url, '/p/buy?x=1', `${name}: target`)
    t.equal(s?.bodyBytes, 7, `${name}: body`)
    t.equal(s?.headers['x-user-id'], 'u7')
    t.equal(s?.headers['x-forwarded-proto'], 'https')
    t.match(s?.headers.host, /^127\.0\.0\.1:\d+$/)
    t.equal(s?.headers['x-forwarded-host'], s?.headers.host)
    t.notOk(Object.keys(s?.headers ?? {}).some((k) => k.startsWith(':')), `${name}: no pseudo-header forwarded`)
    t.match(s?.headers.traceparent, /^00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01$/, `${name}: the caller's trace continued`)
    t.match(s?.headers['x-request-id'], /^[0-9a-f]{12}-[0-9a-z]+$/)
  }
  t.equal(s2?.headers['x-request-id'], viaH2.headers['x-request-id']?.[0], 'the id sent upstream is the one returned')

  // An h2 body without Content-Length (curl streams stdin): forwarded whole, and counted against the limit.
  const streamed = await new Promise<{ code: number, out: string }>((resolve) => {
    const p = spawn('curl', ['-sk', '--http2', '--max-time', '10', '-T', '-', '-X', 'POST', '-w', '\n%{http_code}', h2!.url + '/p/stream'], { stdio: ['pipe', 'pipe', 'ignore'] })
    let out = ''
    p.stdout.on('data', (b: Buffer) => { out += b.toString() })
    p.on('close', (code) => { resolve({ code: code ?? -1, out }) })
    p.stdin.end(Buffer.alloc(50_000, 97))
  })
  t.match(streamed.out, /"bodyBytes":50000/)
  t.match(streamed.out, /\n200$/)
  const tooBig = await new Promise<string>((resolve) => {
    const p = spawn('curl', ['-sk', '--http2', '--max-time', '10', '-T', '-', '-X', 'POST', '-w', '\n%{http_code}', h2!.url + '/small/stream'], { stdio: ['pipe', 'pipe', 'ignore'] })
    let out = ''
    p.stdout.on('data', (b: Buffer) => { out += b.toString() })
    p.on('close', () => { resolve(out) })
    p.stdin.end(Buffer.alloc(1000, 97))
  })
  t.match(tooBig, /\n413$/, 'a streamed h2 body over the route limit gets 413')

  // h2load: a short bounded run, every request answered.
  const { stdout } = await run('h2load', ['-n', '2000', '-c', '10', '-m', '4', h2!.url + '/p/load'], { timeout: 60_000 })
  t.match(stdout, /requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored/)
  t.match(stdout, /status codes: 2000 2xx/)
  t.match(stdout, /Application protocol: h2/)
})

/** The serial of the certificate a TLS listener serves (openssl s_client). */
async function servedSerial (port: number): Promise<string> {
  const s = await new Promise<string>((resolve, reject) => {
    const p = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', 'localhost'], { stdio: ['pipe', 'pipe', 'ignore'] })
    let out = ''
    p.stdout.on('data', (b: Buffer) => { out += b.toString() })
    p.on('error', reject)
    p.on('close', () => { resolve(out) })
    p.stdin.end('')
  })
  const pem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(s)?.[0] ?? ''
  const p2 = spawn('openssl', ['x509', '-noout', '-serial'], { stdio: ['pipe', 'pipe', 'ignore'] })
  let out = ''
  p2.stdout.on('data', (b: Buffer) => { out += b.toString() })
  const done = new Promise<void>((resolve) => { p2.on('close', () => { resolve() }) })
  p2.stdin.end(pem)
  await done
  return out.trim()
}

t.test('SIGHUP reloads the certificate; a bad new one keeps the old serving', async (t) => {
  if (!needTools(t, 'openssl', 'curl')) return
  const d = tempDir(t)
  await makeCert(d.dir, 'gw', '0x1001')
  const origin = await startOrigin(t)
  const file = d.write('gw.yaml', yaml(origin.url, `
  - 127.0.0.1:0
  - { address: 127.0.0.1:0, tls: { cert: gw.crt, key: gw.key }, http2: true }`))
  const p = spawnCli(t, ['serve', '--config', file])
  const listening = await p.waitFor((l) => l.msg === 'listening')
  const urls = listening.listeners as string[]
  t.equal(urls.length, 2)
  const port = Number(new URL(urls[1]!).port)
  t.equal(await servedSerial(port), 'serial=1001')

  // A new certificate at the same paths: SIGHUP, and new connections get it.
  const next = await makeCert(d.dir, 'next', '0x2002')
  writeFileSync(join(d.dir, 'gw.crt'), readFileSync(next.cert))
  writeFileSync(join(d.dir, 'gw.key'), readFileSync(next.key))
  p.child.kill('SIGHUP')
  await p.waitFor((l) => l.msg === 'config reloaded')
  t.equal(await servedSerial(port), 'serial=2002', 'the new certificate is served')

  // A key that does not match: the reload fails with FILE:LINE:COL, the 2002 certificate keeps serving.
  const other = await makeCert(d.dir, 'other', '0x3003')
  writeFileSync(join(d.dir, 'gw.key'), readFileSync(other.key))
  p.child.kill('SIGHUP')
  const rejected = await p.waitFor((l) => l.msg === 'SIGHUP reload rejected')
  t.match(JSON.stringify(rejected.errors), /gw\.yaml:\d+:\d+: tls: the key does not match the certificate/)
  t.equal(await servedSerial(port), 'serial=2002', 'the old certificate still serves')
  const a = await curl(d.dir, '--http2', urls[1]! + '/p/x')
  t.equal(a.status, 200, 'and requests are answered')
  p.child.kill('SIGTERM')
  t.equal(await p.exited, 0)
})

t.test('the JSON schema takes the listen list and tracing forms the loader takes, and refuses the same mistakes', async (t) => {
  const { Ajv } = await import('ajv')
  const { parse } = await import('yaml')
  const schema = JSON.parse(readFileSync(new URL('../../conf/flashgate.schema.json', import.meta.url), 'utf8')) as Record<string, unknown>
  const ajv = new Ajv({ allErrors: true, validateFormats: false })
  const validate = ajv.compile(schema)
  const good = [
    'listen: 127.0.0.1:8080\n',
    'listen: [127.0.0.1:8080, { address: 127.0.0.1:8443 }]\n',
    'tracing: { otlp: "http://127.0.0.1:4318", sample: 0.01, service_name: edge, max_queue: 100 }\n',
    'tracing: { sample: 1 }\n'
  ]
  for (const g of good) {
    t.ok(validate(parse(g)), `schema accepts ${JSON.stringify(g)}: ${ajv.errorsText(validate.errors)}`)
    t.ok(loadConfigText(g, '/v/gw.yaml', {}).ok, `loader accepts ${JSON.stringify(g)}`)
  }
  const bad = [
    'listen: []\n',
    'listen: [{ address: 127.0.0.1:8443, http2: yes-please }]\n',
    'listen: [{ address: 127.0.0.1:8443, tls: { cert: a.crt } }]\n',
    'listen: [{ adress: 127.0.0.1:8443 }]\n',
    'tracing: { otlp: "ftp://x", sample: 0.1 }\n',
    'tracing: { sample: 1.5 }\n',
    'tracing: { smaple: 0.1 }\n'
  ]
  for (const b of bad) {
    t.notOk(validate(parse(b)), `schema refuses ${JSON.stringify(b)}`)
    t.notOk(loadConfigText(b, '/v/gw.yaml', {}).ok, `loader refuses ${JSON.stringify(b)}`)
  }
})

t.test('h2 without a usable :authority, and h2 CONNECT, get 400 BAD_REQUEST', async (t) => {
  if (!needTools(t, 'openssl')) return
  const http2 = await import('node:http2')
  const d = tempDir(t)
  await makeCert(d.dir, 'gw', '0x1001')
  const origin = await startOrigin(t)
  const file = d.write('gw.yaml', yaml(origin.url, `
  - 127.0.0.1:0
  - { address: 127.0.0.1:0, tls: { cert: gw.crt, key: gw.key }, http2: true }`))
  const gw = await startTestGateway(t, { configFile: file })
  const session = http2.connect(gw.listeners[1]!.url, { rejectUnauthorized: false })
  t.teardown(() => { session.destroy() })
  const ask = async (headers: Record<string, string>): Promise<{ status: number, body: string, headers: Record<string, unknown> }> =>
    await new Promise((resolve, reject) => {
      const s = session.request(headers, { endStream: headers[':method'] !== 'CONNECT' })
      let status = 0
      let hs: Record<string, unknown> = {}
      let body = ''
      s.on('response', (h) => { status = Number(h[':status']); hs = h })
      s.on('data', (c: Buffer) => { body += c.toString() })
      s.on('end', () => { resolve({ status, body, headers: hs }) })
      s.on('error', reject)
      if (headers[':method'] === 'CONNECT') s.end()
    })
  const ok = await ask({ ':method': 'GET', ':path': '/p/x' })
  t.equal(ok.status, 200, 'a normal h2 request is proxied')
  // An empty :authority is refused by node's h2 layer itself (a stream error) or by the gateway (400).
  const noHost = await ask({ ':method': 'GET', ':path': '/p/x', ':authority': '' }).catch((err: Error & { code?: string }) => ({ status: -1, body: '', headers: {}, code: err.code }))
  if (noHost.status === -1) t.equal((noHost as { code?: string }).code, 'ERR_HTTP2_STREAM_ERROR', 'refused as a protocol error')
  else {
    t.equal(noHost.status, 400)
    t.equal(JSON.parse(noHost.body).code, 'BAD_REQUEST')
    t.type((noHost.headers as Record<string, unknown>)['x-request-id'], 'string')
  }
  const connect = await ask({ ':method': 'CONNECT', ':authority': 'example.com:443' })
  t.equal(connect.status, 400, 'CONNECT: not a forward proxy')
  t.equal(JSON.parse(connect.body).code, 'BAD_REQUEST')
  const before = origin.seen.length
  t.equal(origin.seen.length, before, 'nothing reached the origin')
})
