/** Source files below a folder of the checkout (no node_modules, no sale-page assets), for tests that read the code itself. */
import { readdirSync } from 'node:fs'
import { join } from 'node:path'

export function sourceFiles (dir: string, ext: RegExp = /\.(ts|js|mjs)$/, out: string[] = []): string[] {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name)
    if (e.isDirectory()) { if (e.name !== 'node_modules' && e.name !== 'site') sourceFiles(p, ext, out) } else if (ext.test(e.name)) out.push(p)
  }
  return out
}
