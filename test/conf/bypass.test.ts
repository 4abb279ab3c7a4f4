// Funnel-bypass detection (conf/bypass.ts through the loader): a route with fewer guards that sends a
// guarded route's paths to the same upstream for other hosts or methods is an error at the open route's
// FILE:LINE:COL naming both; `allow_bypass_of` accepts it; validate (the CLI) and reload refuse the same.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { loadConfigText } from '../../conf/load.js'
import { pathsOverlap } from '../../conf/bypass.js'
import type { RouteMatch } from '../../conf/types.js'
import { tempDir } from '../helpers/config.js'
import { fetchText, client, startOrigin, startTestGateway } from '../helpers/gateway.js'

const ROOT = join(import.meta.dirname, '..', '..')
const F = '/virtual/gw.yaml'

function yaml (routes: string, upstreamUrl = 'http://127.0.0.1:1'): string {
  return `listen: 127.0.0.1:0
admin: 127.0.0.1:0
access_log: { enabled: false }
upstreams:
  purchase: { targets: [${upstreamUrl}] }
  web: { targets: [http://127.0.0.1:2] }
campaigns:
  - { id: c1, starts_at: 2020-01-01T00:00:00Z, ends_at: 2099-01-01T00:00:00Z, products: [{ id: p1, quota: 10 }] }
routes:
${routes}`
}
const BUY_HOST = `  - name: buy
    match: { host: seckill.example.com, path: /buy/:campaign/:product, methods: [POST] }
    guards: [{ rate_limit: { name: g, rate: 10/s } }, { campaign_window: {} }, { quota: {} }]
    upstream: purchase
`
const BUY_POST = `  - name: buy
    match: { path: /buy/:campaign/:product, methods: [POST] }
    guards: [{ rate_limit: { name: g, rate: 10/s } }, { quota: {} }]
    upstream: purchase
`

function errors (text: string): string[] {
  const r = loadConfigText(text, F, {})
  return r.ok ? [] : r.errors
}

t.test('what is a bypass and what is not', async (t) => {
  const cases: Array<[string, string, string[]]> = [
    ['catch-all beside a host-bound buy (the old example.yaml)', BUY_HOST + `  - name: site
    match: { path_prefix: / }
    upstream: purchase
`, [`${F}:14:5: funnel bypass: route "site" sends paths of route "buy" (${F}:10:5) to the same upstream "purchase" for other hosts than seckill.example.com and methods other than POST, without its rate_limit, campaign_window, quota guards; narrow "site"'s match, or accept it with allow_bypass_of: [buy] on route "site"`]],
    ['GET catch-all beside a POST-only buy (the old demo)', BUY_POST + `  - name: site
    match: { path_prefix: /, methods: [GET] }
    upstream: purchase
`, [`${F}:14:5: funnel bypass: route "site" sends paths of route "buy" (${F}:10:5) to the same upstream "purchase" for methods other than POST, without its rate_limit, quota guards; narrow "site"'s match, or accept it with allow_bypass_of: [buy] on route "site"`]],
    ['an open route before the guarded one counts too', `  - name: early
    match: { path_prefix: /buy/, host: other.example.com }
    upstream: purchase
` + BUY_HOST.replace(/^/, ''), [`${F}:10:5: funnel bypass: route "early" sends paths of route "buy" (${F}:13:5) to the same upstream "purchase" for other hosts than seckill.example.com and methods other than POST, without its rate_limit, campaign_window, quota guards; narrow "early"'s match, or accept it with allow_bypass_of: [buy] on route "early"`]],
    ['one guard fewer is enough', BUY_POST + `  - name: other-method
    match: { path: /buy/:c/:p, methods: [PUT] }
    guards: [{ rate_limit: { name: g2, rate: 10/s } }]
    upstream: purchase
`, [`${F}:14:5: funnel bypass: route "other-method" sends paths of route "buy" (${F}:10:5) to the same upstream "purchase" for methods other than POST, without its quota guard; narrow "other-method"'s match, or accept it with allow_bypass_of: [buy] on route "other-method"`]],
    ['accepted with allow_bypass_of', BUY_HOST + `  - name: site
    match: { path_prefix: / }
    upstream: purchase
    allow_bypass_of: [buy]
`, []],
    ['another upstream is no bypass', BUY_HOST + `  - name: site
    match: { path_prefix: / }
    upstream: web
`, []],
    ['paths that cannot meet are no bypass', BUY_HOST + `  - name: orders
    match: { path: /orders/:id }
    upstream: purchase
  - name: bu
    match: { path_prefix: /bux }
    upstream: purchase
  - name: deeper
    match: { path: /buy/:a/:b/:c }
    upstream: purchase
`, []],
    ['the same host and methods is no bypass (the guarded route wins first)', BUY_HOST + `  - name: same
    match: { host: seckill.example.com, path_prefix: /buy/, methods: [POST] }
    upstream: purchase
`, []],
    ['a wildcard host inside the guarded wildcard is no bypass', `  - name: buy
    match: { host: "*.example.com", path_prefix: /buy/ }
    guards: [{ rate_limit: { name: g, rate: 10/s } }]
    upstream: purchase
  - name: sub
    match: { host: "*.a.example.com", path_prefix: /buy/x }
    upstream: purchase
  - name: out
    match: { host: example.com, path_prefix: /buy/x }
    upstream: purchase
`, [`${F}:17:5: funnel bypass: route "out" sends paths of route "buy" (${F}:10:5) to the same upstream "purchase" for other hosts than *.example.com, without its rate_limit guard; narrow "out"'s match, or accept it with allow_bypass_of: [buy] on route "out"`]],
    ['allow_bypass_of names must exist', BUY_HOST + `  - name: site
    match: { path_prefix: /x }
    upstream: purchase
    allow_bypass_of: [buyy, site]
`, [`${F}:17:23: allow_bypass_of: route "buyy" is not defined (did you mean "buy"?)`, `${F}:17:29: allow_bypass_of: route "site" cannot bypass itself`]]
  ]
  for (const [name, routes, want] of cases) t.same(errors(yaml(routes)), want, name)
})

t.test('path overlap table', async (t) => {
  const m = (s: string): RouteMatch => s.startsWith('prefix:')
    ? { host: null, path: null, pathPrefix: s.slice(7), methods: null }
    : { host: null, path: s, pathPrefix: null, methods: null }
  const table: Array<[string, string, boolean]> = [
    ['prefix:/', '/buy/:c/:p', true],
    ['prefix:/bu', '/buy/:c/:p', true],
    ['prefix:/buy/x/', '/buy/:c/:p', true],
    ['prefix:/buy/x/y/', '/buy/:c/:p', false],
    ['prefix:/orders', '/buy/:c/:p', false],
    ['/buy/a/:p', '/buy/:c/b', true],
    ['/buy/a/b', '/buy/:c/:p', true],
    ['/buy/a', '/buy/:c/:p', false],
    ['/buy/a/b', '/buy/a/c', false],
    ['prefix:/a', 'prefix:/ab', true],
    ['prefix:/a/', 'prefix:/b', false],
    ['/', 'prefix:/', true],
    ['/', 'prefix:/x', false]
  ]
  for (const [a, b, want] of table) {
    t.equal(pathsOverlap(m(a), m(b)), want, `${a} ~ ${b}`)
    t.equal(pathsOverlap(m(b), m(a)), want, `${b} ~ ${a}`)
  }
})

t.test('validate and reload refuse a bypass; the old config keeps serving', async (t) => {
  const origin = await startOrigin(t)
  const files = tempDir(t)
  const good = yaml(BUY_HOST + `  - name: orders
    match: { path: /orders/:id, methods: [GET] }
    upstream: purchase
`, origin.url)
  const bad = yaml(BUY_HOST + `  - name: site
    match: { path_prefix: / }
    upstream: purchase
`, origin.url)
  const file = files.write('gw.yaml', bad)
  const v = spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'gateway', 'cli.ts'), 'validate', '--config', file], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 })
  t.equal(v.status, 1, 'validate exits 1')
  t.match(v.stdout + v.stderr, new RegExp(`${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}:14:5: funnel bypass: route "site"`))

  files.write('gw.yaml', good)
  const gw = await startTestGateway(t, { configFile: file })
  const d = client(t)
  t.equal((await fetchText(d, gw.url + '/orders/1')).status, 200)
  files.write('gw.yaml', bad)
  const r = await gw.reload()
  t.equal(r.ok, false, 'reload refused')
  if (!r.ok) t.match(r.errors.join('\n'), /:14:5: funnel bypass: route "site" sends paths of route "buy"/)
  t.equal((await fetchText(d, gw.url + '/other', { method: 'POST' })).status, 404, 'the old table (no catch-all) still serves')
})
