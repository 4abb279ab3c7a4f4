/**
 * Unit parsers shared by the config loader and anyone else who reads a human-written value
 * (CLI flags, admin API bodies). Each parses once and throws a `RangeError` whose message is safe to
 * show next to a `FILE:LINE:COL:` prefix (it quotes the input, so never pass a secret here).
 *
 * - Durations: `250ms`, `10s`, `5m`, `24h`, `2d`, fractions (`1.5s`) and compounds (`1m30s`), case-insensitive.
 *   A bare number is refused (is `5` five seconds, as in nginx, or five milliseconds, as in Node?), except `0`.
 *   The result must be a whole number of milliseconds.
 * - Rates: `COUNT/UNIT` with UNIT `s`, `m`, `h`, `d` or a duration (`100/10s`); COUNT a positive integer
 *   (write `1/2s` for half a request per second).
 * - Sizes: a bare integer is bytes; `b`, `k`/`kb`/`kib`, `m`/`mb`/`mib`, `g`/`gb`/`gib` are powers of 1024
 *   (as nginx's `16k`, `1m`), case-insensitive; the result must be a whole number of bytes.
 */
import { isIP } from 'node:net'
import { parseCidr } from './cidr.js'
import { quote } from './quote.js'
import type { HostPort, Rate } from './types.js'


const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }
const DURATION_PART = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/gy
const MAX_MS = 2 ** 31 - 1 // setTimeout's ceiling, ~24.8 days; nothing in flashgate waits longer
const MAX_DURATION_MS = 365 * 86_400_000

/**
 * `250ms` → 250, `10s` → 10000, `1m30s` → 90000, `0` → 0. Throws `RangeError` on anything else.
 * Values are capped at 365 days (link lifetimes and dedupe marks may be long; timers are not).
 */
export function parseDuration (input: string | number): number {
  if (input === 0 || input === '0') return 0
  if (typeof input === 'number') {
    throw new RangeError(`duration ${quote(input)} needs a unit (ms, s, m, h, d), e.g. ${input}s or ${input}ms`)
  }
  const s = input.trim().toLowerCase()
  let total = 0
  let pos = 0
  DURATION_PART.lastIndex = 0
  while (pos < s.length) {
    DURATION_PART.lastIndex = pos
    const m = DURATION_PART.exec(s)
    if (m === null) break
    total += Number(m[1]) * (DURATION_UNITS[m[2] as string] as number)
    pos = DURATION_PART.lastIndex
  }
  if (pos === 0 || pos !== s.length) {
    if (/^\d+(\.\d+)?$/.test(s)) {
      throw new RangeError(`duration ${quote(input)} needs a unit (ms, s, m, h, d), e.g. ${s}s or ${s}ms`)
    }
    throw new RangeError(`invalid duration ${quote(input)} (expected e.g. 250ms, 10s, 5m, 24h)`)
  }
  // 1.5s is 1500ms exactly in binary floating point only after rounding the representation error
  const ms = Math.round(total * 1e6) / 1e6
  if (!Number.isInteger(ms)) throw new RangeError(`duration ${quote(input)} is not a whole number of milliseconds`)
  if (ms > MAX_DURATION_MS) throw new RangeError(`duration ${quote(input)} is longer than 365d`)
  return ms
}

/** A duration that will be handed to a timer (`setTimeout`): at most ~24.8 days. */
export function parseTimerDuration (input: string | number): number {
  const ms = parseDuration(input)
  if (ms > MAX_MS) throw new RangeError(`duration ${quote(input)} is longer than 24d (the timer limit)`)
  return ms
}

/** `25000/s` → { count: 25000, periodMs: 1000 }, `600/m`, `10/h`, `100/10s`. Throws `RangeError`. */
export function parseRate (input: string): Rate {
  const s = String(input).trim()
  const m = /^(\d+(?:\.\d+)?)\s*\/\s*(\S+)$/.exec(s)
  if (m === null) throw new RangeError(`invalid rate ${quote(input)} (expected COUNT/UNIT, e.g. 25000/s, 600/m, 10/h)`)
  const count = Number(m[1])
  const unit = (m[2] as string).toLowerCase()
  let periodMs: number
  if (unit === 's' || unit === 'm' || unit === 'h' || unit === 'd') periodMs = DURATION_UNITS[unit] as number
  else {
    try { periodMs = parseDuration(unit) } catch { throw new RangeError(`invalid rate ${quote(input)}: unknown period ${quote(unit)} (s, m, h, d or a duration such as 10s)`) }
  }
  if (!Number.isInteger(count)) throw new RangeError(`rate ${quote(input)}: the count must be a whole number (write 1/2s for 0.5/s)`)
  if (count < 1) throw new RangeError(`rate ${quote(input)}: the count must be at least 1`)
  if (count > 1e9) throw new RangeError(`rate ${quote(input)}: the count is too large`)
  if (periodMs < 1) throw new RangeError(`rate ${quote(input)}: the period must be at least 1ms`)
  return { count, periodMs }
}

const SIZE_UNITS: Record<string, number> = {
  '': 1, b: 1, k: 1024, kb: 1024, kib: 1024, m: 1024 ** 2, mb: 1024 ** 2, mib: 1024 ** 2, g: 1024 ** 3, gb: 1024 ** 3, gib: 1024 ** 3
}

/** `16kb` → 16384, `1mb` → 1048576, `512` → 512. Throws `RangeError`. */
export function parseSize (input: string | number): number {
  if (typeof input === 'number') {
    if (Number.isInteger(input) && input >= 0 && input <= Number.MAX_SAFE_INTEGER) return input
    throw new RangeError(`invalid size ${quote(input)} (expected a whole number of bytes or e.g. 16kb, 1mb)`)
  }
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(input.trim())
  const mult = m === null ? undefined : SIZE_UNITS[(m[2] as string).toLowerCase()]
  if (m === null || mult === undefined) throw new RangeError(`invalid size ${quote(input)} (expected e.g. 512, 16kb, 1mb, 1gb)`)
  const bytes = Number(m[1]) * mult
  if (!Number.isInteger(bytes)) throw new RangeError(`size ${quote(input)} is not a whole number of bytes`)
  if (bytes > Number.MAX_SAFE_INTEGER) throw new RangeError(`size ${quote(input)} is too large`)
  return bytes
}

/**
 * `0.0.0.0:8080`, `[::1]:9090`, `localhost:80`, `:8080` (all interfaces), `8080`. Port 0 (any free port) is allowed.
 */
export function parseHostPort (input: string | number): HostPort {
  const s = String(input).trim()
  let host: string
  let port: string
  let m: RegExpExecArray | null
  if (/^\d+$/.test(s)) { host = '0.0.0.0'; port = s } else if ((m = /^\[([0-9a-fA-F:.]+)\]:(\d+)$/.exec(s)) !== null) {
    host = m[1] as string; port = m[2] as string
    if (isIP(host) !== 6) throw new RangeError(`invalid address ${quote(input)}: ${quote(host)} is not an IPv6 address`)
  } else if ((m = /^([^:\s/[\]]*):(\d+)$/.exec(s)) !== null) {
    host = m[1] === '' ? '0.0.0.0' : m[1] as string; port = m[2] as string
    if (isIP(host) === 0 && !/^[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*$/.test(host)) {
      throw new RangeError(`invalid address ${quote(input)}: bad host ${quote(host)}`)
    }
  } else {
    throw new RangeError(`invalid address ${quote(input)} (expected HOST:PORT, e.g. 0.0.0.0:8080 or [::1]:9090)`)
  }
  const p = Number(port)
  if (p > 65535) throw new RangeError(`invalid address ${quote(input)}: port ${p} is above 65535`)
  return { host, port: p }
}


/**
 * Checks an IPv4/IPv6 address or CIDR (`10.0.0.0/8`, `2001:db8::/32`, `203.0.113.7`); returns an error
 * message or null. Host bits set below the prefix (`10.0.0.1/8`) are refused: they are almost always a typo.
 * A thin use of conf/cidr.ts parseCidr, the one CIDR parser (the deny guard and trusted_proxies compile with it).
 */
export function checkCidr (input: string): string | null {
  const r = parseCidr(input, true)
  return typeof r === 'string' ? r : null
}
