/**
 * `campaign_window`: before `starts_at` → 409 NOT_STARTED with the server time and the seconds to go
 * (and `Retry-After`), from `ends_at` on → 409 ENDED. The window is [starts_at, ends_at).
 * An unknown campaign → 404 NOT_FOUND. `GET /_flashgate/time` (gateway/edge/time.ts) serves countdown clocks.
 */
import type { CampaignConfig, CampaignWindowGuardConfig } from '../../conf/types.js'
import type { Guard, GuardFactory, RequestContext, Rejection, Verdict } from '../pipeline/types.js'
import { rejection } from '../pipeline/reject.js'
import { guardId } from './common.js'
import { valueOf } from './values.js'

/** The NOT_STARTED answer for `now` (built per request: it carries the time). */
function notStarted (c: CampaignConfig, now: number, override: CampaignWindowGuardConfig['reject']): Rejection {
  const startsIn = Math.ceil((c.startsAt - now) / 1000)
  return rejection('NOT_STARTED', 'campaign has not started', {
    override,
    headers: ['retry-after', String(startsIn)],
    extra: { campaign: c.id, now, starts_at: c.startsAt, starts_in: startsIn }
  })
}

export const campaignWindowGuard: GuardFactory<CampaignWindowGuardConfig> = (cfg, route, deps): Guard => {
  const id = guardId(route, cfg)
  const campaigns = deps.config.campaigns
  const o = { override: cfg.reject }
  const notFound = rejection('NOT_FOUND', 'no such campaign', o)
  const ended = new Map<string, Rejection>()
  for (const c of campaigns.values()) {
    ended.set(c.id, rejection('ENDED', 'campaign has ended', { ...o, extra: { campaign: c.id } }))
  }
  // A literal campaign is resolved once.
  const fixed = cfg.campaign.from === 'literal' ? campaigns.get(cfg.campaign.value) ?? null : null
  if (cfg.campaign.from === 'literal' && fixed === null) throw new Error(`campaign_window: unknown campaign "${cfg.campaign.value}"`)

  return {
    kind: 'campaign_window',
    id,
    check (ctx: RequestContext): Verdict {
      let c = fixed
      if (c === null) {
        const cid = valueOf(ctx, cfg.campaign)
        c = cid === null ? null : campaigns.get(cid) ?? null
        if (c === null) return notFound
      }
      const now = ctx.now
      if (now < c.startsAt) return notStarted(c, now, cfg.reject)
      if (now >= c.endsAt) return ended.get(c.id)
      return undefined
    }
  }
}

