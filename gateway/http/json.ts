/**
 * Small JSON answers of the gateway's own endpoints (edge, queue, admin).
 */
import type { ServerResponse } from 'node:http'

/** Write a small JSON answer with no-store caching. */
export function sendJson (res: ServerResponse, status: number, body: unknown, headers: readonly string[] = []): void {
  const buf = Buffer.from(JSON.stringify(body))
  res.writeHead(status, ['content-type', 'application/json', 'cache-control', 'no-store', 'content-length', String(buf.length), ...headers])
  res.end(buf)
}
