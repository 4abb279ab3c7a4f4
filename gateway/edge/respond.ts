/**
 * What the edge endpoints share: their rejection writer (gateway/http/json.ts) and the request context the identity
 * resolver reads (edge endpoints run outside the pipeline).
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Rejection, RequestContext } from '../pipeline/types.js'
import { rejection } from '../pipeline/reject.js'
import { sendRejection } from '../http/json.js'

/** A rejection from an edge endpoint: gateway/http/json.ts writes it (through writeHead, with the request id). */
export function reject (res: ServerResponse, r: Rejection): void {
  sendRejection(res, r)
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
