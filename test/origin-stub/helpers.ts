/**
 * Helpers for the origin tests: config files, origin child processes (the real CLI, as users run it),
 * and a small JSON HTTP client on an undici Agent.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Test } from 'tap'
import { Agent, request } from 'undici'
import { loadConfigText } from '../../conf/load.js'
import type { Config } from '../../conf/types.js'

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..')

export interface OriginYaml {
  /** 'memory' or a redis URL. */
  readonly store: 'memory' | string
  readonly keyPrefix?: string
  readonly products: ReadonlyArray<{ campaign: string, product: string, quota: number }>
  /** e.g. `400/s`, `1/10s` */
  readonly orderRate: string
  /** e.g. `10s` */
  readonly paymentTimeout: string
  /** More keys of the origin map, e.g. `queue: { url: "redis://..." }, buffer: { path: /tmp/x }`. */
  readonly originExtra?: string
}

export function originYaml (o: OriginYaml): string {
  const byCampaign = new Map<string, Array<{ product: string, quota: number }>>()
  for (const p of o.products) {
    const list = byCampaign.get(p.campaign) ?? []
    list.push(p)
    byCampaign.set(p.campaign, list)
  }
  const store = o.store === 'memory'
    ? '{ kind: memory }'
    : `{ kind: redis, url: "${o.store}"${o.keyPrefix !== undefined ? `, key_prefix: "${o.keyPrefix}"` : ''} }`
  const campaigns = [...byCampaign].map(([c, ps]) => [
    `  - id: ${JSON.stringify(c)}`,
    '    starts_at: 2020-01-01T00:00:00Z',
    '    ends_at: 2099-01-01T00:00:00Z',
    '    products:',
    ...ps.map((p) => `      - { id: ${JSON.stringify(p.product)}, quota: ${p.quota} }`)
  ].join('\n')).join('\n')
  return `store: ${store}
campaigns:
${campaigns}
origin: { listen: 127.0.0.1:0, order_rate: ${o.orderRate}, payment_timeout: ${o.paymentTimeout}${o.originExtra !== undefined ? `, ${o.originExtra}` : ''} }
`
}

export function loadConfig (yaml: string): Config {
  const r = loadConfigText(yaml, join(ROOT, 'tmp', 'origin-test.yaml'), {})
  if (!r.ok) throw new Error(r.errors.join('\n'))
  return r.config
}

/** Write a config file in a temp dir removed at teardown. */
export function configFile (t: Test, yaml: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'fg-origin-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const file = join(dir, 'origin.yaml')
  writeFileSync(file, yaml)
  return file
}

export interface OriginChild {
  readonly url: string
  readonly child: ChildProcess
  /** stderr so far (JSON log lines). */
  log(): string
  /** SIGKILL, no cleanup (a crash). */
  kill(): Promise<void>
  /** SIGTERM; resolves with the exit code. */
  stop(): Promise<number | null>
}

/** `node --import tsx origin-stub/cli.ts --config FILE --listen 127.0.0.1:0 ...`, resolved once it listens. */
export async function spawnOrigin (t: Test, file: string, extra: readonly string[] = []): Promise<OriginChild> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'origin-stub', 'cli.ts'), '--config', file, '--listen', '127.0.0.1:0', ...extra], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, FLASHGATE_LOG_LEVEL: 'warn' }
  })
  let err = ''
  child.stderr?.on('data', (d: Buffer) => { err = (err + d.toString()).slice(-20_000) })
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL')
      await exited
    }
  })
  const url = await new Promise<string>((resolve, reject) => {
    let out = ''
    const timer = setTimeout(() => reject(new Error(`origin did not start within 60 s: ${err}`)), 60_000)
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString()
      const m = /origin listening on (http:\/\/\S+)/.exec(out)
      if (m?.[1] !== undefined) { clearTimeout(timer); resolve(m[1]) }
    })
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`origin exited ${code}: ${err}`)) })
  })
  return {
    url,
    child,
    log: () => err,
    async kill () {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
      await exited
    },
    async stop () {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
      return await exited
    }
  }
}

export interface JsonResponse { status: number, body: any, headers: Record<string, string | string[] | undefined> }

export function client (t: Test, connections = 64): (method: string, url: string, headers?: Record<string, string>) => Promise<JsonResponse> {
  const agent = new Agent({ connections, keepAliveTimeout: 2000, headersTimeout: 30_000, bodyTimeout: 30_000 })
  t.teardown(async () => { await agent.close() })
  return async (method, url, headers = {}) => {
    const r = await request(url, { method: method as 'GET', headers, dispatcher: agent })
    const text = await r.body.text()
    let body: unknown = text
    try { body = JSON.parse(text) } catch {}
    return { status: r.statusCode, body, headers: r.headers }
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** Poll `fn` until it returns true or `ms` pass; resolves whether it became true. */
export async function until (fn: () => Promise<boolean>, ms: number, every = 50): Promise<boolean> {
  const deadline = Date.now() + ms
  for (;;) {
    if (await fn()) return true
    if (Date.now() > deadline) return false
    await sleep(every)
  }
}

/** Sum of a counter's samples with this label set in Prometheus text. */
export function metricSum (text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line)
    if (m === null || m[1] !== name) continue
    const ls = m[2] ?? ''
    if (Object.entries(labels).every(([k, v]) => ls.includes(`${k}="${v}"`))) sum += Number(m[3])
  }
  return sum
}
