/**
 * prom-client's default process metrics, as both of our exposition endpoints (the gateway's and the
 * origin's /metrics) carry them. At the bottom layer because both import it and origin-stub/ imports
 * conf/ only.
 */
import { collectDefaultMetrics, type Registry } from 'prom-client'

/**
 * prom-client's default metrics that fail `promtool check metrics`: gauges whose names end in `_total`
 * (a counter's suffix). They are dropped; their per-type twins (`nodejs_active_handles{type}`,
 * `nodejs_active_requests{type}`, `nodejs_active_resources{type}`) stay, and `sum()` of those is the total.
 */
export const DROPPED_DEFAULT_METRICS: readonly string[] = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']

/** Register prom-client's default process metrics on `registry`, without the ones promtool rejects. */
export function defaultMetrics (registry: Registry): void {
  collectDefaultMetrics({ register: registry })
  for (const name of DROPPED_DEFAULT_METRICS) registry.removeSingleMetric(name)
}
