/**
 * The small value readers every section uses: each takes the Checker, reads one YAML node and reports
 * its own problem at the node's position (answering undefined), so callers only pick a default.
 */
import { checkCidr, parseDuration, parseHostPort, parseRate, parseSize, parseTimerDuration } from '../parse.js'
import { quote } from '../quote.js'
import { didYouMean, failed } from '../check.js'
import type { Checker } from '../check.js'
import type { PNode, PScalar } from '../tree.js'
import type { FailurePolicy, HostPort, Rate, ValueSource } from '../types.js'
import { HEADER_NAME } from './defaults.js'

const POLICIES = ['fail_closed', 'fail_open', 'local'] as const

export function hostPort (ck: Checker, n: PNode | undefined, label: string): HostPort | undefined {
  return ck.parseWith(n, label, parseHostPort, 'an address HOST:PORT')
}

export function duration (ck: Checker, n: PNode | undefined, label: string, opts: { min?: number, timer?: boolean } = {}): number | undefined {
  const ms = ck.parseWith(n, label, opts.timer === false ? parseDuration : parseTimerDuration, 'a duration')
  if (ms !== undefined && n !== undefined && opts.min !== undefined && ms < opts.min) {
    return ck.error(n.pos, `${label}: must be at least ${opts.min}ms`)
  }
  return ms
}

export function size (ck: Checker, n: PNode | undefined, label: string, min = 0): number | undefined {
  const b = ck.parseWith(n, label, parseSize, 'a size')
  if (b !== undefined && n !== undefined && b < min) return ck.error(n.pos, `${label}: must be at least ${min} bytes`)
  return b
}

export function rate (ck: Checker, n: PNode | undefined, label: string): Rate | undefined {
  if (failed(n)) return undefined
  if (n !== undefined && n.kind === 'scalar' && typeof n.value === 'number') {
    return ck.error(n.pos, `${label}: a rate needs a period, e.g. ${n.value}/s or ${n.value}/m`)
  }
  return ck.parseWith(n, label, (v) => parseRate(String(v)), 'a rate')
}

export function policy (ck: Checker, n: PNode | undefined, label = 'on_error'): FailurePolicy | undefined {
  return ck.oneOf(n, label, POLICIES)
}

export function cidrList (ck: Checker, n: PNode | undefined, label: string): string[] {
  return ck.list(n, label, (it) => {
    const s = ck.str(it, label)
    if (s === undefined) return undefined
    const err = checkCidr(s)
    return err === null ? s.trim() : ck.error(it.pos, `${label}: ${err}`)
  }) ?? []
}

export function stringList (ck: Checker, n: PNode | undefined, label: string): string[] {
  if (n !== undefined && n.kind === 'scalar' && typeof n.value === 'string') return [n.value]
  return ck.list(n, label, (it) => ck.id(it, label, /^\S+$/)) ?? []
}

/** `header NAME`, `cookie NAME`, ...: the kinds in `kinds`, or (when `literal`) any other single word. */
export function source (ck: Checker, n: PNode | undefined, label: string, kinds: ReadonlyArray<'param' | 'header' | 'query' | 'cookie' | 'form'>, literal: boolean): ValueSource | undefined {
  if (n === undefined || failed(n)) return undefined
  if (n.kind === 'scalar' && typeof n.value === 'number' && literal && Number.isInteger(n.value)) return { from: 'literal', value: String(n.value) }
  const s = ck.str(n, label)
  if (s === undefined) return undefined
  const m = /^(\S+)\s+(\S+)$/.exec(s.trim())
  const forms = kinds.map((k) => `${k} NAME`)
  if (literal) forms.push('a literal value')
  const expected = forms.length === 1 ? forms[0] as string : `${forms.slice(0, -1).join(', ')} or ${forms[forms.length - 1] as string}`
  if (m === null) {
    if (literal && /^\S+$/.test(s.trim())) return { from: 'literal', value: s.trim() }
    return ck.error(n.pos, `${label}: expected ${expected}, got ${ck.show(n as PScalar)}`)
  }
  const kind = m[1] as string
  const name = m[2] as string
  if (!(kinds as readonly string[]).includes(kind)) {
    return ck.error(n.pos, `${label}: expected ${expected}, got ${ck.show(n as PScalar)}${didYouMean(kind, kinds)}`)
  }
  if (kind === 'header') {
    if (!HEADER_NAME.test(name)) return ck.error(n.pos, `${label}: invalid header name ${quote(name)}`)
    return { from: 'header', name: name.toLowerCase() }
  }
  return { from: kind as 'param' | 'query' | 'cookie' | 'form', name }
}

/** An ISO 8601 date-time with a zone (or epoch ms) → epoch ms. */
export function instant (ck: Checker, n: PNode | undefined, label: string): number | undefined {
  if (n === undefined || failed(n)) return undefined
  if (n.kind === 'scalar' && typeof n.value === 'number' && Number.isInteger(n.value) && n.value >= 0) return n.value
  const s = ck.str(n, label)
  if (s === undefined) return undefined
  const m = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?\s*([Zz]|[+-]\d{2}:?\d{2})?$/.exec(s)
  if (m === null) return ck.error(n.pos, `${label}: expected an ISO 8601 date-time such as 2026-11-11T12:00:00+08:00, got ${ck.show(n as PScalar)}`)
  if (m[3] === undefined) return ck.error(n.pos, `${label}: ${ck.show(n as PScalar)} needs a time zone (Z or an offset such as +08:00)`)
  const t = Date.parse(s.replace(' ', 'T').replace(/([+-]\d{2})(\d{2})$/, '$1:$2'))
  if (Number.isNaN(t)) return ck.error(n.pos, `${label}: ${ck.show(n as PScalar)} is not a valid date-time`)
  return t
}

/** A YAML subtree as plain JSON-able data (for `reject.body`). */
export function toPlain (n: PNode): unknown {
  if (n.kind === 'scalar') return n.value
  if (n.kind === 'seq') return n.items.map(toPlain)
  const o: Record<string, unknown> = {}
  for (const e of n.entries) o[e.key] = toPlain(e.value)
  return o
}
