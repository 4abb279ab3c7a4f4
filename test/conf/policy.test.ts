/**
 * A loaded config is complete: every guard that touches the store carries its failure policy resolved
 * at load (its own on_error, else store.on_error), so no factory judges it; the quota's journal and the
 * captcha provider's policy too.
 */
import t from 'tap'
import { loadConfigText } from '../../conf/load.js'
import type { Config, GuardConfig } from '../../conf/types.js'
import { tempDir } from '../helpers/config.js'

const GUARDS = (own: string): string => `
      - deny: { ips: [10.0.0.0/8]${own} }
      - rate_limit: { rate: 5/s${own} }
      - captcha: { provider: turnstile, secret: s3cret${own} }
      - signed_link: {}
      - waiting_room: {${own.replace(/^, /, ' ')} }
      - dedupe: {${own.replace(/^, /, ' ')} }
      - quota: {${own.replace(/^, /, ' ')} }`

const yaml = (store: string, guards: string): string => `store: { kind: memory${store} }
identity: { user: header x-user-id }
secrets: { link_keys: { k1: "0123456789abcdef0123456789abcdef" } }
upstreams: { purchase: { targets: [{ url: http://127.0.0.1:9 }] } }
campaigns:
  - id: c1
    starts_at: 2030-01-01T00:00:00Z
    ends_at: 2030-01-02T00:00:00Z
    products: [{ id: p1, quota: 10 }]
    waiting_room: { admit: 600/m }
routes:
  - name: buy
    match: { path: /buy/:campaign/:product, methods: [POST] }
    guards:${guards}
    upstream: purchase
`

function load (text: string): Config {
  const r = loadConfigText(text, '/etc/fg.yaml', {})
  if (!r.ok) throw new Error(r.errors.join('\n'))
  return r.config
}

const policies = (c: Config): Record<string, unknown> => Object.fromEntries((c.routes[0]?.guards ?? []).map((g: GuardConfig) => [g.kind, 'policy' in g ? g.policy : undefined]))

t.test('inherited: every guard carries store.on_error', async (t) => {
  for (const store of ['fail_closed', 'local'] as const) {
    const c = load(yaml(`, on_error: ${store}`, GUARDS('')))
    t.same(policies(c), { deny: store, rate_limit: store, captcha: store, signed_link: store, waiting_room: store, dedupe: store, quota: store }, `store.on_error ${store}`)
    const cap = c.routes[0]?.guards.find((g) => g.kind === 'captcha')
    t.equal(cap?.kind === 'captcha' && cap.providerPolicy, 'fail_closed', 'a provider outage is not a store outage: fail_closed unless the captcha says otherwise')
    const q = c.routes[0]?.guards.find((g) => g.kind === 'quota')
    t.equal(q?.kind === 'quota' && q.journaled, false, 'not journaled')
  }
})

t.test('own on_error wins over store.on_error, and stays visible as onError', async (t) => {
  const c = load(yaml(', on_error: local', GUARDS(', on_error: fail_closed')))
  t.same(policies(c), { deny: 'fail_closed', rate_limit: 'fail_closed', captcha: 'fail_closed', signed_link: 'local', waiting_room: 'fail_closed', dedupe: 'fail_closed', quota: 'fail_closed' }, 'signed_link has no on_error: it keeps the store\'s')
  for (const g of c.routes[0]?.guards ?? []) if ('onError' in g) t.equal(g.onError, 'fail_closed', `${g.kind}: onError as written`)
  const open = load(yaml(', on_error: fail_closed', GUARDS(', on_error: fail_open').replace(/- quota: \{[^}]*\}/, '- quota: { on_error: local }')))
  const cap = open.routes[0]?.guards.find((g) => g.kind === 'captcha')
  t.same(cap?.kind === 'captcha' && [cap.policy, cap.providerPolicy], ['fail_open', 'fail_open'], 'captcha: its on_error covers the store and the provider')
  t.equal(policies(open).quota, 'local')
})

t.test('store.on_error: journal — an inheriting quota journals; one with its own on_error does not', async (t) => {
  const dir = tempDir(t)
  const store = `, on_error: journal, journal: { path: ${dir.dir} }`
  const inherited = load(yaml(store, GUARDS('')))
  const q = inherited.routes[0]?.guards.find((g) => g.kind === 'quota')
  t.same(q?.kind === 'quota' && [q.policy, q.journaled, q.onError], ['local', true, null])
  t.equal(policies(inherited).dedupe, 'local', 'other guards inherit local')
  const own = load(yaml(store, GUARDS('').replace('- quota: { }', '- quota: { on_error: fail_closed }')))
  const q2 = own.routes[0]?.guards.find((g) => g.kind === 'quota')
  t.same(q2?.kind === 'quota' && [q2.policy, q2.journaled], ['fail_closed', false])
})
