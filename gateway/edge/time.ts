/**
 * `GET /_flashgate/time`: the edge clock for countdowns. With `?campaign=C` also the campaign's public
 * schedule, `{"now","campaign","starts_at","ends_at"}` (what a sale page counts down to); 404 for an
 * unknown campaign.
 */
import type { Config } from '../../conf/types.js'
import type { EdgeHandler } from '../pipeline/types.js'
import { rejection } from '../pipeline/reject.js'
import { ANSWERS, writeRejection } from '../http/server.js'

const NO_CAMPAIGN = rejection('NOT_FOUND', 'no such campaign')

export function timeHandler (clock: () => number, campaigns: Config['campaigns']): EdgeHandler {
  return (req, res, e) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      writeRejection(res, ANSWERS.methodNotAllowed, ['allow', 'GET, HEAD'])
      return
    }
    const cid = e.query.get('campaign')
    let body = '{"now":' + clock() + '}'
    if (cid !== null) {
      const c = campaigns.get(cid)
      if (c === undefined) { writeRejection(res, NO_CAMPAIGN); return }
      body = JSON.stringify({ now: clock(), campaign: c.id, starts_at: c.startsAt, ends_at: c.endsAt })
    }
    res.writeHead(200, ['content-type', 'application/json', 'cache-control', 'no-store', 'content-length', String(Buffer.byteLength(body))])
    res.end(body)
  }
}
