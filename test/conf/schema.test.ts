// The JSON Schema (for editors) and the loader agree: every example YAML in conf/ is accepted by both,
// and the error fixtures the schema can express are rejected by both.
import t from 'tap'
import { Ajv } from 'ajv'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parse } from 'yaml'
import { globSync, hasMagic } from '../../conf/glob.js'
import { loadConfigFile, loadConfigText } from '../../conf/load.js'

const root = fileURLToPath(new URL('../..', import.meta.url))
const confDir = join(root, 'conf')
const fixtures = relative(process.cwd(), fileURLToPath(new URL('./fixtures', import.meta.url)))
const schema = JSON.parse(readFileSync(join(confDir, 'flashgate.schema.json'), 'utf8')) as Record<string, unknown>
const ajv = new Ajv({ allErrors: true, validateFormats: false })
const validate = ajv.compile(schema)

function schemaOk (text: string): { ok: boolean, errors: string } {
  const ok = validate(parse(text) ?? {})
  return { ok, errors: ok ? '' : ajv.errorsText(validate.errors) }
}

function yamlFiles (dir: string): string[] {
  const out: string[] = []
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name)
    if (statSync(p).isDirectory()) {
      if (p !== join(confDir, 'prometheus')) out.push(...yamlFiles(p)) // Prometheus rule files, not flashgate configs
    }
    else if (/\.ya?ml$/.test(name)) out.push(p)
  }
  return out
}

/** An environment where every `${NAME}` without a default is set (to a value long enough for a key). */
function envFor (text: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const m of text.matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g)) env[m[1] as string] = 'example-value-0123456789abcdef-0123'
  return env
}

t.test('the schema is a valid draft-07 schema with descriptions on the top-level keys', async (t) => {
  t.equal(schema.$schema, 'http://json-schema.org/draft-07/schema#')
  const props = schema.properties as Record<string, { description?: string }>
  for (const k of ['listen', 'admin', 'admin_token', 'workers', 'store', 'trusted_proxies', 'identity', 'secrets', 'server', 'access_log', 'upstreams', 'campaigns', 'routes', 'origin', 'include']) {
    t.type(props[k]?.description, 'string', `${k} is described`)
  }
})

t.test('every conf/**/*.yaml example is accepted by the schema and by the loader', async (t) => {
  const files = yamlFiles(confDir)
  t.ok(files.length >= 3, `found ${files.length} example files`)
  const includedBy = new Map<string, string>()
  const mains: string[] = []
  for (const f of files) {
    const doc = parse(readFileSync(f, 'utf8')) as { include?: string | string[] } | null
    const inc = doc?.include
    if (inc === undefined) continue
    for (const p of Array.isArray(inc) ? inc : [inc]) {
      const matches = hasMagic(p) ? globSync(p, dirname(f)) : [join(dirname(f), p)]
      for (const m of matches) includedBy.set(resolve(m), f)
    }
  }
  for (const f of files) {
    const text = readFileSync(f, 'utf8')
    const rel = relative(root, f)
    t.match(text.split('\n')[0], /^# yaml-language-server: \$schema=(\.\.\/)*(\.\/)?flashgate\.schema\.json$/, `${rel} names the schema on its first line`)
    const s = schemaOk(text)
    t.ok(s.ok, `schema accepts ${rel}${s.ok ? '' : `: ${s.errors}`}`)
    if (includedBy.has(resolve(f))) continue // checked through the file that includes it
    mains.push(f)
    const r = loadConfigFile(relative(process.cwd(), f), envFor(text))
    t.ok(r.ok, `loader accepts ${rel}${r.ok ? '' : `:\n${r.errors.join('\n')}`}`)
  }
  t.ok(mains.length > 0)
  for (const [inc, by] of includedBy) {
    t.ok(files.includes(inc), `${relative(root, inc)} (included by ${relative(root, by)}) is one of the examples`)
  }
})

t.test('valid snippets the loader accepts are accepted by the schema too', async (t) => {
  const snippets = [
    '',
    'workers: auto\nadmin: off\n',
    'listen: "[::1]:8080"\nstore: { kind: redis-cluster, nodes: [redis://127.0.0.1:7000] }\n',
    'origin: { order_rate: 250 }\nserver: { max_body_size: 1048576, max_header_size: 8k, request_timeout: 0 }\n',
    `upstreams:
  u: { balance: hash header x-user-id, targets: ["http://127.0.0.1:7001"], fail_timeout: 1m30s }
campaigns:
  - { id: 11, starts_at: 1700000000000, ends_at: 2026-11-11T12:00:00Z, products: [{ id: 153, quota: 0 }] }
routes:
  - name: r
    match: { path: /x/:campaign/:product, methods: POST }
    upstream: u
    guards:
      - campaign_window
      - quota:
      - rate_limit: { rate: 1/2s, key: header x-api-key, algorithm: leaky_bucket, burst: 0, delay: nodelay }
`
  ]
  for (const text of snippets) {
    const r = loadConfigText(text, 'snippet.yaml', {})
    t.ok(r.ok, `loader accepts ${JSON.stringify(text.slice(0, 40))}${r.ok ? '' : `: ${r.errors.join('; ')}`}`)
    const s = schemaOk(text)
    t.ok(s.ok, `schema accepts ${JSON.stringify(text.slice(0, 40))}${s.ok ? '' : `: ${s.errors}`}`)
  }
})

t.test('fixtures the schema can express are rejected by both', async (t) => {
  const both = ['bad-duration', 'bad-rate', 'bad-size', 'guard-shape', 'missing-upstream', 'out-of-range', 'target-url', 'unknown-key', 'window-order', 'wrong-type', 'many']
  for (const name of both) {
    const file = `${fixtures}/${name}.yaml`
    const s = schemaOk(readFileSync(file, 'utf8'))
    t.notOk(s.ok, `schema rejects ${name}`)
    t.notOk(loadConfigFile(file, {}).ok, `loader rejects ${name}`)
  }
  // and what only the loader can see (cross-references, CIDR arithmetic, the environment) is still refused by it
  for (const name of ['missing-campaign', 'param-missing', 'signed-link-no-keys', 'captcha-no-secret', 'no-identity', 'duplicates', 'bad-cidr', 'admin-no-token', 'env-missing']) {
    const file = `${fixtures}/${name}.yaml`
    t.ok(schemaOk(readFileSync(file, 'utf8')).ok, `schema cannot see the problem in ${name}`)
    t.notOk(loadConfigFile(file, {}).ok, `loader rejects ${name}`)
  }
})
