/** `campaign_window:` open only between the campaign's starts_at and ends_at. */
import type { CampaignWindowGuardConfig } from '../../types.js'
import { campaignSource } from '../refs.js'
import type { GuardReader } from './env.js'

export const readCampaignWindow: GuardReader<CampaignWindowGuardConfig> = (env, m, pos, rc, common) => {
  const campaign = campaignSource(env, m, rc, 'campaign_window')
  if (env.campaigns.size === 0) env.ck.error(pos, 'campaign_window needs at least one campaign in campaigns:')
  return { kind: 'campaign_window', ...common, campaign }
}
