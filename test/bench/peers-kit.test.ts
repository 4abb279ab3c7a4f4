/**
 * The peers kit is part of the project (`bench/peers-kit/`), so `flashgate bench --peers` works from a
 * clone: every server the bench's peer targets need has its config or script in it, every nginx config
 * there is valid for the installed nginx (`nginx -t` on a writable copy, as the bench makes one), and every
 * listener in it is on 127.0.0.1.
 */
import t from 'tap'
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ROOT } from '../../bench/flashgate.js'
import { PEER_TARGETS, serverCommand } from '../../bench/peers.js'
import { SHIPPED_FLAGS } from '../../gateway/node-flags.js'
import { run } from '../../bench/proc.js'
import { needTools } from '../helpers/tools.js'

const KIT = join(ROOT, 'bench', 'peers-kit')

t.test('every peer target has its server in bench/peers-kit', async (t) => {
  t.ok(existsSync(join(KIT, 'run-peers.sh')), 'run-peers.sh')
  t.ok(existsSync(join(KIT, 'node', 'package-lock.json')), 'the Node peers\' exact versions')
  const node: Record<string, string> = { 'node-hello': 'hello.js', 'undici-proxy': 'undici-proxy.js' }
  for (const p of PEER_TARGETS) {
    if (p.server === 'net-fixed') { t.ok(existsSync(join(ROOT, 'bench', 'floor', 'net-fixed.mjs')), `${p.name}: the project's bench/floor/net-fixed.mjs`); continue }
    const file = p.server.startsWith('fastify-') ? join(KIT, 'node', 'fastify-proxy.js') : node[p.server] !== undefined ? join(KIT, 'node', node[p.server] ?? '') : join(KIT, 'conf', `${p.server}.conf`)
    t.ok(existsSync(file), `${p.name}: ${file.slice(KIT.length + 1)}`)
  }
  t.ok(existsSync(join(KIT, 'conf', 'upstream.conf')), 'the kit\'s origin')
})

t.test('the Node peers start with the Node flags flashgate runs with, the nginx ones as nginx', async (t) => {
  for (const p of PEER_TARGETS) {
    const c = serverCommand('/kit', p.server, p.port)
    if (p.server === 'node-hello' || p.server === 'net-fixed' || p.server === 'undici-proxy' || p.server.startsWith('fastify-')) {
      t.equal(c.cmd, process.execPath, `${p.name}: node`)
      t.same(c.args.slice(0, SHIPPED_FLAGS.length), SHIPPED_FLAGS, `${p.name}: ${SHIPPED_FLAGS.join(' ')}`)
    } else t.equal(c.cmd, 'nginx', `${p.name}: nginx`)
  }
})

t.test('the kit listens on loopback only', async (t) => {
  for (const f of readdirSync(join(KIT, 'conf')).filter((x) => x.endsWith('.conf'))) {
    const text = readFileSync(join(KIT, 'conf', f), 'utf8')
    for (const m of text.matchAll(/^\s*listen\s+(\S+)/gm)) t.match(m[1], /^127\.0\.0\.1:\d+$/, `${f}: listen ${m[1] ?? ''}`)
    for (const m of text.matchAll(/^\s*bind\s+(.+)$/gm)) t.equal(m[1]?.trim(), '127.0.0.1', `${f}: bind`)
  }
})

t.test('nginx accepts every config of the kit (nginx -t on the bench\'s copy)', async (t) => {
  if (!needTools(t, 'nginx', '/usr/share/lua/5.1/resty/core.lua', '/usr/share/lua/5.1/resty/lrucache.lua', '/usr/share/lua/5.1/nginx/redis.lua')) return
  const dir = await prepareKitConfigsOnly()
  for (const f of readdirSync(join(dir, 'conf')).filter((x) => x.endsWith('.conf') && x !== 'redis.conf')) {
    const conf = f.replace(/\.conf$/, '')
    const r = await run('nginx', ['-t', '-p', `${dir}/`, '-c', join(dir, 'conf', f), '-e', `tmp/${conf}.error.log`], { timeoutMs: 20_000 })
    t.equal(r.code, 0, `${f}: ${r.stderr.trim().split('\n').slice(-2).join(' ')}`)
  }
})

/** A writable copy of the kit's configs (nginx writes its pid and temp files below its prefix). */
async function prepareKitConfigsOnly (): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'fg-peers-kit-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  cpSync(join(KIT, 'conf'), join(dir, 'conf'), { recursive: true })
  mkdirSync(join(dir, 'tmp'))
  return dir
}
