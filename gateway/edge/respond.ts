/**
 * What the edge endpoints share: the pre-encoded rejection writer and the request context the identity
 * resolver reads (edge endpoints run outside the pipeline).
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Rejection, RequestContext } from '../pipeline/types.js'
import { REJECT_HEADERS, rejection } from '../pipeline/reject.js'

export function reject (res: ServerResponse, r: Rejection): void {
  res.writeHead(r.status, [...REJECT_HEADERS, 'content-length', String(r.body.length), ...(r.headers ?? [])])
  res.end(r.body)
}

export const METHOD = rejection('METHOD_NOT_ALLOWED', 'use GET', { headers: ['allow', 'GET, HEAD'] })
export const UNAUTH = rejection('UNAUTHENTICATED', 'sign in first')

/** A minimal request context for the identity resolver, as if the request were routed to `path`. */
export function identityCtx (req: IncomingMessage, res: ServerResponse, e: { clientIp: string, now: number }, path: string, queryParams: URLSearchParams | null): RequestContext {
  return {
    req, res, route: undefined as unknown as RequestContext['route'], method: req.method ?? 'GET', path, query: '', host: '',
    clientIp: e.clientIp, peerTrusted: false, params: {}, now: e.now, user: undefined, queryParams, extraHeaders: null, settlers: null, locals: null
  }
}
