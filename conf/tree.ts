/**
 * YAML text → a small position-carrying tree (`PNode`) with `${VAR}` / `${VAR:-default}` substituted.
 *
 * The loader validates this tree rather than plain JS values so that every key and value keeps the
 * `FILE:LINE:COL` it came from (1-based), including values that arrived through aliases or env vars.
 *
 * Substitution rules (in scalar values only, never in keys):
 * - `${NAME}` → the variable's value; unset is an error at the `${`'s position (set but empty is empty).
 * - `${NAME:-default}` → the default when the variable is unset or empty (shell semantics).
 * - `$${` is a literal `${`.
 * - A plain (unquoted) scalar made entirely of one substitution is re-typed after substitution, so
 *   `workers: ${WORKERS}` with WORKERS=4 is the number 4; quoted scalars always stay strings.
 * - A substituted value is never shown in a message: messages quote the source text (`"${TOKEN}"`).
 */
import { isAlias, isMap, isPair, isScalar, isSeq, LineCounter, parseDocument, Scalar } from 'yaml'
import type { Document, Node as YNode } from 'yaml'

export interface Pos { readonly file: string; readonly line: number; readonly col: number }

export interface PScalar {
  readonly kind: 'scalar'
  readonly pos: Pos
  readonly value: string | number | boolean | null
  /** True when any `${...}` was substituted: the value may be a secret, show `raw` instead. */
  readonly fromEnv: boolean
  /** The source text of the scalar (for messages about substituted values). */
  readonly raw: string
  /** A `${...}` reference failed (already reported): readers skip this value silently. */
  readonly failed?: true
}
export interface PEntry { readonly key: string; readonly keyPos: Pos; readonly value: PNode }
export interface PMap { readonly kind: 'map'; readonly pos: Pos; readonly entries: readonly PEntry[] }
export interface PSeq { readonly kind: 'seq'; readonly pos: Pos; readonly items: readonly PNode[] }
export type PNode = PScalar | PMap | PSeq

export function fmtPos (p: Pos): string { return `${p.file}:${p.line}:${p.col}` }

/** Collects `FILE:LINE:COL: message` problems; sorted by file (in order first seen), line, column. */
export class Diagnostics {
  private readonly errs: Array<{ pos: Pos, msg: string }> = []
  private readonly warns: Array<{ pos: Pos, msg: string }> = []
  private readonly fileOrder = new Map<string, number>()
  private readonly secrets = new Set<string>()

  /** Register a file so its problems sort in load order. */
  file (name: string): void { if (!this.fileOrder.has(name)) this.fileOrder.set(name, this.fileOrder.size) }
  error (pos: Pos, msg: string): void { this.file(pos.file); this.errs.push({ pos, msg }) }
  warn (pos: Pos, msg: string): void { this.file(pos.file); this.warns.push({ pos, msg }) }
  get errorCount (): number { return this.errs.length }
  /**
   * A value taken from the environment: whatever message might quote it (an id, a name, a URL), it is
   * replaced by `***` in the output. Belt and braces: readers already quote `${VAR}` instead of values.
   */
  redact (value: string): void { if (value.length >= 4) this.secrets.add(value) }

  private scrub (msg: string): string {
    let out = msg
    for (const s of [...this.secrets].sort((a, b) => b.length - a.length)) if (out.includes(s)) out = out.split(s).join('***')
    return out
  }

  private lines (list: Array<{ pos: Pos, msg: string }>): string[] {
    const seen = new Set<string>()
    const out: string[] = []
    const sorted = list.map((e, i) => ({ ...e, i })).sort((a, b) =>
      (this.fileOrder.get(a.pos.file) ?? 0) - (this.fileOrder.get(b.pos.file) ?? 0) ||
      a.pos.line - b.pos.line || a.pos.col - b.pos.col || a.i - b.i)
    for (const e of sorted) {
      const line = `${fmtPos(e.pos)}: ${this.scrub(e.msg)}`
      if (!seen.has(line)) { seen.add(line); out.push(line) }
    }
    return out
  }

  errors (): string[] { return this.lines(this.errs) }
  warnings (): string[] { return this.lines(this.warns) }
}

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/

/**
 * Bounds on one file, so a hostile config (an alias bomb: 8 lines that expand to 9^8 nodes) fails in
 * milliseconds with a clear error instead of taking the process's memory and event loop: the text is at
 * most MAX_CONFIG_BYTES, and the tree it expands to (aliases counted as the nodes they expand to, as
 * often as they are used) at most MAX_CONFIG_NODES nodes. A large real config (1,000 routes with their
 * guards) is about 30,000 nodes.
 */
export const MAX_CONFIG_BYTES = 1024 * 1024
export const MAX_CONFIG_NODES = 100_000

interface Source {
  readonly file: string; readonly text: string; readonly lc: LineCounter; readonly env: NodeJS.ProcessEnv; readonly d: Diagnostics; readonly doc: Document
  /** Nodes produced so far (aliases expanded); past MAX_CONFIG_NODES the conversion stops. */
  nodes: number
  /** Set once the node bound was reported. */
  over: boolean
  /** Alias → its anchored node: yaml's resolve() walks the document each time (quadratic in a bomb). */
  readonly aliases: Map<YNode, YNode | undefined>
}

function posAt (src: Source, offset: number): Pos {
  const { line, col } = src.lc.linePos(Math.max(0, Math.min(offset, src.text.length)))
  return { file: src.file, line, col }
}

/**
 * Parse one YAML file into a `PNode` (an empty file is an empty map). Syntax errors are reported on `d`
 * with their positions and `null` is returned.
 */
export function parseYaml (text: string, file: string, env: NodeJS.ProcessEnv, d: Diagnostics): PNode | null {
  d.file(file)
  if (text.length > MAX_CONFIG_BYTES && Buffer.byteLength(text) > MAX_CONFIG_BYTES) {
    d.error({ file, line: 1, col: 1 }, `config file is ${Buffer.byteLength(text)} bytes; the limit is ${MAX_CONFIG_BYTES} (split it with include:)`)
    return null
  }
  const lc = new LineCounter()
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true, keepSourceTokens: false })
  const src: Source = { file, text, lc, env, d, doc, nodes: 0, over: false, aliases: new Map() }
  if (doc.errors.length > 0) {
    for (const e of doc.errors) d.error(posAt(src, e.pos[0]), `YAML: ${firstLine(e.message)}`)
    return null
  }
  for (const w of doc.warnings) d.warn(posAt(src, w.pos[0]), `YAML: ${firstLine(w.message)}`)
  if (doc.contents === null) return { kind: 'map', pos: { file, line: 1, col: 1 }, entries: [] }
  const root = convert(src, doc.contents as YNode, 0)
  return src.over ? null : root
}

function firstLine (s: string): string {
  const i = s.indexOf('\n')
  return (i === -1 ? s : s.slice(0, i)).replace(/ at line \d+, column \d+:?$/, '')
}

function startOf (node: { range?: [number, number, number] | null | undefined }): number {
  return node.range?.[0] ?? 0
}

const NOTHING: PScalar = { kind: 'scalar', pos: { file: '', line: 1, col: 1 }, value: null, fromEnv: false, raw: '' }

function convert (src: Source, node: YNode, depth: number): PNode {
  if (src.over) return NOTHING
  if (++src.nodes > MAX_CONFIG_NODES) {
    src.over = true
    src.d.error(posAt(src, startOf(node)), `YAML: the document expands to more than ${MAX_CONFIG_NODES} nodes (aliases count as often as they are used): an alias bomb?`)
    return NOTHING
  }
  const pos = posAt(src, startOf(node))
  if (depth > 64) {
    src.d.error(pos, 'YAML: nesting too deep (alias loop?)')
    return { kind: 'scalar', pos, value: null, fromEnv: false, raw: '' }
  }
  if (isAlias(node)) {
    let target = src.aliases.get(node)
    if (target === undefined && !src.aliases.has(node)) src.aliases.set(node, target = node.resolve(src.doc) as YNode | undefined)
    if (target === undefined) {
      src.d.error(pos, `YAML: unresolved alias *${node.source}`)
      return { kind: 'scalar', pos, value: null, fromEnv: false, raw: '' }
    }
    return convert(src, target as YNode, depth + 1)
  }
  if (isMap(node)) {
    const entries: PEntry[] = []
    for (const pair of node.items) {
      if (!isPair(pair)) continue
      const k = pair.key as YNode | null
      const keyPos = k === null ? pos : posAt(src, startOf(k))
      if (k === null || !isScalar(k) || (typeof k.value !== 'string' && typeof k.value !== 'number' && typeof k.value !== 'boolean')) {
        src.d.error(keyPos, 'YAML: keys must be plain strings')
        continue
      }
      const v = pair.value as YNode | null
      const value: PNode = v === null
        ? { kind: 'scalar', pos: keyPos, value: null, fromEnv: false, raw: '' }
        : isScalar(v) && v.value === null && v.range?.[0] === v.range?.[1]
          ? { kind: 'scalar', pos: keyPos, value: null, fromEnv: false, raw: '' } // `key:` with nothing: point at the key
          : convert(src, v, depth + 1)
      entries.push({ key: String(k.value), keyPos, value })
    }
    return { kind: 'map', pos, entries }
  }
  if (isSeq(node)) {
    const items: PNode[] = []
    for (const item of node.items) {
      if (item === null) continue
      items.push(convert(src, item as YNode, depth + 1))
    }
    return { kind: 'seq', pos, items }
  }
  if (isScalar(node)) return scalar(src, node, pos)
  src.d.error(pos, 'YAML: unsupported node')
  return { kind: 'scalar', pos, value: null, fromEnv: false, raw: '' }
}

function scalar (src: Source, node: Scalar, pos: Pos): PScalar {
  const [start, end] = node.range ?? [0, 0, 0]
  // the source text without its quotes, shown instead of a value that came from the environment
  const raw = node.type === Scalar.QUOTE_DOUBLE || node.type === Scalar.QUOTE_SINGLE ? src.text.slice(start + 1, end - 1) : src.text.slice(start, end)
  let value = node.value as unknown
  if (value instanceof Date) value = value.toISOString()
  if (typeof value === 'bigint') value = Number(value)
  if (typeof value !== 'string') {
    return { kind: 'scalar', pos, value: (value ?? null) as string | number | boolean | null, fromEnv: false, raw }
  }
  if (!value.includes('${')) return { kind: 'scalar', pos, value, fromEnv: false, raw }
  const out = substitute(src, value, src.text.slice(start, end), start)
  if (out === null) return { kind: 'scalar', pos, value: '', fromEnv: true, raw, failed: true }
  let typed: string | number | boolean = out.text
  if (node.type === Scalar.PLAIN && out.whole) {
    if (/^-?\d+(\.\d+)?$/.test(out.text)) typed = Number(out.text)
    else if (out.text === 'true' || out.text === 'false') typed = out.text === 'true'
  }
  return { kind: 'scalar', pos, value: typed, fromEnv: out.used, raw }
}

/** Returns null when a reference failed (already reported). */
function substitute (src: Source, value: string, raw: string, start: number): { text: string, used: boolean, whole: boolean } | null {
  let out = ''
  let used = false
  let ok = true
  let refs = 0
  let rawCursor = 0
  let i = 0
  const refPos = (token: string): Pos => {
    const at = raw.indexOf(token, rawCursor)
    if (at === -1) return posAt(src, start)
    rawCursor = at + token.length
    return posAt(src, start + at)
  }
  while (i < value.length) {
    if (value.startsWith('$${', i)) { out += '${'; i += 3; refPos('$${'); continue }
    if (!value.startsWith('${', i)) { out += value[i]; i++; continue }
    const close = value.indexOf('}', i + 2)
    const body = close === -1 ? value.slice(i + 2) : value.slice(i + 2, close)
    const token = close === -1 ? value.slice(i) : value.slice(i, close + 1)
    const p = refPos(token)
    refs++
    if (close === -1) { src.d.error(p, 'unterminated ${...} reference (write $${ for a literal ${)'); ok = false; break }
    const sep = body.indexOf(':-')
    const name = sep === -1 ? body : body.slice(0, sep)
    if (!NAME.test(name)) {
      src.d.error(p, `invalid reference ${JSON.stringify(token.length > 40 ? token.slice(0, 37) + '...' : token)}: expected \${NAME} or \${NAME:-default}`)
      ok = false
    } else {
      const v = src.env[name]
      if (sep !== -1 && (v === undefined || v === '')) out += body.slice(sep + 2)
      else if (v === undefined) {
        src.d.error(p, `environment variable ${name} is not set (write \${${name}:-default} to give a default)`)
        ok = false
      } else { out += v; src.d.redact(v) }
      used = true
    }
    i = close + 1
  }
  if (!ok) return null
  const whole = refs === 1 && /^\$\{[^}]*\}$/.test(value)
  return { text: out, used, whole }
}
