import t, { type Test } from 'tap'
import { Cluster, Redis } from 'ioredis'
import { createRedisOriginStore } from '../../origin-stub/redis-store.js'
import { parseOrderId, productKeys } from '../../origin-stub/keys.js'
import type { OriginStore, ProductRef } from '../../origin-stub/types.js'
import { startRedis, startRedisCluster } from '../helpers/redis.js'
import { storeBehaviour, type StoreHooks } from './store-behaviour.js'

let n = 0

/**
 * Make an order's notice lost by hand (clients of their own): not in the stream (XDEL), and back in the
 * queued index at its buy's time — the state an origin killed between the stock step and the buffer's
 * fsync leaves.
 */
function loseNotice (prefixes: WeakMap<OriginStore, string>, connectStore: () => Redis | Cluster, connectQueue: () => Redis | Cluster): StoreHooks {
  return {
    loseNotice: async (t: Test, store: OriginStore, ref: ProductRef, orderId: string) => {
      const s = connectStore()
      const q = connectQueue()
      t.teardown(() => { s.disconnect(); q.disconnect() })
      const k = productKeys(prefixes.get(store) ?? '', ref)
      const token = parseOrderId(orderId)?.token ?? ''
      const ids = (await q.xrange(k.queue, '-', '+')).filter(([, f]) => f[1] === token).map(([id]) => id)
      t.ok(ids.length > 0, 'the notice was in the stream')
      await q.xdel(k.queue, ...ids)
      await s.zadd(k.queued, (await store.order(orderId))?.queuedAt ?? 0, token)
    }
  }
}

t.test('redis', async (t) => {
  const redis = await startRedis()
  t.teardown(async () => { await redis.stop() })
  const prefixes = new WeakMap<OriginStore, string>()
  storeBehaviour(t, async (t) => {
    // A fresh key prefix per case: the cases share one server.
    const keyPrefix = `t${++n}:`
    const store = createRedisOriginStore({ kind: 'redis', url: redis.url, keyPrefix })
    prefixes.set(store, keyPrefix)
    t.teardown(async () => { await store.close() })
    return store
  }, loseNotice(prefixes, () => new Redis(redis.url), () => new Redis(redis.url)))
})

t.test('redis, with the order and dead-letter streams on a second redis-server (origin.queue)', async (t) => {
  const redis = await startRedis()
  const queue = await startRedis()
  t.teardown(async () => { await redis.stop(); await queue.stop() })
  const prefixes = new WeakMap<OriginStore, string>()
  storeBehaviour(t, async (t) => {
    const keyPrefix = `t${++n}:`
    const store = createRedisOriginStore({ kind: 'redis', url: redis.url, queueUrl: queue.url, keyPrefix })
    prefixes.set(store, keyPrefix)
    t.teardown(async () => { await store.close() })
    return store
  }, loseNotice(prefixes, () => new Redis(redis.url), () => new Redis(queue.url)))
})

t.test('redis cluster (every script touches one slot)', async (t) => {
  const cluster = await startRedisCluster()
  t.teardown(async () => { await cluster.stop() })
  const prefixes = new WeakMap<OriginStore, string>()
  storeBehaviour(t, async (t) => {
    const keyPrefix = `t${++n}:`
    const store = createRedisOriginStore({ kind: 'redis-cluster', nodes: cluster.nodes, keyPrefix })
    prefixes.set(store, keyPrefix)
    t.teardown(async () => { await store.close() })
    return store
  }, loseNotice(prefixes, connect, connect))
  function connect (): Cluster {
    return new Cluster(cluster.nodes.map((u) => { const x = new URL(u); return { host: x.hostname, port: Number(x.port) } }))
  }
})
