/**
 * The origin's order path keys (issue 17), read from the `origin:` map: `writer` (the order system an
 * order is handed to, with its retries and back-off before the dead-letter stream), `queue` (the order
 * stream on a Redis of its own) and `buffer` (the local disk buffer an order notice goes to while that
 * stream cannot be written), each present in OriginConfig only when given; and `requeue_after` (a QUEUED
order whose notice reached no stream is sent again after this long: origin-stub/requeue.ts). See origin-stub/ and
 * README "The order path when its queue fails".
 */
import { dirname, isAbsolute, resolve } from 'node:path'
import type { Checker, MapView } from './check.js'
import { probeWritable } from './journal.js'
import { parseDuration, parseRate } from './parse.js'
import type { PNode } from './tree.js'
import type { OriginBufferConfig, OriginQueueConfig, OriginWriterConfig, StoreConfig } from './types.js'

export const ORIGIN_ORDER_KEYS = ['writer', 'queue', 'buffer', 'requeue_after'] as const
/** Default `origin.requeue_after`; at least 1 s (longer than a live buy's stock step → notice: command timeout + fsync). */
export const REQUEUE_AFTER_DEFAULT_MS = 30_000
const REQUEUE_AFTER_MIN_MS = 1000

export const WRITER_DEFAULTS: Omit<OriginWriterConfig, 'url'> = Object.freeze({ attempts: 5, backoffMs: 100, maxBackoffMs: 2000, timeoutMs: 2000 })
/** Notices sent on from the buffer per second (low: the order system is the bottleneck it protects). */
export const BUFFER_DEFAULT_RATE = 50

function ms (ck: Checker, n: PNode | undefined, label: string, min: number): number | undefined {
  const v = ck.parseWith(n, label, parseDuration, 'a duration')
  if (v !== undefined && n !== undefined && v < min) return ck.error(n.pos, `${label}: must be at least ${min}ms`)
  return v
}

function perSecond (ck: Checker, n: PNode | undefined, label: string): number | undefined {
  if (n === undefined) return undefined
  if (n.kind === 'scalar' && typeof n.value === 'number') return ck.num(n, label, 0.001, 1e6, false)
  const r = ck.parseWith(n, label, (v) => parseRate(String(v)), 'a rate')
  if (r === undefined) return undefined
  const v = (r.count * 1000) / r.periodMs
  if (n !== undefined && v <= 0) return ck.error(n.pos, `${label}: must be more than 0`)
  return v
}

function readWriter (ck: Checker, n: PNode): OriginWriterConfig {
  const D = WRITER_DEFAULTS
  const m = ck.map(n, 'origin.writer', ['url', 'attempts', 'backoff', 'max_backoff', 'timeout'])
  let url: string | null = null
  const un = m?.get('url')
  const s = ck.str(un, 'origin.writer.url')
  if (s !== undefined && un !== undefined) {
    let ok = false
    try { const u = new URL(s); ok = u.protocol === 'http:' || u.protocol === 'https:' } catch {}
    if (ok) url = s
    else ck.error(un.pos, 'origin.writer.url: expected an http:// or https:// URL of the order system')
  }
  const backoffMs = ms(ck, m?.get('backoff'), 'origin.writer.backoff', 1) ?? D.backoffMs
  const maxNode = m?.get('max_backoff')
  let maxBackoffMs = ms(ck, maxNode, 'origin.writer.max_backoff', 1) ?? Math.max(D.maxBackoffMs, backoffMs)
  if (maxNode !== undefined && maxBackoffMs < backoffMs) {
    ck.error(maxNode.pos, `origin.writer.max_backoff: must be at least backoff (${backoffMs}ms)`)
    maxBackoffMs = backoffMs
  }
  return {
    url,
    attempts: ck.num(m?.get('attempts'), 'origin.writer.attempts', 1, 1000) ?? D.attempts,
    backoffMs,
    maxBackoffMs,
    timeoutMs: ms(ck, m?.get('timeout'), 'origin.writer.timeout', 1) ?? D.timeoutMs
  }
}

function readQueue (ck: Checker, n: PNode, store: StoreConfig): OriginQueueConfig | undefined {
  const m = ck.map(n, 'origin.queue', ['url'])
  if (m === undefined) return undefined
  if (store.kind === 'memory') ck.error(n.pos, 'origin.queue: the order stream on a Redis of its own needs store.kind redis or redis-cluster (the memory store keeps its queue in the process)')
  const un = m.get('url')
  if (un === undefined) return ck.error(m.pos, 'origin.queue: url is required (redis://HOST:PORT of the order stream\'s Redis)')
  const s = ck.str(un, 'origin.queue.url', { secret: true })
  if (s === undefined) return undefined
  let ok = /^rediss?:\/\//i.test(s)
  if (ok) { try { new URL(s) } catch { ok = false } } // eslint-disable-line no-new
  if (!ok) return ck.error(un.pos, 'origin.queue.url: expected a redis://HOST:PORT or rediss://HOST:PORT URL') // never echo it: it may hold a password
  return { url: s }
}

function readBuffer (ck: Checker, n: PNode): OriginBufferConfig | undefined {
  const m = ck.map(n, 'origin.buffer', ['path', 'rate'])
  if (m === undefined) return undefined
  const rate = perSecond(ck, m.get('rate'), 'origin.buffer.rate') ?? BUFFER_DEFAULT_RATE
  const pn = m.get('path')
  if (pn === undefined) return ck.error(m.pos, 'origin.buffer: path is required (a local directory the order notices are written to)')
  const p = ck.str(pn, 'origin.buffer.path')
  if (p === undefined) return undefined
  const path = isAbsolute(p) ? p : resolve(dirname(pn.pos.file), p)
  const why = probeWritable(path)
  if (why !== null) return ck.error(pn.pos, `origin.buffer.path: ${p} cannot be written (${why}); the buffer must be on a writable local disk`)
  return { path, rate }
}

/** The order path keys of the `origin:` map `m`, each only when given. */
export function readOriginOrders (ck: Checker, m: MapView | undefined, store: StoreConfig): { requeueAfterMs: number, writer?: OriginWriterConfig, queue?: OriginQueueConfig, buffer?: OriginBufferConfig } {
  if (m === undefined) return { requeueAfterMs: REQUEUE_AFTER_DEFAULT_MS }
  const wn = m.get('writer')
  const qn = m.get('queue')
  const bn = m.get('buffer')
  const writer = wn === undefined ? undefined : readWriter(ck, wn)
  const queue = qn === undefined ? undefined : readQueue(ck, qn, store)
  const buffer = bn === undefined ? undefined : readBuffer(ck, bn)
  if (qn !== undefined && bn === undefined) ck.error(m.keyPos('queue'), 'origin.queue needs origin.buffer: { path: DIR } (where a buy\'s order notice goes while the stream cannot be written)')
  if (bn !== undefined && qn === undefined) ck.error(m.keyPos('buffer'), 'origin.buffer is used only with origin.queue (with the stream on the store\'s Redis a buy and its notice are one atomic step)')
  return {
    requeueAfterMs: ms(ck, m.get('requeue_after'), 'origin.requeue_after', REQUEUE_AFTER_MIN_MS) ?? REQUEUE_AFTER_DEFAULT_MS,
    ...(writer !== undefined ? { writer } : {}),
    ...(queue !== undefined ? { queue } : {}),
    ...(buffer !== undefined ? { buffer } : {})
  }
}
