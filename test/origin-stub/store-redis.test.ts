import t from 'tap'
import { createRedisOriginStore } from '../../origin-stub/redis-store.js'
import { startRedis, startRedisCluster } from '../helpers/redis.js'
import { storeBehaviour } from './store-behaviour.js'

let n = 0

t.test('redis', async (t) => {
  const redis = await startRedis()
  t.teardown(async () => { await redis.stop() })
  storeBehaviour(t, async (t) => {
    // A fresh key prefix per case: the cases share one server.
    const store = createRedisOriginStore({ kind: 'redis', url: redis.url, keyPrefix: `t${++n}:` })
    t.teardown(async () => { await store.close() })
    return store
  })
})

t.test('redis, with the order and dead-letter streams on a second redis-server (origin.queue)', async (t) => {
  const redis = await startRedis()
  const queue = await startRedis()
  t.teardown(async () => { await redis.stop(); await queue.stop() })
  storeBehaviour(t, async (t) => {
    const store = createRedisOriginStore({ kind: 'redis', url: redis.url, queueUrl: queue.url, keyPrefix: `t${++n}:` })
    t.teardown(async () => { await store.close() })
    return store
  })
})

t.test('redis cluster (every script touches one slot)', async (t) => {
  const cluster = await startRedisCluster()
  t.teardown(async () => { await cluster.stop() })
  storeBehaviour(t, async (t) => {
    const store = createRedisOriginStore({ kind: 'redis-cluster', nodes: cluster.nodes, keyPrefix: `t${++n}:` })
    t.teardown(async () => { await store.close() })
    return store
  })
})
