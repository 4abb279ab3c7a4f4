/**
 * `store.wait` on a Redis Cluster with replicas (issue 17): 3 masters + 3 replicas (redis-cli --cluster
 * create --cluster-replicas 1), cluster-node-timeout 1 s.
 *
 * 1. The WAIT path: every admission on every shard is confirmed by that shard's replica (the script and
 *    WAIT go in one pipeline to the node of the keys), and the replica's copy (read with READONLY) holds
 *    every confirmed unit; a shard whose replica is frozen (SIGSTOP) refuses its admissions (503 for the
 *    quota) while the other shards admit.
 * 2. Failover: a sale through the quota guard; the master holding the product's counter is SIGKILLed
 *    under load, the cluster promotes its replica, the sale goes on there to sold out: admitted <= quota,
 *    and the promoted replica's counter holds every admitted unit. With `wait.replicas: 1` the promoted
 *    node admits only once it has a replica again: here the killed master, restarted (AOF), rejoins as
 *    its replica (with one replica per master, that — or a spare replica — is the recovery bound).
 *    This test found that the store never recovered after such a failover: the script + WAIT pipeline
 *    got MOVED for the script alone, which ioredis does not follow in a pipeline, so every admission of
 *    the moved slot failed for good; the store now refreshes the slot map and sends the pair again.
 *
 * Not forced here: a replica that lags *and* loses what it had not received when its master dies; that
 * is test/limiter/cluster-failover-lag.test.ts (a relay on the master's announced port).
 */
import t from 'tap'
import { Redis } from 'ioredis'
import type { StoreConfig } from '../../conf/types.js'
import { createMetrics } from '../../gateway/metrics.js'
import type { Rejection } from '../../gateway/pipeline/types.js'
import { quotaGuard } from '../../gateway/guards/quota.js'
import { createStore } from '../../limiter/index.js'
import { redisCli, slotOwner, startRedisCluster, type RedisClusterHandle, type RedisHandle } from '../helpers/redis.js'
import { needTools } from '../helpers/tools.js'
import { campaign, config, ctx, deps, qg, route } from '../../bench/guard-kit.js'

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))
const base: StoreConfig = {
  kind: 'redis-cluster', url: null, nodes: [], onError: 'fail_closed', timeoutMs: 1000, keyPrefix: 'fg:',
  breakerFailures: 1000, breakerBackoffMs: 200, maxKeys: 10_000
}

/** The replica of the master on `masterPort` (from CLUSTER NODES). */
async function replicaOf (c: RedisClusterHandle, masterPort: number): Promise<RedisHandle> {
  const nodes = (await redisCli(masterPort, 'cluster', 'nodes')).split('\n').map((l) => l.trim().split(' '))
  const master = nodes.find((f) => (f[1] ?? '').startsWith(`127.0.0.1:${masterPort}@`))
  const rep = nodes.find((f) => (f[2] ?? '').includes('slave') && f[3] === master?.[0])
  const port = Number(/:(\d+)@/.exec(rep?.[1] ?? '')?.[1] ?? NaN)
  const h = c.servers.find((s) => s.port === port)
  if (h === undefined) throw new Error(`no replica of ${masterPort}`)
  return h
}

async function readReplica (port: number, key: string): Promise<string | null> {
  const r = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 1 })
  try {
    await r.connect()
    await r.readonly()
    return await r.get(key)
  } finally { r.disconnect() }
}

t.test('cluster with replicas: WAIT confirms each admission on its shard; a shard whose replica is frozen refuses', async (t) => {
  if (!needTools(t, 'redis-server', 'redis-cli')) return
  const c = await startRedisCluster({ replicas: 1, nodeTimeoutMs: 1000 })
  t.teardown(async () => { await c.stop() })
  const metrics = createMetrics({ defaultMetrics: false })
  const store = createStore({ ...base, nodes: c.nodes, wait: { replicas: 1, timeoutMs: 200 } }, { metrics, clock: Date.now })
  t.teardown(async () => { await store.close() })
  await store.ready?.(10_000)
  const tags = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h']
  const owners = new Map<string, number>()
  for (const tag of tags) owners.set(tag, await slotOwner(c.ports[0] as number, `fg:q:{${tag}}`))
  t.equal(new Set(owners.values()).size, 3, 'the tags spread over the three masters')
  for (const tag of tags) {
    for (let i = 0; i < 5; i++) t.same(await store.addIfWithin(`q:{${tag}}`, 1, 100), { ok: true, value: i + 1 }, `{${tag}} admission ${i + 1} confirmed`)
  }
  // The same answers from markAndAdd (a dedupe mark with the unit): confirmed too.
  t.same(await store.markAndAdd('d:{a}:u1', 'x', 60_000, 'q:{a}', 1, 100), { fresh: true, ok: true, value: 6 })
  for (const tag of tags) {
    const rep = await replicaOf(c, owners.get(tag) as number)
    t.equal(await readReplica(rep.port, `fg:q:{${tag}}`), tag === 'a' ? '6' : '5', `{${tag}}: the replica (${rep.port}) holds every confirmed unit`)
  }
  t.equal((await metrics.registry.getSingleMetricAsString('flashgate_store_errors_total')).match(/op="wait"\} [1-9]/), null, 'no WAIT missed')

  // Freeze the replica of the shard holding {a}: its admissions are refused, the others' go on.
  const frozen = await replicaOf(c, owners.get('a') as number)
  frozen.pause()
  try {
    const err = await store.addIfWithin('q:{a}', 1, 100).then(() => null, (e: unknown) => e as Error & { code?: string })
    t.equal(err?.code, 'FG_ERR_STORE_UNAVAILABLE', '{a}: not confirmed while its replica is frozen')
    t.match(err?.message, /not confirmed by 1 replica within 200ms/)
    const other = tags.find((x) => owners.get(x) !== owners.get('a')) as string
    t.same(await store.addIfWithin(`q:{${other}}`, 1, 100), { ok: true, value: 6 }, `{${other}} on another shard: confirmed`)
  } finally { frozen.resume() }
})

t.test('cluster with replicas, store.wait: the counter\'s master SIGKILLed under load, its replica promoted: admitted <= quota', async (t) => {
  if (!needTools(t, 'redis-server', 'redis-cli')) return
  const QUOTA = 150
  const c = await startRedisCluster({ replicas: 1, nodeTimeoutMs: 1000, aof: true })
  t.teardown(async () => { await c.stop() })
  const metrics = createMetrics({ defaultMetrics: false })
  const scfg: StoreConfig = { ...base, nodes: c.nodes, timeoutMs: 500, wait: { replicas: 1, timeoutMs: 200 } }
  const store = createStore(scfg, { metrics, clock: Date.now })
  t.teardown(async () => { await store.close() })
  await store.ready?.(10_000)
  const cfg = config(scfg, [campaign('c1', [['p1', QUOTA]])])
  const g = quotaGuard(qg({ latchTtlMs: 100 }), route(), deps(store, { config: cfg, metrics }))
  const params = { params: { campaign: 'c1', product: 'p1' } }
  const key = 'fg:q:{c1:p1:0}'
  const ownerPort = await slotOwner(c.ports[0] as number, key)
  const owner = c.servers.find((s) => s.port === ownerPort) as RedisHandle
  const replica = await replicaOf(c, ownerPort)
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
  for (let i = 0; i < 5; i++) await burst(10)
  const beforeKill = admitted
  owner.kill()
  const killedAt = Date.now()
  let recoveryMs = -1
  let promotedMs = -1
  // The promoted replica has no replica of its own: with wait.replicas 1 its shard admits nothing until
  // one is back. The killed master is restarted (AOF, cluster state kept) and rejoins as its replica.
  const rejoin = (async () => {
    while (Date.now() - killedAt < 20_000 && !/^master/.test(await redisCli(replica.port, 'role').catch(() => ''))) await sleep(100)
    promotedMs = Date.now() - killedAt
    await owner.restart()
  })()
  while (Date.now() - killedAt < 25_000) {
    const got = await burst(10)
    if (got > 0 && recoveryMs < 0) recoveryMs = Date.now() - killedAt
    if (recoveryMs >= 0 && got === 0 && (codes.get('SOLD_OUT') ?? 0) > 0) {
      for (let i = 0; i < 5; i++) { await burst(10); await sleep(50) }
      break
    }
    await sleep(50)
  }
  await rejoin
  const role = await redisCli(replica.port, 'role')
  const counter = Number((await redisCli(replica.port, 'get', key)).trim() || -1)
  t.comment(JSON.stringify({ beforeKill, admitted, counter, promotedMs, recoveryMs, promoted: replica.port, codes: Object.fromEntries(codes) }))
  t.equal(beforeKill, 50, 'before the kill every buy was admitted (confirmed)')
  t.match(role, /^master/, 'the replica was promoted')
  t.ok(admitted <= QUOTA, `admitted ${admitted} <= quota ${QUOTA}`)
  t.ok(counter >= admitted && counter <= QUOTA, `the promoted replica's counter ${counter} holds every admitted unit and stays within the quota`)
  t.ok(promotedMs > 0 && promotedMs < 10_000, `the replica promoted ${promotedMs} ms after the kill (node timeout 1 s + election)`)
  t.ok(recoveryMs > 0 && recoveryMs < 15_000, `admitting again ${recoveryMs} ms after the kill (once the old master rejoined as the new one's replica)`)
  t.equal(counter, QUOTA, 'the sale sold out on the promoted replica')
  // Units taken but not admitted: admissions whose WAIT missed its deadline while the rejoined replica
  // was syncing — the documented undersell (a unit is never given back unconfirmed).
  t.comment(`undersold by ${counter - admitted} (unconfirmed admissions keep their unit)`)
})
