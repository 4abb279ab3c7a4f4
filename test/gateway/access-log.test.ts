// The access log: the fields an operator needs (request id, host, user agent, bytes, upstream status
// and time, trace id), and reopening the file on SIGUSR1 after logrotate renamed it.
import t from 'tap'
import { existsSync, readFileSync, renameSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { tempDir, yamlConfig } from '../helpers/config.js'
import { client, fetchText, memoryAccessLog, startOrigin, startTestGateway } from '../helpers/gateway.js'
import { spawnCli } from '../helpers/process.js'
import { formatEntry } from '../../gateway/access-log.js'

function cfg (originUrl: string, extra = ''): string {
  return `listen: 127.0.0.1:0
admin: 127.0.0.1:0
${extra}
upstreams:
  origin:
    targets: [{ url: ${originUrl} }]
    retries: 0
routes:
  - name: buy
    match: { path_prefix: /buy/ }
    upstream: origin
  - name: blocked
    match: { path: /blocked }
    guards:
      - deny: { ips: [127.0.0.1/32] }
    upstream: origin
`
}

t.test('a line carries request id, host, user agent, bytes, upstream status and time', async (t) => {
  const origin = await startOrigin(t)
  const log = memoryAccessLog()
  const gw = await startTestGateway(t, { config: yamlConfig(cfg(origin.url, 'access_log: { enabled: false }')), accessLog: log, admin: null })
  const d = client(t)
  const a = await fetchText(d, gw.url + '/buy/1', { method: 'POST', body: 'x'.repeat(123), headers: { host: 'shop.example', 'user-agent': 'ua/1.0 "quoted"', 'content-type': 'text/plain', traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00' } })
  t.equal(a.status, 200)
  const r = await fetchText(d, gw.url + '/blocked', { headers: { 'user-agent': 'bot' } })
  t.equal(r.status, 403)
  const nf = await fetchText(d, gw.url + '/none')
  const tm = await fetchText(d, gw.url + '/_flashgate/time')
  t.equal(log.entries.length, 4)
  const [p, b, n, e] = log.entries
  t.equal(p?.requestId, a.headers['x-request-id'])
  t.equal(p?.host, 'shop.example')
  t.equal(p?.userAgent, 'ua/1.0 "quoted"')
  t.equal(p?.bytesIn, 123)
  t.equal(p?.bytesOut, Buffer.byteLength(a.text), 'bytes out: the body relayed')
  t.equal(p?.upstreamStatus, 200)
  t.ok(typeof p?.upstreamMs === 'number' && p.upstreamMs > 0 && p.upstreamMs <= p.durationMs, 'upstream time within the request time')
  t.equal(p?.traceId, '4bf92f3577b34da6a3ce929d0e0e4736', 'the caller\'s trace id (tracing off: continued, not made)')
  t.equal(p?.traceId, (origin.seen.at(-1)?.headers.traceparent as string).slice(3, 35), 'the trace id the origin got')
  t.equal(b?.traceId, null, 'tracing off and no caller trace: no trace id')
  t.equal(p?.protocol, '1.1')
  t.equal(b?.requestId, r.headers['x-request-id'])
  t.equal(b?.upstreamStatus, null, 'rejected: no upstream status')
  t.equal(b?.upstreamMs, null)
  t.equal(b?.bytesOut, Buffer.byteLength(r.text))
  t.equal(b?.userAgent, 'bot')
  t.equal(n?.requestId, nf.headers['x-request-id'], 'an answer before routing has its id too')
  t.equal(n?.bytesOut, Buffer.byteLength(nf.text))
  t.equal(e?.requestId, tm.headers['x-request-id'], 'an edge endpoint\'s answer has its id')
  t.equal(e?.bytesOut, Buffer.byteLength(tm.text))
  // The JSON line: valid JSON with the snake_case fields.
  const line = JSON.parse(formatEntry(p!))
  t.match(line, {
    request_id: a.headers['x-request-id'], host: 'shop.example', user_agent: 'ua/1.0 "quoted"', bytes_in: 123,
    bytes_out: Buffer.byteLength(a.text), upstream_status: 200, trace_id: p?.traceId, protocol: '1.1', status: 200, outcome: 'passed'
  })
  t.type(line.upstream_ms, 'number')
  const rej = JSON.parse(formatEntry(b!))
  t.equal(rej.upstream_status, null)
  t.equal(rej.upstream_ms, null)
})

t.test('SIGUSR1 reopens the log file: after a rename, the next lines go to a new file at the old path', async (t) => {
  const origin = await startOrigin(t)
  const d = tempDir(t)
  const file = d.write('gw.yaml', cfg(origin.url, 'access_log: { path: access.log }'))
  const path = join(d.dir, 'access.log')
  const p = spawnCli(t, ['serve', '--config', file])
  const listening = await p.waitFor((l) => l.msg === 'listening')
  const url = listening.url as string
  const c = client(t)
  const lines = async (f: string): Promise<any[]> => {
    // Lines are written in batches (≤ 50 ms): wait until they are there.
    for (let i = 0; i < 100; i++) {
      if (existsSync(f)) {
        const text = readFileSync(f, 'utf8')
        if (text.endsWith('\n')) return text.trim().split('\n').map((l) => JSON.parse(l))
      }
      await sleep(20)
    }
    return []
  }
  for (let i = 0; i < 3; i++) t.equal((await fetchText(c, url + '/buy/before' + i)).status, 200)
  await sleep(150)
  t.equal((await lines(path)).length, 3)
  renameSync(path, path + '.1') // logrotate's rename
  t.equal((await fetchText(c, url + '/buy/between')).status, 200) // still written to the renamed file
  await sleep(150)
  p.child.kill('SIGUSR1')
  await sleep(200)
  for (let i = 0; i < 2; i++) t.equal((await fetchText(c, url + '/buy/after' + i)).status, 200)
  const fresh = await lines(path)
  t.same(fresh.map((l) => l.path), ['/buy/after0', '/buy/after1'], 'new lines in a new file at the old path')
  const rotated = await lines(path + '.1')
  t.same(rotated.map((l) => l.path), ['/buy/before0', '/buy/before1', '/buy/before2', '/buy/between'], 'the rotated file keeps the old lines')
  t.equal(p.child.exitCode, null, 'SIGUSR1 did not stop (or debug) the process')
  t.notOk(p.stderr().includes('Debugger listening'), 'and did not start the inspector')
  p.child.kill('SIGTERM')
  t.equal(await p.exited, 0)
})
