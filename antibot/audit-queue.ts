/**
 * The check behind `flashgate audit-queue --campaign C --seed HEX --joins FILE` (gateway/cli.ts):
 * recompute a waiting room's pre-queue order from the revealed seed and the join log, and compare it
 * with the positions the room served.
 *
 * The join log is the room's export (`GET /admin/queue/:campaign/joins`, NDJSON): an optional header line
 * with `campaign` and `commitment`, then `{"phase":"pre","position":N,"user":U}` per pre-queue joiner
 * (later joiners, `"phase":"after"`, are first come first served and not part of the draw). The order is
 * score ascending, score = first 6 bytes of HMAC-SHA256(seed, "<campaign>\n<user>") big-endian, ties by
 * the user id's bytes (limiter/waiting-room.ts). The command prints `position<TAB>user` in the
 * recomputed order; exit 0 when every served position matches and the seed matches the commitment, 1 on
 * any mismatch, 2 on a usage error or an unreadable file.
 */
import { commitmentOf, preQueueOrder } from '../limiter/waiting-room.js'

export interface AuditResult {
  /** The recomputed pre-queue order. */
  readonly order: readonly string[]
  /** Every disagreement, one line each. */
  readonly mismatches: readonly string[]
}

/** Audit a join log (NDJSON text). Throws on malformed input (with the line number). */
export function auditQueue (campaign: string, seedHex: string, joins: string): AuditResult {
  if (!/^[0-9a-fA-F]{64}$/.test(seedHex)) throw new Error('--seed must be 64 hex digits (32 bytes)')
  const seed = Buffer.from(seedHex, 'hex')
  const mismatches: string[] = []
  const served = new Map<string, number>()
  joins.split('\n').forEach((line, i) => {
    if (line.trim() === '') return
    let v: Record<string, unknown>
    try { v = JSON.parse(line) as Record<string, unknown> } catch { throw new Error(`joins line ${i + 1}: not JSON`) }
    if (typeof v !== 'object' || v === null) throw new Error(`joins line ${i + 1}: not a JSON object`)
    if (v.phase === undefined) {
      if (typeof v.campaign === 'string' && v.campaign !== campaign) mismatches.push(`the join log is for campaign ${JSON.stringify(v.campaign)}, not ${JSON.stringify(campaign)}`)
      if (typeof v.commitment === 'string' && v.commitment !== commitmentOf(seed)) mismatches.push(`the seed does not match the room's commitment ${v.commitment} (SHA-256 of the seed is ${commitmentOf(seed)})`)
      if (typeof v.seed === 'string' && v.seed.toLowerCase() !== seedHex.toLowerCase()) mismatches.push('the seed differs from the one in the join log')
      return
    }
    if (v.phase !== 'pre') return
    if (typeof v.user !== 'string' || typeof v.position !== 'number') throw new Error(`joins line ${i + 1}: a pre-queue entry needs "user" (string) and "position" (number)`)
    if (served.has(v.user)) throw new Error(`joins line ${i + 1}: user ${JSON.stringify(v.user)} appears twice`)
    served.set(v.user, v.position)
  })
  const order = preQueueOrder(seed, campaign, [...served.keys()])
  order.forEach((user, i) => {
    const p = served.get(user) as number
    if (p !== i + 1) mismatches.push(`user ${JSON.stringify(user)}: served position ${p}, recomputed ${i + 1}`)
  })
  return { order, mismatches }
}
