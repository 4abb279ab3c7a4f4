/**
 * Request ids and W3C Trace Context (https://www.w3.org/TR/trace-context/): the gateway is one span.
 *
 * - `X-Request-Id`: taken from a trusted proxy when it sent a plausible one (1–128 characters of
 *   `A-Z a-z 0-9 - _ . : / + =`), else generated as a per-process random prefix and a counter
 *   (`<12 hex>-<counter in base 36>`): unique across processes without a random draw per request.
 *   `bench/ids.ts` measures it against `crypto.randomUUID()`.
 * - `traceparent`: a valid incoming one (version 00, or a later version read as 00) keeps its trace id
 *   and becomes this span's parent; `tracestate` is kept with it. An invalid one (or none) starts a new
 *   trace, and a `tracestate` without a valid `traceparent` is dropped, as the spec says. The upstream
 *   gets `00-<trace id>-<this span's id>-<flags>`. With no export and no valid incoming traceparent
 *   nothing is made (gateway/http/server.ts startSpan): the request id is what correlates then.
 * - Sampling (only when `tracing.otlp` is set): a trusted proxy's sampled flag is followed; for
 *   everyone else the decision is `sample` applied to the trace id, so a client cannot make every one
 *   of its requests recorded by setting the flag.
 *
 * Ids come from one pooled random buffer (refilled 4 KiB at a time), hex-encoded from it directly.
 */
import { randomBytes, randomFillSync } from 'node:crypto'

const POOL = Buffer.allocUnsafe(4096)
let poolAt = POOL.length

/** `bytes` random bytes as lower-case hex, from the pool. */
function randomHex (bytes: number): string {
  if (poolAt + bytes > POOL.length) { randomFillSync(POOL); poolAt = 0 }
  const s = POOL.toString('hex', poolAt, poolAt + bytes)
  poolAt += bytes
  return s
}

/** A non-zero 8-byte span id (hex). */
export function newSpanId (): string {
  const s = randomHex(8)
  return s === '0000000000000000' ? newSpanId() : s
}

/** A non-zero 16-byte trace id (hex). */
export function newTraceId (): string {
  const s = randomHex(16)
  return s === '00000000000000000000000000000000' ? newTraceId() : s
}

const PREFIX = randomBytes(6).toString('hex') + '-'
/**
 * The last request id as bytes: the prefix, then the counter in base 36 (0-9a-z), incremented in place.
 * Performance (issue 18): `PREFIX + n.toString(36)` made a number string and a cons string per request,
 * and every later write of the id to a Buffer flattened the cons into a third string; one latin1 slice
 * of these bytes is one flat string.
 */
const ID = Buffer.alloc(PREFIX.length + 16, '0', 'latin1')
ID.write(PREFIX, 0, 'latin1')
let idEnd = PREFIX.length + 1 // the counter starts at "0"

/** A new request id: this process's random prefix and a counter. */
export function newRequestId (): string {
  let i = idEnd - 1
  for (;;) {
    const c = ID[i] as number
    if (c !== 0x7a /* z */) { ID[i] = c === 0x39 /* 9 */ ? 0x61 /* a */ : c + 1; break }
    ID[i] = 0x30 /* 0 */
    if (i === PREFIX.length) {
      // Every digit was z: one digit more ("zz" + 1 = "100"; the digits after it are already 0).
      ID[i] = 0x31 /* 1 */
      ID[idEnd++] = 0x30
      break
    }
    i--
  }
  return (ID as unknown as { latin1Slice: (start: number, end: number) => string }).latin1Slice(0, idEnd)
}

/** True for an incoming request id worth keeping (from a trusted proxy only). */
export function validRequestId (v: string): boolean {
  if (v.length === 0 || v.length > 128) return false
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i)
    if ((c >= 48 && c <= 58) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 45 || c === 95 || c === 46 || c === 47 || c === 43 || c === 61) continue
    return false
  }
  return true
}

function isLowerHex (s: string, from: number, to: number): boolean {
  let nonZero = false
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i)
    if (c >= 48 && c <= 57) { if (c !== 48) nonZero = true; continue }
    if (c >= 97 && c <= 102) { nonZero = true; continue }
    return false
  }
  return nonZero
}

/** A parsed incoming traceparent. */
export interface Parent { readonly traceId: string, readonly spanId: string, readonly flags: number }

/**
 * Parse `traceparent` per W3C Trace Context level 1: `vv-<32 hex>-<16 hex>-ff`, lower-case hex,
 * all-zero ids invalid, version `ff` invalid; a version above 00 may carry more fields after the flags
 * (`-...`), version 00 may not. Null when invalid.
 */
export function parseTraceparent (v: string | string[] | undefined): Parent | null {
  if (v === undefined) return null
  if (typeof v !== 'string') return null // sent twice: ambiguous, start a new trace
  if (v.length < 55) return null
  if (v.charCodeAt(2) !== 45 || v.charCodeAt(35) !== 45 || v.charCodeAt(52) !== 45) return null
  const version = v.slice(0, 2)
  if (version === 'ff' || !/^[0-9a-f]{2}$/.test(version)) return null
  if (version === '00' ? v.length !== 55 : (v.length > 55 && v.charCodeAt(55) !== 45)) return null
  if (!isLowerHex(v, 3, 35) || !isLowerHex(v, 36, 52)) return null
  const f = v.slice(53, 55)
  if (!/^[0-9a-f]{2}$/.test(f)) return null
  return { traceId: v.slice(3, 35), spanId: v.slice(36, 52), flags: parseInt(f, 16) }
}

/** The `traceparent` this span sends upstream. */
export function formatTraceparent (traceId: string, spanId: string, sampled: boolean): string {
  return '00-' + traceId + '-' + spanId + (sampled ? '-01' : '-00')
}

/**
 * The sampling decision for a trace id without a trusted parent decision: the trace id's last 8 hex
 * digits (random in W3C level 2 ids, and in ours) read as a fraction, compared with `ratio`. The same
 * trace is decided the same way on every gateway.
 */
export function sampledByRatio (traceId: string, ratio: number): boolean {
  if (ratio >= 1) return true
  if (ratio <= 0) return false
  return parseInt(traceId.slice(24), 16) / 0x100000000 < ratio
}
