/**
 * `store.on_error: journal` and `store.journal: { path, max_entries }` (see gateway/pending.ts). The
 * directory is made and proved writable here — a file written, fsynced and removed — so that a journal
 * that cannot be written is refused at start and at reload with FILE:LINE:COL, never found out mid-sale.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, unlinkSync, writeSync } from 'node:fs'
import { dirname, isAbsolute, join, resolve } from 'node:path'
import type { Checker, MapView } from './check.js'
import { quote } from './quote.js'
import { fmtPos, type Pos } from './tree.js'
import type { GuardConfig, JournalConfig } from './types.js'

export const DEFAULT_MAX_ENTRIES = 100_000

/** Make `dir` and write a probe file in it; null when writable, else why not. */
export function probeWritable (dir: string): string | null {
  const probe = join(dir, `.probe-${process.pid}-${Date.now()}`)
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 })
    const fd = openSync(probe, 'w', 0o600)
    try { writeSync(fd, 'flashgate'); fsyncSync(fd) } finally { closeSync(fd) }
    unlinkSync(probe)
    return null
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    return e.code ?? e.message
  }
}

/** The journal of the store map `m` (null when on_error is not journal). */
export function readJournal (ck: Checker, m: MapView | undefined): JournalConfig | null {
  if (m === undefined) return null
  const policy = m.get('on_error')
  const isJournal = policy?.kind === 'scalar' && policy.value === 'journal'
  const jn = m.get('journal')
  if (!isJournal) {
    if (jn !== undefined) ck.error(m.keyPos('journal'), 'store.journal is used only with store.on_error: journal')
    return null
  }
  if (jn === undefined) {
    ck.error(policy.pos, 'store.on_error: journal needs store.journal: { path: DIR } (a local directory the journal is written to)')
    return { path: '', maxEntries: DEFAULT_MAX_ENTRIES }
  }
  const jm = ck.map(jn, 'store.journal', ['path', 'max_entries'])
  if (jm === undefined) return { path: '', maxEntries: DEFAULT_MAX_ENTRIES }
  const pn = jm.get('path')
  const maxEntries = ck.num(jm.get('max_entries'), 'max_entries', 1, 100_000_000) ?? DEFAULT_MAX_ENTRIES
  if (pn === undefined) {
    ck.error(jm.pos, 'store.journal: path is required (a local directory)')
    return { path: '', maxEntries }
  }
  const p = ck.str(pn, 'store.journal.path')
  if (p === undefined) return { path: '', maxEntries }
  const path = isAbsolute(p) ? p : resolve(dirname(pn.pos.file), p)
  const why = probeWritable(path)
  if (why !== null) ck.error(pn.pos, `store.journal.path: ${p} cannot be written (${why}); the journal must be on a writable local disk`)
  return { path, maxEntries }
}

/**
 * A route's guards in order, each with the position of its kind key. A journaled quota answers a buy the
 * store cannot judge with 202 PENDING and ends the pipeline, so a `dedupe` after it never sees that buy:
 * one user could be journaled once per attempt, several units. Refused at the dedupe.
 */
export function checkJournalOrder (ck: Checker, route: string, guards: ReadonlyArray<{ readonly g: GuardConfig, readonly pos: Pos }>): void {
  let quotaAt: Pos | null = null
  for (const { g, pos } of guards) {
    if (g.kind === 'quota' && g.journaled && quotaAt === null) quotaAt = pos
    else if (g.kind === 'dedupe' && quotaAt !== null) {
      ck.error(pos, `route ${quote(route)}: dedupe after quota (at ${fmtPos(quotaAt)}): a buy journaled while the store is down is answered 202 PENDING by the quota before this dedupe runs, so one user could get several units; put dedupe before quota when store.on_error is journal`)
    }
  }
}
