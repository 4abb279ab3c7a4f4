/**
 * The public listeners: plain HTTP/1.1 (`createPublicServer`), HTTP/1.1 over TLS (`node:https`), and
 * HTTP/2 over TLS with HTTP/1.1 for clients that do not offer h2 in ALPN (`node:http2`
 * `createSecureServer({ allowHTTP1: true })`). All of them call the same `Frontend.handle`.
 *
 * What the request path assumes of node:http and how h2 is made to fit (see `H2Request`/`H2Response`):
 * - Host: h2 carries `:authority` instead; it is copied to `headers.host` when no Host was sent, so
 *   routing, Host checks and guards read one field. Pseudo-headers are never forwarded upstream
 *   (gateway/upstream/headers.ts drops names starting with `:`).
 * - `res.destroyed` (the proxy's "client gone" check) is the stream's.
 * - Hop-by-hop headers: the proxy already drops Connection, Keep-Alive, Transfer-Encoding, Upgrade…
 *   from upstream answers; the gateway's own `connection: close` is not set on an h2 answer
 *   (`writeRejection`). Node writes no Date/Connection of its own into an h2 head.
 * - Bodies: an h2 request body has no Transfer-Encoding; a request whose HEADERS frame did not end the
 *   stream has a body (`hasBody`), counted against the route's limit as a chunked one is.
 * - Flow control: `res.write()` returns false when the stream's window is full and 'drain' follows,
 *   as on HTTP/1.1; the proxy's backpressure works unchanged.
 * - Trailers are not forwarded in either protocol (documented in gateway/upstream/index.ts).
 *
 * Certificates: `setTls` builds a new secure context from the files and swaps it in with
 * `setSecureContext`; on error the old context keeps serving and the error is returned.
 */
import { readFileSync } from 'node:fs'
import { createServer as createHttpsServer } from 'node:https'
import http2 from 'node:http2'
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Config, ListenerConfig, TlsConfig } from '../../conf/types.js'
import { tlsProblem } from '../../conf/loader/listeners.js'
import type { Log } from '../log.js'
import type { Metrics } from '../metrics.js'
import { applyServerLimits, createPublicServer, type Frontend } from './server.js'
import { RawServer } from './raw-server.js'

/** An h2 request as the request path reads it: `headers.host` from `:authority` when absent. */
export class H2Request extends http2.Http2ServerRequest {
  constructor (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, options: object, rawHeaders: string[]) {
    super(stream, headers, options as never, rawHeaders)
    if (headers.host === undefined && typeof headers[':authority'] === 'string') headers.host = headers[':authority']
  }
}

/** An h2 response with the `destroyed` flag node:http's ServerResponse has. */
export class H2Response extends http2.Http2ServerResponse {}
// Node 20's Http2ServerResponse has no `destroyed` (its typings say it has): the stream's flag.
Object.defineProperty(H2Response.prototype, 'destroyed', {
  get (this: H2Response): boolean { return this.stream.destroyed },
  configurable: true
})

export interface PublicListener {
  readonly cfg: ListenerConfig
  readonly server: Server
  /** `http://host:port` or `https://host:port`. */
  url: string
  address: AddressInfo | null
  /** Swap in a new certificate and key (checked by readTlsFiles); an error message, or null. */
  setTls (pem: { cert: string, key: string }): string | null
  applyLimits (config: Config): void
  /** Close idle connections (h2: GOAWAY to sessions with no open stream). */
  closeIdle (): void
  /** Close every connection now. */
  closeAll (): void
}

/** Read a listener's PEM files and check they pair; the PEMs, or why they cannot serve. */
export function readTlsFiles (tls: TlsConfig): { cert: string, key: string } | string {
  let cert: string
  let key: string
  try { cert = readFileSync(tls.cert, 'utf8') } catch (err) { return `cannot read ${tls.cert}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` }
  try { key = readFileSync(tls.key, 'utf8') } catch (err) { return `cannot read ${tls.key}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` }
  const p = tlsProblem(cert, key)
  return p === null ? { cert, key } : `${tls.cert}: ${p}`
}

/** HTTP/2 sessions a listener can have open at once per connection: concurrent streams (nginx: 128). */
const H2_MAX_STREAMS = 128
/** An h2 connection with no traffic for this long is closed (there is no per-request keep-alive timer). */
const H2_IDLE_MS = 120_000

/** Create (not listen) the server for one listener. Throws with a message when its TLS files fail. */
export function createListener (l: ListenerConfig, config: Config, frontend: Frontend, metrics: Metrics, log: Log): PublicListener {
  if (l.tls === null && config.server.parser === 'strict') {
    // flashgate's own HTTP/1.1 parser on raw sockets (gateway/http/raw-server.ts).
    const raw = new RawServer(config, frontend.handle, metrics, log)
    return {
      cfg: l, server: raw.net as unknown as Server, url: '', address: null,
      setTls: () => 'this listener has no tls',
      applyLimits (c) { raw.applyLimits(c) },
      closeIdle () { raw.closeIdleConnections() },
      closeAll () { raw.closeAllConnections() }
    }
  }
  if (l.tls === null) {
    const server = createPublicServer(config, frontend, metrics, log)
    return {
      cfg: l, server, url: '', address: null,
      setTls: () => 'this listener has no tls',
      applyLimits (c) { applyServerLimits(server, c) },
      closeIdle () { server.closeIdleConnections() },
      closeAll () { server.closeAllConnections() }
    }
  }
  const pem = readTlsFiles(l.tls)
  if (typeof pem === 'string') throw new Error(pem)
  const s = config.server
  if (!l.http2) {
    const server = createHttpsServer({
      ...pem,
      maxHeaderSize: s.maxHeaderSize,
      headersTimeout: s.headersTimeoutMs,
      requestTimeout: s.requestTimeoutMs,
      keepAliveTimeout: s.keepAliveTimeoutMs,
      requireHostHeader: true,
      noDelay: true
    }, frontend.handle)
    createPublicServer(config, frontend, metrics, log, server)
    return {
      cfg: l, server, url: '', address: null,
      setTls (pem) { return swapContext(server, pem) },
      applyLimits (c) { applyServerLimits(server, c) },
      closeIdle () { server.closeIdleConnections() },
      closeAll () { server.closeAllConnections() }
    }
  }
  const h2 = http2.createSecureServer({
    ...pem,
    allowHTTP1: true,
    maxSessionMemory: 10,
    settings: { maxConcurrentStreams: H2_MAX_STREAMS, maxHeaderListSize: s.maxHeaderSize },
    maxHeaderListPairs: 256,
    Http2ServerRequest: H2Request,
    Http2ServerResponse: H2Response
  } as http2.SecureServerOptions, frontend.handle as unknown as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void)
  h2.setTimeout(H2_IDLE_MS)
  const sessions = new Set<http2.ServerHttp2Session>()
  h2.on('session', (session: http2.ServerHttp2Session) => {
    sessions.add(session)
    session.once('close', () => { sessions.delete(session) })
    session.on('error', () => {}) // the stream's own error ends its request; nothing to do per session
  })
  // The HTTP/1.1 side of allowHTTP1 is node:http's connection handling on this server: the same
  // limits, malformed-request answers and CONNECT refusal as the plain listener.
  const server = h2 as unknown as Server
  createPublicServer(config, frontend, metrics, log, server)
  return {
    cfg: l, server, url: '', address: null,
    setTls (pem) { return swapContext(h2, pem) },
    applyLimits (c) { applyServerLimits(server, c) },
    closeIdle () {
      for (const se of sessions) if (!se.closed) se.close()
      ;(server as Partial<Server>).closeIdleConnections?.call(server)
    },
    closeAll () {
      for (const se of sessions) se.destroy()
      ;(server as Partial<Server>).closeAllConnections?.call(server)
    }
  }
}

function swapContext (server: { setSecureContext: (o: { cert: string, key: string }) => void }, pem: { cert: string, key: string }): string | null {
  try { server.setSecureContext(pem) } catch (err) { return (err as Error).message }
  return null
}

/** The listener's URL once it listens. */
export function listenerUrl (l: ListenerConfig, a: AddressInfo): string {
  const host = a.family === 'IPv6' ? `[${a.address}]` : a.address
  return `${l.tls === null ? 'http' : 'https'}://${host}:${a.port}`
}
