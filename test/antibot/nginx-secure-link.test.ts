import t from 'tap'
import { spawn, execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { compileSecureLink, nginxDecodeBase64url } from '../../antibot/nginx-secure-link.js'
import { signedLinkGuard } from '../../gateway/guards/signed-link.js'
import { codeOf, guardOf, loadYaml, makeCtx, makeDeps, routeYaml } from './helpers.js'
import { needTools } from '../helpers/tools.js'

const SECRET = 'secret'
const EXPR = '$secure_link_expires$uri$remote_addr ' + SECRET
const NOW = Date.UTC(2030, 0, 1, 12, 30)
const NOW_S = NOW / 1000

/** What the nginx docs say to run: echo -n 'EXPIRES/s/link127.0.0.1 secret' | openssl md5 -binary | openssl base64 | tr +/ -_ | tr -d = */
function nginxHash (text: string): string {
  return createHash('md5').update(text).digest('base64').replace(/\+/g, '-').replace(/\//g, '_').replace(/=/g, '')
}

function mk (uri: string, expires: number | string, ip = '127.0.0.1'): string {
  return `md5=${nginxHash(`${expires}${uri}${ip} ${SECRET}`)}&expires=${expires}`
}

type Want = 'ok' | 'invalid' | 'expired'
interface Row { name: string, uri: string, query: string, want: Want }

/** Cases where nginx's answer does not depend on the exact second. */
function table (nowS: number): Row[] {
  const fut = nowS + 3600
  const good = mk('/s/link', fut)
  const h = new URLSearchParams(good).get('md5') as string
  const flip = (s: string, i: number): string => s.slice(0, i) + (s[i] === 'A' ? 'B' : 'A') + s.slice(i + 1)
  const rows: Row[] = [
    { name: 'valid', uri: '/s/link', query: good, want: 'ok' },
    { name: 'expired an hour ago', uri: '/s/link', query: mk('/s/link', nowS - 3600), want: 'expired' },
    { name: 'another uri', uri: '/s/other', query: good, want: 'invalid' },
    { name: 'expires changed', uri: '/s/link', query: `md5=${h}&expires=${fut + 1}`, want: 'invalid' },
    { name: 'md5 one char changed', uri: '/s/link', query: `md5=${flip(h, 3)}&expires=${fut}`, want: 'invalid' },
    { name: 'md5 padded with ==', uri: '/s/link', query: `md5=${h}==&expires=${fut}`, want: 'ok' },
    { name: 'md5 truncated', uri: '/s/link', query: `md5=${h.slice(0, 21)}&expires=${fut}`, want: 'invalid' },
    { name: 'md5 with a foreign char', uri: '/s/link', query: `md5=${h.slice(0, 21)}!&expires=${fut}`, want: 'invalid' },
    { name: 'md5 longer than 24', uri: '/s/link', query: `md5=${h}AAA&expires=${fut}`, want: 'invalid' },
    { name: 'no md5', uri: '/s/link', query: `expires=${fut}`, want: 'invalid' },
    { name: 'no expires', uri: '/s/link', query: `md5=${h}`, want: 'invalid' },
    { name: 'expires 0', uri: '/s/link', query: mk('/s/link', 0), want: 'invalid' },
    { name: 'expires not numeric', uri: '/s/link', query: mk('/s/link', '12x'), want: 'invalid' },
    { name: 'arg names are case-insensitive (MD5=)', uri: '/s/link', query: good.replace('md5=', 'MD5='), want: 'ok' },
    { name: 'signed for another address', uri: '/s/link', query: mk('/s/link', fut, '10.0.0.1'), want: 'invalid' },
    { name: 'percent-encoded uri is decoded ($uri)', uri: '/s/%6cink', query: good, want: 'ok' }
  ]
  return rows
}

function ours (checker: ReturnType<typeof compileSecureLink>, r: Row, now: number): Want {
  return checker(makeCtx({ path: r.uri, query: r.query, clientIp: '127.0.0.1', now, params: {} })).result
}

t.test('links computed as nginx documents them: accepted, tampered ones refused', async (t) => {
  const checker = compileSecureLink('$arg_md5,$arg_expires', `"${EXPR}"`)
  for (const r of table(NOW_S)) t.equal(ours(checker, r, NOW), r.want, r.name)
})

t.test('expiry boundary as nginx: expires == now is still valid, expires < now expired', async (t) => {
  const checker = compileSecureLink('$arg_md5,$arg_expires', EXPR)
  const row = (exp: number): Row => ({ name: '', uri: '/s/link', query: mk('/s/link', exp), want: 'ok' })
  t.equal(ours(checker, row(NOW_S), NOW + 999), 'ok', 'expires == now (same second)')
  t.equal(ours(checker, row(NOW_S - 1), NOW), 'expired', 'one second past')
})

t.test('no comma: no expiry; other variables', async (t) => {
  const noExp = compileSecureLink('$arg_md5', '$uri ' + SECRET)
  t.equal(noExp(makeCtx({ path: '/f', query: `md5=${nginxHash('/f ' + SECRET)}`, params: {} })).result, 'ok')
  const vars = compileSecureLink('${arg_h},${arg_e}', '$secure_link_expires|$http_x_user_id|$arg_p|$cookie_sid|$request_method|$host|${uri}')
  const text = `${NOW_S + 5}|alice|153|abc|POST|shop.example|/buy`
  const ctx = makeCtx({ path: '/buy', query: `p=153&h=${nginxHash(text)}&e=${NOW_S + 5}`, headers: { 'x-user-id': 'alice', cookie: 'a=1; sid=abc' }, params: {}, now: NOW })
  t.equal(vars(ctx).result, 'ok')
  const other = makeCtx({ path: '/buy', query: `p=153&h=${nginxHash(text)}&e=${NOW_S + 5}`, headers: { 'x-user-id': 'bob', cookie: 'a=1; sid=abc' }, params: {}, now: NOW })
  t.equal(vars(other).result, 'invalid', '$http_x_user_id is bound')
  t.throws(() => compileSecureLink('$arg_md5', '$nonsense'), /unsupported variable/)
  t.throws(() => compileSecureLink('$arg_md5', '${uri'), /unclosed/)
  t.same(nginxDecodeBase64url('AAA='), Buffer.from([0, 0]))
  t.equal(nginxDecodeBase64url('A'), null, 'len % 4 == 1')
})

t.test('the signed_link guard in nginx mode', async (t) => {
  const config = loadYaml(routeYaml(`- signed_link: { mode: nginx_secure_link_md5, single_use: true, secure_link: "$arg_md5,$arg_expires", secure_link_md5: "${EXPR}" }`))
  const deps = makeDeps(config)
  const { route, cfg } = guardOf(config, 'signed_link')
  const guard = signedLinkGuard(cfg, route, deps)
  const run = (query: string, now = NOW): Promise<string | undefined> => codeOf(guard.check(makeCtx({ path: '/buy/c1/p1', query, clientIp: '127.0.0.1', now })))
  const link = mk('/buy/c1/p1', NOW_S + 60)
  t.equal(await run(link.replace(/md5=./, 'md5=_')), 'LINK_INVALID')
  t.equal(await run(mk('/buy/c1/p1', NOW_S - 1)), 'LINK_EXPIRED')
  t.equal(await run(link), undefined)
  t.equal(await run(link), 'LINK_INVALID', 'single_use: the hash is consumed')
  t.equal(await run(link.replace('&', '==&')), 'LINK_INVALID', 'also when replayed with padding')
})

function which (cmd: string): string | null {
  try { return execFileSync('which', [cmd], { encoding: 'utf8' }).trim() || null } catch { return null }
}

async function freePort (): Promise<number> {
  const s = createServer()
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve))
  const p = (s.address() as AddressInfo).port
  await new Promise<void>((resolve) => s.close(() => resolve()))
  return p
}

const nginx = which('nginx')
t.test('against a real nginx with secure_link', async (t) => {
  if (!needTools(t, 'nginx') || nginx === null) return
  const dir = mkdtempSync(join(tmpdir(), 'fg-nginx-'))
  const port = await freePort()
  writeFileSync(join(dir, 'nginx.conf'), `
daemon off;
master_process off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy; fastcgi_temp_path ${dir}/fcgi;
  uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  server {
    listen 127.0.0.1:${port};
    location /s/ {
      secure_link $arg_md5,$arg_expires;
      secure_link_md5 "${EXPR}";
      if ($secure_link = "") { return 403; }
      if ($secure_link = "0") { return 410; }
      return 200 "ok";
    }
  }
}
`)
  const child = spawn(nginx as string, ['-p', dir, '-c', join(dir, 'nginx.conf')], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (c: Buffer) => { stderr += c.toString() })
  t.teardown(async () => {
    if (child.exitCode === null) {
      child.kill('SIGTERM')
      await new Promise((resolve) => child.once('exit', resolve))
    }
    rmSync(dir, { recursive: true, force: true })
  })
  // wait until it answers
  const deadline = Date.now() + 5000
  for (;;) {
    try { await fetch(`http://127.0.0.1:${port}/`); break } catch {
      if (Date.now() > deadline || child.exitCode !== null) { t.fail(`nginx did not start: ${stderr}`); return }
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  }
  const checker = compileSecureLink('$arg_md5,$arg_expires', EXPR)
  const nowS = Math.floor(Date.now() / 1000)
  const verdict: Record<number, Want> = { 200: 'ok', 403: 'invalid', 410: 'expired' }
  for (const r of table(nowS)) {
    const res = await fetch(`http://127.0.0.1:${port}${r.uri}?${r.query}`)
    await res.arrayBuffer()
    const theirs = verdict[res.status]
    t.equal(theirs, r.want, `nginx: ${r.name}`)
    t.equal(ours(checker, r, Date.now()), theirs, `flashgate agrees with nginx: ${r.name}`)
  }
})
