/**
 * The peers kit (`bench/peers-kit/`, a copy of the team's `../shared/peers/` kept in the project so that
 * `--peers` works from a clone): what a user would pick instead of flashgate. The bench starts the
 * kit's own servers with the kit's own configs, pinned the kit's way (measured servers on CPU 0; redis and
 * the nginx origin on CPU 1), and measures them with the same generator, in the same interleaved rounds
 * as flashgate's targets. The kit folder may be read-only (it is here), and nginx writes pid and temp
 * files below its prefix and Node needs the kit's packages: so the kit is always copied to a scratch folder
 * ($TMPDIR/flashgate-peers) and `npm ci` runs there when its node_modules are missing; the kit's own
 * folder is never written.
 */
import { spawnSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { SHIPPED_FLAGS } from '../gateway/node-flags.js'
import { ROOT } from './flashgate.js'
import { portOpen, run, start, waitPort, which } from './proc.js'
import type { Managed } from './proc.js'
import type { RequestSpec } from './load/types.js'

/** Fixed by the kit's configs. */
export const KIT_REDIS = 'redis://127.0.0.1:16379'
export const KIT_ORIGIN = 'http://127.0.0.1:18080'

export interface PeerTarget {
  readonly name: string
  /** The server process it needs (several targets share the lua and limit-req servers). */
  readonly server: string
  readonly port: number
  readonly request: RequestSpec
  readonly expectStatus: number
  readonly bodyFragment: string
  /** What it is the peer of, in flashgate terms (for the report). */
  readonly role: string
}

export const PEER_TARGETS: readonly PeerTarget[] = [
  { name: 'node-net-fixed', server: 'net-fixed', port: 18091, request: { method: 'GET', path: '/' }, expectStatus: 200, bodyFragment: '"status":"ok"', role: 'floor of any Node server on net.Socket (fixed bytes, no parsing)' },
  { name: 'node-hello', server: 'node-hello', port: 18081, request: { method: 'GET', path: '/' }, expectStatus: 200, bodyFragment: '"status":"ok"', role: 'floor of any node:http server' },
  { name: 'nginx-hello', server: 'hello', port: 18082, request: { method: 'GET', path: '/' }, expectStatus: 200, bodyFragment: '"status":"ok"', role: 'floor of nginx' },
  { name: 'node-undici-proxy', server: 'undici-proxy', port: 18083, request: { method: 'GET', path: '/' }, expectStatus: 200, bodyFragment: '"ok":true', role: 'smallest Node proxy' },
  { name: 'nginx-proxy', server: 'proxy', port: 18084, request: { method: 'GET', path: '/' }, expectStatus: 200, bodyFragment: '"ok":true', role: 'nginx proxy_pass' },
  { name: 'nginx-limit-req', server: 'limit-req', port: 18085, request: { method: 'GET', path: '/' }, expectStatus: 200, bodyFragment: '"ok":true', role: 'nginx limit_req, pass' },
  { name: 'nginx-limit-req-reject', server: 'limit-req', port: 18085, request: { method: 'GET', path: '/deny' }, expectStatus: 429, bodyFragment: 'Too Many Requests', role: 'nginx limit_req, reject' },
  { name: 'lua-redis-pass', server: 'lua', port: 18086, request: { method: 'GET', path: '/?product=big' }, expectStatus: 200, bodyFragment: '"ok":true', role: 'OpenResty: bucket + Redis INCRBY quota, proxy' },
  { name: 'lua-redis-soldout', server: 'lua', port: 18086, request: { method: 'GET', path: '/?product=soldout' }, expectStatus: 200, bodyFragment: 'SOLD_OUT', role: 'OpenResty: Redis INCRBY over quota' },
  { name: 'lua-bucket-reject', server: 'lua', port: 18086, request: { method: 'GET', path: '/tb-deny?product=tbdeny' }, expectStatus: 429, bodyFragment: '', role: 'OpenResty: shared-dict bucket reject' },
  { name: 'fastify-proxy', server: 'fastify-plain', port: 18087, request: { method: 'GET', path: '/' }, expectStatus: 200, bodyFragment: '"ok":true', role: 'fastify + @fastify/http-proxy' },
  { name: 'fastify-rl-mem', server: 'fastify-rl-mem', port: 18088, request: { method: 'GET', path: '/' }, expectStatus: 200, bodyFragment: '"ok":true', role: '+ @fastify/rate-limit (memory)' },
  { name: 'fastify-rl-redis', server: 'fastify-rl-redis', port: 18089, request: { method: 'GET', path: '/' }, expectStatus: 200, bodyFragment: '"ok":true', role: '+ @fastify/rate-limit (Redis)' },
  { name: 'fastify-rl-reject', server: 'fastify-rl-reject', port: 18090, request: { method: 'GET', path: '/' }, expectStatus: 429, bodyFragment: '', role: '@fastify/rate-limit rejecting' }
]

export interface Kit {
  readonly dir: string
  /** The kit's redis and nginx origin (always started). */
  readonly base: Managed[]
  /** Server name → its process (only the ones needed). */
  readonly servers: Map<string, Managed>
}

/** What is missing for the kit, as install commands; empty when everything is there. */
export function kitMissing (): string[] {
  const apt: string[] = []
  if (which('nginx') === null) apt.push('nginx')
  if (!existsSync('/usr/lib/nginx/modules/ngx_http_lua_module.so')) apt.push('libnginx-mod-http-lua')
  if (!existsSync('/usr/lib/nginx/modules/ndk_http_module.so')) apt.push('libnginx-mod-http-ndk')
  if (!existsSync('/usr/share/lua/5.1/resty/core.lua')) apt.push('lua-resty-core')
  if (!existsSync('/usr/share/lua/5.1/resty/lrucache.lua')) apt.push('lua-resty-lrucache')
  if (!existsSync('/usr/share/lua/5.1/nginx/redis.lua')) apt.push('lua-nginx-redis')
  if (which('redis-server') === null) apt.push('redis-server')
  if (which('redis-cli') === null) apt.push('redis-tools')
  return apt.length > 0 ? [`apt-get install -y ${apt.join(' ')}`] : []
}

/** A writable copy of the kit with its Node packages installed. */
export async function prepareKit (source: string, log: (m: string) => void): Promise<string> {
  const src = resolve(source)
  if (!existsSync(join(src, 'run-peers.sh'))) throw new Error(`no peers kit at ${src} (set --peers-dir)`)
  // Always work on a copy: the kit is shared (read-only by intent even when root could write there), and
  // running it writes tmp/ and node_modules/ below its folder.
  const dir = join(tmpdir(), 'flashgate-peers')
  {
    // Refresh the kit's files but keep an existing node_modules (npm ci takes a while).
    cpSync(src, dir, { recursive: true, force: true, filter: (p) => !p.includes('node_modules') && !p.endsWith('/tmp') })
    spawnSync('chmod', ['-R', 'u+w', dir])
  }
  mkdirSync(join(dir, 'tmp'), { recursive: true })
  if (!existsSync(join(dir, 'node', 'node_modules', 'fastify', 'package.json'))) {
    log(`peers: npm ci in ${join(dir, 'node')} (the kit's exact versions)`)
    const r = await run('npm', ['ci', '--no-audit', '--no-fund'], { cwd: join(dir, 'node'), timeoutMs: 300_000 })
    if (r.code !== 0) throw new Error(`npm ci for the peers kit failed: ${r.stderr.slice(-500)}`)
  }
  return dir
}

/**
 * How a peer server is started. The Node peers get the Node flags flashgate runs with
 * (gateway/node-flags.ts): the references are servers "started the same way", and without
 * `--no-memory-reducer` a Node peer that sits idle between its runs falls into the slow state that flag
 * exists for (the minimal undici proxy: 26.2 µs a request in a 3-target run, 30.8 in a 12-target one).
 */
export function serverCommand (dir: string, server: string, port: number): { cmd: string, args: string[] } {
  const nginx = (conf: string): { cmd: string, args: string[] } => ({ cmd: 'nginx', args: ['-p', `${dir}/`, '-c', join(dir, 'conf', `${conf}.conf`), '-e', `tmp/${conf}.error.log`] })
  const node = (...args: string[]): { cmd: string, args: string[] } => ({ cmd: process.execPath, args: [...SHIPPED_FLAGS, ...args] })
  switch (server) {
    case 'node-hello': return node(join(dir, 'node', 'hello.js'), String(port))
    // Not part of the team's kit: the project's own floor server (bench/floor/).
    case 'net-fixed': return node(join(ROOT, 'bench', 'floor', 'net-fixed.mjs'), String(port))
    case 'undici-proxy': return node(join(dir, 'node', 'undici-proxy.js'), String(port))
    case 'fastify-plain': return node(join(dir, 'node', 'fastify-proxy.js'), String(port), 'plain')
    case 'fastify-rl-mem': case 'fastify-rl-redis': case 'fastify-rl-reject':
      return node(join(dir, 'node', 'fastify-proxy.js'), String(port), server.slice('fastify-'.length))
    default: return nginx(server)
  }
}

/** Start the kit's redis and origin (load core) and the servers of the given targets (server core). */
export async function startKit (dir: string, targets: readonly PeerTarget[], cpus: { server: string | null, load: string | null }): Promise<Kit> {
  const ports = [16379, 18080, ...new Set(targets.map((t) => t.port))]
  for (const p of ports) if (await portOpen(p)) throw new Error(`port ${p} (peers kit) is already in use: is run-peers.sh or another bench running?`)
  const log = (n: string): string => join(dir, 'tmp', `${n}.log`)
  const redis = start({ name: 'kit-redis', cmd: 'redis-server', args: [join(dir, 'conf', 'redis.conf'), '--dir', join(dir, 'tmp')], cpus: cpus.load, logFile: log('redis'), cwd: dir })
  const { cmd, args } = serverCommand(dir, 'upstream', 18080)
  const origin = start({ name: 'kit-upstream', cmd, args, cpus: cpus.load, logFile: log('upstream'), cwd: dir })
  await waitPort(16379, 'kit redis', redis)
  await waitPort(18080, 'kit origin', origin)
  const servers = new Map<string, Managed>()
  for (const t of targets) {
    if (servers.has(t.server)) continue
    const c = serverCommand(dir, t.server, t.port)
    servers.set(t.server, start({ name: `peer-${t.server}`, cmd: c.cmd, args: c.args, cpus: cpus.server, logFile: log(t.server), cwd: dir }))
  }
  for (const t of targets) await waitPort(t.port, `peer ${t.server}`, servers.get(t.server) ?? null)
  await run('redis-cli', ['-p', '16379', 'set', 'seckill:count:soldout', '100'], { timeoutMs: 5000 })
  return { dir, base: [redis, origin], servers }
}
