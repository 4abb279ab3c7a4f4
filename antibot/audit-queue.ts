/**
 * `flashgate audit-queue --campaign C --seed HEX --joins FILE`: recompute a waiting room's pre-queue
 * order from the revealed seed and the join log, and compare it with the positions the room served.
 *
 * The join log is the room's export (`GET /admin/queue/:campaign/joins`, NDJSON): an optional header line
 * with `campaign` and `commitment`, then `{"phase":"pre","position":N,"user":U}` per pre-queue joiner
 * (later joiners, `"phase":"after"`, are first come first served and not part of the draw). The order is
 * score ascending, score = first 6 bytes of HMAC-SHA256(seed, "<campaign>\n<user>") big-endian, ties by
 * the user id's bytes (limiter/waiting-room.ts). Prints `position<TAB>user` in the recomputed order; exit
 * 0 when every served position matches and the seed matches the commitment, 1 on any mismatch, 2 on a
 * usage error or an unreadable file.
 */
import { readFileSync } from 'node:fs'
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

const USAGE = `Usage: flashgate audit-queue --campaign C --seed HEX --joins FILE

Recomputes a waiting room's pre-queue order from its revealed seed (GET /_flashgate/queue/seed after
starts_at) and its join log (GET /admin/queue/C/joins), prints "position<TAB>user" per line, and exits 1
when what was served differs (or the seed does not match the room's commitment).`

export async function main (args: string[]): Promise<number> {
  const flags = new Map<string, string>()
  for (let i = 0; i < args.length; i++) {
    const a = args[i] as string
    if (a === '--help' || a === '-h') { process.stdout.write(USAGE + '\n'); return 0 }
    const m = /^--(campaign|seed|joins)(?:=(.*))?$/.exec(a)
    if (m === null) { process.stderr.write(`flashgate: unknown option: ${a}\n\n${USAGE}\n`); return 2 }
    const v = m[2] ?? args[++i]
    if (v === undefined || v === '') { process.stderr.write(`flashgate: --${m[1] as string} needs a value\n\n${USAGE}\n`); return 2 }
    flags.set(m[1] as string, v)
  }
  for (const k of ['campaign', 'seed', 'joins']) {
    if (!flags.has(k)) { process.stderr.write(`flashgate: --${k} is required\n\n${USAGE}\n`); return 2 }
  }
  let text: string
  try { text = readFileSync(flags.get('joins') as string, 'utf8') } catch (err) {
    process.stderr.write(`flashgate: cannot read ${flags.get('joins') as string}: ${(err as NodeJS.ErrnoException).code ?? String(err)}\n`)
    return 2
  }
  let r: AuditResult
  try { r = auditQueue(flags.get('campaign') as string, flags.get('seed') as string, text) } catch (err) {
    process.stderr.write(`flashgate: ${err instanceof Error ? err.message : String(err)}\n`)
    return 2
  }
  process.stdout.write(r.order.map((u, i) => `${i + 1}\t${u}`).join('\n') + (r.order.length > 0 ? '\n' : ''))
  for (const m of r.mismatches) process.stderr.write(`mismatch: ${m}\n`)
  if (r.mismatches.length > 0) return 1
  process.stderr.write(`ok: ${r.order.length} pre-queue positions match the seed\n`)
  return 0
}
