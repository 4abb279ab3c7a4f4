/**
 * Packaging, as a user gets flashgate: a copy of the repository's files (what a clone has: no dist/)
 * is packed with `npm pack` (prepack builds dist/), the tarball holds what it should and nothing else,
 * `npm install -g --prefix DIR` installs it — its dependencies served by a local npm registry on
 * 127.0.0.1 (a real HTTP server speaking the registry protocol, with tarballs packed from this
 * checkout's node_modules: no traffic leaves the machine) — and the installed `flashgate --version` and
 * `flashgate demo` work. Also: the systemd unit passes `systemd-analyze verify`, and conf/example.yaml
 * validates with the command its own header gives.
 */
import t, { type Test } from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { cpSync, createReadStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { request } from 'undici'
import { needTools } from '../helpers/tools.js'

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { name: string, version: string }

interface Run { code: number | null, out: string, err: string }

/** Run a program to its end (bounded by `ms`), collecting its output. */
async function run (cmd: string, args: readonly string[], opts: { cwd: string, env?: NodeJS.ProcessEnv, ms?: number }): Promise<Run> {
  return await new Promise((resolve) => {
    const p = spawn(cmd, [...args], { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    const timer = setTimeout(() => { p.kill('SIGKILL') }, opts.ms ?? 120_000)
    p.stdout.on('data', (c: Buffer) => { out += c.toString() })
    p.stderr.on('data', (c: Buffer) => { err += c.toString() })
    p.on('close', (code) => { clearTimeout(timer); resolve({ code, out, err }) })
  })
}

/** npm with a private cache and no chatter, in `cwd`. */
function npmEnv (dir: string, registry?: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, npm_config_cache: join(dir, 'npm-cache'), npm_config_update_notifier: 'false', npm_config_fund: 'false', npm_config_audit: 'false' }
  for (const k of Object.keys(env)) if (k.startsWith('npm_') && k !== 'npm_config_cache' && !k.startsWith('npm_config_update') && k !== 'npm_config_fund' && k !== 'npm_config_audit') delete env[k]
  if (registry !== undefined) env.npm_config_registry = registry
  return env
}

/**
 * A local npm registry with the production dependencies of package-lock.json, packed from node_modules:
 * `GET /NAME` answers the packument, `GET /-/FILE.tgz` the tarball.
 */
async function startRegistry (t: Test, dir: string): Promise<string> {
  const lock = JSON.parse(readFileSync(join(root, 'package-lock.json'), 'utf8')) as { packages: Record<string, { version?: string, dev?: boolean, devOptional?: boolean }> }
  const dirs = Object.entries(lock.packages).filter(([k, v]) => k !== '' && v.dev !== true && v.devOptional !== true).map(([k]) => join(root, k))
  const tarDir = join(dir, 'registry')
  mkdirSync(tarDir)
  const packed = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', tarDir, ...dirs], { cwd: dir, env: npmEnv(dir), ms: 120_000 })
  if (packed.code !== 0) throw new Error(`packing the dependencies failed: ${packed.err}`)
  const entries = JSON.parse(packed.out) as Array<{ name: string, version: string, filename: string, integrity: string, shasum: string }>
  const docs = new Map<string, { name: string, versions: Record<string, unknown>, 'dist-tags': { latest: string } }>()
  let base = ''
  for (const e of entries) {
    const manifest = JSON.parse(readFileSync(join(root, Object.keys(lock.packages).find((k) => k.endsWith(`node_modules/${e.name}`) && lock.packages[k]?.version === e.version) as string, 'package.json'), 'utf8')) as Record<string, unknown>
    const doc = docs.get(e.name) ?? { name: e.name, versions: {}, 'dist-tags': { latest: e.version } }
    doc.versions[e.version] = { ...manifest, name: e.name, version: e.version, dist: { tarball: `@BASE@/-/${e.filename}`, integrity: e.integrity, shasum: e.shasum } }
    docs.set(e.name, doc)
  }
  const server = createServer((req, res) => {
    const url = decodeURIComponent((req.url ?? '/').split('?')[0] ?? '/')
    if (url.startsWith('/-/')) {
      const file = join(tarDir, url.slice(3).replace(/[/\\]/g, ''))
      if (!existsSync(file)) { res.writeHead(404); res.end(); return }
      res.writeHead(200, { 'content-type': 'application/octet-stream' })
      createReadStream(file).pipe(res)
      return
    }
    const doc = docs.get(url.slice(1))
    if (doc === undefined) { res.writeHead(404, { 'content-type': 'application/json' }); res.end('{"error":"not found"}'); return }
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify(doc).replaceAll('@BASE@', base))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  t.teardown(async () => { server.closeAllConnections(); await new Promise<void>((resolve) => server.close(() => { resolve() })) })
  return base + '/'
}

t.test('npm pack of a clone → npm install -g of the tarball → flashgate --version and flashgate demo', { timeout: 290_000 }, async (t) => {
  if (!needTools(t, 'git')) return
  const dir = mkdtempSync(join(tmpdir(), 'fg-pack-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })

  // What a clone has: the tracked files (and new ones not ignored), no dist/, no node_modules of its own.
  const ls = spawnSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: root, encoding: 'utf8' })
  t.equal(ls.status, 0, 'git ls-files')
  const src = join(dir, 'src')
  for (const f of ls.stdout.split('\0').filter((f) => f !== '' && existsSync(join(root, f)))) {
    mkdirSync(dirname(join(src, f)), { recursive: true })
    cpSync(join(root, f), join(src, f))
  }
  t.notOk(existsSync(join(src, 'dist')), 'the copy has no build')
  symlinkSync(join(root, 'node_modules'), join(src, 'node_modules'))

  const packed = await run('npm', ['pack', '--json', '--pack-destination', dir], { cwd: src, env: npmEnv(dir), ms: 240_000 })
  t.equal(packed.code, 0, `npm pack: ${packed.err.slice(-2000)}`)
  if (packed.code !== 0) return
  const info = (JSON.parse(packed.out.slice(packed.out.indexOf('['))) as Array<{ filename: string, files: Array<{ path: string }> }>)[0]!
  const files = info.files.map((f) => f.path)
  for (const f of ['bin/flashgate.js', 'dist/gateway/cli.js', 'dist/gateway/demo.js', 'dist/conf/load.js', 'LICENSE', 'README.md', 'package.json',
    'conf/example.yaml', 'conf/demo.yaml', 'conf/flashgate.schema.json', 'conf/grafana/flashgate.json', 'conf/prometheus/alerts.yaml', 'conf/systemd/flashgate.service']) {
    t.ok(files.includes(f), `the tarball has ${f}`)
  }
  t.same(files.filter((f) => /^(test|bench|scripts)\/|^dist\/(test|bench)\/|\.map$|\.ts$|^bench\/results/.test(f)), [], 'no tests, bench, results, sources or source maps')
  t.ok(files.length < 150, `${files.length} files`)

  const registry = await startRegistry(t, dir)
  const prefix = join(dir, 'prefix')
  const inst = await run('npm', ['install', '-g', '--prefix', prefix, join(dir, info.filename)], { cwd: dir, env: npmEnv(dir, registry), ms: 180_000 })
  t.equal(inst.code, 0, `npm install -g: ${inst.err.slice(-2000)}`)
  if (inst.code !== 0) return
  const bin = join(prefix, 'bin', 'flashgate')

  const v = await run(bin, ['--version'], { cwd: dir })
  t.equal(v.code, 0, '--version exits 0')
  t.equal(v.out, `flashgate ${pkg.version}\n`, 'and prints package.json\'s version')
  const h = await run(bin, ['--help'], { cwd: dir })
  t.match(h.out, /--version/, '--version is in the usage')

  // The installed demo: origin + gateway; answers /_flashgate/time; stops on SIGINT.
  const demo = spawn(bin, ['demo'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] })
  const exited = new Promise<number | null>((resolve) => { demo.once('exit', (code) => { resolve(code) }) })
  t.teardown(() => { if (demo.exitCode === null && demo.signalCode === null) demo.kill('SIGKILL') })
  let out = ''
  let err = ''
  demo.stderr.on('data', (c: Buffer) => { err = (err + c.toString()).slice(-4000) })
  const url = await new Promise<string | null>((resolve) => {
    const timer = setTimeout(() => { resolve(null) }, 60_000)
    demo.stdout.on('data', (c: Buffer) => {
      out += c.toString()
      const m = /gateway\s+(http:\/\/127\.0\.0\.1:\d+)/.exec(out)
      if (m !== null) { clearTimeout(timer); resolve(m[1] as string) }
    })
    void exited.then(() => { clearTimeout(timer); resolve(null) })
  })
  t.ok(url, `the installed demo started: ${out.slice(0, 500)} ${err}`)
  if (url === null) return
  const r = await request(url + '/_flashgate/time')
  const body = await r.body.json() as { now?: number }
  t.equal(r.statusCode, 200)
  t.ok(typeof body.now === 'number' && Math.abs(body.now - Date.now()) < 60_000, '/_flashgate/time answers the clock')
  demo.kill('SIGINT')
  t.equal(await Promise.race([exited, new Promise<string>((resolve) => setTimeout(() => { resolve('still running') }, 20_000))]), 0, 'the demo stops on SIGINT')
})

t.test('the systemd unit passes systemd-analyze verify (and a broken one does not)', async (t) => {
  if (!needTools(t, 'systemd-analyze')) return
  const unit = join(root, 'conf', 'systemd', 'flashgate.service')
  const good = await run('systemd-analyze', ['verify', unit], { cwd: root, ms: 60_000 })
  t.equal(good.code, 0)
  t.equal(good.err.trim() + good.out.trim(), '', 'no remark')
  const dir = mkdtempSync(join(tmpdir(), 'fg-unit-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const bad = join(dir, 'flashgate.service')
  writeFileSync(bad, readFileSync(unit, 'utf8').replace('Restart=on-failure', 'Restart=sometimes'))
  const r = await run('systemd-analyze', ['verify', bad], { cwd: root, ms: 60_000 })
  t.match(r.err + r.out, /restart specifier/, 'the check can fail')
})

t.test('conf/example.yaml validates with the command in its own header, without its env vars set', async (t) => {
  const text = readFileSync(join(root, 'conf', 'example.yaml'), 'utf8')
  const m = /Check it with:\s+(.+)$/m.exec(text)
  t.ok(m, 'the header gives a command')
  if (m === null) return
  const cmd = (m[1] as string).trim()
  t.match(cmd, /flashgate validate --config conf\/example\.yaml/)
  const env: NodeJS.ProcessEnv = { ...process.env }
  for (const k of Object.keys(env)) if (k.startsWith('FLASHGATE_') || k.endsWith('_SECRET')) delete env[k]
  // `npx flashgate` runs this checkout's bin (dist/, built by npm install's prepare or by setup).
  const r = await run('sh', ['-c', cmd], { cwd: root, env, ms: 120_000 })
  t.equal(r.code, 0, `\`${cmd}\` exits 0: ${r.out}${r.err}`)
  t.match(r.out, /conf\/example\.yaml: ok/)
})
