/**
 * The store contract suite on the memory store, the memory store over IPC (a real ledger process), a real
 * redis-server and a real 3-master cluster.
 */
import t from 'tap'
import type { StoreConfig } from '../../conf/types.js'
import { createMetrics } from '../../gateway/metrics.js'
import { createStore } from '../../limiter/index.js'
import { IpcStore } from '../../limiter/ipc-store.js'
import { startLedgerProcess } from '../helpers/ledger.js'
import { startRedis, startRedisCluster } from '../helpers/redis.js'
import { storeContract } from './store-contract.js'

const base: StoreConfig = {
  kind: 'memory', url: null, nodes: [], onError: 'fail_closed', timeoutMs: 200, keyPrefix: 'fg:',
  breakerFailures: 5, breakerBackoffMs: 1000, maxKeys: 10_000
}
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

t.test('memory', async (t) => {
  let now = 1_700_000_000_000
  storeContract(t, async () => {
    const store = createStore(base, { metrics: createMetrics({ defaultMetrics: false }), clock: () => now })
    t.teardown(() => store.close())
    return { store, advance: async (ms) => { now += ms } }
  })
})

t.test('memory over IPC (the primary\'s ledger with --workers)', async (t) => {
  storeContract(t, async () => {
    const { peer } = await startLedgerProcess(t)
    // A 1 s deadline rather than 200 ms: with the machine shared (load averages of 20-35 on 2 cores seen),
    // 3,000 calls at once between two processes missed 200 ms, and the open breaker then failed the rest
    // of the suite. The deadline and breaker themselves are tested in test/limiter/ledger.test.ts.
    const store = new IpcStore({ ...base, timeoutMs: 1000 }, peer, { metrics: createMetrics({ defaultMetrics: false }), clock: Date.now })
    t.teardown(() => store.close())
    await store.ready()
    return { store, advance: sleep }
  })
})

t.test('redis', async (t) => {
  storeContract(t, async () => {
    const r = await startRedis()
    // 1 s deadlines, as for the IPC ledger: the contract is about answers, not latency, and 3,000 calls at
    // once beside another test file missed 200 ms on this 2-core machine (the open breaker then failed the rest).
    const store = createStore({ ...base, kind: 'redis', url: r.url, timeoutMs: 1000 }, { metrics: createMetrics({ defaultMetrics: false }), clock: Date.now })
    t.teardown(async () => { await store.close(); await r.stop() })
    await store.ready?.()
    return { store, advance: sleep }
  })
})

t.test('redis-cluster', async (t) => {
  storeContract(t, async () => {
    const c = await startRedisCluster()
    const store = createStore({ ...base, kind: 'redis-cluster', nodes: c.nodes, timeoutMs: 1000 }, { metrics: createMetrics({ defaultMetrics: false }), clock: Date.now })
    t.teardown(async () => { await store.close(); await c.stop() })
    await store.ready?.()
    return { store, advance: sleep }
  })
})
