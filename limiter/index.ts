/**
 * The configured store (memory, redis or redis-cluster). The limiter's other modules are imported
 * where they are defined: algorithms (token-bucket.ts, leaky-bucket.ts, gcra.ts), the quota ledger
 * (quota-ledger.ts, quota-lease.ts), the store implementations; the guards that use them are in
 * gateway/guards/.
 */
import type { StoreConfig } from '../conf/types.js'
import { MemoryStore } from './memory-store.js'
import { RedisStore } from './redis-store.js'
import type { Store, StoreMetrics } from './store.js'

export interface StoreDeps {
  readonly metrics: StoreMetrics
  readonly clock: () => number
  readonly log?: (level: 'debug' | 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void
}

/**
 * Create the configured store. No I/O is awaited here: a Redis store starts connecting in the
 * background; `await store.ready?.()` to wait for the first connection (the gateway's /readyz).
 */
export function createStore (cfg: StoreConfig, deps: StoreDeps): Store {
  if (cfg.kind === 'memory') return new MemoryStore({ maxKeys: cfg.maxKeys, clock: deps.clock })
  return new RedisStore(cfg, { metrics: deps.metrics, clock: deps.clock, log: deps.log })
}
