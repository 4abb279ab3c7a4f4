/**
 * IPv4 and IPv6 address sets (CIDRs), compiled once at load into masked integers grouped by prefix
 * length, so a lookup is a handful of integer ANDs and Set lookups — no regex, no string building for
 * IPv4 (the common case). IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`, as Node reports peers on a
 * dual-stack socket) are treated as the IPv4 address they carry, in the list and in lookups.
 *
 * `parseCidr` is the one parser of a written address or CIDR: the loader's check (conf/parse.ts
 * checkCidr) and `compileCidrs` both use it, so what validates is what compiles.
 */
import { quote } from './quote.js'

/** A compiled address set. */
export interface CidrSet {
  /** True when `ip` (IPv4, IPv6 or IPv4-mapped IPv6; a `%zone` suffix is ignored) is inside the set. Unparsable input → false. */
  has (ip: string): boolean
  /** Number of entries compiled. */
  readonly size: number
}

/** Parse a dotted-quad IPv4 address into an unsigned 32-bit number; -1 when invalid. */
export function parseIPv4 (s: string, start = 0, end = s.length): number {
  let value = 0
  let part = 0
  let digits = 0
  let dots = 0
  for (let i = start; i < end; i++) {
    const c = s.charCodeAt(i)
    if (c === 46) { // '.'
      if (digits === 0 || dots === 3) return -1
      value = value * 256 + part
      part = 0
      digits = 0
      dots++
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && part === 0) return -1 // leading zero: ambiguous (octal in some parsers)
      part = part * 10 + (c - 48)
      if (part > 255 || ++digits > 3) return -1
    } else {
      return -1
    }
  }
  if (dots !== 3 || digits === 0) return -1
  return value * 256 + part
}

/**
 * Parse an IPv6 address into 4 unsigned 32-bit words written to `out`; false when invalid.
 * Accepts `::` compression, an embedded dotted-quad tail, and ignores a `%zone` suffix.
 */
export function parseIPv6 (s: string, out: Uint32Array): boolean {
  let end = s.indexOf('%')
  if (end === -1) end = s.length
  const groups = new Array<number>(8).fill(0)
  let n = 0
  let gap = -1
  let i = 0
  if (end >= 2 && s.charCodeAt(0) === 58 && s.charCodeAt(1) === 58) { gap = 0; i = 2 } else if (s.charCodeAt(0) === 58) return false
  while (i < end) {
    // find the next ':' or end
    let j = i
    let hex = 0
    let sawDot = false
    while (j < end) {
      const c = s.charCodeAt(j)
      if (c === 58) break
      if (c === 46) sawDot = true
      j++
    }
    if (sawDot) {
      if (j !== end || n > 6) return false
      const v4 = parseIPv4(s, i, end)
      if (v4 < 0) return false
      groups[n++] = Math.floor(v4 / 65536)
      groups[n++] = v4 & 0xffff
      i = end
      break
    }
    const len = j - i
    if (len === 0 || len > 4 || n >= 8) return false
    for (let k = i; k < j; k++) {
      const c = s.charCodeAt(k)
      let d: number
      if (c >= 48 && c <= 57) d = c - 48
      else if (c >= 97 && c <= 102) d = c - 87
      else if (c >= 65 && c <= 70) d = c - 55
      else return false
      hex = hex * 16 + d
    }
    groups[n++] = hex
    if (j === end) { i = end; break }
    // j is at ':'
    if (j + 1 < end && s.charCodeAt(j + 1) === 58) {
      if (gap !== -1) return false
      gap = n
      i = j + 2
    } else {
      if (j + 1 === end) return false // trailing single ':'
      i = j + 1
    }
  }
  if (gap === -1) {
    if (n !== 8) return false
  } else {
    if (n > 7) return false
    const tail = n - gap
    for (let k = 0; k < tail; k++) groups[7 - k] = groups[n - 1 - k] as number
    for (let k = gap; k < 8 - tail; k++) groups[k] = 0
  }
  for (let w = 0; w < 4; w++) out[w] = (((groups[w * 2] as number) << 16) | (groups[w * 2 + 1] as number)) >>> 0
  return true
}

/** True when the 4 words are an IPv4-mapped address ::ffff:a.b.c.d. */
function isMapped (w: Uint32Array): boolean {
  return w[0] === 0 && w[1] === 0 && w[2] === 0xffff
}

function maskOf (bits: number): number {
  return bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0
}

const scratch = new Uint32Array(4)

function v6Key (w: Uint32Array, bits: number): string {
  let key = ''
  for (let i = 0; i < 4; i++) {
    const b = Math.max(0, Math.min(32, bits - i * 32))
    key += ((w[i] as number) & maskOf(b)) >>> 0
    key += ':'
  }
  return key
}

/** One written address or CIDR: IPv4 as a 32-bit number (`v6` null), or IPv6 as 4 words; `bits` is 32 / 128 for an address. */
export interface Cidr { readonly v4: number, readonly v6: Uint32Array | null, readonly bits: number }

/** A `%zone` suffix as node:net isIP accepts it (`fe80::1%eth0`); it names an interface, not an address, and is ignored. */
const ZONE = /^%[0-9a-zA-Z.:-]+$/

/**
 * Parse `10.0.0.0/8`, `203.0.113.7`, `2001:db8::/32`, `::ffff:10.0.0.0/104` (surrounding spaces ignored);
 * a message quoting the input when it is not one. `strict` also refuses host bits set below the prefix
 * (`10.0.0.1/8`): in a config they are almost always a typo.
 */
export function parseCidr (input: string, strict = false): Cidr | string {
  const s = input.trim()
  const slash = s.indexOf('/')
  const addr = slash === -1 ? s : s.slice(0, slash)
  const v4 = parseIPv4(addr)
  let v6: Uint32Array | null = null
  if (v4 < 0) {
    v6 = new Uint32Array(4)
    const zone = addr.indexOf('%')
    if ((zone !== -1 && !ZONE.test(addr.slice(zone))) || !parseIPv6(addr, v6)) return `invalid IP address or CIDR ${quote(input)}`
  }
  const max = v6 === null ? 32 : 128
  if (slash === -1) return { v4, v6, bits: max }
  const bitsText = s.slice(slash + 1)
  if (!/^\d{1,3}$/.test(bitsText) || Number(bitsText) > max) return `invalid CIDR ${quote(input)}: prefix length must be 0..${max}`
  const bits = Number(bitsText)
  if (strict && hostBitsSet(v4, v6, bits)) return `invalid CIDR ${quote(input)}: host bits are set below /${bits}`
  return { v4, v6, bits }
}

function hostBitsSet (v4: number, v6: Uint32Array | null, bits: number): boolean {
  if (v6 === null) return (v4 & ~maskOf(bits)) !== 0
  for (let i = 0; i < 4; i++) {
    if (((v6[i] as number) & ~maskOf(Math.max(0, Math.min(32, bits - i * 32)))) !== 0) return true
  }
  return false
}

/**
 * Compile a list of addresses / CIDRs (`10.0.0.0/8`, `203.0.113.7`, `2001:db8::/32`, `::ffff:10.0.0.0/104`).
 * Throws an Error naming the first bad entry (callers validate at load, so this is a config error).
 * Host bits below the prefix are masked off here (the loader refuses them in a written config).
 */
export function compileCidrs (list: readonly string[]): CidrSet {
  // prefix length -> set of masked networks
  const v4 = new Map<number, Set<number>>()
  const v6 = new Map<number, Set<string>>()
  let size = 0
  for (const raw of list) {
    if (raw.trim() === '') continue
    const c = parseCidr(raw)
    if (typeof c === 'string') throw new Error(c)
    const w = c.v6
    if (w === null) addV4(v4, c.v4, c.bits)
    else if (isMapped(w) && c.bits >= 96) addV4(v4, w[3] as number, c.bits - 96)
    else {
      let set = v6.get(c.bits)
      if (set === undefined) v6.set(c.bits, set = new Set())
      set.add(v6Key(w, c.bits))
    }
    size++
  }
  // Longest prefixes first is irrelevant for membership; arrays make the lookup loop tight.
  const v4Masks: number[] = []
  const v4Sets: Array<Set<number>> = []
  for (const [b, set] of v4) { v4Masks.push(maskOf(b)); v4Sets.push(set) }
  const v6Bits: number[] = []
  const v6Sets: Array<Set<string>> = []
  for (const [b, set] of v6) { v6Bits.push(b); v6Sets.push(set) }
  const n4 = v4Masks.length
  const n6 = v6Bits.length

  function hasV4 (a: number): boolean {
    for (let i = 0; i < n4; i++) {
      if ((v4Sets[i] as Set<number>).has((a & (v4Masks[i] as number)) >>> 0)) return true
    }
    return false
  }

  return {
    size,
    has (ip: string): boolean {
      if (size === 0) return false
      const a = parseIPv4(ip)
      if (a >= 0) return n4 > 0 && hasV4(a)
      if (!parseIPv6(ip, scratch)) return false
      if (isMapped(scratch)) return n4 > 0 && hasV4(scratch[3] as number)
      for (let i = 0; i < n6; i++) {
        if ((v6Sets[i] as Set<string>).has(v6Key(scratch, v6Bits[i] as number))) return true
      }
      return false
    }
  }
}

function addV4 (v4: Map<number, Set<number>>, a: number, bits: number): void {
  let set = v4.get(bits)
  if (set === undefined) v4.set(bits, set = new Set())
  set.add((a & maskOf(bits)) >>> 0)
}

/** True for 127.0.0.0/8, ::1 and ::ffff:127.x — used to decide whether the admin listener needs a token. */
export function isLoopback (host: string): boolean {
  const h = host.toLowerCase()
  if (h === 'localhost') return true
  return LOOPBACK.has(h)
}

const LOOPBACK = compileCidrs(['127.0.0.0/8', '::1/128'])
