/**
 * `GET /_flashgate/time`: the edge clock for countdowns. With `?campaign=C` also the campaign's public
 * schedule, `{"now","campaign","starts_at","ends_at"}` (what a sale page counts down to); 404 for an
 * unknown campaign.
 */
import type { Config } from '../../conf/types.js'
import type { EdgeHandler } from '../pipeline/types.js'
import { rejection } from '../pipeline/reject.js'
import { ANSWERS } from '../http/server.js'
import { sendJson, sendRejection } from '../http/json.js'

const NO_CAMPAIGN = rejection('NOT_FOUND', 'no such campaign')

export function timeHandler (clock: () => number, campaigns: Config['campaigns']): EdgeHandler {
  return (req, res, e) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      sendRejection(res, ANSWERS.methodNotAllowed, ['allow', 'GET, HEAD'])
      return
    }
    const cid = e.query.get('campaign')
    if (cid === null) { sendJson(res, 200, { now: clock() }); return }
    const c = campaigns.get(cid)
    if (c === undefined) { sendRejection(res, NO_CAMPAIGN); return }
    sendJson(res, 200, { now: clock(), campaign: c.id, starts_at: c.startsAt, ends_at: c.endsAt })
  }
}
