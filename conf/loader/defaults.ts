/** Documented defaults and the small constants several loader modules share. */
import type { CaptchaProvider } from '../types.js'

/** Documented defaults (ms for durations, bytes for sizes). */
export const DEFAULTS = Object.freeze({
  listen: '0.0.0.0:8080',
  workers: 1,
  store: { kind: 'memory', url: 'redis://127.0.0.1:6379', onError: 'fail_closed', timeoutMs: 50, keyPrefix: 'fg:', breakerFailures: 5, breakerBackoffMs: 1000, maxKeys: 1_000_000, gatewayNodes: 1 },
  server: { maxHeaderSize: 16 * 1024, headersTimeoutMs: 10_000, requestTimeoutMs: 30_000, keepAliveTimeoutMs: 5_000, maxConnections: 10_000, maxBodySize: 1024 * 1024, drainTimeoutMs: 10_000, bodyTimeoutMs: 10_000, bodyBufferSize: 128 * 1024, parser: 'node' },
  accessLog: { enabled: true, path: 'stdout' },
  upstream: { maxFails: 1, failTimeoutMs: 10_000, connectTimeoutMs: 1_000, timeoutMs: 60_000, retries: 1, connections: 64, keepAliveTimeoutMs: 4_000, weight: 1, queue: 1024 },
  campaign: { linkRevealMs: 60_000, linkGraceMs: 60_000 },
  product: { segments: 1 },
  rateLimit: { maxKeys: 100_000 },
  captcha: { timeoutMs: 2_000, tokenTtlMs: 300_000, clearanceCookie: 'fg_clearance', difficulty: 16, challengeTtlMs: 60_000 },
  dedupe: { ttlMs: 86_400_000 },
  quota: { latchTtlMs: 1_000, lease: 10 },
  waitingRoom: { prequeueMs: 600_000, passTtlMs: 300_000, overbook: 1, pollMs: 1_000 },
  origin: { listen: '127.0.0.1:7001', orderRate: 1000, paymentTimeoutMs: 600_000 },
  tracing: { sample: 1, serviceName: 'flashgate', maxQueue: 2048 },
  static: { cacheControl: 'public, max-age=60', htmlCacheControl: 'no-cache' }
})

/** Each provider's documented siteverify endpoint. */
export const CAPTCHA_VERIFY_URLS: Readonly<Record<CaptchaProvider, string>> = Object.freeze({
  turnstile: 'https://challenges.cloudflare.com/turnstile/v0/siteverify',
  hcaptcha: 'https://api.hcaptcha.com/siteverify',
  recaptcha: 'https://www.google.com/recaptcha/api/siteverify',
  pow: ''
})

/** Where each provider's widget puts its token by default. */
export const CAPTCHA_TOKEN_DEFAULTS: Readonly<Record<CaptchaProvider, string>> = Object.freeze({
  turnstile: 'cf-turnstile-response',
  hcaptcha: 'h-captcha-response',
  recaptcha: 'g-recaptcha-response',
  pow: 'x-flashgate-pow'
})

export const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/
/** Route, upstream and rate-limit names: they become metrics labels. */
export const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/
export const MIN_SECRET_BYTES = 16
