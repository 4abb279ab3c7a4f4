/**
 * The origin's order path keys (conf/origin-orders.ts): `origin.writer` (order system, attempts,
 * back-off), `origin.queue` (the order stream on its own Redis) and `origin.buffer` (the disk buffer):
 * defaults, FILE:LINE:COL errors for each bad value, unknown keys refused, a buffer directory that cannot
 * be written refused at load, `origin.requeue_after` (lost notices sent again), and the JSON schema
 * agreeing with the loader on each case.
 */
import t from 'tap'
import { Ajv } from 'ajv'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parse } from 'yaml'
import { loadConfigText } from '../../conf/load.js'
import { ROOT } from './helpers.js'

const schema = JSON.parse(readFileSync(join(ROOT, 'conf', 'flashgate.schema.json'), 'utf8')) as Record<string, unknown>
const ajv = new Ajv({ allErrors: true, validateFormats: false })
const validate = ajv.compile(schema)

const dir = mkdtempSync(join(tmpdir(), 'fg-origin-conf-'))
t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })

// line 1..6 fixed; the origin lines start at line 7
const yaml = (origin: string, store = '{ kind: redis, url: "redis://127.0.0.1:1" }'): string => `store: ${store}
campaigns:
  - id: c1
    starts_at: 2020-01-01T00:00:00Z
    ends_at: 2099-01-01T00:00:00Z
    products: [{ id: p1, quota: 10 }]
origin:
${origin}
`
const FILE = join(dir, 'origin.yaml')
const load = (text: string) => loadConfigText(text, FILE, {})

t.test('defaults: no writer, queue or buffer keys (absent from the config)', async (t) => {
  const r = load(yaml('  listen: 127.0.0.1:0'))
  t.equal(r.ok, true, r.ok ? '' : r.errors.join('\n'))
  if (!r.ok) return
  t.equal(r.config.origin.writer, undefined)
  t.equal(r.config.origin.queue, undefined)
  t.equal(r.config.origin.buffer, undefined)
  t.equal(r.config.origin.requeueAfterMs, 30_000, 'requeue_after: 30s')
})

t.test('requeue_after read as a duration', async (t) => {
  const text = yaml('  requeue_after: 2m')
  const r = load(text)
  t.equal(r.ok, true, r.ok ? '' : r.errors.join('\n'))
  if (r.ok) t.equal(r.config.origin.requeueAfterMs, 120_000)
  t.equal(validate(parse(text)), true, ajv.errorsText(validate.errors))
})

t.test('writer, queue and buffer read and normalised; a relative buffer path is relative to the file', async (t) => {
  const text = yaml('  writer: { url: "http://127.0.0.1:9/orders", attempts: 3, backoff: 50ms, max_backoff: 1s, timeout: 500ms }\n  queue: { url: "redis://127.0.0.1:2" }\n  buffer: { path: ./buf, rate: 20/s }')
  const r = load(text)
  t.equal(r.ok, true, r.ok ? '' : r.errors.join('\n'))
  if (!r.ok) return
  t.same(r.config.origin.writer, { url: 'http://127.0.0.1:9/orders', attempts: 3, backoffMs: 50, maxBackoffMs: 1000, timeoutMs: 500 })
  t.same(r.config.origin.queue, { url: 'redis://127.0.0.1:2' })
  t.same(r.config.origin.buffer, { path: join(dir, 'buf'), rate: 20 })
  t.equal(validate(parse(text)), true, ajv.errorsText(validate.errors))
})

t.test('writer defaults for keys not given', async (t) => {
  const r = load(yaml('  writer: { attempts: 2 }'))
  t.equal(r.ok, true, r.ok ? '' : r.errors.join('\n'))
  if (r.ok) t.same(r.config.origin.writer, { url: null, attempts: 2, backoffMs: 100, maxBackoffMs: 2000, timeoutMs: 2000 })
})

const notDir = join(dir, 'file')
writeFileSync(notDir, 'x')

const bad: Array<[string, string, RegExp, boolean]> = [
  // [what, origin lines, error, the schema also refuses it]
  ['attempts 0', '  writer: { attempts: 0 }', /:8:23: origin\.writer\.attempts: 0 is out of range \(1\.\.1000\)$/, true],
  ['attempts not an integer', '  writer: { attempts: 1.5 }', /:8:23: origin\.writer\.attempts: expected an integer/, true],
  ['backoff without a unit', '  writer: { backoff: 100 }', /:8:22: origin\.writer\.backoff: duration "100" needs a unit/, true],
  ['max_backoff below backoff', '  writer: { backoff: 1s, max_backoff: 10ms }', /:8:39: origin\.writer\.max_backoff: must be at least backoff \(1000ms\)$/, false],
  ['writer url not http', '  writer: { url: "ftp://x" }', /:8:18: origin\.writer\.url: expected an http:\/\/ or https:\/\/ URL of the order system$/, true],
  ['unknown writer key', '  writer: { retries: 3 }', /:8:13: unknown key "retries" in origin\.writer/, true],
  ['requeue_after below 1s', '  requeue_after: 500ms', /:8:18: origin\.requeue_after: must be at least 1000ms$/, false],
  ['requeue_after without a unit', '  requeue_after: 30', /:8:18: origin\.requeue_after: duration "30" needs a unit/, true],
  ['unknown origin key', '  buffr: { path: /tmp }', /:8:3: unknown key "buffr" in origin/, true],
  ['queue without buffer', '  queue: { url: "redis://127.0.0.1:2" }', /:8:3: origin\.queue needs origin\.buffer: \{ path: DIR \}/, false],
  ['buffer without queue', `  buffer: { path: ${dir} }`, /:8:3: origin\.buffer is used only with origin\.queue/, false],
  ['queue url not redis', `  queue: { url: "http://x" }\n  buffer: { path: ${dir} }`, /:8:17: origin\.queue\.url: expected a redis:\/\/HOST:PORT/, true],
  ['queue without url', `  queue: {}\n  buffer: { path: ${dir} }`, /:8:10: origin\.queue: url is required/, true],
  ['buffer without path', '  queue: { url: "redis://127.0.0.1:2" }\n  buffer: { rate: 5/s }', /:9:11: origin\.buffer: path is required/, true],
  ['buffer rate 0', `  queue: { url: "redis://127.0.0.1:2" }\n  buffer: { path: ${dir}, rate: 0 }`, /:9:\d+: origin\.buffer\.rate: 0 is out of range/, true],
  ['buffer path not writable', `  queue: { url: "redis://127.0.0.1:2" }\n  buffer: { path: ${notDir}/sub }`, /:9:19: origin\.buffer\.path: .* cannot be written \(ENOTDIR\); the buffer must be on a writable local disk$/, false]
]

for (const [what, lines, re, schemaRefuses] of bad) {
  t.test(`refused: ${what}`, async (t) => {
    const text = yaml(lines)
    const r = load(text)
    t.equal(r.ok, false)
    if (r.ok) return
    t.ok(r.errors.some((e) => e.startsWith(FILE) && re.test(e)), `${r.errors.join('\n')}\n  expected ${String(re)}`)
    if (schemaRefuses) t.equal(validate(parse(text)), false, 'the schema refuses it too')
  })
}

t.test('queue with the memory store: refused (its queue is in the process)', async (t) => {
  const r = load(yaml(`  queue: { url: "redis://127.0.0.1:2" }\n  buffer: { path: ${dir} }`, '{ kind: memory }'))
  t.equal(r.ok, false)
  if (!r.ok) t.ok(r.errors.some((e) => /:8:10: origin\.queue: the order stream on a Redis of its own needs store\.kind redis/.test(e)), r.errors.join('\n'))
})
