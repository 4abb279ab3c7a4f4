/**
 * A small synchronous glob for `include:` (Node 20 has no `fs.globSync`): `*` and `?` in any path
 * segment, never crossing `/`; `**` and `[...]` are not supported. Results are sorted per directory
 * (byte order), so include order is deterministic. Names starting with `.` match only a pattern segment
 * that starts with `.`, as in the shell. Only regular files are returned.
 */
import { readdirSync, statSync } from 'node:fs'
import { isAbsolute, join, resolve, sep } from 'node:path'

/** True when the pattern has a wildcard. */
export function hasMagic (pattern: string): boolean {
  return /[*?]/.test(pattern)
}

function segmentRegExp (seg: string): RegExp {
  let re = '^'
  for (const ch of seg) {
    if (ch === '*') re += '[^/]*'
    else if (ch === '?') re += '[^/]'
    else re += ch.replace(/[\\^$.|+()[\]{}]/g, '\\$&')
  }
  return new RegExp(re + '$')
}

/**
 * Expand `pattern` relative to `baseDir`. Returns paths joined as written (relative stays relative to
 * `baseDir`'s form: `join(baseDir, ...)`), sorted. Throws on `**` or `[`.
 */
export function globSync (pattern: string, baseDir: string): string[] {
  if (pattern.includes('**')) throw new Error('"**" is not supported in include patterns; use one "*" per directory level')
  if (/[[\]{}]/.test(pattern)) throw new Error('"[...]" and "{...}" are not supported in include patterns; use "*" and "?"')
  const abs = isAbsolute(pattern)
  const segments = pattern.split(/[\\/]+/).filter((s, i) => s !== '' || i === 0)
  let bases: string[] = [abs ? sep : baseDir]
  if (abs) segments.shift()
  for (let i = 0; i < segments.length; i++) {
    const seg = segments[i] as string
    const last = i === segments.length - 1
    const next: string[] = []
    for (const dir of bases) {
      if (!hasMagic(seg)) {
        const p = join(dir, seg)
        if (last ? isFile(p) : isDir(p)) next.push(p)
        continue
      }
      const re = segmentRegExp(seg)
      let names: string[]
      try { names = readdirSync(resolve(dir)) } catch { continue }
      names.sort()
      for (const name of names) {
        if (name.startsWith('.') && !seg.startsWith('.')) continue
        if (!re.test(name)) continue
        const p = join(dir, name)
        if (last ? isFile(p) : isDir(p)) next.push(p)
      }
    }
    bases = next
  }
  return bases
}

function isFile (p: string): boolean {
  try { return statSync(p).isFile() } catch { return false }
}

function isDir (p: string): boolean {
  try { return statSync(p).isDirectory() } catch { return false }
}
