/**
 * CPU time per proxied request, builds side by side: each gateway (`flashgate serve` from a checkout,
 * through tsx) proxies to one small node:http upstream (a separate process, pinned to CPU 1), loaded
 * by h2load with a fixed request count (HTTP/1.1, 32 connections); the gateway's own user+system CPU
 * time (from /proc/PID/stat, 10 ms ticks) over that run, divided by the requests answered. On a shared
 * machine CPU time per request moves far less than requests per second (which counts the time the
 * gateway was not scheduled): read the ratio of medians, rounds interleaved (order reversed every round).
 *
 *   node --import tsx bench/proxy-cpu.ts [--requests 20000] [--rounds 3] [--variants LIST] [DIR...]
 *
 * DIR: other checkouts to compare with this one (e.g. `git archive b409f9c | tar -x -C /tmp/before`
 * plus a node_modules); the last one is the reference. Every run is bounded by its request count.
 * `--variants strict/raw,strict/undici,node/undici,kit` instead measures gateways of this checkout
 * side by side, each `PARSER/CLIENT` (server.parser, upstreams.origin.client), and `kit`: the peers
 * kit's minimal undici proxy (bench/peers-kit/node/undici-proxy.js, node:http + one undici Pool);
 * the last one is the reference.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ROOT } from './flashgate.js'
import { freePort } from './proc.js'
import { UsageError, numberFlag, scriptOptions } from '../gateway/cli-args.js'

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** user + system CPU of a process, in µs (from /proc; clock ticks of 10 ms). */
function cpuMicros (pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
  return (Number(f[11]) + Number(f[12])) * 10_000
}

function median (xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)]!
}

async function main (): Promise<void> {
  const { requests, rounds, roots, variants } = scriptOptions({
    prog: 'bench/proxy-cpu.ts',
    usage: `Usage: node --import tsx bench/proxy-cpu.ts [--requests N] [--rounds N] [--variants LIST] [DIR...]

  --requests N      requests per run, 1000..200000 (default 20000)
  --rounds N        interleaved rounds, 1..10 (default 3)
  --variants LIST   comma-separated PARSER/CLIENT ((node|strict)/(undici|raw)) or kit
  DIR...            other checkouts to compare with this one; the last one is the reference`,
    flags: { requests: 'string', rounds: 'string', variants: 'string' },
    positionals: Infinity
  }, ({ values, positionals }) => {
    const variants = values.variants === undefined ? null : values.variants.split(',').filter((v) => v !== '')
    for (const v of variants ?? []) {
      if (v !== 'kit' && !/^(node|strict)\/(undici|raw)$/.test(v)) throw new UsageError(`--variants: ${v} is not PARSER/CLIENT (node|strict)/(undici|raw) or kit`)
    }
    return {
      requests: numberFlag(values.requests, 'requests', 1000, 200_000) ?? 20_000,
      rounds: numberFlag(values.rounds, 'rounds', 1, 10) ?? 3,
      roots: [ROOT, ...positionals],
      variants
    }
  })
  const dir = mkdtempSync(join(tmpdir(), 'flashgate-proxy-cpu-'))
  const upPort = await freePort()
  const up = spawn('taskset', ['-c', '1', process.execPath, '-e', `require('http').createServer((req, res) => { req.resume(); req.on('end', () => { res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '2' }); res.end('ok') }) }).listen(${upPort}, '127.0.0.1')`], { stdio: 'inherit' })
  const gws: Array<{ root: string, port: number, child: ChildProcess }> = []
  const labels = variants ?? roots
  try {
    for (const label of labels) {
      const port = await freePort()
      if (label === 'kit') {
        const kit = join(ROOT, 'bench', 'peers-kit', 'node')
        const child = spawn(process.execPath, [join(kit, 'undici-proxy.js'), String(port)], { cwd: kit, env: { ...process.env, ORIGIN: `http://127.0.0.1:${upPort}` }, stdio: ['ignore', 'ignore', 'inherit'] })
        gws.push({ root: label, port, child })
        continue
      }
      const root = variants === null ? label : ROOT
      const [parser, client] = variants === null ? ['node', 'undici'] : label.split('/') as [string, string]
      const file = join(dir, `gw-${gws.length}.yaml`)
      writeFileSync(file, `listen: 127.0.0.1:${port}\nadmin: off\naccess_log: { enabled: false }\n${parser === 'strict' ? 'server: { parser: strict }\n' : ''}upstreams:\n  origin:\n    targets: [{ url: http://127.0.0.1:${upPort} }]\n    connections: 32\n${client === 'raw' ? '    client: raw\n' : ''}routes:\n  - name: proxy\n    match: { path_prefix: / }\n    upstream: origin\n`)
      const child = spawn(process.execPath, ['--max-semi-space-size=64', '--no-memory-reducer', '--import', 'tsx', join(root, 'gateway', 'cli.ts'), 'serve', '--config', file], { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] })
      gws.push({ root: label, port, child })
    }
    for (const g of gws) {
      for (let i = 0; ; i++) {
        try { execFileSync('curl', ['-sf', '-o', '/dev/null', '--max-time', '5', `http://127.0.0.1:${g.port}/`]); break } catch { if (i > 300) throw new Error(`${g.root}: gateway did not answer`) }
        await sleep(200)
      }
    }
    const load = (port: number): number => {
      const out = execFileSync('h2load', ['--h1', '-c', '32', '-t', '1', '-n', String(requests), `http://127.0.0.1:${port}/`], { timeout: 300_000 }).toString()
      return Number(/(\d+) succeeded/.exec(out)?.[1] ?? 0)
    }
    for (const g of gws) load(g.port) // warm-up: the JIT settles
    const got = new Map<string, number[]>(labels.map((r) => [r, []]))
    for (let r = 0; r < rounds; r++) {
      for (const g of r % 2 === 0 ? gws : [...gws].reverse()) {
        const c0 = cpuMicros(g.child.pid!)
        const ok = load(g.port)
        const us = (cpuMicros(g.child.pid!) - c0) / Math.max(1, ok)
        got.get(g.root)!.push(us)
        process.stderr.write(`round ${r + 1} ${g.root}: ${us.toFixed(1)} µs CPU per request (${ok} answered)\n`)
      }
    }
    const ref = labels[labels.length - 1]!
    process.stdout.write(`| build | µs CPU per request (median) | rounds | ratio to ${ref} (CPU⁻¹) |\n|---|---:|---|---:|\n`)
    for (const [root, xs] of got) process.stdout.write(`| ${root} | ${median(xs).toFixed(1)} | ${xs.map((x) => x.toFixed(1)).join(', ')} | ${(median(got.get(ref)!) / median(xs)).toFixed(2)}x |\n`)
  } finally {
    for (const g of gws) g.child.kill('SIGTERM')
    up.kill()
    rmSync(dir, { recursive: true, force: true })
  }
}

main().catch((err: unknown) => { process.stderr.write(String(err instanceof Error ? err.stack : err) + '\n'); process.exit(1) })
