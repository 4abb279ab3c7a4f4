/**
 * TLS, HTTP/2 and tracing paths, side by side in interleaved rounds:
 *
 *   node --import tsx bench/tls.ts [--part tls|trace|all] [--duration 5] [--rounds 3] [--json FILE]
 *
 * - `tls`: flashgate and nginx (Debian's, one worker, config written here under a temp dir) with the
 *   same self-signed certificate (made with openssl), each serving the same three listeners: cleartext
 *   HTTP/1.1, HTTP/1.1 over TLS, HTTP/2 over TLS (`listen … ssl http2`, nginx 1.22). Paths: proxy to the
 *   bench's upstream, and a 429 answered at the edge (flashgate: a spent global bucket; nginx: `return
 *   429`). Load: h2load (`--h1` for HTTP/1.1), connections opened once and kept, so the TLS handshake is
 *   not what is measured; the steady-state cost of TLS records and h2 framing is.
 * - `trace`: the cleartext proxy path with tracing off, with `tracing: { otlp, sample: 0.01 }` exporting
 *   to a local receiver (a node:http server answering 200), and — when FLASHGATE_BEFORE names another
 *   checkout (e.g. `git archive` of the commit before) — that build, as "before".
 *
 * Servers under test are pinned to CPU 0; h2load and the upstream to CPU 1. Every run is bounded
 * (`--duration` seconds, h2load's own timeout). Ratios are taken within each round; the report gives
 * each round and the median. On a shared machine the absolute figures move; read the ratios.
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { flashgateCommand } from './flashgate.js'
import { freePort, run, start, stopAll, waitPort, which } from './proc.js'
import { startUpstream } from './upstream.js'
import { numberFlag, oneOfFlag, scriptOptions } from '../gateway/cli-args.js'

interface Opts { part: 'tls' | 'trace' | 'all', duration: number, rounds: number, json: string | null }

const USAGE = `Usage: node --import tsx bench/tls.ts [--part tls|trace|all] [--duration S] [--rounds N] [--json FILE]

  --part P       tls (flashgate beside nginx over TLS and h2), trace (tracing off/on/before) or all (default)
  --duration S   seconds per h2load run, 1..30 (default 5)
  --rounds N     interleaved rounds, 1..10 (default 3)
  --json FILE    also write the rows as JSON there`

function options (argv: readonly string[]): Opts {
  return scriptOptions({ prog: 'bench/tls.ts', usage: USAGE, flags: { part: 'string', duration: 'string', rounds: 'string', json: 'string' } }, ({ values }) => ({
    part: oneOfFlag(values.part, 'part', ['tls', 'trace', 'all'] as const) ?? 'all',
    duration: numberFlag(values.duration, 'duration', 1, 30) ?? 5,
    rounds: numberFlag(values.rounds, 'rounds', 1, 10) ?? 3,
    json: values.json ?? null
  }), argv)
}

interface Load { rps: number, ok: number, failed: number, errored: number, codes: string }

/** One bounded h2load run against `url`. */
async function h2load (url: string, h1: boolean, seconds: number): Promise<Load> {
  const args = ['-c', '32', '-m', h1 ? '1' : '8', '-t', '1', '-D', String(seconds), '--warm-up-time', '1', ...(h1 ? ['--h1'] : []), url]
  const r = await run('h2load', args, { cpus: '1', timeoutMs: (seconds + 20) * 1000 })
  const out = r.stdout
  const rps = Number(/finished in [\d.]+m?s, ([\d.]+) req\/s/.exec(out)?.[1] ?? NaN)
  const m = /requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored/.exec(out)
  const codes = /status codes: ([^\n]+)/.exec(out)?.[1] ?? ''
  return { rps, ok: Number(m?.[1] ?? 0), failed: Number(m?.[2] ?? 0), errored: Number(m?.[3] ?? 0), codes }
}

function median (xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const n = s.length
  return n === 0 ? NaN : n % 2 === 1 ? s[(n - 1) / 2]! : (s[n / 2 - 1]! + s[n / 2]!) / 2
}

async function startFlashgate (dir: string, name: string, yaml: string, cmd = flashgateCommand()): Promise<void> {
  const file = join(dir, `${name}.yaml`)
  writeFileSync(file, yaml)
  const m = start({ name, cmd: cmd.cmd, args: [...cmd.pre, 'serve', '--config', file], cpus: '0', logFile: join(dir, `${name}.log`) })
  const port = Number(/127\.0\.0\.1:(\d+)/.exec(yaml)?.[1])
  await waitPort(port, name, m, 60_000)
}

function fgYaml (upstream: string, ports: { plain: number, tls: number, h2: number } | { plain: number }, cert: string | null, key: string | null, extra = ''): string {
  const listen = 'tls' in ports
    ? `listen:\n  - 127.0.0.1:${ports.plain}\n  - { address: 127.0.0.1:${ports.tls}, tls: { cert: ${cert}, key: ${key} } }\n  - { address: 127.0.0.1:${ports.h2}, tls: { cert: ${cert}, key: ${key} }, http2: true }`
    : `listen: 127.0.0.1:${ports.plain}`
  return `${listen}
admin: off
access_log: { enabled: false }
${extra}
upstreams:
  origin:
    targets: [{ url: ${upstream} }]
    connections: 32
routes:
  - name: deny
    match: { path: /deny }
    guards:
      - rate_limit: { name: spent, rate: 1/h, burst: 1 }
    upstream: origin
  - name: proxy
    match: { path_prefix: / }
    upstream: origin
`
}

function nginxConf (dir: string, upstream: string, p: { plain: number, tls: number, h2: number }, cert: string, key: string): string {
  return `worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/nginx.error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  http2_max_requests 1000000;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  ssl_certificate ${cert};
  ssl_certificate_key ${key};
  upstream up { server ${upstream.replace('http://', '')}; keepalive 32; }
  server {
    listen 127.0.0.1:${p.plain};
    listen 127.0.0.1:${p.tls} ssl;
    listen 127.0.0.1:${p.h2} ssl http2;
    location = /deny { default_type application/json; return 429 '{"code":"RATE_LIMITED","message":"rate limited"}'; }
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $host; proxy_set_header X-Forwarded-For $remote_addr; }
  }
}
`
}

interface Row { path: string, flashgate: number[], reference: number[], refName: string, errors: number }

async function tlsPart (o: Opts, dir: string, upstream: string): Promise<Row[]> {
  for (const bin of ['openssl', 'nginx', 'h2load']) if (which(bin) === null) throw new Error(`${bin} is not installed: npm run setup -- --test`)
  const cert = join(dir, 'bench.crt')
  const key = join(dir, 'bench.key')
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' })
  const fg = { plain: await freePort(), tls: await freePort(), h2: await freePort() }
  const ng = { plain: await freePort(), tls: await freePort(), h2: await freePort() }
  await startFlashgate(dir, 'flashgate', fgYaml(upstream, fg, cert, key))
  const conf = join(dir, 'nginx.conf')
  writeFileSync(conf, nginxConf(dir, upstream, ng, cert, key))
  const nm = start({ name: 'nginx', cmd: 'nginx', args: ['-p', `${dir}/`, '-c', conf, '-e', `${dir}/nginx.error.log`], cpus: '0', logFile: join(dir, 'nginx.log') })
  await waitPort(ng.h2, 'nginx', nm)
  // Spend flashgate's one token so /deny rejects from the first measured request.
  await h2load(`http://127.0.0.1:${fg.plain}/deny`, true, 1)
  const paths: Array<{ path: string, url: (p: typeof fg) => string, h1: boolean, expect: string }> = [
    { path: 'proxy, HTTP/1.1 cleartext', url: (p) => `http://127.0.0.1:${p.plain}/`, h1: true, expect: '2xx' },
    { path: 'proxy, HTTP/1.1 over TLS', url: (p) => `https://127.0.0.1:${p.tls}/`, h1: true, expect: '2xx' },
    { path: 'proxy, HTTP/2 over TLS', url: (p) => `https://127.0.0.1:${p.h2}/`, h1: false, expect: '2xx' },
    { path: '429 at the edge, HTTP/1.1 over TLS', url: (p) => `https://127.0.0.1:${p.tls}/deny`, h1: true, expect: '4xx' },
    { path: '429 at the edge, HTTP/2 over TLS', url: (p) => `https://127.0.0.1:${p.h2}/deny`, h1: false, expect: '4xx' }
  ]
  const rows: Row[] = paths.map((p) => ({ path: p.path, flashgate: [], reference: [], refName: 'nginx', errors: 0 }))
  for (let r = 0; r < o.rounds; r++) {
    for (let i = 0; i < paths.length; i++) {
      const p = paths[i]!
      const row = rows[i]!
      // Alternate which server goes first in a round.
      const order = (r + i) % 2 === 0 ? ['fg', 'ng'] as const : ['ng', 'fg'] as const
      for (const who of order) {
        const l = await h2load(p.url(who === 'fg' ? fg : ng), p.h1, o.duration)
        // h2load counts a 4xx as "failed": on the 429 paths only errors and other statuses are errors.
        const bad = p.expect === '2xx' ? l.failed + l.errored > 0 || /(^|, )0 2xx/.test(l.codes) : l.errored > 0 || /(^|, )0 4xx/.test(l.codes) || !/(^|, )0 2xx/.test(l.codes)
        if (bad || !/(^|, )0 5xx/.test(l.codes)) row.errors++
        ;(who === 'fg' ? row.flashgate : row.reference).push(l.rps)
        process.stderr.write(`round ${r + 1} ${who === 'fg' ? 'flashgate' : 'nginx'} ${p.path}: ${Math.round(l.rps)} req/s (${l.codes})\n`)
      }
    }
  }
  return rows
}

async function tracePart (o: Opts, dir: string, upstream: string): Promise<Row[]> {
  if (which('h2load') === null) throw new Error('h2load is not installed: npm run setup -- --test')
  let spans = 0
  const receiver = createServer((req, res) => { req.on('data', () => {}); req.on('end', () => { spans++; res.writeHead(200, { 'content-type': 'application/json' }); res.end('{}') }) })
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve))
  const recv = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`
  const off = await freePort()
  const on = await freePort()
  await startFlashgate(dir, 'fg-trace-off', fgYaml(upstream, { plain: off }, null, null))
  await startFlashgate(dir, 'fg-trace-on', fgYaml(upstream, { plain: on }, null, null, `tracing: { otlp: "${recv}", sample: 0.01 }`))
  const targets: Array<{ name: string, port: number }> = [{ name: 'off', port: off }, { name: 'on', port: on }]
  const before = process.env.FLASHGATE_BEFORE
  if (before !== undefined && before !== '') {
    const port = await freePort()
    const base = flashgateCommand()
    const flags = base.pre.filter((a) => a.startsWith('--max') || a.startsWith('--no-'))
    await startFlashgate(dir, 'fg-before', fgYaml(upstream, { plain: port }, null, null), { cmd: process.execPath, pre: [...flags, '--import', 'tsx', join(before, 'gateway', 'cli.ts')], how: 'before' })
    targets.push({ name: 'before', port })
  }
  const got = new Map<string, number[]>(targets.map((t) => [t.name, []]))
  let errors = 0
  for (let r = 0; r < o.rounds; r++) {
    const order = r % 2 === 0 ? targets : [...targets].reverse()
    for (const t of order) {
      const l = await h2load(`http://127.0.0.1:${t.port}/`, true, o.duration)
      if (l.failed + l.errored > 0) errors++
      got.get(t.name)!.push(l.rps)
      process.stderr.write(`round ${r + 1} tracing ${t.name}: ${Math.round(l.rps)} req/s (${l.codes})\n`)
    }
  }
  receiver.close()
  process.stderr.write(`OTLP batches received: ${spans}\n`)
  const rows: Row[] = [{ path: 'proxy, tracing on (sample 0.01, exporting)', flashgate: got.get('on')!, reference: got.get('off')!, refName: 'tracing off', errors }]
  if (got.has('before')) rows.push({ path: 'proxy, tracing off (this build)', flashgate: got.get('off')!, reference: got.get('before')!, refName: 'the build before', errors })
  return rows
}

function report (rows: Row[], o: Opts): string {
  const lines = [
    `TLS / HTTP/2 / tracing bench, ${new Date().toISOString()}, ${o.rounds} rounds of ${o.duration} s, servers on CPU 0, h2load on CPU 1.`,
    'The machine may be shared: absolute figures are noisy, ratios are taken within each round.',
    '',
    '| path | reference | reference req/s (median) | flashgate req/s (median) | ratio per round | median ratio | runs with errors |',
    '|---|---|---:|---:|---|---:|---:|'
  ]
  for (const r of rows) {
    const ratios = r.flashgate.map((f, i) => f / (r.reference[i] ?? NaN))
    lines.push(`| ${r.path} | ${r.refName} | ${Math.round(median(r.reference)).toLocaleString('en')} | ${Math.round(median(r.flashgate)).toLocaleString('en')} | ${ratios.map((x) => x.toFixed(2)).join(', ')} | ${median(ratios).toFixed(2)}× | ${r.errors} |`)
  }
  return lines.join('\n') + '\n'
}

async function main (): Promise<void> {
  const o = options(process.argv.slice(2))
  const dir = mkdtempSync(join(tmpdir(), 'flashgate-bench-tls-'))
  try {
    const up = await startUpstream(join(dir, 'upstream'), '1')
    const rows: Row[] = []
    if (o.part !== 'trace') rows.push(...await tlsPart(o, dir, up.url))
    if (o.part !== 'tls') rows.push(...await tracePart(o, dir, up.url))
    const text = report(rows, o)
    process.stdout.write(text)
    if (o.json !== null) writeFileSync(o.json, JSON.stringify({ options: o, rows }, null, 2))
  } finally {
    await stopAll()
    rmSync(dir, { recursive: true, force: true })
  }
}

main().catch(async (err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? err.message : String(err)}\n`)
  await stopAll()
  process.exit(1)
})
