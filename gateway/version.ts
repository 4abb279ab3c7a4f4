/** flashgate's version: package.json's, read once (from gateway/ in the sources, dist/gateway/ in a build). */
import { readFileSync } from 'node:fs'

export const VERSION: string = (() => {
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: unknown, version?: unknown }
      if (pkg.name === 'flashgate' && typeof pkg.version === 'string') return pkg.version
    } catch {}
  }
  return '0.0.0'
})()
