/**
 * `deny.ip_files`: each file read and linted once at load, line by line, so a bad entry is reported at
 * its own FILE:LINE:COL and the guard reads no file.
 */
import { existsSync, readFileSync } from 'node:fs'
import { dirname, isAbsolute, join, resolve } from 'node:path'
import type { Checker } from '../check.js'
import { checkCidr } from '../parse.js'
import { quote } from '../quote.js'
import type { PNode } from '../tree.js'

/** An ip file, read and checked once: its absolute path and its entries. */
export function readIpFile (ck: Checker, n: PNode): { path: string, entries: string[] } | undefined {
  const s = ck.str(n, 'ip_files')
  if (s === undefined) return undefined
  const abs = isAbsolute(s) ? s : resolve(dirname(n.pos.file), s)
  const shown = isAbsolute(s) ? s : join(dirname(n.pos.file), s)
  if (!existsSync(abs)) return ck.error(n.pos, `ip_files: ${quote(s)} does not exist`)
  let text: string
  try { text = readFileSync(abs, 'utf8') } catch (err) { return ck.error(n.pos, `ip_files: cannot read ${quote(s)}: ${(err as NodeJS.ErrnoException).code ?? ''}`) }
  ck.d.file(shown)
  const entries: string[] = []
  text.split(/\r?\n/).forEach((line, i) => {
    const hash = line.indexOf('#')
    const body = hash === -1 ? line : line.slice(0, hash)
    const entry = body.trim()
    if (entry === '') return
    const err = checkCidr(entry)
    if (err !== null) ck.error({ file: shown, line: i + 1, col: body.indexOf(entry) + 1 }, err)
    else entries.push(entry)
  })
  return { path: abs, entries }
}
