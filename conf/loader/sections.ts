/** The top-level sections that stand alone: workers, admin, store, secrets, identity, server, tracing, access log, origin. */
import { availableParallelism } from 'node:os'
import { dirname, isAbsolute, resolve } from 'node:path'
import { failed } from '../check.js'
import type { Checker, MapView } from '../check.js'
import { readJournal } from '../journal.js'
import { ORIGIN_ORDER_KEYS, readOriginOrders } from '../origin-orders.js'
import { parseHostPort } from '../parse.js'
import { isLoopback } from '../cidr.js'
import { quote } from '../quote.js'
import { readStoreHa, STORE_HA_KEYS } from '../store-ha.js'
import type { PNode, Pos, PScalar } from '../tree.js'
import type { AccessLogConfig, HostPort, IdentityConfig, LinkKey, OriginConfig, SecretsConfig, ServerLimits, StoreConfig, TracingConfig } from '../types.js'
import { DEFAULTS, MIN_SECRET_BYTES } from './defaults.js'
import { duration, hostPort, policy, rate, size, source } from './values.js'

const PARSERS = ['node', 'strict'] as const

export function readWorkers (ck: Checker, n: PNode | undefined): number {
  if (n === undefined || failed(n)) return DEFAULTS.workers
  if (n.kind === 'scalar' && n.value === 'auto') return availableParallelism()
  if (n.kind === 'scalar' && typeof n.value === 'number') return ck.num(n, 'workers', 1, 1024) ?? 1
  ck.error(n.pos, `workers: expected a number or auto, got ${ck.show(n as PScalar)}`)
  return 1
}

/** `admin:` (null = `off`) and `admin_token:`; a non-loopback admin listener needs the token. */
export function readAdmin (ck: Checker, top: MapView): { admin: HostPort | null, adminToken: string | null } {
  const adminNode = top.get('admin')
  const admin = adminNode !== undefined && adminNode.kind === 'scalar' && (adminNode.value === 'off' || adminNode.value === false)
    ? null
    : hostPort(ck, adminNode, 'admin') ?? null
  const adminToken = ck.str(top.get('admin_token'), 'admin_token', { secret: true }) ?? null
  if (adminToken !== null && Buffer.byteLength(adminToken) < MIN_SECRET_BYTES) ck.warn(top.get('admin_token')?.pos ?? top.pos, `admin_token is shorter than ${MIN_SECRET_BYTES} bytes; use a long random token`)
  if (admin !== null && !isLoopback(admin.host) && adminToken === null) {
    ck.error(adminNode?.pos ?? top.pos, `admin: listening on non-loopback address ${admin.host} needs admin_token (or bind it to 127.0.0.1)`)
  }
  return { admin, adminToken }
}

export function readStore (ck: Checker, n: PNode | undefined): StoreConfig {
  const D = DEFAULTS.store
  const m = ck.map(n, 'store', ['kind', 'url', 'nodes', 'on_error', 'timeout', 'key_prefix', 'breaker_failures', 'breaker_backoff', 'max_keys', 'gateway_nodes', 'journal', ...STORE_HA_KEYS])
  const kind = ck.oneOf(m?.get('kind'), 'kind', ['memory', 'redis', 'redis-cluster'] as const) ?? 'memory'
  const redisUrl = (it: PNode | undefined, label: string): string | undefined => {
    const s = ck.str(it, label, { secret: true })
    if (s === undefined || it === undefined) return undefined
    // the URL may hold a password: never echo it
    let ok = /^rediss?:\/\//i.test(s)
    if (ok) { try { new URL(s) } catch { ok = false } } // eslint-disable-line no-new
    return ok ? s : ck.error(it.pos, `${label}: expected a redis://HOST:PORT or rediss://HOST:PORT URL`)
  }
  let url = redisUrl(m?.get('url'), 'url') ?? null
  let nodes = ck.list(m?.get('nodes'), 'nodes', (it) => redisUrl(it, 'nodes')) ?? []
  if (m !== undefined) {
    if (kind === 'memory' && (m.get('url') !== undefined || m.get('nodes') !== undefined)) {
      ck.warn(m.keyPos(m.get('url') !== undefined ? 'url' : 'nodes'), 'store: url and nodes are ignored with kind: memory')
    }
    if (kind === 'redis-cluster' && nodes.length === 0 && m.get('nodes') === undefined) {
      if (url !== null) nodes = [url]
      else ck.error(m.pos, 'store: kind redis-cluster needs nodes: [redis://HOST:PORT, ...] (seed nodes)')
    }
  }
  if (kind === 'redis' && url === null) url = D.url
  if (kind === 'memory') { url = null; nodes = [] }
  if (kind === 'redis') nodes = []
  const timeoutMs = duration(ck, m?.get('timeout'), 'timeout', { min: 1 }) ?? D.timeoutMs
  const ha = readStoreHa(ck, m, kind, timeoutMs)
  if (ha.sentinels !== undefined) url = null
  const keyPrefix = ck.str(m?.get('key_prefix'), 'key_prefix', { nonEmpty: false, pattern: /^[^\s{}]*$/, patternHelp: 'must not contain spaces or braces (braces are hash tags on Redis Cluster)' }) ?? D.keyPrefix
  const journal = readJournal(ck, m)
  return {
    kind,
    url,
    nodes,
    ...(journal !== null ? { journal } : {}),
    onError: journal !== null ? 'local' : policy(ck, m?.get('on_error')) ?? 'fail_closed',
    timeoutMs,
    keyPrefix,
    breakerFailures: ck.num(m?.get('breaker_failures'), 'breaker_failures', 1, 1_000_000) ?? D.breakerFailures,
    breakerBackoffMs: duration(ck, m?.get('breaker_backoff'), 'breaker_backoff', { min: 1 }) ?? D.breakerBackoffMs,
    maxKeys: ck.num(m?.get('max_keys'), 'max_keys', 1, 1e9) ?? D.maxKeys,
    gatewayNodes: ck.num(m?.get('gateway_nodes'), 'gateway_nodes', 1, 10_000) ?? D.gatewayNodes,
    ...ha
  }
}

export function readSecrets (ck: Checker, n: PNode | undefined): SecretsConfig {
  const m = ck.map(n, 'secrets', ['link_keys', 'session', 'pow'])
  const linkKeys: LinkKey[] = []
  const lk = m?.get('link_keys')
  if (lk !== undefined) {
    if (lk.kind !== 'map') ck.error(lk.pos, 'link_keys: expected a map of key id → secret, e.g. { k1: "${FLASHGATE_LINK_KEY}" }')
    else {
      for (const e of lk.entries) {
        if (!/^[A-Za-z0-9_-]{1,32}$/.test(e.key)) { ck.error(e.keyPos, `link_keys: key id ${quote(e.key)} must be 1-32 letters, digits, _ or -`); continue }
        // Refused, not only warned about: a short link key makes links guessable.
        const v = secret(ck, e.value, `link_keys.${e.key}`, e.keyPos, { minBytes: MIN_SECRET_BYTES })
        if (v !== undefined) linkKeys.push({ kid: e.key, key: v })
      }
      if (lk.entries.length === 0) ck.error(lk.pos, 'link_keys: needs at least one key')
    }
  }
  const session = secret(ck, m?.get('session'), 'session', m?.keyPos('session')) ?? null
  const pow = secret(ck, m?.get('pow'), 'pow', m?.keyPos('pow')) ?? null
  return { linkKeys, session, pow }
}

/** `minBytes`: shorter is an error (else shorter than MIN_SECRET_BYTES is a warning). */
function secret (ck: Checker, n: PNode | undefined, label: string, keyPos: Pos | undefined, opts: { minBytes?: number } = {}): Buffer | undefined {
  if (n === undefined) {
    if (keyPos !== undefined && label !== 'session' && label !== 'pow') ck.error(keyPos, `${label}: must not be empty`)
    return undefined
  }
  const s = ck.str(n, label, { secret: true })
  if (s === undefined) return undefined
  const key = Buffer.from(s, 'utf8')
  if (opts.minBytes !== undefined && key.length < opts.minBytes) ck.error(n.pos, `${label}: must be at least ${opts.minBytes} bytes; use 32 random bytes`)
  else if (key.length < MIN_SECRET_BYTES) ck.warn(n.pos, `${label}: secret is shorter than ${MIN_SECRET_BYTES} bytes; use at least 32 random bytes`)
  return key
}

export function readIdentity (ck: Checker, n: PNode | undefined, secrets: SecretsConfig): IdentityConfig {
  const m = ck.map(n, 'identity', ['user'])
  const src = source(ck, m?.get('user'), 'user', ['header', 'cookie'], false)
  if (src === undefined || src.from === 'literal') return { user: null }
  if (src.from === 'cookie' && secrets.session === null) {
    ck.error(m?.get('user')?.pos ?? m!.pos, 'identity.user: cookie sessions need secrets.session (the HMAC key that signs them)')
  }
  return { user: { from: src.from as 'header' | 'cookie', name: src.name } }
}

export function readServer (ck: Checker, n: PNode | undefined): ServerLimits {
  const D = DEFAULTS.server
  const m = ck.map(n, 'server', ['max_header_size', 'headers_timeout', 'request_timeout', 'keepalive_timeout', 'max_connections', 'max_body_size', 'drain_timeout', 'body_timeout', 'body_buffer_size', 'parser'])
  const s: ServerLimits = {
    maxHeaderSize: size(ck, m?.get('max_header_size'), 'max_header_size', 1024) ?? D.maxHeaderSize,
    headersTimeoutMs: duration(ck, m?.get('headers_timeout'), 'headers_timeout', { min: 1 }) ?? D.headersTimeoutMs,
    requestTimeoutMs: duration(ck, m?.get('request_timeout'), 'request_timeout') ?? D.requestTimeoutMs,
    keepAliveTimeoutMs: duration(ck, m?.get('keepalive_timeout'), 'keepalive_timeout') ?? D.keepAliveTimeoutMs,
    maxConnections: ck.num(m?.get('max_connections'), 'max_connections', 1, 10_000_000) ?? D.maxConnections,
    maxBodySize: size(ck, m?.get('max_body_size'), 'max_body_size') ?? D.maxBodySize,
    drainTimeoutMs: duration(ck, m?.get('drain_timeout'), 'drain_timeout') ?? D.drainTimeoutMs,
    bodyTimeoutMs: duration(ck, m?.get('body_timeout'), 'body_timeout', { min: 1 }) ?? D.bodyTimeoutMs,
    bodyBufferSize: size(ck, m?.get('body_buffer_size'), 'body_buffer_size') ?? D.bodyBufferSize,
    parser: ck.oneOf(m?.get('parser'), 'parser', PARSERS) ?? 'node'
  }
  // node:http refuses headersTimeout > requestTimeout (when the latter is not 0) at server creation
  if (m !== undefined && s.requestTimeoutMs !== 0 && s.headersTimeoutMs > s.requestTimeoutMs) {
    const h = m.get('headers_timeout')
    if (h !== undefined) ck.error(h.pos, 'headers_timeout: must not be longer than request_timeout')
    else ck.error(m.get('request_timeout')!.pos, `request_timeout: must be at least headers_timeout (${s.headersTimeoutMs}ms by default), or 0`)
  }
  return s
}

/** `tracing: { otlp: URL, sample: 0.01, service_name, max_queue }`. */
export function readTracing (ck: Checker, n: PNode | undefined): TracingConfig {
  const D = DEFAULTS.tracing
  const m = ck.map(n, 'tracing', ['otlp', 'sample', 'service_name', 'max_queue'])
  let otlp: string | null = null
  const u = ck.str(m?.get('otlp'), 'otlp')
  if (u !== undefined) {
    let url: URL | null = null
    try { url = new URL(u) } catch {}
    if (url === null || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.search !== '' || url.hash !== '') {
      ck.error(m!.get('otlp')!.pos, `otlp: expected an http:// or https:// base URL (spans go to URL/v1/traces), got ${quote(u)}`)
    } else {
      otlp = u.replace(/\/+$/, '')
    }
  }
  return {
    otlp,
    sample: ck.num(m?.get('sample'), 'sample', 0, 1, false) ?? D.sample,
    serviceName: ck.str(m?.get('service_name'), 'service_name') ?? D.serviceName,
    maxQueue: ck.num(m?.get('max_queue'), 'max_queue', 1, 1_000_000) ?? D.maxQueue
  }
}

/** A relative `path` is relative to the file that names it (`file` when the section is absent). */
export function readAccessLog (ck: Checker, n: PNode | undefined, file: string): AccessLogConfig {
  const m = ck.map(n, 'access_log', ['enabled', 'path'])
  const enabled = ck.bool(m?.get('enabled'), 'enabled') ?? DEFAULTS.accessLog.enabled
  const p = ck.str(m?.get('path'), 'path') ?? DEFAULTS.accessLog.path
  const path = p === 'stdout' || p === 'stderr' || isAbsolute(p) ? p : resolve(dirname(m?.get('path')?.pos.file ?? file), p)
  return { enabled, path }
}

/** `origin:` (origin-stub's own section); `order_rate` takes a number (per second) or a rate. */
export function readOrigin (ck: Checker, n: PNode | undefined, store: StoreConfig): OriginConfig {
  const D = DEFAULTS.origin
  const m = ck.map(n, 'origin', ['listen', 'order_rate', 'payment_timeout', ...ORIGIN_ORDER_KEYS])
  let orderRate: number | undefined
  const or = m?.get('order_rate')
  if (or !== undefined && or.kind === 'scalar' && typeof or.value === 'number') orderRate = ck.num(or, 'order_rate', 1, 1e9, false)
  else if (or !== undefined) {
    const r = rate(ck, or, 'order_rate')
    if (r !== undefined) orderRate = r.count * 1000 / r.periodMs
  }
  return {
    listen: hostPort(ck, m?.get('listen'), 'listen') ?? parseHostPort(D.listen),
    orderRate: orderRate ?? D.orderRate,
    paymentTimeoutMs: duration(ck, m?.get('payment_timeout'), 'payment_timeout', { min: 1 }) ?? D.paymentTimeoutMs,
    ...readOriginOrders(ck, m, store)
  }
}
