/**
 * The import graph runs one way (README, "Layout"): conf/ at the bottom imports nothing of ours;
 * limiter/ and antibot/ know no HTTP and import nothing from gateway/; origin-stub/ imports conf/ only;
 * gateway/ is the only place that knows HTTP and composes the rest. Nothing shipped (bench/ included)
 * imports test/: tests may import the bench's process and guard kits, never the other way. A file that
 * breaks a rule is named with the line of its import. No module re-exports another's names (no barrels).
 */
import t from 'tap'
import { readFileSync } from 'node:fs'
import { dirname, join, posix, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { sourceFiles } from './helpers/sources.js'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')

/** The folders of ours a layer may import from (itself included). */
const ALLOWED: Readonly<Record<string, readonly string[]>> = {
  conf: ['conf'],
  limiter: ['limiter', 'conf'],
  antibot: ['antibot', 'limiter', 'conf'],
  'origin-stub': ['origin-stub', 'conf']
}
const OURS = new Set(['conf', 'limiter', 'antibot', 'origin-stub', 'gateway', 'bench', 'test', 'scripts', 'bin'])

/** Every relative specifier a file imports (static, `export … from`, dynamic import(), new URL(…, import.meta.url)), with its line. */
export function importsOf (text: string): Array<{ spec: string, line: number }> {
  const out: Array<{ spec: string, line: number }> = []
  const re = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+|new URL\(\s*)(['"])(\.{1,2}\/[^'"]*)\1/g
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    out.push({ spec: m[2] as string, line: text.slice(0, m.index).split('\n').length })
  }
  return out
}

/** The folders that ship (the package's code and its bench): none may import test/. */
const SHIPPED = ['bench', 'gateway', 'limiter', 'antibot', 'conf', 'origin-stub']

/** Problems of one file as `FILE:LINE: message`: imports outside `allowed(layer)` (undefined: no rule). */
function violations (file: string, allowed: (layer: string) => readonly string[] | undefined): string[] {
  const rel = relative(ROOT, file).split('\\').join('/')
  const layer = rel.split('/')[0] as string
  const ok = allowed(layer)
  if (ok === undefined) return []
  const problems: string[] = []
  for (const { spec, line } of importsOf(readFileSync(file, 'utf8'))) {
    const target = posix.normalize(posix.join(posix.dirname(rel), spec))
    const top = target.split('/')[0] as string
    if (!OURS.has(top) || ok.includes(top)) continue
    problems.push(`${rel}:${line}: ${layer}/ must not import ${top}/ ('${spec}')`)
  }
  return problems
}

t.test('the layers import one way', async (t) => {
  const problems: string[] = []
  let files = 0
  for (const layer of Object.keys(ALLOWED)) {
    for (const f of sourceFiles(join(ROOT, layer))) { files++; problems.push(...violations(f, (l) => ALLOWED[l])) }
  }
  t.ok(files > 30, `scanned ${files} files`)
  t.same(problems, [], problems.join('\n'))
})

t.test('nothing shipped imports test/', async (t) => {
  const notTest = [...OURS].filter((x) => x !== 'test')
  const problems: string[] = []
  let files = 0
  for (const layer of SHIPPED) {
    for (const f of sourceFiles(join(ROOT, layer))) { files++; problems.push(...violations(f, () => notTest)) }
  }
  t.ok(files > 100, `scanned ${files} files`)
  t.same(problems, [], problems.join('\n'))
})

/**
 * Re-exports in a file as `FILE:LINE: name`: `export … from '…'`, `export * from '…'`, and `export { x }`
 * of a name the file imported. A barrel hides where a thing lives; importers name the defining module.
 */
export function reExportsOf (text: string): Array<{ names: string, line: number }> {
  const out: Array<{ names: string, line: number }> = []
  const lineOf = (i: number): number => text.slice(0, i).split('\n').length
  for (const m of text.matchAll(/^export\s+(?:type\s+)?(\*(?:\s+as\s+\w+)?|\{[^}]*\})\s*from\s*['"][^'"]+['"]/gm)) {
    out.push({ names: (m[1] as string).replace(/\s+/g, ' '), line: lineOf(m.index) })
  }
  const imported = new Set<string>()
  for (const m of text.matchAll(/^import\s+(?:type\s+)?(?:(\w+)\s*,?\s*)?(?:\{([^}]*)\}|\*\s+as\s+(\w+))?\s*from/gm)) {
    if (m[1] !== undefined) imported.add(m[1])
    if (m[3] !== undefined) imported.add(m[3])
    for (const part of (m[2] ?? '').split(',')) {
      const local = part.replace(/^\s*type\s+/, '').split(/\s+as\s+/).pop()?.trim()
      if (local !== undefined && local !== '') imported.add(local)
    }
  }
  for (const m of text.matchAll(/^export\s+(?:type\s+)?\{([^}]*)\}\s*(?!\s*from)$/gm)) {
    const names = (m[1] as string).split(',').map((x) => x.replace(/^\s*type\s+/, '').split(/\s+as\s+/)[0]?.trim() ?? '').filter((x) => imported.has(x))
    if (names.length > 0) out.push({ names: names.join(', '), line: lineOf(m.index) })
  }
  return out
}

t.test('no barrels: nothing re-exports another module\'s names', async (t) => {
  const problems: string[] = []
  for (const layer of ['conf', 'gateway', 'limiter', 'antibot', 'origin-stub', 'bench']) {
    for (const f of sourceFiles(join(ROOT, layer))) {
      const rel = relative(ROOT, f).split('\\').join('/')
      for (const r of reExportsOf(readFileSync(f, 'utf8'))) problems.push(`${rel}:${r.line}: re-exports ${r.names}; import it from the module that defines it`)
    }
  }
  t.same(problems, [], problems.join('\n'))
})

t.test('the re-export scanner sees every form', async (t) => {
  const text = [
    "import { a, b as c } from './x.js'",
    "import type { T } from './t.js'",
    "export { d } from './y.js'",
    "export type { E } from './e.js'",
    "export * from './z.js'",
    'export { c, own }',
    'export type { T }',
    'const own = 1',
    'export const f = 2'
  ].join('\n')
  t.same(reExportsOf(text), [
    { names: '{ d }', line: 3 },
    { names: '{ E }', line: 4 },
    { names: '*', line: 5 },
    { names: 'c', line: 6 },
    { names: 'T', line: 7 }
  ])
})

t.test('the scanner sees every form of import', async (t) => {
  const text = [
    "import type { A } from '../gateway/types.js'",
    "export { b } from '../limiter/x.js'",
    "const m = await import('../../gateway/errors.js')",
    "import '../gateway/side-effect.js'",
    "const u = new URL('../gateway/cli.js', import.meta.url)",
    "import { readFileSync } from 'node:fs'"
  ].join('\n')
  t.same(importsOf(text), [
    { spec: '../gateway/types.js', line: 1 },
    { spec: '../limiter/x.js', line: 2 },
    { spec: '../../gateway/errors.js', line: 3 },
    { spec: '../gateway/side-effect.js', line: 4 },
    { spec: '../gateway/cli.js', line: 5 }
  ])
})
