/**
 * The admin listener: /metrics, /healthz, /readyz, /admin/reload and the quota endpoints. Bound to
 * loopback by default; when an `admin_token` is configured every endpoint but /healthz needs
 * `Authorization: Bearer <token>` (compared in constant time), and a non-loopback bind without a token
 * is refused at start.
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import { createServer } from 'node:http'
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import type { Config } from '../conf/types.js'
import { isLoopback } from '../conf/cidr.js'
import type { Log } from './log.js'
import { sendJson } from './http/json.js'
import type { QuotaAdmin, QuotaConflict, QuotaView } from '../limiter/quota-ledger.js'

/** The answer of a reload: success, or the `FILE:LINE:COL: message` problems. */
export type ReloadResult = { readonly ok: true } | { readonly ok: false, readonly errors: readonly string[] }

export interface AdminHooks {
  /** Prometheus text (own registry, or aggregated over workers). */
  metrics (): Promise<{ contentType: string, body: string }>
  /** Config loaded and store usable. */
  ready (): boolean
  reload (): Promise<ReloadResult>
  /** The config in force (campaign/product existence for the quota endpoints). */
  config (): Config
  /** The quota admin of the config in force; null when unavailable. */
  quota (): QuotaAdmin | null
  /** A waiting room's join log as NDJSON (GET /admin/queue/:campaign/joins); null = no such room. */
  queueJoins?: (campaign: string) => Promise<string | null>
  /** Upstream health snapshot (GET /admin/upstreams). */
  upstreams?: () => unknown
}

function err (res: ServerResponse, status: number, code: string, message: string, extra?: Record<string, unknown>): void {
  sendJson(res, status, { code, message, ...extra })
}

function answer (res: ServerResponse, v: QuotaView | QuotaConflict | null): void {
  if (v === null) err(res, 404, 'NOT_FOUND', 'unknown campaign or product')
  else if ('conflict' in v) err(res, 409, v.conflict, v.message, { ...v.view })
  else sendJson(res, 200, v)
}

const MAX_BODY = 4096

function readBody (req: IncomingMessage): Promise<string | null> {
  return new Promise((resolve) => {
    let size = 0
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => {
      size += c.length
      if (size > MAX_BODY) { resolve(null); req.destroy(); return }
      chunks.push(c)
    })
    req.on('end', () => { resolve(Buffer.concat(chunks).toString('utf8')) })
    req.on('error', () => { resolve(null) })
  })
}

/** SHA-256 both sides so the comparison is constant-time over equal-length buffers whatever was sent. */
function tokenMatches (header: string | undefined, digest: Buffer): boolean {
  if (header === undefined || !header.startsWith('Bearer ')) return false
  const given = createHash('sha256').update(header.slice(7).trim()).digest()
  return timingSafeEqual(given, digest)
}

/**
 * Create (not listen) the admin server. Throws when `host` is not loopback and no token is given.
 */
export function createAdminServer (host: string, token: string | null, hooks: AdminHooks, log: Log): Server {
  if (token === null && !isLoopback(host)) {
    throw new Error(`admin listener on non-loopback address ${host} needs admin_token`)
  }
  const digest = token === null ? null : createHash('sha256').update(token).digest()

  async function route (req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = req.url ?? '/'
    const q = url.indexOf('?')
    const path = q === -1 ? url : url.slice(0, q)
    const method = req.method ?? 'GET'
    if (path === '/healthz') { sendJson(res, 200, { status: 'ok' }); return }
    if (digest !== null && !tokenMatches(req.headers.authorization, digest)) {
      res.setHeader('www-authenticate', 'Bearer')
      err(res, 401, 'UNAUTHENTICATED', 'admin token required')
      return
    }
    if (path === '/metrics' && (method === 'GET' || method === 'HEAD')) {
      const m = await hooks.metrics()
      res.writeHead(200, { 'content-type': m.contentType, 'cache-control': 'no-store' })
      res.end(m.body)
      return
    }
    if (path === '/readyz') {
      const ready = hooks.ready()
      sendJson(res, ready ? 200 : 503, { status: ready ? 'ready' : 'not ready' })
      return
    }
    if (path === '/admin/reload') {
      if (method !== 'POST') { res.setHeader('allow', 'POST'); err(res, 405, 'METHOD_NOT_ALLOWED', 'use POST'); return }
      const r = await hooks.reload()
      if (r.ok) sendJson(res, 200, { status: 'reloaded' })
      else err(res, 400, 'CONFIG_INVALID', 'config rejected; the previous config keeps serving', { errors: r.errors })
      return
    }
    if (path === '/admin/upstreams' && hooks.upstreams !== undefined) { sendJson(res, 200, hooks.upstreams()); return }
    if (path.startsWith('/admin/queue/') && path.endsWith('/joins') && hooks.queueJoins !== undefined) {
      if (method !== 'GET' && method !== 'HEAD') { res.setHeader('allow', 'GET'); err(res, 405, 'METHOD_NOT_ALLOWED', 'use GET'); return }
      let campaign: string
      try { campaign = decodeURIComponent(path.slice('/admin/queue/'.length, -'/joins'.length)) } catch { err(res, 400, 'BAD_REQUEST', 'bad campaign'); return }
      const text = await hooks.queueJoins(campaign)
      if (text === null) { err(res, 404, 'NOT_FOUND', 'no waiting room for this campaign'); return }
      res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(text) })
      res.end(text)
      return
    }
    if (path.startsWith('/admin/quota/')) { await quota(req, res, method, path.slice('/admin/quota/'.length).split('/')); return }
    err(res, 404, 'NOT_FOUND', 'no such admin endpoint')
  }

  async function quota (req: IncomingMessage, res: ServerResponse, method: string, parts: string[]): Promise<void> {
    const isReset = parts.length === 3 && parts[2] === 'reset'
    const isRelease = parts.length === 3 && parts[2] === 'release'
    if (!(parts.length === 2 || isReset || isRelease) || parts[0] === '' || parts[1] === '') { err(res, 404, 'NOT_FOUND', 'no such admin endpoint'); return }
    let campaign: string
    let product: string
    try {
      campaign = decodeURIComponent(parts[0] as string)
      product = decodeURIComponent(parts[1] as string)
    } catch {
      err(res, 400, 'BAD_REQUEST', 'bad campaign or product'); return
    }
    const c = hooks.config().campaigns.get(campaign)
    if (c === undefined || !c.products.some((p) => p.id === product)) { err(res, 404, 'NOT_FOUND', 'unknown campaign or product'); return }
    const admin = hooks.quota()
    if (admin === null) { err(res, 501, 'NOT_IMPLEMENTED', 'quota admin is not available'); return }
    if (isRelease) {
      if (method !== 'POST') { res.setHeader('allow', 'POST'); err(res, 405, 'METHOD_NOT_ALLOWED', 'use POST'); return }
      const body = await readBody(req)
      let units: unknown
      try { units = body === null ? undefined : (JSON.parse(body) as { units?: unknown } | null)?.units } catch { units = undefined }
      if (typeof units !== 'number' || !Number.isSafeInteger(units) || units < 1) {
        err(res, 400, 'BAD_UNITS', 'body must be {"units": N} with N a positive integer'); return
      }
      answer(res, await admin.release(campaign, product, units))
      return
    }
    if (isReset) {
      if (method !== 'POST') { res.setHeader('allow', 'POST'); err(res, 405, 'METHOD_NOT_ALLOWED', 'use POST'); return }
      answer(res, await admin.reset(campaign, product))
      return
    }
    if (method === 'GET' || method === 'HEAD') { answer(res, await admin.get(campaign, product)); return }
    if (method === 'PUT') {
      const body = await readBody(req)
      let quota: unknown
      try { quota = body === null ? undefined : (JSON.parse(body) as { quota?: unknown }).quota } catch { quota = undefined }
      if (typeof quota !== 'number' || !Number.isSafeInteger(quota) || quota < 0) {
        err(res, 400, 'BAD_REQUEST', 'body must be {"quota": N} with N a non-negative integer'); return
      }
      answer(res, await admin.set(campaign, product, quota))
      return
    }
    res.setHeader('allow', 'GET, PUT')
    err(res, 405, 'METHOD_NOT_ALLOWED', 'use GET or PUT')
  }

  const server = createServer({ headersTimeout: 10_000, requestTimeout: 30_000, maxHeaderSize: 16384 }, (req, res) => {
    route(req, res).catch((e: unknown) => {
      const code = (e as { code?: unknown }).code
      log('error', 'admin request failed', { path: req.url?.split('?')[0], err: e })
      if (!res.headersSent) {
        if (typeof code === 'string' && code.startsWith('FG_ERR_STORE')) err(res, 503, 'STORE_UNAVAILABLE', 'store unavailable')
        else err(res, 500, 'INTERNAL_ERROR', 'admin request failed')
      } else {
        res.destroy()
      }
    })
  })
  server.on('clientError', (_e, socket) => { socket.destroy() })
  return server
}
