/**
 * A route's guard: a one-key map `- KIND: { options }` (or a bare `- KIND`), its keys checked against
 * that kind's list, read by the kind's own module. A guard with any error is left out (its errors say why).
 */
import { didYouMean } from '../../check.js'
import type { MapView } from '../../check.js'
import { quote } from '../../quote.js'
import type { PMap, PNode, Pos } from '../../tree.js'
import type { GuardConfig, RejectOverride } from '../../types.js'
import type { Checker } from '../../check.js'
import { toPlain } from '../values.js'
import { readCaptcha } from './captcha.js'
import { readCampaignWindow } from './campaign-window.js'
import { readDedupe } from './dedupe.js'
import { readDeny } from './deny.js'
import type { GuardEnv, GuardReader, RouteCtx } from './env.js'
import { readQuota } from './quota.js'
import { readRateLimit } from './rate-limit.js'
import { readSignedLink } from './signed-link.js'
import { readWaitingRoom } from './waiting-room.js'


const GUARD_KINDS = ['deny', 'rate_limit', 'captcha', 'signed_link', 'campaign_window', 'dedupe', 'quota', 'waiting_room'] as const
type Kind = typeof GUARD_KINDS[number]
const COMMON_GUARD_KEYS = ['shadow', 'reject'] as const

/** Each kind's own keys and its reader. */
const KINDS: { readonly [K in Kind]: { readonly keys: readonly string[], readonly read: GuardReader<Extract<GuardConfig, { kind: K }>> } } = {
  deny: { keys: ['ips', 'ip_files', 'users', 'users_set', 'on_error'], read: readDeny },
  rate_limit: { keys: ['name', 'key', 'rate', 'burst', 'algorithm', 'delay', 'scope', 'max_keys', 'on_error'], read: readRateLimit },
  captcha: { keys: ['provider', 'secret', 'token', 'verify_url', 'timeout', 'min_score', 'action', 'hostname', 'token_ttl', 'clearance', 'clearance_cookie', 'on_error', 'difficulty', 'difficulty_under_load', 'challenge_ttl'], read: readCaptcha },
  signed_link: { keys: ['mode', 'single_use', 'secure_link', 'secure_link_md5', 'campaign', 'product'], read: readSignedLink },
  campaign_window: { keys: ['campaign'], read: readCampaignWindow },
  dedupe: { keys: ['ttl', 'campaign', 'product', 'on_error'], read: readDedupe },
  quota: { keys: ['campaign', 'product', 'latch_ttl', 'on_error', 'lease'], read: readQuota },
  waiting_room: { keys: ['campaign', 'on_error'], read: readWaitingRoom }
}

export function readGuard (env: GuardEnv, n: PNode, index: number, rc: RouteCtx): GuardConfig | undefined {
  const { ck } = env
  let kindName: string
  let kindPos: Pos
  let opts: PNode | undefined
  if (n.kind === 'scalar' && typeof n.value === 'string') {
    kindName = n.value; kindPos = n.pos; opts = undefined
  } else if (n.kind === 'map' && n.entries.length === 1) {
    const e = n.entries[0]!
    kindName = e.key; kindPos = e.keyPos; opts = e.value.kind === 'scalar' && e.value.value === null ? undefined : e.value
  } else if (n.kind === 'map' && n.entries.length > 1) {
    const kinds = n.entries.filter((e) => (GUARD_KINDS as readonly string[]).includes(e.key))
    const hint = kinds.length === 1 ? ` (indent the options under ${kinds[0]!.key}:)` : ''
    return ck.error(n.pos, `a guard is a one-key map such as "- rate_limit: {...}", got keys ${n.entries.map((e) => e.key).join(', ')}${hint}`)
  } else {
    return ck.error(n.pos, 'a guard is a one-key map such as "- rate_limit: {...}"')
  }
  if (!(GUARD_KINDS as readonly string[]).includes(kindName)) {
    return ck.error(kindPos, `unknown guard ${quote(kindName)}${didYouMean(kindName, GUARD_KINDS) || ` (guards: ${GUARD_KINDS.join(', ')})`}`)
  }
  const kind = kindName as Kind
  const empty: PMap = { kind: 'map', pos: kindPos, entries: [] }
  const spec = KINDS[kind] as { keys: readonly string[], read: GuardReader<GuardConfig> }
  const m: MapView | undefined = ck.map(opts ?? empty, kind, [...spec.keys, ...COMMON_GUARD_KEYS])
  if (m === undefined) return undefined
  const before = ck.d.errorCount
  const common = { index, shadow: ck.bool(m.get('shadow'), 'shadow') ?? false, reject: readReject(ck, m.get('reject')) }
  const g = spec.read(env, m, kindPos, rc, common)
  return ck.d.errorCount > before ? undefined : g
}

function readReject (ck: Checker, n: PNode | undefined): RejectOverride | null {
  const m = ck.map(n, 'reject', ['status', 'body'])
  if (m === undefined) return null
  const status = ck.num(m.get('status'), 'status', 200, 599) ?? null
  const bn = m.get('body')
  if (status === null && bn === undefined) ck.error(m.pos, 'reject: needs status and/or body')
  return { status, body: bn === undefined ? null : toPlain(bn) }
}
