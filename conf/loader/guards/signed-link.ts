/** `signed_link:` an HMAC purchase link (secrets.link_keys), or nginx's secure_link_md5 expressions. */
import { parseSecureLinkTemplate } from '../../secure-link.js'
import type { SignedLinkGuardConfig } from '../../types.js'
import { campaignSource, productSource } from '../refs.js'
import { needUser } from './env.js'
import type { GuardReader } from './env.js'

export const readSignedLink: GuardReader<SignedLinkGuardConfig> = (env, m, pos, rc, common) => {
  const { ck } = env
  const mode = ck.oneOf(m.get('mode'), 'mode', ['hmac', 'nginx_secure_link_md5'] as const) ?? 'hmac'
  const singleUse = ck.bool(m.get('single_use'), 'single_use') ?? false
  const secureLinkNode = m.get('secure_link')
  const md5Node = m.get('secure_link_md5')
  const secureLink = ck.str(secureLinkNode, 'secure_link') ?? '$arg_md5,$arg_expires'
  const secureLinkMd5 = ck.str(md5Node, 'secure_link_md5', { secret: true }) ?? ''
  if (mode === 'hmac') {
    for (const [k, v] of [['secure_link', secureLinkNode], ['secure_link_md5', md5Node]] as const) {
      if (v !== undefined) ck.error(m.keyPos(k), `${k}: only applies to mode: nginx_secure_link_md5`)
    }
    if (env.secrets.linkKeys.length === 0) ck.error(pos, 'signed_link (mode hmac) needs secrets.link_keys: { k1: "${FLASHGATE_LINK_KEY}" }')
    needUser(env, pos, 'signed_link')
  } else if (md5Node === undefined) {
    ck.error(pos, 'signed_link mode nginx_secure_link_md5 needs secure_link_md5 (the nginx expression, e.g. "$secure_link_expires$uri secret")')
  }
  const campaign = campaignSource(env, m, rc, 'signed_link')
  const product = productSource(env, m, rc, 'signed_link', campaign)
  if (mode === 'nginx_secure_link_md5') {
    // The guard compiles these at start; a template it cannot compile is refused here, where validate sees it.
    for (const [k, v, node] of [['secure_link', secureLink, secureLinkNode], ['secure_link_md5', secureLinkMd5, md5Node]] as const) {
      try { parseSecureLinkTemplate(v) } catch (err) { ck.error(node?.pos ?? pos, `${k}: ${(err as Error).message}`) }
    }
  }
  return { kind: 'signed_link', ...common, mode, singleUse, secureLink, secureLinkMd5, campaign, product, policy: env.storeOnError }
}
