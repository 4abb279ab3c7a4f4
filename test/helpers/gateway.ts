/**
 * Real servers for gateway tests: an origin on port 0 that echoes what it received, and a gateway
 * started in-process through gateway/main.ts. Everything is closed at teardown.
 */
import { createServer } from 'node:http'
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Agent, request } from 'undici'
import type { Dispatcher } from 'undici'
import { startGateway, type Gateway, type StartOptions } from '../../gateway/main.js'
import { silentLog } from '../../gateway/log.js'
import type { AccessEntry, AccessLog } from '../../gateway/access-log.js'

interface Teardown { teardown: (fn: () => void | Promise<void>) => void }

export interface Origin {
  readonly url: string
  readonly server: Server
  /** Requests seen, in order. */
  readonly seen: Array<{ method: string, url: string, headers: IncomingMessage['headers'], bodyBytes: number }>
}

/**
 * An origin answering `200 {"ok":true,"path":...,"method":...,"headers":...}` after reading the body.
 * `GET /slow/<ms>` waits that long first. `handler` overrides everything.
 */
export async function startOrigin (t: Teardown, handler?: (req: IncomingMessage, res: ServerResponse) => void): Promise<Origin> {
  const seen: Origin['seen'] = []
  const server = createServer((req, res) => {
    if (handler !== undefined) { handler(req, res); return }
    let bytes = 0
    req.on('data', (c: Buffer) => { bytes += c.length })
    req.on('end', () => {
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, bodyBytes: bytes })
      const answer = (): void => {
        const body = JSON.stringify({ ok: true, path: req.url, method: req.method, headers: req.headers, bodyBytes: bytes })
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
        res.end(body)
      }
      const m = /^\/slow\/(\d+)/.exec(req.url ?? '')
      if (m !== null) setTimeout(answer, Number(m[1])); else answer()
    })
  })
  server.keepAliveTimeout = 60_000
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => { resolve() }))
  })
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server, seen }
}

/** An access log that keeps entries in memory. */
export function memoryAccessLog (): AccessLog & { entries: AccessEntry[] } {
  const entries: AccessEntry[] = []
  return { enabled: true, entries, log (e) { entries.push(e) }, flushSync () {}, close () {} }
}

/** Start a gateway in-process on port 0 (public and, unless overridden, admin), closed at teardown. */
export async function startTestGateway (t: Teardown, opts: StartOptions): Promise<Gateway> {
  const gw = await startGateway({ log: silentLog, listen: { host: '127.0.0.1', port: 0 }, ...opts })
  t.teardown(async () => { await gw.close() })
  return gw
}

/** A keep-alive HTTP client closed at teardown. */
export function client (t: Teardown, opts: Agent.Options = {}): Dispatcher {
  const agent = new Agent({ keepAliveTimeout: 10_000, ...opts })
  t.teardown(async () => { await agent.close() })
  return agent
}

export interface Answer { status: number, headers: Record<string, string | string[] | undefined>, text: string, json: any }

/** One request, body read whole. */
export async function fetchText (dispatcher: Dispatcher, url: string, opts: { method?: string, headers?: Record<string, string>, body?: string | Buffer | import("node:stream").Readable | null } = {}): Promise<Answer> {
  const r = await request(url, { dispatcher, method: (opts.method ?? 'GET') as Dispatcher.HttpMethod, headers: opts.headers ?? {}, body: opts.body ?? null })
  const text = await r.body.text()
  let json: any = null
  try { json = JSON.parse(text) } catch {}
  return { status: r.statusCode, headers: r.headers, text, json }
}

/** Send raw bytes on a fresh socket and collect everything until the server closes or `ms` pass. */
export async function raw (port: number, data: string, ms = 1000): Promise<string> {
  const { connect } = await import('node:net')
  return await new Promise((resolve) => {
    const s = connect(port, '127.0.0.1')
    let out = ''
    const timer = setTimeout(() => { s.destroy(); resolve(out) }, ms)
    s.on('data', (c) => { out += c.toString('latin1') })
    s.on('close', () => { clearTimeout(timer); resolve(out) })
    s.on('error', () => {})
    s.write(data)
  })
}
