/**
 * Test harness for the upstream side: real node:http origins on port 0, a minimal node:http "gateway"
 * that builds a RequestContext and calls `forward()`, and a loopback "black hole" (a listener whose
 * accept queue is full) for connect timeouts. Everything registers its own teardown.
 */
import { spawn } from 'node:child_process'
import { createServer } from 'node:http'
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import net from 'node:net'
import type { AddressInfo } from 'node:net'
import type { BalanceConfig, RouteConfig, UpstreamConfig } from '../../conf/types.js'
import { createMetrics } from '../../gateway/metrics.js'
import type { Metrics } from '../../gateway/metrics.js'
import type { Outcome, RequestContext } from '../../gateway/pipeline/types.js'
import { createUpstreams } from '../../gateway/upstream/index.js'
import type { Upstreams } from '../../gateway/upstream/index.js'

export interface Teardown { teardown(fn: () => unknown): void }

export async function listen (t: Teardown, server: Server | net.Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    if ('closeAllConnections' in server) server.closeAllConnections()
    await new Promise((resolve) => server.close(resolve))
  })
  return (server.address() as AddressInfo).port
}

export interface Origin {
  readonly url: string
  readonly port: number
  readonly server: Server
  /** Requests seen, in order. */
  readonly seen: IncomingMessage[]
}

/** A real HTTP origin; the default handler answers 200 with its own name. */
export async function origin (t: Teardown, name: string, handler?: (req: IncomingMessage, res: ServerResponse) => void): Promise<Origin> {
  const seen: IncomingMessage[] = []
  const server = createServer((req, res) => {
    seen.push(req)
    if (handler !== undefined) return handler(req, res)
    req.resume()
    req.on('end', () => res.end(name))
  })
  server.keepAliveTimeout = 30_000
  const port = await listen(t, server)
  return { url: `http://127.0.0.1:${port}`, port, server, seen }
}

/** A port nothing listens on (connect refused). */
export async function closedPort (): Promise<number> {
  const s = net.createServer()
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve))
  const port = (s.address() as AddressInfo).port
  await new Promise((resolve) => s.close(resolve))
  return port
}

/**
 * A loopback port where connects hang: a child process listens with backlog 1 and blocks its event loop
 * (never accepts); two connections fill the accept queue, after which the kernel drops new SYNs.
 */
export async function blackHole (t: Teardown): Promise<number> {
  const child = spawn(process.execPath, ['-e', `
    const s = require('net').createServer().listen({ port: 0, host: '127.0.0.1', backlog: 1 }, () => {
      process.stdout.write(s.address().port + '\\n')
      setTimeout(() => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0), 20)
    })`], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => child.kill('SIGKILL'))
  const port = await new Promise<number>((resolve) => child.stdout.once('data', (d) => resolve(Number(String(d).trim()))))
  await new Promise((resolve) => setTimeout(resolve, 100))
  const fillers: net.Socket[] = []
  t.teardown(() => { for (const s of fillers) s.destroy() })
  for (let i = 0; i < 2; i++) {
    const s = net.connect(port, '127.0.0.1')
    fillers.push(s)
    await new Promise<void>((resolve, reject) => { s.once('connect', resolve); s.once('error', reject) })
  }
  return port
}

export function upstreamConfig (name: string, targets: ReadonlyArray<string | { url: string, weight: number }>, over: Partial<UpstreamConfig> = {}): UpstreamConfig {
  return {
    name,
    balance: { kind: 'round_robin' } as BalanceConfig,
    targets: targets.map((x) => typeof x === 'string' ? { url: x, weight: 1 } : x),
    maxFails: 1,
    failTimeoutMs: 10_000,
    connectTimeoutMs: 1000,
    timeoutMs: 5000,
    retries: 1,
    connections: 16,
    keepAliveTimeoutMs: 10_000,
    queue: 1024,
    // FLASHGATE_TEST_UPSTREAM_CLIENT=raw (test/gateway/upstream-raw.test.ts): the same suites on client: raw.
    ...(process.env.FLASHGATE_TEST_UPSTREAM_CLIENT === 'raw' ? { client: 'raw' as const } : {}),
    ...over
  }
}

export class FakeClock {
  now = 1_700_000_000_000
  readonly fn = (): number => this.now
  advance (ms: number): void { this.now += ms }
}

export interface Gateway {
  readonly url: string
  readonly port: number
  readonly upstreams: Upstreams
  readonly metrics: Metrics
  readonly clock: FakeClock
  /** Outcomes given to `done`, in order of arrival, with the target. */
  readonly outcomes: Array<{ outcome: Outcome, target: string | null, path: string }>
  /** Waits until `n` outcomes have arrived. */
  settled (n: number): Promise<void>
}

const ROUTE: RouteConfig = { name: 'test', match: { host: null, path: null, pathPrefix: '/', methods: null }, guards: [], upstream: 'u', maxBodySize: 1 << 30 }

/**
 * A minimal gateway in front of `forward()`: one upstream named by `upstream` (default: the first),
 * `peerTrusted` for every request, the 502/504 answers written as the real gateway writes them,
 * `extra` response headers as a guard would add, and with `bufferBody` the body read into ctx.body first.
 */
export async function gateway (t: Teardown, cfgs: readonly UpstreamConfig[], opts: { peerTrusted?: boolean, extra?: string[], upstream?: string, bufferBody?: boolean } = {}): Promise<Gateway> {
  const metrics = createMetrics({ defaultMetrics: false })
  const clock = new FakeClock()
  const upstreams = createUpstreams(new Map(cfgs.map((c) => [c.name, c])), { metrics, clock: clock.fn })
  t.teardown(async () => await upstreams.close())
  const outcomes: Gateway['outcomes'] = []
  const waiters: Array<() => void> = []
  const name = opts.upstream ?? cfgs[0]!.name
  const server = createServer((req, res) => {
    const url = req.url ?? '/'
    const q = url.indexOf('?')
    const ctx: RequestContext = {
      req,
      res,
      route: ROUTE,
      method: req.method ?? 'GET',
      path: q === -1 ? url : url.slice(0, q),
      query: q === -1 ? '' : url.slice(q + 1),
      host: (req.headers.host ?? '').split(':')[0]!.toLowerCase(),
      clientIp: req.socket.remoteAddress ?? '',
      peerTrusted: opts.peerTrusted ?? false,
      params: {},
      now: clock.now,
      user: undefined,
      queryParams: null,
      extraHeaders: opts.extra ?? null,
      settlers: null,
      locals: null
    }
    const go = (): void => upstreams.forward(ctx, name, (outcome, target) => {
      outcomes.push({ outcome, target, path: url })
      if (outcome.kind === 'failed' && !res.headersSent && !res.destroyed && outcome.code !== 'CLIENT_ABORTED') {
        const status = outcome.code === 'UPSTREAM_TIMEOUT' ? 504 : outcome.code === 'BAD_REQUEST' ? 400 : 502
        res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ code: outcome.code }))
      }
      for (const w of waiters.splice(0)) w()
    })
    if (opts.bufferBody !== true) return go()
    // As a guard that reads a form field does: the whole body first, then ctx.body.
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => { ctx.body = Buffer.concat(chunks); go() })
  })
  const port = await listen(t, server)
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    upstreams,
    metrics,
    clock,
    outcomes,
    async settled (n: number): Promise<void> {
      while (outcomes.length < n) await new Promise<void>((resolve) => waiters.push(resolve))
    }
  }
}

/** Value of one sample of a metric, or undefined. */
export async function metricValue (metrics: Metrics, name: string, labels: Record<string, string>): Promise<number | undefined> {
  const m = metrics.registry.getSingleMetric(name)
  if (m === undefined) return undefined
  const data = await m.get()
  const v = data.values.find((s) => Object.entries(labels).every(([k, val]) => String(s.labels[k]) === val))
  return v?.value
}
