// store.sentinels / store.name / store.wait (issue 17): accepted as documented, every misuse refused at
// FILE:LINE:COL, and the JSON schema agrees on the shape.
import t from 'tap'
import type { Test } from 'tap'
import { Ajv } from 'ajv'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { parse } from 'yaml'
import { loadConfigText } from '../../conf/load.js'
import type { LoadResult } from '../../conf/load.js'
import type { Config } from '../../conf/types.js'

function ok (t: Test, r: LoadResult): Config {
  if (!r.ok) { t.fail(`expected ok, got:\n${r.errors.join('\n')}`); throw new Error('not ok') }
  return r.config
}
const errs = (r: LoadResult): string[] => r.ok ? [] : r.errors
const load = (yaml: string): LoadResult => loadConfigText(yaml, 's.yaml', {})

t.test('sentinels + name: kind redis behind Sentinel, url unused', async (t) => {
  const c = ok(t, load('store: { kind: redis, sentinels: [127.0.0.1:26379, "[::1]:26380"], name: mymaster }'))
  t.same(c.store.sentinels, [{ host: '127.0.0.1', port: 26379 }, { host: '::1', port: 26380 }])
  t.equal(c.store.sentinelName, 'mymaster')
  t.equal(c.store.url, null, 'the sentinels say where the primary is')
  t.equal(c.store.wait, undefined, 'wait is off unless written')
  const plain = ok(t, load('store: { kind: redis }'))
  t.equal(plain.store.sentinels, undefined)
})

t.test('wait: replicas and a timeout shorter than store.timeout', async (t) => {
  const c = ok(t, load('store: { kind: redis, timeout: 200ms, wait: { replicas: 1, timeout: 80ms } }'))
  t.same(c.store.wait, { replicas: 1, timeoutMs: 80 })
  const d = ok(t, load('store: { kind: redis-cluster, nodes: [redis://127.0.0.1:7000], timeout: 100ms, wait: { replicas: 2 } }'))
  t.same(d.store.wait, { replicas: 2, timeoutMs: 50 }, 'default: half of store.timeout')
})

t.test('misuse is refused at FILE:LINE:COL', async (t) => {
  const cases: Array<[string, string[]]> = [
    ['store: { kind: memory, sentinels: [127.0.0.1:26379], name: m }', ['s.yaml:1:24: store: sentinels need kind: redis (got memory)']],
    ['store: { kind: redis-cluster, nodes: [redis://127.0.0.1:7000], sentinels: [127.0.0.1:26379], name: m }', ['s.yaml:1:64: store: sentinels need kind: redis (got redis-cluster)']],
    ['store: { kind: redis, sentinels: [127.0.0.1:26379] }', ['s.yaml:1:23: store: sentinels need name: MASTER (the master name they monitor)']],
    ['store: { kind: redis, sentinels: [], name: m }', ['s.yaml:1:34: sentinels: needs at least one HOST:PORT']],
    ['store: { kind: redis, url: "redis://127.0.0.1:6379", sentinels: [127.0.0.1:26379], name: m }', ['s.yaml:1:23: store: url and sentinels are exclusive (the sentinels say where the primary is)']],
    ['store: { kind: redis, sentinels: [sentinel-a], name: m }', ['s.yaml:1:35: sentinels: invalid address "sentinel-a" (expected HOST:PORT, e.g. 0.0.0.0:8080 or [::1]:9090)']],
    ['store: { kind: redis, name: m }', ['s.yaml:1:23: store: name is the Sentinel master name; it needs sentinels: [HOST:PORT, ...]']],
    ['store: { kind: redis, sentinels: [127.0.0.1:1], name: "a b" }', ['s.yaml:1:55: name: "a b" must be the master name the sentinels monitor (letters, digits, . _ -)']],
    ['store: { kind: memory, wait: { replicas: 1 } }', ['s.yaml:1:24: store: wait needs kind redis or redis-cluster (the memory store has no replicas)']],
    ['store: { kind: redis, wait: { timeout: 10ms } }', ['s.yaml:1:29: wait: needs replicas: N (how many replicas must have an admission before it counts)']],
    ['store: { kind: redis, wait: { replicas: 0 } }', ['s.yaml:1:41: replicas: 0 is out of range (1..64)']],
    ['store: { kind: redis, timeout: 50ms, wait: { replicas: 1, timeout: 50ms } }', ['s.yaml:1:68: timeout: must be shorter than store.timeout (50ms): the WAIT runs inside each admission\'s deadline']],
    ['store: { kind: redis, wait: { replicas: 1, timeot: 10ms } }', ['s.yaml:1:44: unknown key "timeot" in wait (did you mean "timeout"?)']]
  ]
  for (const [yaml, want] of cases) t.same(errs(load(yaml)), want, yaml)
})

t.test('the JSON schema knows the keys', async (t) => {
  const schema = JSON.parse(readFileSync(fileURLToPath(new URL('../../conf/flashgate.schema.json', import.meta.url)), 'utf8')) as Record<string, unknown>
  const ajv = new Ajv({ allErrors: true, validateFormats: false })
  const validate = ajv.compile(schema)
  const v = (y: string): boolean => validate(parse(y))
  t.ok(v('store: { kind: redis, sentinels: ["127.0.0.1:26379"], name: mymaster, wait: { replicas: 1, timeout: 20ms } }'))
  t.notOk(v('store: { kind: redis, wait: { timeout: 20ms } }'), 'replicas is required')
  t.notOk(v('store: { kind: redis, wait: { replicas: 1, extra: 1 } }'), 'unknown keys are errors')
  t.notOk(v('store: { kind: redis, sentinels: [] }'), 'at least one sentinel')
})
