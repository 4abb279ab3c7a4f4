/** `waiting_room:` a pass from the campaign's room is required (the room is configured on the campaign). */
import { quote } from '../../quote.js'
import type { WaitingRoomGuardConfig } from '../../types.js'
import { campaignSource } from '../refs.js'
import { policy } from '../values.js'
import { needUser } from './env.js'
import type { GuardReader } from './env.js'

export const readWaitingRoom: GuardReader<WaitingRoomGuardConfig> = (env, m, pos, rc, common) => {
  const { ck } = env
  needUser(env, pos, 'waiting_room')
  const campaign = campaignSource(env, m, rc, 'waiting_room')
  const rooms = [...env.campaigns.entries()].filter(([, c]) => c.room === true).map(([id]) => id)
  if (campaign.from === 'literal') {
    if (env.campaigns.has(campaign.value) && !rooms.includes(campaign.value)) ck.error(m.get('campaign')?.pos ?? pos, `waiting_room: campaign ${quote(campaign.value)} has no waiting_room (add campaigns[].waiting_room: { admit: 600/m })`)
  } else if (rooms.length === 0) {
    ck.error(pos, 'waiting_room: no campaign has a waiting_room (add campaigns[].waiting_room: { admit: 600/m })')
  }
  const onError = policy(ck, m.get('on_error')) ?? null
  return { kind: 'waiting_room', ...common, campaign, onError, policy: onError ?? env.storeOnError }
}
