/**
 * One catalogue of the codes the gateway answers (gateway/pipeline/reject.ts STATUS) and raises
 * (conf/errors.ts ERROR_CODES), each documented in README's "Error codes" with its status, and no code
 * used in the source outside the catalogue (as fastify checks its errors against its docs).
 */
import t from 'tap'
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { ERROR_CODES } from '../conf/errors.js'
import { STATUS } from '../gateway/pipeline/reject.js'
import { sourceFiles } from './helpers/sources.js'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const README = readFileSync(join(ROOT, 'README.md'), 'utf8')
const section = README.slice(README.indexOf('## Error codes'), README.indexOf('\n## ', README.indexOf('## Error codes') + 1))

t.test('README has an Error codes section', async (t) => {
  t.ok(section.startsWith('## Error codes'), 'found')
})

t.test('every rejection code is documented with its status', async (t) => {
  for (const [code, status] of Object.entries(STATUS)) {
    t.ok(section.includes(`| ${status} | \`${code}\` |`), `${code} (${status}) in README's Error codes`)
  }
})

t.test('every failure code is documented', async (t) => {
  for (const code of Object.keys(ERROR_CODES)) t.ok(section.includes(`| \`${code}\` |`), `${code} in README's Error codes`)
})

t.test('the source raises no FG_ERR_ code outside the catalogue', async (t) => {
  const known = Object.keys(ERROR_CODES)
  const stray: string[] = []
  for (const layer of ['gateway', 'limiter', 'antibot', 'conf', 'origin-stub']) {
    for (const f of sourceFiles(join(ROOT, layer), /\.ts$/)) {
      const text = readFileSync(f, 'utf8')
      for (const m of text.matchAll(/FG_ERR_[A-Z_]*[A-Z]/g)) {
        const c = m[0]
        // A prefix test such as code.startsWith('FG_ERR_STORE') names a family of catalogued codes.
        if (!known.includes(c) && !known.some((k) => k.startsWith(c + '_'))) stray.push(`${f.slice(ROOT.length + 1)}: ${c}`)
      }
    }
  }
  t.same(stray, [], 'every FG_ERR_ code in the source is in conf/errors.ts ERROR_CODES')
})
