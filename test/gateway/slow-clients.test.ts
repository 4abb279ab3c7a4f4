// slowhttptest against a gateway process: 1,000 slow-header (slowloris, -H) and then 1,000 slow-body
// (R-U-Dead-Yet, -B) connections, each run bounded by -l seconds, all on 127.0.0.1. Meanwhile a normal
// client sends a GET and a small POST every 100 ms: every one must be answered 200 within the upstream
// timeout (2 s). The upstream has only 4 connections, as in the report. The slow bodies (100 kB)
// are larger than body_buffer_size (16 kB here): they are spooled to files before a connection is taken. Reported (t.comment): the
// most client connections the gateway held, slowhttptest's own count, and the normal client's p50/p99.
import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { Agent, request } from 'undici'
import { tempDir } from '../helpers/config.js'
import { startOrigin } from '../helpers/gateway.js'
import { spawnCli } from '../helpers/process.js'
import { needTools } from '../helpers/tools.js'

const RUN_S = 12

function quantile (xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? NaN
}

async function slowRun (t: Test, gwUrl: string, adminUrl: string, mode: '-H' | '-B'): Promise<void> {
  const args = [mode, '-c', '1000', '-r', '300', '-i', '5', '-l', String(RUN_S), '-p', '3', '-u', `${gwUrl}/slow-target`]
  if (mode === '-B') args.push('-s', '100000', '-t', 'POST')
  const child = spawn('slowhttptest', args, { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout.on('data', (c: Buffer) => { out += c.toString() })
  child.stderr.on('data', (c: Buffer) => { out += c.toString() })
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  const kill = setTimeout(() => child.kill('SIGKILL'), (RUN_S + 20) * 1000)

  const agent = new Agent({ connections: 4, keepAliveTimeout: 10_000 })
  const lat: number[] = []
  const bad: string[] = []
  let held = 0
  let done = false
  void exited.then(() => { done = true })
  const normal = (async () => {
    while (!done) {
      for (const method of ['GET', 'POST'] as const) {
        const t0 = performance.now()
        try {
          const r = await request(`${gwUrl}/normal`, { dispatcher: agent, method, body: method === 'POST' ? '{"a":1}' : null, headersTimeout: 5000, bodyTimeout: 5000 })
          await r.body.text()
          const ms = performance.now() - t0
          lat.push(ms)
          if (r.statusCode !== 200 || ms >= 2000) bad.push(`${method} ${r.statusCode} after ${ms.toFixed(0)} ms`)
        } catch (err) { bad.push(`${method} failed after ${(performance.now() - t0).toFixed(0)} ms: ${(err as Error).message}`) }
      }
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  })()
  const sampler = (async () => {
    while (!done) {
      try {
        const r = await request(`${adminUrl}/metrics`, { dispatcher: agent })
        const m = /^flashgate_connections (\d+)/m.exec(await r.body.text())
        if (m !== null) held = Math.max(held, Number(m[1]))
      } catch {}
      await new Promise((resolve) => setTimeout(resolve, 500))
    }
  })()
  const code = await exited
  clearTimeout(kill)
  await Promise.all([normal, sampler])
  await agent.close()
  // slowhttptest colours its status lines: strip the escapes before reading its counts
  const plain = out.replace(/\x1b\[[0-9;]*m/g, '')
  const connected = [...plain.matchAll(/connected:\s+(\d+)/g)].map((m) => Number(m[1]))
  const unavailable = /service available:\s+NO/.test(plain)
  const name = mode === '-H' ? 'slow headers (slowloris)' : 'slow bodies (100 kB, POST, spooled past 16 kB)'
  t.comment(`${name}: gateway held up to ${held} client connections (slowhttptest: up to ${Math.max(0, ...connected)} connected); ` +
    `normal client: ${lat.length} requests, p50 ${quantile(lat, 0.5).toFixed(1)} ms, p99 ${quantile(lat, 0.99).toFixed(1)} ms, max ${Math.max(...lat).toFixed(1)} ms`)
  t.equal(code, 0, `slowhttptest ${mode} ran (exit ${code})`)
  t.notOk(unavailable, `${name}: slowhttptest's own probe never found the service unavailable`)
  t.ok(held >= 500, `${name}: the attack was real: ${held} connections held at once`)
  t.ok(lat.length >= RUN_S * 4, `${name}: the normal client kept going (${lat.length} requests)`)
  t.same(bad, [], `${name}: every normal request answered 200 within the 2 s upstream timeout`)
}

t.test('a normal client is served during slowloris and slow-body runs', async (t) => {
  if (!needTools(t, 'slowhttptest')) return
  const origin = await startOrigin(t)
  const files = tempDir(t)
  const file = files.write('gw.yaml', `listen: 127.0.0.1:0
admin: 127.0.0.1:0
access_log: { enabled: false }
server: { headers_timeout: 5s, request_timeout: 10s, body_timeout: 10s, body_buffer_size: 16kb${process.env.FLASHGATE_TEST_PARSER === 'strict' ? ', parser: strict' : ''} }
upstreams:
  origin:
    targets: [${origin.url}]
    connections: 4
    timeout: 2s
    retries: 0${process.env.FLASHGATE_TEST_UPSTREAM_CLIENT === 'raw' ? '\n    client: raw' : ''}
routes:
  - name: all
    match: { path_prefix: / }
    upstream: origin
`)
  const p = spawnCli(t, ['serve', '--config', file], { FLASHGATE_LOG_LEVEL: 'info' })
  const listening = await p.waitFor((l) => l.msg === 'listening')
  const gwUrl = String(listening.url)
  const adminUrl = String(listening.admin)
  await slowRun(t, gwUrl, adminUrl, '-H')
  await slowRun(t, gwUrl, adminUrl, '-B')
  p.child.kill('SIGTERM')
  await p.exited
})
