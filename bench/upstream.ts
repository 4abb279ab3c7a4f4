/**
 * The cheap backend behind the proxy paths when the bench runs without the peers kit: answers every
 * request `200 {"ok":true}` from memory, like the kit's `conf/upstream.conf`. nginx when installed (it
 * costs the load core little), else a bare node:http server. Pinned to the load core either way.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { freePort, start, waitPort, which } from './proc.js'
import type { Managed } from './proc.js'

export interface Upstream { readonly url: string, readonly proc: Managed, readonly kind: 'nginx' | 'node' }

const NODE_UPSTREAM = `
const { createServer } = require('node:http')
const body = Buffer.from('{"ok":true}')
const h = { 'content-type': 'application/json', 'content-length': String(body.length) }
const s = createServer((req, res) => { req.resume(); req.on('end', () => { res.writeHead(200, h); res.end(body) }) })
s.keepAliveTimeout = 120000
s.listen(Number(process.argv[1]), '127.0.0.1')
`

export async function startUpstream (dir: string, cpus: string | null): Promise<Upstream> {
  const port = await freePort()
  mkdirSync(dir, { recursive: true })
  if (which('nginx') !== null) {
    const conf = join(dir, 'upstream.conf')
    writeFileSync(conf, `worker_processes 1;
daemon off;
pid ${dir}/upstream.pid;
error_log ${dir}/upstream.error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  server {
    listen 127.0.0.1:${port} backlog=4096;
    location / { default_type application/json; return 200 '{"ok":true}'; }
  }
}
`)
    const proc = start({ name: 'upstream', cmd: 'nginx', args: ['-p', `${dir}/`, '-c', conf, '-e', `${dir}/upstream.error.log`], cpus, logFile: join(dir, 'upstream.log') })
    await waitPort(port, 'upstream (nginx)', proc)
    return { url: `http://127.0.0.1:${port}`, proc, kind: 'nginx' }
  }
  const proc = start({ name: 'upstream', cmd: process.execPath, args: ['-e', NODE_UPSTREAM, String(port)], cpus, logFile: join(dir, 'upstream.log') })
  await waitPort(port, 'upstream (node)', proc)
  return { url: `http://127.0.0.1:${port}`, proc, kind: 'node' }
}
