/**
 * Typed readers over the position-carrying YAML tree: each reads one node, reports a `FILE:LINE:COL`
 * problem when the node is wrong and returns `undefined`, so the loader keeps going and reports every
 * problem in one pass.
 */
import { quote } from './quote.js'
import type { Diagnostics, PMap, PNode, Pos, PScalar, PSeq } from './tree.js'

/** Levenshtein distance, for "did you mean" suggestions. */
export function distance (a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0] as number
    prev[0] = i
    for (let j = 1; j <= b.length; j++) {
      const tmp = prev[j] as number
      prev[j] = Math.min((prev[j] as number) + 1, (prev[j - 1] as number) + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1))
      diag = tmp
    }
  }
  return prev[b.length] as number
}

/** The closest candidate, when it is close enough to be a likely typo. */
export function suggest (word: string, candidates: Iterable<string>): string | null {
  const norm = (s: string): string => s.toLowerCase().replace(/[-_]/g, '')
  const snake = word.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toLowerCase().replace(/-/g, '_')
  let best: string | null = null
  let bestD = Infinity
  for (const c of candidates) {
    if (c === snake || norm(c) === norm(word)) return c
    const d = distance(word.toLowerCase(), c)
    if (d < bestD) { bestD = d; best = c }
  }
  if (best === null) return null
  return bestD <= Math.max(1, Math.floor(best.length / 3)) ? best : null
}

export function didYouMean (word: string, candidates: Iterable<string>): string {
  const s = suggest(word, candidates)
  return s === null ? '' : ` (did you mean ${quote(s)}?)`
}

/** A map node whose keys were checked against an allow-list. */
export class MapView {
  readonly node: PMap
  private readonly byKey = new Map<string, { keyPos: Pos, value: PNode }>()
  constructor (node: PMap) {
    this.node = node
    for (const e of node.entries) this.byKey.set(e.key, { keyPos: e.keyPos, value: e.value })
  }

  get pos (): Pos { return this.node.pos }
  /** The value, or undefined when the key is absent or explicitly null. */
  get (key: string): PNode | undefined {
    const v = this.byKey.get(key)?.value
    return v === undefined || (v.kind === 'scalar' && v.value === null) ? undefined : v
  }

  /** True when the key is written, even as null. */
  has (key: string): boolean { return this.byKey.has(key) }
  keyPos (key: string): Pos { return this.byKey.get(key)?.keyPos ?? this.node.pos }
  keys (): string[] { return [...this.byKey.keys()] }
}

export type Kind = 'string' | 'number' | 'boolean'

/** A value whose `${...}` substitution failed: already reported, skip it without a second message. */
export function failed (n: PNode | undefined): boolean {
  return n !== undefined && n.kind === 'scalar' && n.failed === true
}

export class Checker {
  readonly d: Diagnostics
  constructor (d: Diagnostics) { this.d = d }

  error (pos: Pos, msg: string): undefined { this.d.error(pos, msg); return undefined }
  warn (pos: Pos, msg: string): void { this.d.warn(pos, msg) }

  /** How a scalar is shown in a message: its source text when it came from the environment. */
  show (n: PScalar): string {
    return n.fromEnv ? quote(n.raw) : quote(n.value)
  }

  /** Run a unit parser and report its RangeError at the node, never revealing an env-substituted value. */
  parseWith<T> (n: PNode | undefined, label: string, fn: (v: string | number) => T, what: string): T | undefined {
    if (failed(n)) return undefined
    if (n === undefined) return undefined
    if (n.kind !== 'scalar' || (typeof n.value !== 'string' && typeof n.value !== 'number')) {
      return this.error(n.pos, `${label}: expected ${what}, got ${describe(n)}`)
    }
    try {
      return fn(n.value)
    } catch (err) {
      let msg = (err as Error).message
      if (n.fromEnv) {
        msg = msg.split(quote(n.value)).join(quote(n.raw))
        if (String(n.value).length >= 3 && msg.includes(String(n.value))) msg = `invalid ${what} ${quote(n.raw)}`
      }
      return this.error(n.pos, `${label}: ${msg}`)
    }
  }

  map (n: PNode | undefined, label: string, allowed: readonly string[]): MapView | undefined {
    if (failed(n)) return undefined
    if (n === undefined) return undefined
    if (n.kind !== 'map') return this.error(n.pos, `${label}: expected a map, got ${describe(n)}`)
    for (const e of n.entries) {
      if (!allowed.includes(e.key)) this.error(e.keyPos, `unknown key ${quote(e.key)} in ${label}${didYouMean(e.key, allowed)}`)
    }
    return new MapView(n)
  }

  seq (n: PNode | undefined, label: string): PSeq | undefined {
    if (failed(n)) return undefined
    if (n === undefined) return undefined
    if (n.kind !== 'seq') return this.error(n.pos, `${label}: expected a list, got ${describe(n)}`)
    return n
  }

  list<T> (n: PNode | undefined, label: string, item: (n: PNode, i: number) => T | undefined): T[] | undefined {
    const s = this.seq(n, label)
    if (s === undefined) return undefined
    const out: T[] = []
    s.items.forEach((it, i) => { const v = item(it, i); if (v !== undefined) out.push(v) })
    return out
  }

  str (n: PNode | undefined, label: string, opts: { nonEmpty?: boolean, pattern?: RegExp, patternHelp?: string, secret?: boolean } = {}): string | undefined {
    if (failed(n)) return undefined
    if (n === undefined) return undefined
    if (n.kind !== 'scalar' || typeof n.value !== 'string') {
      if (opts.secret === true && n.kind === 'scalar' && (typeof n.value === 'number' || typeof n.value === 'boolean')) {
        return this.error(n.pos, `${label}: expected a string (quote the value)`)
      }
      return this.error(n.pos, `${label}: expected a string, got ${describe(n, opts.secret)}`)
    }
    if (opts.nonEmpty !== false && n.value === '') return this.error(n.pos, `${label}: must not be empty`)
    if (opts.pattern !== undefined && !opts.pattern.test(n.value)) {
      return this.error(n.pos, `${label}: ${opts.secret === true ? 'invalid value' : this.show(n)} ${opts.patternHelp ?? `does not match ${String(opts.pattern)}`}`)
    }
    return n.value
  }

  /** A string id; integers are accepted and kept as written (`id: 153` → "153"). */
  id (n: PNode | undefined, label: string, pattern = /^[A-Za-z0-9][A-Za-z0-9_.:-]*$/): string | undefined {
    if (n === undefined) return undefined
    if (n.kind === 'scalar' && typeof n.value === 'number' && Number.isInteger(n.value) && n.value >= 0) return String(n.value)
    return this.str(n, label, { pattern, patternHelp: 'must be letters, digits, and . _ : - (starting with a letter or digit)' })
  }

  bool (n: PNode | undefined, label: string): boolean | undefined {
    if (failed(n)) return undefined
    if (n === undefined) return undefined
    if (n.kind !== 'scalar' || typeof n.value !== 'boolean') return this.error(n.pos, `${label}: expected true or false, got ${describe(n)}`)
    return n.value
  }

  num (n: PNode | undefined, label: string, min: number, max: number, integer = true): number | undefined {
    if (failed(n)) return undefined
    if (n === undefined) return undefined
    if (n.kind !== 'scalar' || typeof n.value !== 'number' || !Number.isFinite(n.value)) {
      return this.error(n.pos, `${label}: expected ${integer ? 'an integer' : 'a number'}, got ${describe(n)}`)
    }
    if (integer && !Number.isInteger(n.value)) return this.error(n.pos, `${label}: expected an integer, got ${this.show(n)}`)
    if (n.value < min || n.value > max) {
      return this.error(n.pos, `${label}: ${n.fromEnv ? this.show(n) : String(n.value)} is out of range (${rangeText(min, max)})`)
    }
    return n.value
  }

  oneOf<T extends string> (n: PNode | undefined, label: string, values: readonly T[]): T | undefined {
    if (failed(n)) return undefined
    if (n === undefined) return undefined
    if (n.kind !== 'scalar' || typeof n.value !== 'string' || !(values as readonly string[]).includes(n.value)) {
      const got = n.kind === 'scalar' && n.value !== null ? this.show(n) : describe(n)
      const hint = n.kind === 'scalar' && typeof n.value === 'string' ? didYouMean(n.value, values) : ''
      return this.error(n.pos, `${label}: expected one of ${values.join(', ')}, got ${got}${hint}`)
    }
    return n.value as T
  }
}

function rangeText (min: number, max: number): string {
  if (max === Infinity || max >= Number.MAX_SAFE_INTEGER) return `at least ${min}`
  return `${min}..${max}`
}

/** What a node is, for "expected X, got Y" (never the value of a secret). */
export function describe (n: PNode, secret = false): string {
  if (n.kind === 'map') return 'a map'
  if (n.kind === 'seq') return 'a list'
  if (n.value === null) return 'nothing'
  if (secret || n.fromEnv) return typeof n.value === 'string' ? 'a string' : typeof n.value
  if (typeof n.value === 'string') return `the string ${quote(n.value)}`
  return `${typeof n.value} ${String(n.value)}`
}
