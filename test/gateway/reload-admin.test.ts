import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { baseYaml, tempDir } from '../helpers/config.js'
import { client, fetchText, startOrigin, startTestGateway } from '../helpers/gateway.js'

const routeTo = (name: string, path: string, upstream: string): string =>
  `  - name: ${name}\n    match: { path_prefix: ${path} }\n    upstream: ${upstream}\n`

function twoOrigins (a: string, b: string, routes: string, extra = ''): string {
  return baseYaml(a, routes, extra).replace('upstreams:\n', `upstreams:\n  other:\n    targets: [{ url: "${b}" }]\n    retries: 0\n`)
}

t.test('reload under load: zero failed requests, new table takes over; invalid reload keeps the old one', async (t) => {
  const one = await startOrigin(t, (req, res) => { req.resume(); req.on('end', () => { res.writeHead(200, { 'content-type': 'text/plain' }); res.end('one') }) })
  const two = await startOrigin(t, (req, res) => { req.resume(); req.on('end', () => { res.writeHead(200, { 'content-type': 'text/plain' }); res.end('two') }) })
  const files = tempDir(t)
  const file = files.write('gw.yaml', twoOrigins(one.url, two.url, routeTo('site', '/', 'origin')))
  const gw = await startTestGateway(t, { configFile: file })
  const d = client(t, { connections: 16 })

  let failures = 0
  let total = 0
  const bodies = new Set<string>()
  let stop = false
  const deadline = Date.now() + 15_000
  const loop = async (): Promise<void> => {
    while (!stop && Date.now() < deadline && total < 20_000) {
      try {
        const a = await fetchText(d, gw.url + '/x')
        total++
        if (a.status !== 200) failures++
        bodies.add(a.text)
      } catch { failures++; total++ }
    }
  }
  const loops = Array.from({ length: 8 }, loop)
  // each reload happens while the 8 loops keep requests in flight (a loaded 2-core box is slow: no rate assertions)
  for (let i = 0; i < 6; i++) {
    const seenBefore = total
    while (total < seenBefore + 5 && Date.now() < deadline) await sleep(10)
    const up = i % 2 === 0 ? 'other' : 'origin'
    files.write('gw.yaml', twoOrigins(one.url, two.url, routeTo('site', '/', up)))
    const r = await gw.reload()
    t.ok(r.ok, `reload ${i} succeeded`)
  }
  const after = total
  while (total < after + 5 && Date.now() < deadline) await sleep(10)
  stop = true
  await Promise.all(loops)
  t.ok(total >= 35, `load ran across the reloads (${total} requests)`)
  t.equal(failures, 0, 'no request failed across 6 reloads')
  t.same([...bodies].sort(), ['one', 'two'], 'both tables served')
  t.equal(gw.frontend.inflight, 0)

  // now pointing at 'origin' (i=5): an invalid file is refused with FILE:LINE:COL and the old config serves on
  files.write('gw.yaml', twoOrigins(one.url, two.url, routeTo('site', '/', 'nowhere')))
  const bad = await gw.reload()
  t.equal(bad.ok, false)
  if (!bad.ok) t.match(bad.errors.join('\n'), new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}:\\d+:\\d+: `, 'm'))
  t.equal((await fetchText(d, gw.url + '/x')).text, 'one', 'old config keeps serving')

  // same through the admin endpoint
  const admin = await fetchText(d, gw.adminUrl + '/admin/reload', { method: 'POST' })
  t.equal(admin.status, 400)
  t.equal(admin.json.code, 'CONFIG_INVALID')
  t.match(admin.json.errors[0], /gw\.yaml:\d+:\d+: /)
  files.write('gw.yaml', twoOrigins(one.url, two.url, routeTo('site', '/', 'other')))
  const good = await fetchText(d, gw.adminUrl + '/admin/reload', { method: 'POST' })
  t.equal(good.status, 200)
  t.equal((await fetchText(d, gw.url + '/x')).text, 'two')
  const m = await fetchText(d, gw.adminUrl + '/metrics')
  t.match(m.text, /flashgate_config_reloads_total\{result="success"\} 7/)
  t.match(m.text, /flashgate_config_reloads_total\{result="failure"\} 2/)
})

t.test('retired guards are closed after their in-flight requests settle', async (t) => {
  // The origin holds /hold until the test lets it go (after the reload): no race between the reload's
  // duration (a worker thread loads the file) and a fixed delay.
  let release: () => void = () => {}
  const held = new Promise<void>((resolve) => { release = resolve })
  const origin = await startOrigin(t, (req, res) => {
    req.resume()
    req.on('end', () => {
      const answer = (): void => { res.writeHead(200, { 'content-length': '2' }); res.end('ok') }
      if (req.url === '/hold') void held.then(answer); else answer()
    })
  })
  const files = tempDir(t)
  const yaml = baseYaml(origin.url, '  - name: slow\n    match: { path_prefix: / }\n    upstream: origin\n    guards:\n      - rate_limit: { name: g, rate: 1/s }\n')
  const file = files.write('gw.yaml', yaml)
  const events: string[] = []
  let n = 0
  const gw = await startTestGateway(t, {
    configFile: file,
    factories: {
      rate_limit: () => {
        const id = `g${n++}`
        return { kind: 'rate_limit', id, check: () => undefined, close: () => { events.push(`close ${id}`) } }
      }
    }
  })
  const d = client(t)
  const inflight = fetchText(d, gw.url + '/hold')
  await sleep(100)
  t.ok((await gw.reload()).ok)
  t.same(events, [], 'old guard kept while its request is in flight')
  release()
  t.equal((await inflight).status, 200)
  t.same(events, ['close g0'], 'closed once the request settled')
})

t.test('admin: token rules, readyz, healthz, quota endpoints', async (t) => {
  const origin = await startOrigin(t)
  const files = tempDir(t)
  const yaml = baseYaml(origin.url, routeTo('site', '/', 'origin'), `admin_token: s3cret
campaigns:
  - id: c1
    starts_at: 2020-01-01T00:00:00Z
    ends_at: 2099-01-01T00:00:00Z
    products:
      - { id: "p1", quota: 5 }
`)
  const gw = await startTestGateway(t, { configFile: files.write('gw.yaml', yaml) })
  const d = client(t)
  const auth = { authorization: 'Bearer s3cret' }
  t.equal((await fetchText(d, gw.adminUrl + '/healthz')).status, 200, 'healthz needs no token')
  t.equal((await fetchText(d, gw.adminUrl + '/metrics')).status, 401, 'metrics needs the token')
  t.equal((await fetchText(d, gw.adminUrl + '/metrics', { headers: { authorization: 'Bearer wrong' } })).status, 401)
  t.equal((await fetchText(d, gw.adminUrl + '/metrics', { headers: { authorization: 'Bearer s3cret-and-more' } })).status, 401)
  t.equal((await fetchText(d, gw.adminUrl + '/admin/reload', { method: 'POST' })).status, 401)
  const m = await fetchText(d, gw.adminUrl + '/metrics', { headers: auth })
  t.equal(m.status, 200)
  t.match(m.text, /flashgate_connections/)
  t.match(m.text, /process_cpu_user_seconds_total/, 'default process metrics')
  t.equal((await fetchText(d, gw.adminUrl + '/readyz', { headers: auth })).status, 200)

  let q = await fetchText(d, gw.adminUrl + '/admin/quota/c1/p1', { headers: auth })
  t.equal(q.status, 200)
  t.same(q.json, { quota: 5, admitted: 0, remaining: 5 })
  q = await fetchText(d, gw.adminUrl + '/admin/quota/c1/p1', { method: 'PUT', headers: { ...auth, 'content-type': 'application/json' }, body: '{"quota": 9}' })
  t.equal(q.status, 200)
  t.equal(q.json.quota, 9)
  t.equal((await fetchText(d, gw.adminUrl + '/admin/quota/c1/p1', { method: 'PUT', headers: auth, body: '{"quota": -1}' })).status, 400)
  t.equal((await fetchText(d, gw.adminUrl + '/admin/quota/c1/nope', { headers: auth })).status, 404)
  t.equal((await fetchText(d, gw.adminUrl + '/admin/quota/zz/p1', { headers: auth })).status, 404)
  q = await fetchText(d, gw.adminUrl + '/admin/quota/c1/p1/reset', { method: 'POST', headers: auth })
  t.equal(q.status, 200)
  t.equal(q.json.admitted, 0)
  t.equal((await fetchText(d, gw.adminUrl + '/nope', { headers: auth })).status, 404)

  // readyz goes 503 while draining
  const closing = gw.close()
  await closing
  t.equal(gw.ready(), false)
})

t.test('admin on a non-loopback address without a token is refused at start', async (t) => {
  const { createAdminServer } = await import('../../gateway/admin.js')
  t.throws(() => createAdminServer('0.0.0.0', null, {} as never, () => {}), /needs admin_token/)
  t.doesNotThrow(() => createAdminServer('127.0.0.1', null, {} as never, () => {}))
  t.doesNotThrow(() => createAdminServer('::1', null, {} as never, () => {}))
})
