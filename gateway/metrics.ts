/**
 * Every metric of the contract, on a Registry of our own (never prom-client's global one), created once
 * in the composition root and handed down. Label values are bounded: route, upstream, target, campaign,
 * product and op names come from the config, outcome from the fixed set of reject codes.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

export interface Metrics {
  readonly registry: Registry
  readonly requests: Counter<'route' | 'outcome'>
  readonly requestDuration: Histogram<'route' | 'outcome'>
  /** Would-be rejections of guards in shadow mode. */
  readonly shadowRejections: Counter<'route' | 'guard' | 'code'>
  readonly upstreamRequests: Counter<'upstream' | 'target' | 'status'>
  readonly upstreamUp: Gauge<'upstream' | 'target'>
  readonly upstreamRetries: Counter<'upstream'>
  readonly quotaAdmitted: Counter<'campaign' | 'product'>
  readonly quotaRemaining: Gauge<'campaign' | 'product'>
  /** Units given back because the request was not admitted after all (later reject, upstream failure). */
  readonly quotaReleased: Counter<'campaign' | 'product'>
  readonly storeErrors: Counter<'op'>
  readonly storeDuration: Histogram<'op'>
  /** Decisions taken by a failure policy while the store was unusable: policy=fail_open|fail_closed|local. */
  readonly storeFallbacks: Counter<'guard' | 'policy'>
  readonly storeBreakerOpen: Gauge
  readonly captchaVerifications: Counter<'provider' | 'result'>
  readonly configReloads: Counter<'result'>
  readonly connections: Gauge
}

export function createMetrics (opts: { defaultMetrics?: boolean, prefix?: string } = {}): Metrics {
  const registry = new Registry()
  if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: registry })
  const r = [registry]
  return {
    registry,
    requests: new Counter({ name: 'flashgate_requests_total', help: 'Requests by route and outcome (passed or a reject code).', labelNames: ['route', 'outcome'], registers: r }),
    requestDuration: new Histogram({
      name: 'flashgate_request_duration_seconds',
      help: 'Time from request arrival to the end of the answer.',
      labelNames: ['route', 'outcome'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: r
    }),
    shadowRejections: new Counter({ name: 'flashgate_shadow_rejections_total', help: 'Rejections a guard in shadow mode would have made.', labelNames: ['route', 'guard', 'code'], registers: r }),
    upstreamRequests: new Counter({ name: 'flashgate_upstream_requests_total', help: 'Upstream attempts by target and status (or error code).', labelNames: ['upstream', 'target', 'status'], registers: r }),
    upstreamUp: new Gauge({ name: 'flashgate_upstream_up', help: '1 while a target is considered up by passive health checks.', labelNames: ['upstream', 'target'], registers: r }),
    upstreamRetries: new Counter({ name: 'flashgate_upstream_retries_total', help: 'Attempts retried on another target.', labelNames: ['upstream'], registers: r }),
    quotaAdmitted: new Counter({ name: 'flashgate_quota_admitted_total', help: 'Requests admitted by the per-product quota.', labelNames: ['campaign', 'product'], registers: r }),
    quotaRemaining: new Gauge({ name: 'flashgate_quota_remaining', help: 'Quota left per product, as last seen by this node.', labelNames: ['campaign', 'product'], registers: r }),
    quotaReleased: new Counter({ name: 'flashgate_quota_released_total', help: 'Quota units given back because the request was not admitted downstream.', labelNames: ['campaign', 'product'], registers: r }),
    storeErrors: new Counter({ name: 'flashgate_store_errors_total', help: 'Store operations that failed or timed out.', labelNames: ['op'], registers: r }),
    storeDuration: new Histogram({
      name: 'flashgate_store_duration_seconds',
      help: 'Store operation latency.',
      labelNames: ['op'],
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1],
      registers: r
    }),
    storeFallbacks: new Counter({ name: 'flashgate_store_fallbacks_total', help: 'Decisions made by a failure policy while the store was unusable.', labelNames: ['guard', 'policy'], registers: r }),
    storeBreakerOpen: new Gauge({ name: 'flashgate_store_breaker_open', help: '1 while the store circuit breaker is open.', registers: r }),
    captchaVerifications: new Counter({ name: 'flashgate_captcha_verifications_total', help: 'Captcha checks by provider and result.', labelNames: ['provider', 'result'], registers: r }),
    configReloads: new Counter({ name: 'flashgate_config_reloads_total', help: 'Config reloads by result (success or failure).', labelNames: ['result'], registers: r }),
    connections: new Gauge({ name: 'flashgate_connections', help: 'Open client connections.', registers: r })
  }
}
