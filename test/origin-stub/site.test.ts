/**
 * The sale page's files (origin-stub/site) and what the page relies on at the edge: the demo config
 * serves them at / and /assets/ through static routes, the proof-of-work solver beside them is the one
 * antibot ships, and `/_flashgate/time?campaign=C` gives the countdown its target.
 */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import t from 'tap'
import { loadConfigFile } from '../../conf/load.js'
import { client, fetchText, startTestGateway } from '../helpers/gateway.js'
import { ROOT } from './helpers.js'

const SITE = join(ROOT, 'origin-stub', 'site')

t.test('the page ships the solver antibot ships (a copy: a static route never follows a symlink out)', async (t) => {
  t.equal(readFileSync(join(SITE, 'assets', 'pow-solver.js'), 'utf8'), readFileSync(join(ROOT, 'antibot', 'pow-solver.js'), 'utf8'),
    'origin-stub/site/assets/pow-solver.js == antibot/pow-solver.js (copy it again after changing the solver)')
})

t.test('the page calls only edge endpoints and the routes the demo guards', async (t) => {
  const js = readFileSync(join(SITE, 'assets', 'sale.js'), 'utf8')
  const paths = [...js.matchAll(/api\('(?:GET|POST)', '([^']+)'/g)].map((m) => m[1] as string)
  t.ok(paths.length >= 5, `found the page's calls: ${paths.join(' ')}`)
  for (const p of paths) t.match(p, /^\/(_flashgate\/(time|queue|challenge|link|pending)|orders)\b/, p)
  t.notMatch(readFileSync(join(SITE, 'index.html'), 'utf8'), /https?:\/\//, 'nothing loaded from another site (no CDN)')
})

t.test('the demo config serves the page at / and its files under /assets/; time?campaign= for the countdown', async (t) => {
  const env = {
    FLASHGATE_DEMO_ORIGIN: '127.0.0.1:1',
    FLASHGATE_DEMO_STARTS_AT: '2030-01-01T00:00:00Z',
    FLASHGATE_DEMO_ENDS_AT: '2030-01-01T01:00:00Z',
    FLASHGATE_LINK_KEY: randomBytes(32).toString('base64url'),
    FLASHGATE_POW_KEY: randomBytes(32).toString('base64url')
  }
  const r = loadConfigFile(join(ROOT, 'conf', 'demo.yaml'), env)
  if (!r.ok) throw new Error(r.errors.join('\n'))
  t.equal(r.config.routes[0]?.name, 'page', 'the page route comes first')
  t.equal(r.config.routes[0]?.static?.dir, SITE)
  const gw = await startTestGateway(t, { config: r.config, admin: null })
  const d = client(t)
  const page = await fetchText(d, gw.url + '/')
  t.equal(page.status, 200)
  t.match(page.text, /<script src="\/assets\/sale\.js"><\/script>/)
  t.equal(page.headers['cache-control'], 'no-cache')
  for (const f of ['sale.js', 'sale.css', 'pow-worker.js', 'pow-solver.js', 'favicon.svg']) {
    const a = await fetchText(d, gw.url + '/assets/' + f)
    t.equal(a.status, 200, f)
    t.equal(a.text, readFileSync(join(SITE, 'assets', f), 'utf8'))
  }
  const head = await fetchText(d, gw.url + '/', { method: 'HEAD' })
  t.equal(head.status, 200)
  t.equal(head.text, '')

  const time = await fetchText(d, gw.url + '/_flashgate/time?campaign=demo')
  t.equal(time.status, 200)
  t.match(time.json, { campaign: 'demo', starts_at: Date.parse('2030-01-01T00:00:00Z'), ends_at: Date.parse('2030-01-01T01:00:00Z'), now: Number })
  t.equal(time.headers['cache-control'], 'no-store')
  const plain = await fetchText(d, gw.url + '/_flashgate/time')
  t.same(Object.keys(plain.json), ['now'], 'without campaign: the clock only')
  const unknown = await fetchText(d, gw.url + '/_flashgate/time?campaign=nope')
  t.equal(unknown.status, 404)
  t.equal(unknown.json?.code, 'NOT_FOUND')
})
