/** `campaigns:` with their products and waiting rooms, and the index guards check their references against. */
import type { Checker } from '../check.js'
import { quote } from '../quote.js'
import { fmtPos } from '../tree.js'
import type { PNode, Pos } from '../tree.js'
import type { CampaignConfig, ProductConfig, WaitingRoomConfig } from '../types.js'
import { DEFAULTS } from './defaults.js'
import { duration, instant, rate } from './values.js'

/**
 * Every campaign id written (even one whose settings have errors, so a guard naming it is not
 * reported again), its products and whether it has a waiting room.
 */
export type CampaignIndex = Map<string, { pos: Pos, products: Set<string>, room?: boolean }>

export function readCampaigns (ck: Checker, nodes: readonly PNode[]): { campaigns: Map<string, CampaignConfig>, index: CampaignIndex } {
  const campaigns = new Map<string, CampaignConfig>()
  const index: CampaignIndex = new Map()
  for (const n of nodes) {
    const c = readCampaign(ck, n, index)
    if (c !== undefined && !campaigns.has(c.id)) campaigns.set(c.id, c)
  }
  return { campaigns, index }
}

function readCampaign (ck: Checker, n: PNode, index: CampaignIndex): CampaignConfig | undefined {
  const D = DEFAULTS.campaign
  const m = ck.map(n, 'campaign', ['id', 'starts_at', 'ends_at', 'link_reveal', 'link_grace', 'link_ttl', 'products', 'waiting_room'])
  if (m === undefined) return undefined
  const id = ck.id(m.get('id'), 'id')
  for (const k of ['id', 'starts_at', 'ends_at'] as const) if (m.get(k) === undefined) ck.error(m.pos, `campaign is missing required key ${quote(k)}`)
  let fresh = true
  if (id !== undefined) {
    const first = index.get(id)
    if (first !== undefined) { ck.error(m.get('id')!.pos, `duplicate campaign id ${quote(id)} (first defined at ${fmtPos(first.pos)})`); fresh = false } else index.set(id, { pos: m.get('id')!.pos, products: new Set() })
  }
  const startsAt = instant(ck, m.get('starts_at'), 'starts_at')
  const endsAt = instant(ck, m.get('ends_at'), 'ends_at')
  if (startsAt !== undefined && endsAt !== undefined && startsAt >= endsAt) ck.error(m.get('ends_at')!.pos, 'ends_at: must be after starts_at')
  const products: ProductConfig[] = []
  const productPos = new Map<string, Pos>()
  ck.list(m.get('products'), 'products', (it) => {
    const pm = ck.map(it, 'product', ['id', 'quota', 'segments'])
    if (pm === undefined) return undefined
    const pid = ck.id(pm.get('id'), 'id')
    const quota = ck.num(pm.get('quota'), 'quota', 0, 1e12)
    for (const k of ['id', 'quota'] as const) if (pm.get(k) === undefined) ck.error(pm.pos, `product is missing required key ${quote(k)}`)
    const segments = ck.num(pm.get('segments'), 'segments', 1, 64) ?? DEFAULTS.product.segments
    if (pid !== undefined) {
      const first = productPos.get(pid)
      if (first !== undefined) { ck.error(pm.get('id')!.pos, `duplicate product id ${quote(pid)} in campaign${id === undefined ? '' : ' ' + quote(id)} (first defined at ${fmtPos(first)})`); return undefined }
      productPos.set(pid, pm.get('id')!.pos)
      if (id !== undefined && fresh) index.get(id)?.products.add(pid)
    }
    if (quota !== undefined && segments > 1 && segments > quota) ck.error(pm.get('segments')!.pos, `segments: ${segments} is more than the quota (${quota})`)
    if (pid === undefined || quota === undefined) return undefined
    products.push({ id: pid, quota, segments })
    return undefined
  })
  const linkRevealMs = duration(ck, m.get('link_reveal'), 'link_reveal', { timer: false }) ?? D.linkRevealMs
  const linkGraceMs = duration(ck, m.get('link_grace'), 'link_grace', { timer: false }) ?? D.linkGraceMs
  const linkTtlMs = duration(ck, m.get('link_ttl'), 'link_ttl', { min: 1000, timer: false }) ?? null
  const waitingRoom = readWaitingRoom(ck, m.get('waiting_room'), products.length)
  // Marked even when its settings have errors (those are reported there, not again at every guard).
  if (m.get('waiting_room') !== undefined && id !== undefined && fresh) { const e = index.get(id); if (e !== undefined) e.room = true }
  if (id === undefined || startsAt === undefined || endsAt === undefined || !fresh) return undefined
  // waitingRoom only when configured (the key stays absent otherwise).
  return { id, startsAt, endsAt, linkRevealMs, linkGraceMs, linkTtlMs, products, ...(waitingRoom === null ? {} : { waitingRoom }) }
}

/** `campaigns[].waiting_room` (null when absent). */
function readWaitingRoom (ck: Checker, n: PNode | undefined, products: number): WaitingRoomConfig | null {
  if (n === undefined) return null
  const D = DEFAULTS.waitingRoom
  const m = ck.map(n, 'waiting_room', ['prequeue', 'admit', 'pass_ttl', 'overbook', 'poll'])
  if (m === undefined) return null
  if (m.get('admit') === undefined) ck.error(m.pos, 'waiting_room is missing required key "admit" (users let in per unit of time, e.g. 600/m)')
  const admit = rate(ck, m.get('admit'), 'admit')
  const prequeueMs = duration(ck, m.get('prequeue'), 'prequeue', { timer: false }) ?? D.prequeueMs
  const passTtlMs = duration(ck, m.get('pass_ttl'), 'pass_ttl', { min: 1000, timer: false }) ?? D.passTtlMs
  const overbook = ck.num(m.get('overbook'), 'overbook', 1, 100, false) ?? D.overbook
  const pollMs = duration(ck, m.get('poll'), 'poll', { min: 100, timer: false }) ?? D.pollMs
  if (pollMs > 60_000 && m.get('poll') !== undefined) ck.error(m.get('poll')!.pos, 'poll: must be at most 60s')
  if (products === 0) ck.error(m.pos, 'waiting_room: the campaign has no products (the room admits against their remaining stock)')
  if (admit === undefined || admit.count <= 0) return null
  return { prequeueMs, admit, passTtlMs, overbook, pollMs }
}
