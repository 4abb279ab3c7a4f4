/**
 * The store's high-availability keys (issue 17): `sentinels` + `name` (kind redis behind Redis Sentinel)
 * and `wait` (an admission counts only once WAIT says that many replicas have it). Read here, beside the
 * loader's `readStore`, so that every rule `serve` relies on is judged at load with FILE:LINE:COL.
 */
import type { Checker, MapView } from './check.js'
import { parseHostPort, parseTimerDuration } from './parse.js'
import type { HostPort, StoreWait } from './types.js'

/** The keys this file reads inside `store:`. */
export const STORE_HA_KEYS = ['sentinels', 'name', 'wait'] as const

export interface StoreHa {
  readonly sentinels?: readonly HostPort[]
  readonly sentinelName?: string
  readonly wait?: StoreWait
}

/**
 * `kind`, whether `url` was written and the store's per-operation timeout come from readStore. Rules:
 * sentinels only with kind redis, with a name and without url; wait only on Redis, its timeout shorter
 * than store.timeout (the WAIT runs inside each admission's deadline).
 */
export function readStoreHa (ck: Checker, m: MapView | undefined, kind: 'memory' | 'redis' | 'redis-cluster', timeoutMs: number): StoreHa {
  if (m === undefined) return {}
  const out: { sentinels?: readonly HostPort[], sentinelName?: string, wait?: StoreWait } = {}
  const sn = m.get('sentinels')
  const sentinels = ck.list(sn, 'sentinels', (it) => ck.parseWith(it, 'sentinels', parseHostPort, 'an address HOST:PORT'))
  const name = ck.str(m.get('name'), 'name', { pattern: /^[A-Za-z0-9._-]{1,64}$/, patternHelp: 'must be the master name the sentinels monitor (letters, digits, . _ -)' })
  if (sn !== undefined && sentinels !== undefined) {
    if (kind !== 'redis') ck.error(m.keyPos('sentinels'), `store: sentinels need kind: redis (got ${kind})`)
    else if (sn.kind === 'seq' && sn.items.length === 0) ck.error(sn.pos, 'sentinels: needs at least one HOST:PORT')
    else if (name === undefined && m.get('name') === undefined) ck.error(m.keyPos('sentinels'), 'store: sentinels need name: MASTER (the master name they monitor)')
    else if (m.get('url') !== undefined) ck.error(m.keyPos('url'), 'store: url and sentinels are exclusive (the sentinels say where the primary is)')
    else if (sentinels.length > 0) {
      out.sentinels = sentinels
      if (name !== undefined) out.sentinelName = name
    }
  } else if (m.get('name') !== undefined && sn === undefined) {
    ck.error(m.keyPos('name'), 'store: name is the Sentinel master name; it needs sentinels: [HOST:PORT, ...]')
  }
  const wn = m.get('wait')
  const w = ck.map(wn, 'wait', ['replicas', 'timeout'])
  if (w !== undefined) {
    const replicas = ck.num(w.get('replicas'), 'replicas', 1, 64)
    if (w.get('replicas') === undefined) ck.error(w.pos, 'wait: needs replicas: N (how many replicas must have an admission before it counts)')
    const tn = w.get('timeout')
    let t = ck.parseWith(tn, 'timeout', parseTimerDuration, 'a duration')
    if (t !== undefined && tn !== undefined && t < 1) t = ck.error(tn.pos, 'timeout: must be at least 1ms')
    if (t !== undefined && tn !== undefined && t >= timeoutMs) {
      t = ck.error(tn.pos, `timeout: must be shorter than store.timeout (${timeoutMs}ms): the WAIT runs inside each admission's deadline`)
    }
    if (kind === 'memory') ck.error(m.keyPos('wait'), 'store: wait needs kind redis or redis-cluster (the memory store has no replicas)')
    else if (replicas !== undefined && (t !== undefined || tn === undefined)) {
      out.wait = { replicas, timeoutMs: t ?? Math.max(1, Math.floor(timeoutMs / 2)) }
    }
  }
  return out
}
