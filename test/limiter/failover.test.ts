/**
 * Failover without oversell (issue 17): a real primary, two replicas and three redis-sentinel processes.
 * 30 units are sold, then the replicas' links are paused (they lag: what the primary sends them is held
 * back), 40 more buys arrive, the primary is SIGKILLed and the held-back stream dropped, Sentinel promotes
 * a replica, and the sale goes on to sold out.
 *
 * - With `store.wait: { replicas: 1 }` every buy during the lag is refused (503: no replica confirmed it),
 *   so the promoted replica has every unit that was admitted: admitted <= quota, and buys are admitted
 *   again within a few seconds of the kill.
 * - Without it the same run sells the 40 lost units a second time: admitted > quota (the test would
 *   fail if the safe mode did nothing).
 */
import t, { type Test } from 'tap'
import { createMetrics } from '../../gateway/metrics.js'
import type { Rejection } from '../../gateway/pipeline/types.js'
import { quotaGuard } from '../../gateway/guards/quota.js'
import { createStore } from '../../limiter/index.js'
import type { Store } from '../../limiter/store.js'
import { redisCli } from '../helpers/redis.js'
import { startSentinelSetup } from '../../bench/procs/sentinel.js'
import { needTools } from '../helpers/tools.js'
import { campaign, config, ctx, deps, qg, route, storeCfg } from '../../bench/guard-kit.js'

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))
const QUOTA = 100
const params = { params: { campaign: 'c1', product: 'p1' } }

interface Run { admitted: number, beforeKill: number, duringLag: number, recoveryMs: number, masterPort: number, promoted: number, counter: number, codes: Map<string, number> }

async function sale (t: Test, safe: boolean): Promise<Run> {
  const s = await startSentinelSetup()
  t.teardown(async () => { await s.stop() })
  const metrics = createMetrics({ defaultMetrics: false })
  const scfg = {
    ...storeCfg, kind: 'redis' as const, url: null, sentinels: s.sentinels, sentinelName: s.name,
    timeoutMs: 300, breakerFailures: 3, breakerBackoffMs: 200,
    ...(safe ? { wait: { replicas: 1, timeoutMs: 100 } } : {})
  }
  const store: Store = createStore(scfg, { metrics, clock: Date.now })
  t.teardown(async () => { await store.close() })
  await store.ready?.(10_000)
  const cfg = config(scfg, [campaign('c1', [['p1', QUOTA]])])
  const g = quotaGuard(qg({ latchTtlMs: 100 }), route(), deps(store, { config: cfg, metrics }))
  const codes = new Map<string, number>()
  let admitted = 0
  const one = async (): Promise<boolean> => {
    const v = await g.check(ctx(Date.now(), params))
    if (v === undefined) { admitted++; return true }
    const code = (v as Rejection).code
    codes.set(code, (codes.get(code) ?? 0) + 1)
    return false
  }
  const burst = async (n: number): Promise<number> => (await Promise.all(Array.from({ length: n }, one))).filter(Boolean).length

  for (let i = 0; i < 3; i++) await burst(10)
  const beforeKill = admitted
  // Let the replicas have the first 30 (without WAIT nothing says they do yet).
  await sleep(300)
  s.link.pause()
  for (let i = 0; i < 4; i++) { await burst(10); await sleep(20) }
  const duringLag = admitted - beforeKill
  s.primary.kill()
  s.link.cut()
  const killedAt = Date.now()
  let recoveryMs = -1
  // Under load until sold out after the failover (or 20 s).
  while (Date.now() - killedAt < 20_000) {
    const got = await burst(10)
    if (got > 0 && recoveryMs < 0) recoveryMs = Date.now() - killedAt
    if (recoveryMs >= 0 && got === 0 && (codes.get('SOLD_OUT') ?? 0) > 0 && admitted >= QUOTA - 10) {
      // sold out on the new primary: a last few bursts to be sure nothing more gets in
      for (let i = 0; i < 5; i++) { await burst(10); await sleep(50) }
      break
    }
    await sleep(50)
  }
  const masterPort = await s.masterPort()
  const counter = Number((await redisCli(masterPort, 'get', 'fg:q:{c1:p1:0}').catch(() => '')).trim() || -1)
  return { admitted, beforeKill, duringLag, recoveryMs, masterPort, promoted: s.replica.port, counter, codes }
}

t.test('with store.wait: the replica promoted after a lag has every admitted unit; admitted <= quota', async (t) => {
  if (!needTools(t, 'redis-server', 'redis-sentinel', 'redis-cli')) return
  const r = await sale(t, true)
  t.comment(JSON.stringify({ ...r, codes: Object.fromEntries(r.codes) }))
  t.equal(r.beforeKill, 30, 'the first 30 were confirmed by the replicas')
  t.equal(r.duringLag, 0, 'no buy admitted while no replica could confirm it')
  t.ok((r.codes.get('STORE_UNAVAILABLE') ?? 0) >= 40, 'they were answered 503 STORE_UNAVAILABLE')
  t.equal(r.masterPort, r.promoted, 'Sentinel promoted the replica')
  t.ok(r.admitted <= QUOTA, `admitted ${r.admitted} <= quota ${QUOTA}`)
  t.equal(r.counter, QUOTA, 'and the sale sold out on the new primary')
  // Units taken but not admitted: admissions the new primary applied whose WAIT missed its deadline (its
  // second replica resyncing after the failover, or a loaded machine) — the documented undersell.
  t.comment(`undersold by ${r.counter - r.admitted} (unconfirmed admissions keep their unit)`)
  t.ok(r.recoveryMs > 0 && r.recoveryMs < 10_000, `buys admitted again ${r.recoveryMs} ms after the kill`)
})

t.test('without store.wait the same failover oversells (what the safe mode prevents)', async (t) => {
  if (!needTools(t, 'redis-server', 'redis-sentinel', 'redis-cli')) return
  const r = await sale(t, false)
  t.comment(JSON.stringify({ ...r, codes: Object.fromEntries(r.codes) }))
  t.equal(r.duringLag, 40, 'the lagging buys were admitted on the primary alone')
  t.equal(r.masterPort, r.promoted, 'Sentinel promoted the replica')
  t.ok(r.admitted > QUOTA, `admitted ${r.admitted} > quota ${QUOTA}: the promoted replica had lost the last units`)
  t.ok(r.recoveryMs > 0 && r.recoveryMs < 10_000, `buys admitted again ${r.recoveryMs} ms after the kill`)
})
