/**
 * Static routes (`static: DIR`): files answered by the gateway itself, after the route's guards passed.
 *
 * - GET and HEAD only (405 METHOD_NOT_ALLOWED with `Allow: GET, HEAD` otherwise).
 * - The request path is looked up under DIR as is (nginx `root`, not `alias`): `/assets/a.js` on a
 *   route `path_prefix: /assets/` is `DIR/assets/a.js`. A path ending in `/` is the directory's
 *   `index.html`; a directory named without the slash is redirected (301) to the slashed path.
 * - No way out of DIR: the path is percent-decoded once and then refused (404) when it holds a NUL, a
 *   backslash, a `.` or `..` segment, or a segment starting with `.` (dotfiles are never served). The
 *   file opened must be a regular file whose real path (symlinks resolved) is inside DIR's real path and
 *   is the very file opened (same device and inode), so a symlink pointing out of DIR is refused too.
 * - Validators: a strong ETag `"<size hex>-<mtime ms hex>[-br|-gz]"` (If-None-Match, weak comparison as
 *   RFC 9110 asks of it, → 304) and Last-Modified (If-Modified-Since when there is no If-None-Match → 304).
 * - Precompressed variants: `FILE.br` / `FILE.gz` beside `FILE` are sent, with Content-Encoding, when the
 *   client accepts them (Accept-Encoding with q > 0; br preferred). Every file answer carries
 *   `Vary: Accept-Encoding`.
 * - Cache-Control from the route (`cache_control`, default `public, max-age=60`; `.html` documents
 *   `html_cache_control`, default `no-cache`). Content-Type by extension; `X-Content-Type-Options: nosniff`.
 * - Bodies are streamed from the open file descriptor (64 KiB chunks, with the client's backpressure), so
 *   memory per request is bounded whatever the file's size; a client that leaves stops the read.
 */
import { constants, createReadStream } from 'node:fs'
import { open, realpath, stat, type FileHandle } from 'node:fs/promises'
import type { Stats } from 'node:fs'
import { extname, join, sep } from 'node:path'
import type { StaticConfig } from '../../conf/types.js'
import type { Log } from '../log.js'
import { rejection } from '../pipeline/reject.js'
import type { Rejection, RequestContext } from '../pipeline/types.js'

const NOT_FOUND = rejection('NOT_FOUND', 'no such file')
const METHOD = rejection('METHOD_NOT_ALLOWED', 'use GET or HEAD', { headers: ['allow', 'GET, HEAD'] })
const INTERNAL = rejection('INTERNAL_ERROR', 'cannot read file')

/** Content types by lower-case extension. */
const CONTENT_TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.htm': 'text/html; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.json': 'application/json',
  '.map': 'application/json',
  '.webmanifest': 'application/manifest+json',
  '.txt': 'text/plain; charset=utf-8',
  '.xml': 'application/xml',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.gif': 'image/gif',
  '.webp': 'image/webp',
  '.avif': 'image/avif',
  '.ico': 'image/x-icon',
  '.woff': 'font/woff',
  '.woff2': 'font/woff2',
  '.wasm': 'application/wasm',
  '.pdf': 'application/pdf'
}
const DEFAULT_TYPE = 'application/octet-stream'

/** Errors of open/stat that mean "no such file here" (answered 404, not logged). */
const MISSING = new Set(['ENOENT', 'ENOTDIR', 'ENAMETOOLONG', 'ELOOP', 'EACCES', 'EPERM', 'EISDIR', 'ENXIO'])

/** How a static answer ended, for the gateway's bookkeeping. */
export interface StaticSink {
  /** A rejection to answer (404, 405, 500): the gateway writes it. */
  reject (r: Rejection): void
  /** A file answer (200, 301, 304) was written in full; `aborted` when the client left first. */
  done (status: number, aborted: boolean): void
}

/**
 * The request path as segments under DIR, or null when it must be refused. `dir` tells whether the
 * path ends in `/` (the directory's index).
 */
export function safeSegments (path: string): { segments: string[], dir: boolean } | null {
  let p = path
  if (p.includes('%')) {
    try { p = decodeURIComponent(p) } catch { return null }
  }
  if (p.charCodeAt(0) !== 47 /* / */ || p.includes('\0') || p.includes('\\')) return null
  const segments: string[] = []
  const parts = p.split('/')
  for (let i = 1; i < parts.length; i++) {
    const s = parts[i] as string
    if (s === '') continue
    if (s.charCodeAt(0) === 46 /* . */) return null // '.', '..' and dotfiles
    segments.push(s)
  }
  return { segments, dir: p.endsWith('/') }
}

/** Whether Accept-Encoding accepts `coding` (q > 0), explicitly or through `*`. */
export function acceptsEncoding (header: string | undefined, coding: string): boolean {
  if (header === undefined || header === '') return false
  let star = false
  for (const part of header.split(',')) {
    const semi = part.indexOf(';')
    const name = (semi === -1 ? part : part.slice(0, semi)).trim().toLowerCase()
    if (name !== coding && name !== '*') continue
    let q = 1
    if (semi !== -1) {
      for (const param of part.slice(semi + 1).split(';')) {
        const m = /^\s*q\s*=\s*([0-9.]+)\s*$/i.exec(param)
        if (m !== null) q = Number(m[1])
      }
    }
    if (name === coding) return q > 0
    star = q > 0
  }
  return star
}

/** If-None-Match (a list of entity tags or `*`) against our ETag, weak comparison. */
export function noneMatch (header: string, etag: string): boolean {
  if (header.trim() === '*') return true
  for (const raw of header.split(',')) {
    let tag = raw.trim()
    if (tag.startsWith('W/')) tag = tag.slice(2)
    if (tag === etag) return true
  }
  return false
}

function etagOf (st: Stats, suffix: string): string {
  return `"${st.size.toString(16)}-${Math.floor(st.mtimeMs).toString(16)}${suffix}"`
}

/** An open file checked to lie inside DIR. */
interface Opened { readonly fh: FileHandle, readonly st: Stats }

/** A static route's file server, built once per config load (no I/O until a request). */
export class StaticFiles {
  private readonly root: string
  private readonly cacheControl: string
  private readonly htmlCacheControl: string
  private readonly log: Log

  constructor (cfg: StaticConfig, log: Log) {
    this.root = cfg.dir
    this.cacheControl = cfg.cacheControl
    this.htmlCacheControl = cfg.htmlCacheControl
    this.log = log
  }

  /** Answer the request (its guards have passed). Exactly one sink call. */
  serve (ctx: RequestContext, sink: StaticSink): void {
    if (ctx.method !== 'GET' && ctx.method !== 'HEAD') { sink.reject(METHOD); return }
    const safe = safeSegments(ctx.path)
    if (safe === null) { sink.reject(NOT_FOUND); return }
    this.answer(ctx, safe.segments, safe.dir, sink).then(undefined, (err: unknown) => {
      this.log('error', 'static file failed', { route: ctx.route.name, err })
      if (ctx.res.headersSent) { ctx.res.destroy(); sink.done(ctx.res.statusCode, true) } else sink.reject(INTERNAL)
    })
  }

  /**
   * Open `segments` under the root; null when missing or refused. A directory comes back as such
   * (the caller decides between its index and a redirect).
   */
  private async openInside (segments: readonly string[]): Promise<Opened | null> {
    const full = segments.length === 0 ? this.root : join(this.root, ...segments)
    if (full !== this.root && !full.startsWith(this.root + sep)) return null
    let fh: FileHandle
    try {
      // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below as not a regular file).
      fh = await open(full, constants.O_RDONLY | constants.O_NONBLOCK)
    } catch (err) {
      if (MISSING.has((err as NodeJS.ErrnoException).code ?? '')) return null
      throw err
    }
    try {
      const st = await fh.stat()
      if (!st.isFile() && !st.isDirectory()) { await fh.close(); return null }
      // The file opened must be the one its real path names, and that path must be inside the root:
      // a symlink anywhere on the way that leads out of DIR is refused.
      let real: string
      try { real = await realpath(full) } catch (err) {
        await fh.close()
        if (MISSING.has((err as NodeJS.ErrnoException).code ?? '')) return null
        throw err
      }
      if (real !== this.root && !real.startsWith(this.root + sep)) { await fh.close(); return null }
      const rs = await stat(real)
      if (rs.ino !== st.ino || rs.dev !== st.dev) { await fh.close(); return null }
      return { fh, st }
    } catch (err) {
      await fh.close().catch(() => {})
      throw err
    }
  }

  private async answer (ctx: RequestContext, segments: string[], dirRequest: boolean, sink: StaticSink): Promise<void> {
    let file = await this.openInside(segments)
    if (file === null) { sink.reject(NOT_FOUND); return }
    if (file.st.isDirectory()) {
      await file.fh.close()
      if (!dirRequest) {
        // Relative links in the index need the slash. The Location is rebuilt from the checked
        // segments (never from the raw target, so `//host` cannot become an off-site redirect).
        const location = '/' + segments.map(encodeURIComponent).join('/') + '/' + (ctx.query === '' ? '' : '?' + ctx.query)
        this.redirect(ctx, location, sink)
        return
      }
      segments = [...segments, 'index.html']
      file = await this.openInside(segments)
      if (file === null || !file.st.isFile()) { if (file !== null) await file.fh.close(); sink.reject(NOT_FOUND); return }
    } else if (dirRequest) {
      await file.fh.close()
      sink.reject(NOT_FOUND)
      return
    }

    const name = segments[segments.length - 1] as string
    const ext = extname(name).toLowerCase()
    const type = CONTENT_TYPES[ext] ?? DEFAULT_TYPE
    const cacheControl = ext === '.html' || ext === '.htm' ? this.htmlCacheControl : this.cacheControl

    // A precompressed variant, when accepted and present (and inside the root like any file).
    let encoding: string | null = null
    if (ext !== '.br' && ext !== '.gz') {
      const accept = ctx.req.headers['accept-encoding']
      for (const [coding, suffix] of [['br', '.br'], ['gzip', '.gz']] as const) {
        if (!acceptsEncoding(accept, coding)) continue
        const v = await this.openInside([...segments.slice(0, -1), name + suffix])
        if (v === null) continue
        if (!v.st.isFile()) { await v.fh.close(); continue }
        await file.fh.close()
        file = v
        encoding = coding
        break
      }
    }
    const { fh, st } = file
    const etag = etagOf(st, encoding === null ? '' : encoding === 'br' ? '-br' : '-gz')
    const lastModified = new Date(Math.floor(st.mtimeMs / 1000) * 1000).toUTCString()
    const headers = [
      'content-type', type,
      'etag', etag,
      'last-modified', lastModified,
      'cache-control', cacheControl,
      'vary', 'Accept-Encoding',
      'x-content-type-options', 'nosniff'
    ]
    if (ctx.extraHeaders !== null) headers.push(...ctx.extraHeaders)

    if (this.notModified(ctx, etag, st)) {
      await fh.close()
      this.finish(ctx, 304, headers, sink)
      return
    }
    if (encoding !== null) headers.push('content-encoding', encoding)
    headers.push('content-length', String(st.size))
    const res = ctx.res
    if (res.destroyed) { await fh.close(); sink.done(499, true); return }
    if (ctx.method === 'HEAD' || st.size === 0) {
      await fh.close()
      this.finish(ctx, 200, headers, sink)
      return
    }
    res.writeHead(200, headers)
    this.stream(ctx, fh, st.size, sink)
  }

  private notModified (ctx: RequestContext, etag: string, st: Stats): boolean {
    const inm = ctx.req.headers['if-none-match']
    if (inm !== undefined) return noneMatch(inm, etag)
    const ims = ctx.req.headers['if-modified-since']
    if (ims === undefined) return false
    const t = Date.parse(ims)
    return Number.isFinite(t) && Math.floor(st.mtimeMs / 1000) * 1000 <= t
  }

  /** Write a body-less answer (304, HEAD, an empty file). */
  private finish (ctx: RequestContext, status: number, headers: string[], sink: StaticSink): void {
    const res = ctx.res
    if (res.destroyed) { sink.done(499, true); return }
    if (status === 304) {
      // A 304 carries the validators and caching headers, no representation metadata.
      const keep: string[] = []
      for (let i = 0; i < headers.length; i += 2) {
        const n = headers[i] as string
        if (n !== 'content-type' && n !== 'x-content-type-options') keep.push(n, headers[i + 1] as string)
      }
      headers = keep
    }
    res.writeHead(status, headers)
    res.end()
    sink.done(status, false)
  }

  private redirect (ctx: RequestContext, location: string, sink: StaticSink): void {
    const res = ctx.res
    if (res.destroyed) { sink.done(499, true); return }
    const headers = ['location', location, 'cache-control', this.htmlCacheControl, 'content-length', '0']
    if (ctx.extraHeaders !== null) headers.push(...ctx.extraHeaders)
    res.writeHead(301, headers)
    res.end()
    sink.done(301, false)
  }

  /** Stream the open file to the client with its backpressure; stop reading when the client leaves. */
  private stream (ctx: RequestContext, fh: FileHandle, size: number, sink: StaticSink): void {
    const res = ctx.res
    const body = createReadStream('', { fd: fh, start: 0, end: size - 1, highWaterMark: 64 * 1024, autoClose: true })
    let settled = false
    const end = (aborted: boolean): void => {
      if (settled) return
      settled = true
      sink.done(aborted ? 499 : 200, aborted)
    }
    body.on('error', (err) => {
      this.log('warn', 'static file read failed', { route: ctx.route.name, err })
      res.destroy()
      end(true)
    })
    res.on('finish', () => { end(false) })
    res.on('close', () => {
      if (!res.writableFinished) { body.destroy(); end(true) }
    })
    body.pipe(res)
  }
}
