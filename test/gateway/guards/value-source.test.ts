/**
 * One value-source reader for every guard (issue 12): with `campaign: "cookie campaign"` and a cookie
 * `campaign="c1"` (an RFC 6265 quoted value), dedupe and quota both read c1. Before, dedupe read c1 and
 * the quota read "c1" — with its quotes — and answered NOT_FOUND.
 */
import t from 'tap'
import { dedupeGuard } from '../../../gateway/guards/dedupe.js'
import { quotaGuard } from '../../../gateway/guards/quota.js'
import { createQuotaAdmin } from '../../../limiter/quota-ledger.js'
import { buildPipelines } from '../../../gateway/pipeline/build.js'
import type { Guard } from '../../../gateway/pipeline/types.js'
import { guardOf, loadYaml, makeCtx, makeDeps, routeYaml, settle } from '../../antibot/helpers.js'

const GUARDS = '- dedupe: { ttl: 1h, campaign: "cookie campaign" }\n- quota: { campaign: "cookie campaign" }'
const attempt = (user: string, cookie: string) => makeCtx({
  path: '/buy/other/p1',
  params: { campaign: 'other', product: 'p1' },
  headers: { 'x-user-id': user, cookie }
})
const codeOf = async (g: Guard, ctx: ReturnType<typeof attempt>): Promise<string | undefined> => (await g.check(ctx))?.code

t.test('a quoted cookie value reads the same for dedupe and for quota', async (t) => {
  const config = loadYaml(routeYaml(GUARDS))
  const deps = makeDeps(config)
  const d = guardOf(config, 'dedupe')
  const q = guardOf(config, 'quota')
  const dedupe = dedupeGuard(d.cfg, d.route, deps)
  const quota = quotaGuard(q.cfg, q.route, deps)

  for (const [user, cookie] of [['alice', 'campaign="c1"'], ['bob', 'campaign=c1'], ['carol', 'a=1; campaign="c1" ; b=2']] as const) {
    const ctx = attempt(user, cookie)
    t.equal(await codeOf(dedupe, ctx), undefined, `dedupe: ${cookie} passes`)
    t.equal(await codeOf(quota, ctx), undefined, `quota: ${cookie} is campaign c1, not NOT_FOUND`)
    settle(ctx, { kind: 'upstream', status: 200 })
  }
  const admin = createQuotaAdmin({ config, store: deps.store })
  t.same(await admin.get('c1', 'p1'), { quota: 100, admitted: 3, remaining: 97 }, 'the three units were taken from c1/p1')

  // The mark alice's quoted cookie set is c1's: the unquoted cookie finds it.
  t.equal(await codeOf(dedupe, attempt('alice', 'campaign=c1')), 'DUPLICATE', 'dedupe: alice again (unquoted) is a duplicate of c1')
  t.equal(await codeOf(quota, attempt('dave', 'campaign="nope"')), 'NOT_FOUND', 'quota: an unknown campaign is still NOT_FOUND')
})

t.test('the fused dedupe + quota reads the quoted cookie the same way', async (t) => {
  const config = loadYaml(routeYaml(GUARDS))
  const deps = makeDeps(config)
  const guards = buildPipelines(config, { dedupe: dedupeGuard, quota: quotaGuard }, deps).routes[0]?.guards ?? []
  t.equal(guards.length, 1, 'fused into one guard')
  const g = guards[0] as Guard
  const ctx = attempt('erin', 'campaign="c1"')
  t.equal(await codeOf(g, ctx), undefined, 'passes as campaign c1')
  settle(ctx, { kind: 'upstream', status: 200 })
  t.equal(await codeOf(g, attempt('erin', 'campaign=c1')), 'DUPLICATE', 'the same user again: DUPLICATE of c1')
})
