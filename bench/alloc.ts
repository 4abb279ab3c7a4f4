/**
 * Heap allocation per request on the reject paths and the plain proxy, node:http listener beside the
 * strict one (server.parser, gateway/http/raw-server.ts) with its in-place lane off
 * (FLASHGATE_STRICT_LANE=off: every request gets a RawRequest/RawResponse pair, as before the lane) and
 * on (the default), one after the other in one run. Each gateway runs as its own process with a
 * fixed 2 MiB young generation (fine enough to count a few hundred bytes a request) and `--trace-gc`; wrk (bounded: -d seconds) sends one path; the
 * scavenges counted × 16 MiB ÷ requests gives the young-generation bytes allocated per request
 * (an estimate, ±1 scavenge). Counts, not speeds, so a busy machine changes them little.
 *
 *   node --import tsx bench/alloc.ts [--seconds S] [--path PATH]
 */
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import { createServer as createNetServer, type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { numberFlag, scriptOptions } from '../gateway/cli-args.js'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const SEMI_MB = 2
const { seconds, only } = scriptOptions({
  prog: 'bench/alloc.ts',
  usage: 'Usage: node --import tsx bench/alloc.ts [--seconds S] [--path PATH]\n\n  --seconds S   seconds of wrk load per path and listener, 1..60 (default 4)\n  --path PATH   measure only this path (/deny, /soldout/c/p, /blocked, /link/c/p, /x)',
  flags: { seconds: 'string', path: 'string' }
}, ({ values }) => ({ seconds: numberFlag(values.seconds, 'seconds', 1, 60) ?? 4, only: values.path }))

function freePort (): Promise<number> {
  return new Promise((resolve) => {
    const s = createNetServer()
    s.listen(0, '127.0.0.1', () => { const p = (s.address() as AddressInfo).port; s.close(() => { resolve(p) }) })
  })
}

function config (port: number, origin: string, parser: string): string {
  return `listen: 127.0.0.1:${port}
admin: off
access_log: { enabled: false }
secrets: { link_keys: { k1: "alloc-bench-link-key-0123456789abcdef" } }
identity: { user: header x-user-id }
server: { parser: ${parser} }
upstreams:
  origin: { targets: [${origin}], connections: 16 }
campaigns:
  - { id: c, starts_at: "2020-01-01T00:00:00Z", ends_at: "2100-01-01T00:00:00Z", products: [{ id: p, quota: 1 }] }
routes:
  - name: deny
    match: { path: /deny }
    guards: [{ rate_limit: { name: deny, rate: 1/m, burst: 1 } }]
    upstream: origin
  - name: blocked
    match: { path: /blocked }
    guards: [{ deny: { ips: [127.0.0.0/8] } }]
    upstream: origin
  - name: link
    match: { path: /link/:campaign/:product }
    guards: [{ signed_link: {} }]
    upstream: origin
  - name: soldout
    match: { path: /soldout/:campaign/:product }
    guards: [{ quota: {} }]
    upstream: origin
  - name: proxy
    match: { path_prefix: / }
    upstream: origin
`
}

interface Gc { scavenges: number, requests: number }

async function measure (variant: string, origin: string, path: string, warm: () => Promise<void>): Promise<Gc> {
  const parser = variant === 'node' ? 'node' : 'strict'
  const dir = mkdtempSync(join(tmpdir(), 'flashgate-alloc-'))
  const port = await freePort()
  const file = join(dir, 'gw.yaml')
  writeFileSync(file, config(port, origin, parser))
  const child = spawn(process.execPath, ['--trace-gc', `--min-semi-space-size=${SEMI_MB}`, `--max-semi-space-size=${SEMI_MB}`, '--import', 'tsx', join(ROOT, 'gateway', 'cli.ts'), 'serve', '--config', file],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, FLASHGATE_STRICT_LANE: variant === 'strict, no lane' ? 'off' : 'on' } })
  let scavenges = 0
  let counting = false
  let buf = ''
  child.stdout.on('data', (c: Buffer) => {
    buf += c.toString()
    let i
    while ((i = buf.indexOf('\n')) !== -1) {
      const line = buf.slice(0, i)
      buf = buf.slice(i + 1)
      if (counting && line.includes('Scavenge')) scavenges++
    }
  })
  let ready = false
  child.stderr.on('data', (c: Buffer) => { if (c.toString().includes('listening')) ready = true })
  for (let i = 0; i < 200 && !ready; i++) await new Promise((r) => setTimeout(r, 100))
  if (!ready) { child.kill('SIGKILL'); throw new Error(`gateway (${parser}) did not start`) }
  try {
    await warm()
    await wrk(`http://127.0.0.1:${port}${path}`, 2) // warm-up: JIT, pools, the latch
    counting = true
    const requests = await wrk(`http://127.0.0.1:${port}${path}`, seconds)
    await new Promise((r) => setTimeout(r, 200))
    counting = false
    return { scavenges, requests }
  } finally {
    child.kill('SIGTERM')
    await new Promise((r) => child.once('exit', r))
    rmSync(dir, { recursive: true, force: true })
  }
}

/** wrk -t1 -c32 for `s` seconds; the requests it completed. */
function wrk (url: string, s: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const w = spawn('wrk', ['-t1', '-c32', `-d${s}s`, url], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    w.stdout.on('data', (c: Buffer) => { out += c.toString() })
    w.on('exit', () => {
      const m = /(\d+) requests in/.exec(out)
      if (m === null) reject(new Error('wrk: ' + out)); else resolve(Number(m[1]))
    })
  })
}

async function main (): Promise<void> {
  const origin: Server = createServer((_req, res) => { res.writeHead(200, { 'content-type': 'application/json', 'content-length': '11' }); res.end('{"ok":true}') })
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r))
  const originUrl = `http://127.0.0.1:${(origin.address() as AddressInfo).port}`
  const rows: string[] = ['| path | listener | requests | scavenges | ≈ bytes/request |', '|---|---|---:|---:|---:|']
  const paths: Array<[string, string]> = [['429 RATE_LIMITED (node-local bucket)', '/deny'], ['409 SOLD_OUT (latch)', '/soldout/c/p'],
    ['403 BLOCKED (deny)', '/blocked'], ['401 UNAUTHENTICATED (signed link guard, no user)', '/link/c/p'], ['plain proxy', '/x']]
  for (const [what, path] of paths) {
    if (only !== undefined && path !== only) continue
    for (const parser of ['node', 'strict, no lane', 'strict']) {
      const warm = async (): Promise<void> => {}
      const g = await measure(parser, originUrl, path, warm)
      const per = g.requests === 0 ? NaN : (g.scavenges * SEMI_MB * 1024 * 1024) / g.requests
      rows.push(`| ${what} | ${parser} | ${g.requests} | ${g.scavenges} | ${g.scavenges < 3 ? 'too few scavenges to tell' : Math.round(per)} |`)
      process.stderr.write(rows[rows.length - 1] + '\n')
    }
  }
  origin.close()
  process.stdout.write(rows.join('\n') + '\n')
}

await main()
