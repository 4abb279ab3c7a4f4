// Config parsing is bounded in time and memory: an 8-line alias bomb (9^8 nodes once expanded) and a
// file over the size cap fail at once with FILE:LINE:COL; a config just under the node bound still loads.
import t from 'tap'
import { loadConfigText } from '../../conf/load.js'
import { MAX_CONFIG_BYTES, MAX_CONFIG_NODES } from '../../conf/tree.js'

const F = '/virtual/bomb.yaml'
const BOMB = `a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
`

t.test('an 8-line alias bomb fails fast with a position', async (t) => {
  const before = process.memoryUsage().rss
  const t0 = performance.now()
  const r = loadConfigText(BOMB, F, {})
  const ms = performance.now() - t0
  t.equal(r.ok, false)
  if (!r.ok) {
    t.equal(r.errors.length, 1, 'one problem, not one per expanded node')
    t.match(r.errors[0], new RegExp(`^${F}:\\d+:\\d+: YAML: the document expands to more than ${MAX_CONFIG_NODES} nodes \\(aliases count as often as they are used\\): an alias bomb\\?$`))
  }
  // Generous bounds (a shared machine): before the bound it ran for minutes and took gigabytes.
  t.ok(ms < 5000, `refused in ${ms.toFixed(0)} ms`)
  t.ok(process.memoryUsage().rss - before < 200 * 1024 * 1024, 'without taking hundreds of MB')
})

t.test('the same bomb as a value of a real key, and aliases used honestly', async (t) => {
  const r = loadConfigText(`listen: 127.0.0.1:0\nx-anchors: &lol [1, 2]\n` + BOMB.split('\n').map((l) => '  ' + l).join('\n').replace(/^ {2}a:/, 'bomb:\n  a:'), F, {})
  t.equal(r.ok, false)
  if (!r.ok) t.ok(r.errors.some((e) => e.includes('alias bomb')), r.errors.join('\n'))
  const ok = loadConfigText(`listen: 127.0.0.1:0
admin: off
upstreams:
  u: &u { targets: [http://127.0.0.1:1], timeout: 2s }
  v: *u
routes:
  - { name: a, match: { path: /a }, upstream: u }
  - { name: b, match: { path: /b }, upstream: v }
`, '/virtual/ok.yaml', {})
  t.equal(ok.ok, true, ok.ok ? 'aliases within the bound load' : ok.errors.join('\n'))
})

t.test('a file over the size cap is refused before parsing', async (t) => {
  const text = '# ' + 'x'.repeat(MAX_CONFIG_BYTES) + '\n'
  const t0 = performance.now()
  const r = loadConfigText(text, F, {})
  t.equal(r.ok, false)
  if (!r.ok) t.same(r.errors, [`${F}:1:1: config file is ${Buffer.byteLength(text)} bytes; the limit is ${MAX_CONFIG_BYTES} (split it with include:)`])
  t.ok(performance.now() - t0 < 1000)
})

t.test('a large honest config (1,000 routes) stays under the node bound', async (t) => {
  let routes = ''
  for (let i = 0; i < 1000; i++) routes += `  - name: r${i}\n    match: { path_prefix: /r${i}/, methods: [GET, POST] }\n    guards:\n      - rate_limit: { name: g${i}, key: ip, rate: 10/s, burst: 20 }\n    upstream: u\n`
  const r = loadConfigText(`listen: 127.0.0.1:0\nadmin: off\nupstreams:\n  u: { targets: [http://127.0.0.1:1] }\nroutes:\n${routes}`, '/virtual/big.yaml', {})
  t.equal(r.ok, true, r.ok ? '1,000 routes load' : r.errors.slice(0, 3).join('\n'))
})
