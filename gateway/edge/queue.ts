/**
 * The waiting room's edge endpoints: `GET /_flashgate/queue?campaign=C` (a status poll: position, eta,
 * and the ticket or pass cookie) and `GET /_flashgate/queue/seed?campaign=C` (the shuffle commitment,
 * the seed from starts_at). The rooms are the guard's (gateway/guards/waiting-room.ts), shared per node.
 */
import type { ServerResponse } from 'node:http'
import type { EdgeHandler, GuardDeps } from '../pipeline/types.js'
import { rejection } from '../pipeline/reject.js'
import { cookieOf, headerOf } from '../../antibot/util.js'
import { sendJson } from '../http/json.js'
import { PASS_HEADER, passCookie, roomsOf, ticketCookie, type QueueAnswer, type Room } from '../guards/waiting-room.js'
import { METHOD, UNAUTH, identityCtx, reject } from './respond.js'

const NO_ROOM = rejection('NOT_FOUND', 'no waiting room for this campaign')
const BAD = rejection('BAD_REQUEST', 'campaign is required')
const BUSY = rejection('OVERLOADED', 'waiting room busy, poll again', { headers: ['retry-after', '1'] })
const STORE_DOWN = rejection('STORE_UNAVAILABLE', 'shared state store unavailable', { headers: ['retry-after', '1'] })

function cookieHeader (name: string, value: string, maxAgeS: number): string {
  return `${name}=${value}; Path=/; Max-Age=${Math.max(0, Math.ceil(maxAgeS))}; HttpOnly; SameSite=Lax`
}

/** The room's edge handlers (mounted by createEdgeHandlers). */
export function createQueueHandlers (deps: GuardDeps): Record<string, EdgeHandler> {
  const rooms = roomsOf(deps)
  const send = (res: ServerResponse, room: Room, a: QueueAnswer, now: number): void => {
    const headers: string[] = []
    const c = room.campaign.id
    if (a.ticket !== undefined) headers.push('set-cookie', cookieHeader(ticketCookie(c), a.ticket, (room.campaign.endsAt - now) / 1000))
    if (a.pass !== undefined) headers.push('set-cookie', cookieHeader(passCookie(c), a.pass, room.cfg.passTtlMs / 1000))
    sendJson(res, 200, a, headers)
  }
  const failed = (res: ServerResponse, err: unknown): void => {
    deps.log('warn', 'waiting room: store failed', { error: err instanceof Error ? err.message : String(err) })
    if (!res.headersSent) reject(res, STORE_DOWN)
  }
  return {
    '/_flashgate/queue': (req, res, e) => {
      if (req.method !== 'GET' && req.method !== 'HEAD') return reject(res, METHOD)
      const cid = e.query.get('campaign')
      if (cid === null || cid === '') return reject(res, BAD)
      const room = rooms.get(cid)
      if (room === undefined || deps.config.campaigns.get(cid)?.waitingRoom == null) return reject(res, NO_ROOM)
      const user = deps.identity(identityCtx(req, res, e, '/_flashgate/queue', null))
      if (user === null) return reject(res, UNAUTH)
      const cookie = req.headers.cookie
      const a = room.poll(user, cookieOf(cookie, ticketCookie(cid)), cookieOf(cookie, passCookie(cid)) ?? headerOf(req.headers, PASS_HEADER), e.now)
      if (a === null) return reject(res, BUSY)
      if (!(a instanceof Promise)) return send(res, room, a, e.now)
      return a.then((x) => { if (x === null) reject(res, BUSY); else send(res, room, x, e.now) }, (err: unknown) => { failed(res, err) })
    },
    '/_flashgate/queue/seed': (req, res, e) => {
      if (req.method !== 'GET' && req.method !== 'HEAD') return reject(res, METHOD)
      const cid = e.query.get('campaign')
      if (cid === null || cid === '') return reject(res, BAD)
      const room = rooms.get(cid)
      if (room === undefined || deps.config.campaigns.get(cid)?.waitingRoom == null) return reject(res, NO_ROOM)
      return room.load().then(() => { sendJson(res, 200, room.seedAnswer(e.now)) }, (err: unknown) => { failed(res, err) })
    }
  }
}
