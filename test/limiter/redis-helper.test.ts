/**
 * The test helper itself: a standalone server answers, survives kill+restart on the same port, and a
 * cluster comes up with all slots covered; everything is gone after stop().
 */
import t from 'tap'
import { startRedis, startRedisCluster, redisCli } from '../helpers/redis.js'

t.test('standalone: ping, kill, restart, stop', async (t) => {
  const r = await startRedis()
  t.teardown(() => r.stop())
  t.match(r.url, /^redis:\/\/127\.0\.0\.1:\d+$/)
  t.equal((await redisCli(r.port, 'ping')).trim(), 'PONG')
  await redisCli(r.port, 'set', 'k', 'v')
  r.kill()
  await t.rejects(redisCli(r.port, 'ping'), 'down after kill')
  await r.restart()
  t.equal((await redisCli(r.port, 'ping')).trim(), 'PONG', 'up after restart')
  t.equal((await redisCli(r.port, 'get', 'k')).trim(), '', 'no persistence: key gone after restart')
  await r.stop()
  await t.rejects(redisCli(r.port, 'ping'), 'down after stop')
})

t.test('cluster: 3 masters, all slots, stop', async (t) => {
  const c = await startRedisCluster()
  t.teardown(() => c.stop())
  t.equal(c.nodes.length, 3)
  for (const p of c.ports) {
    const info = await redisCli(p, 'cluster', 'info')
    t.match(info, /cluster_state:ok/)
    t.match(info, /cluster_size:3/)
  }
  await c.stop()
  for (const p of c.ports) await t.rejects(redisCli(p, 'ping'))
})
