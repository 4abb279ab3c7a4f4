/** Guard-test helpers beside bench/guard-kit.ts (which builds the Config, GuardDeps and RequestContext). */
import type { RateLimitGuardConfig } from '../../conf/types.js'
import type { Outcome, RequestContext } from '../../gateway/pipeline/types.js'
import type { Store } from '../../limiter/store.js'
import { storeCfg } from '../../bench/guard-kit.js'

/** Run the request's settlers as the runner would. */
export function settle (c: RequestContext, outcome: Outcome): void {
  for (const s of c.settlers ?? []) s(c, outcome)
  c.settlers = null
}

/** As the loader resolves it: the guard's own on_error, else storeCfg's. */
export function rl (over: Partial<RateLimitGuardConfig> = {}): RateLimitGuardConfig {
  return {
    kind: 'rate_limit', index: 0, shadow: false, reject: null, name: 'global', key: [], rate: { count: 10, periodMs: 1000 },
    burst: 10, algorithm: 'token_bucket', delay: 0, scope: 'node', maxKeys: 1000, onError: null, policy: over.onError ?? storeCfg.onError, ...over
  }
}

/** Wrap a store counting calls per method. */
export function counting (store: Store): { store: Store, calls: Record<string, number> } {
  const calls: Record<string, number> = {}
  const proxy = new Proxy(store, {
    get (target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver)
      if (typeof v !== 'function' || prop === 'subscribe') return typeof v === 'function' ? v.bind(target) : v
      return (...args: unknown[]) => {
        calls[String(prop)] = (calls[String(prop)] ?? 0) + 1
        return (v as (...a: unknown[]) => unknown).apply(target, args)
      }
    }
  })
  return { store: proxy, calls }
}
