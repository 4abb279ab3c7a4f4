/**
 * `store.wait` on a Redis Cluster whose promoted replica lagged and lost the unsent stream (issue 17):
 * the cluster twin of test/limiter/failover.test.ts. 3 masters with 2 replicas each, cluster-node-timeout
 * 1 s, quota 100.
 *
 * How the lag is forced: cluster replicas connect to the address their master announces, so the master
 * holding the product's counter is made to announce a relay (`cluster-announce-port`; its bus port stays
 * its own) and its two replicas to connect from 127.0.0.2 (`bind-source-addr`). The relay forwards
 * everything, and holds back what goes to connections from 127.0.0.2 while paused: the replicas lag,
 * clients (ioredis, from 127.0.0.1) do not. 30 units sold, links paused, 40 more buys, the master
 * SIGKILLed and the held-back stream dropped, one replica promoted (the other masters vote), the sale run
 * to sold out on it. INFO replication offsets before the kill show what the replicas missed.
 *
 * - Without `wait` the 40 are admitted on the master alone and lost with it: the promoted counter is
 *   lower than the units admitted, and the sale admits more than the quota.
 * - With `wait: { replicas: 1 }` the 40 are refused (503), admitted <= quota, and the promoted counter
 *   holds every admitted unit. The second replica re-attaches to the promoted one, so it admits again
 *   without the old master.
 */
import t, { type Test } from 'tap'
import type { StoreConfig } from '../../conf/types.js'
import { createMetrics } from '../../gateway/metrics.js'
import type { Rejection } from '../../gateway/pipeline/types.js'
import { quotaGuard } from '../../gateway/guards/quota.js'
import { createStore } from '../../limiter/index.js'
import { relay } from '../../bench/procs/sentinel.js'
import { redisCli, slotOwner, startRedisCluster, type RedisHandle } from '../helpers/redis.js'
import { needTools } from '../helpers/tools.js'
import { campaign, config, ctx, deps, qg, route } from '../../bench/guard-kit.js'

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))
const QUOTA = 100
const KEY = 'fg:q:{c1:p1:0}'
const REPLICA_SOURCE = '127.0.0.2'
const base: StoreConfig = {
  kind: 'redis-cluster', url: null, nodes: [], onError: 'fail_closed', timeoutMs: 500, keyPrefix: 'fg:',
  breakerFailures: 1000, breakerBackoffMs: 200, maxKeys: 10_000
}

async function until (what: string, ms: number, ok: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await ok().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`)
    await sleep(100)
  }
}

const field = (info: string, name: string): number => Number(new RegExp(`^${name}:(\\d+)`, 'm').exec(info)?.[1] ?? NaN)

/** The replicas of the master on `masterPort` (from CLUSTER NODES). */
async function replicasOf (servers: RedisHandle[], masterPort: number): Promise<RedisHandle[]> {
  const nodes = (await redisCli(masterPort, 'cluster', 'nodes')).split('\n').map((l) => l.trim().split(' '))
  const id = nodes.find((f) => (f[2] ?? '').includes('myself'))?.[0]
  const ports = nodes.filter((f) => (f[2] ?? '').includes('slave') && f[3] === id).map((f) => Number(/:(\d+)@/.exec(f[1] ?? '')?.[1] ?? NaN))
  return servers.filter((s) => ports.includes(s.port))
}

interface Run {
  beforeKill: number, duringLag: number, admitted: number, counter: number, counterAtPromotion: number,
  masterOffset: number, replicaOffsets: number[], promotedMs: number, recoveryMs: number, promoted: number,
  codes: Map<string, number>
}

async function sale (t: Test, safe: boolean): Promise<Run> {
  const c = await startRedisCluster({ replicas: 2, nodeTimeoutMs: 1000 })
  t.teardown(async () => { await c.stop() })
  const ownerPort = await slotOwner(c.ports[0] as number, KEY)
  const owner = c.servers.find((s) => s.port === ownerPort) as RedisHandle
  const reps = await replicasOf(c.servers, ownerPort)
  if (reps.length !== 2) throw new Error(`${ownerPort} has ${reps.length} replicas`)

  // The counter's master announces the relay; its replicas reconnect to it from 127.0.0.2.
  const r = await relay(ownerPort, (client) => client.remoteAddress === REPLICA_SOURCE)
  t.teardown(() => { r.close() })
  for (const rep of reps) await redisCli(rep.port, 'config', 'set', 'bind-source-addr', REPLICA_SOURCE)
  await redisCli(ownerPort, 'config', 'set', 'cluster-announce-bus-port', String(ownerPort + 10000))
  await redisCli(ownerPort, 'config', 'set', 'cluster-announce-port', String(r.port))
  for (const rep of reps) {
    await until(`replica ${rep.port} linked through the relay`, 15_000, async () => {
      const info = await redisCli(rep.port, 'info', 'replication')
      return field(info, 'master_port') === r.port && /master_link_status:up/.test(info)
    })
  }
  await until('the cluster names the relay for the master', 15_000, async () =>
    (await Promise.all(c.ports.filter((p) => p !== ownerPort).map(async (p) => await slotOwner(p, KEY)))).every((p) => p === r.port))

  const metrics = createMetrics({ defaultMetrics: false })
  const scfg: StoreConfig = { ...base, nodes: c.nodes, ...(safe ? { wait: { replicas: 1, timeoutMs: 200 } } : {}) }
  const store = createStore(scfg, { metrics, clock: Date.now })
  t.teardown(async () => { await store.close() })
  await store.ready?.(10_000)
  const g = quotaGuard(qg({ latchTtlMs: 100 }), route(), deps(store, { config: config(scfg, [campaign('c1', [['p1', QUOTA]])]), metrics }))
  const params = { params: { campaign: 'c1', product: 'p1' } }
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
  await until('the replicas have the first 30', 5000, async () => {
    const at = field(await redisCli(ownerPort, 'info', 'replication'), 'master_repl_offset')
    return (await Promise.all(reps.map(async (rep) => field(await redisCli(rep.port, 'info', 'replication'), 'slave_repl_offset')))).every((o) => o === at)
  })
  r.link.pause()
  for (let i = 0; i < 4; i++) { await burst(10); await sleep(20) }
  const duringLag = admitted - beforeKill
  const masterOffset = field(await redisCli(ownerPort, 'info', 'replication'), 'master_repl_offset')
  const replicaOffsets = await Promise.all(reps.map(async (rep) => field(await redisCli(rep.port, 'info', 'replication'), 'slave_repl_offset')))
  owner.kill()
  r.link.cut()
  const killedAt = Date.now()

  let promoted: RedisHandle | null = null
  let promotedMs = -1
  let counterAtPromotion = -1
  const watch = (async () => {
    while (promoted === null && Date.now() - killedAt < 20_000) {
      for (const rep of reps) {
        if (/^master/.test(await redisCli(rep.port, 'role').catch(() => ''))) {
          promoted = rep
          promotedMs = Date.now() - killedAt
          counterAtPromotion = Number((await redisCli(rep.port, 'get', KEY)).trim() || 0)
        }
      }
      await sleep(50)
    }
  })()
  let recoveryMs = -1
  while (Date.now() - killedAt < 25_000) {
    const got = await burst(10)
    if (got > 0 && recoveryMs < 0) recoveryMs = Date.now() - killedAt
    if (recoveryMs >= 0 && got === 0 && (codes.get('SOLD_OUT') ?? 0) > 0) {
      for (let i = 0; i < 5; i++) { await burst(10); await sleep(50) }
      break
    }
    await sleep(50)
  }
  await watch
  const p = promoted as RedisHandle | null
  const counter = p === null ? -1 : Number((await redisCli(p.port, 'get', KEY)).trim() || 0)
  return {
    beforeKill, duringLag, admitted, counter, counterAtPromotion, masterOffset, replicaOffsets,
    promotedMs, recoveryMs, promoted: p?.port ?? -1, codes
  }
}

const show = (r: Run): string => JSON.stringify({ ...r, codes: Object.fromEntries(r.codes) })

t.test('cluster, without store.wait: a lagging replica promoted after the master\'s SIGKILL has lost admitted units', async (t) => {
  if (!needTools(t, 'redis-server', 'redis-cli')) return
  const r = await sale(t, false)
  t.comment(show(r))
  t.equal(r.beforeKill, 30, 'the first 30 admitted')
  t.equal(r.duringLag, 40, 'the 40 buys during the lag admitted on the master alone')
  t.ok(r.replicaOffsets.every((o) => o < r.masterOffset), `the replicas' offsets ${r.replicaOffsets.join(', ')} behind the master's ${r.masterOffset} at the kill`)
  t.ok(r.promoted > 0, 'a replica was promoted')
  // Every unit the promoted node took after the kill was admitted (no WAIT to miss), so its counter less
  // those is what it started from; the units admitted before the kill beyond that were lost with the master.
  // (counterAtPromotion is polled, so buys may already have landed on it when it is read.)
  const lost = r.beforeKill + r.duringLag - (r.counter - (r.admitted - r.beforeKill - r.duringLag))
  t.equal(lost, r.duringLag, `the promoted replica had lost the ${r.duringLag} units admitted during the lag`)
  t.ok(r.counter < r.admitted, `the promoted counter ${r.counter} is lower than the units admitted ${r.admitted}`)
  t.ok(r.admitted > QUOTA, `admitted ${r.admitted} > quota ${QUOTA}: the lost units were sold again`)
})

t.test('cluster, store.wait replicas 1: the lagging replica promoted has every admitted unit; admitted <= quota', async (t) => {
  if (!needTools(t, 'redis-server', 'redis-cli')) return
  const r = await sale(t, true)
  t.comment(show(r))
  t.equal(r.beforeKill, 30, 'the first 30 admitted (confirmed)')
  t.equal(r.duringLag, 0, 'no buy admitted while no replica could confirm it')
  t.ok((r.codes.get('STORE_UNAVAILABLE') ?? 0) >= 40, 'they were answered 503 STORE_UNAVAILABLE')
  t.ok(r.replicaOffsets.every((o) => o < r.masterOffset), `the replicas' offsets ${r.replicaOffsets.join(', ')} behind the master's ${r.masterOffset} at the kill`)
  t.ok(r.promoted > 0, 'a replica was promoted')
  t.ok(r.counterAtPromotion >= r.beforeKill, `the promoted replica had every unit admitted before the kill (${r.counterAtPromotion})`)
  t.ok(r.admitted <= QUOTA, `admitted ${r.admitted} <= quota ${QUOTA}`)
  t.ok(r.counter >= r.admitted && r.counter <= QUOTA, `the promoted counter ${r.counter} holds every admitted unit and stays within the quota`)
  t.equal(r.counter, QUOTA, 'the sale sold out on the promoted replica')
  t.ok(r.recoveryMs > 0 && r.recoveryMs < 15_000, `admitting again ${r.recoveryMs} ms after the kill (promoted after ${r.promotedMs} ms)`)
  // Units taken but not admitted: admissions whose WAIT missed its deadline (the second replica
  // re-attaching after the failover, a loaded machine) — the documented undersell.
  t.comment(`undersold by ${r.counter - r.admitted} (unconfirmed admissions keep their unit)`)
})
