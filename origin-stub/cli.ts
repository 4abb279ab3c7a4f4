/**
 * `flashgate origin --config FILE [--listen HOST:PORT]`: the thin purchase origin. Reads the same
 * config as the gateway (`campaigns`, `store`, `origin`). SIGTERM / SIGINT stop accepting, finish
 * in-flight requests, stop the order worker (its unfinished entries stay pending and are taken over by
 * another origin or by this one's next start) and the buffer's sender (its notices stay on disk for the
 * next start), and exit 0.
 *
 * Runs as `flashgate origin ...` (gateway/cli.ts delegates to it) or directly:
 * `node --import tsx origin-stub/cli.ts --config FILE`. It imports origin-stub/ and conf/ only.
 */
import { pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import { formatErrors, loadConfigFile } from '../conf/load.js'
import { parseDuration, parseHostPort } from '../conf/parse.js'
import type { HostPort } from '../conf/types.js'
import { WRITER_DEFAULTS } from '../conf/origin-orders.js'
import { createOriginLog } from './log.js'
import { createOrigin, type OriginOptions } from './origin.js'

export const USAGE = `Usage: flashgate origin --config FILE [--listen HOST:PORT]

Runs the purchase origin (POST /buy/:campaign/:product, GET /orders/:id, GET /orders?campaign=C&product=P,
POST /orders/:id/pay,
GET /stock/:campaign/:product, /healthz, /readyz, /metrics) on the config's store and campaigns.

  --config FILE          the YAML config (required): campaigns, store, origin
  --listen HOST:PORT     overrides origin.listen (port 0: any free port)
  --claim-idle DURATION  take over queue entries another origin left unfinished this long (default 5s)
  --release-to URL       give released units (cancelled unpaid orders) back to a gateway whose store this
                         origin does not share: POST URL/admin/quota/C/P/release {"units": N}, with
                         Authorization: Bearer $FLASHGATE_ADMIN_TOKEN when set (on a shared Redis the
                         origin writes the release itself: leave this out)
  --order-system URL     overrides origin.writer.url: the order system each order is handed to
  --attempts N           overrides origin.writer.attempts: failures before an order is dead-lettered
  --backoff DURATION     overrides origin.writer.backoff (doubling up to origin.writer.max_backoff)
  --buffer DIR           overrides origin.buffer.path: the disk buffer of order notices
  --help                 this text

SIGTERM/SIGINT: stop accepting, finish in-flight requests, exit 0.`

function usageError (msg: string): number {
  process.stderr.write(`flashgate origin: ${msg}\n\n${USAGE}\n`)
  return 2
}

const OPTIONS = {
  config: { type: 'string' },
  listen: { type: 'string' },
  'claim-idle': { type: 'string' },
  'release-to': { type: 'string' },
  'order-system': { type: 'string' },
  attempts: { type: 'string' },
  backoff: { type: 'string' },
  buffer: { type: 'string' },
  help: { type: 'boolean', short: 'h' }
} as const

type Flags = ReturnType<typeof parseArgs<{ options: typeof OPTIONS, strict: true, allowPositionals: false }>>['values']

function readFlags (args: readonly string[]): Flags | string {
  try {
    const { values } = parseArgs({ args: [...args], options: OPTIONS, strict: true, allowPositionals: false })
    for (const [k, v] of Object.entries(values)) if (v === '') return `--${k} needs a value`
    return values
  } catch (err) {
    // node:util names the flag: "Unknown option '--bogus'", "Option '--config <value>' argument missing", ...
    return err instanceof Error ? err.message.split('. ')[0] ?? err.message : String(err)
  }
}

/** onRelease for --release-to: the gateway admin's release endpoint (a refusal or failure is logged by the origin). */
function releaser (base: URL, token: string | null): NonNullable<OriginOptions['onRelease']> {
  return async (ref, units) => {
    const url = new URL(`admin/quota/${encodeURIComponent(ref.campaign)}/${encodeURIComponent(ref.product)}/release`, base.href.endsWith('/') ? base : new URL(base.href + '/'))
    const r = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token !== null ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify({ units }),
      signal: AbortSignal.timeout(5000)
    })
    const text = await r.text()
    if (r.status !== 200) throw new Error(`release to ${base.origin}: ${r.status} ${text.slice(0, 200)}`)
  }
}

/** The `origin` subcommand. Resolves with the exit code once the origin has stopped. */
export async function main (args: string[]): Promise<number> {
  const flags = readFlags(args)
  if (typeof flags === 'string') return usageError(flags)
  if (flags.help === true) { process.stdout.write(USAGE + '\n'); return 0 }
  if (flags.config === undefined) return usageError('--config FILE is required')
  let listen: HostPort | undefined
  let claimIdleMs: number | undefined
  let releaseTo: URL | undefined
  let orderSystem: URL | undefined
  let attempts: number | undefined
  let backoffMs: number | undefined
  try {
    if (flags['release-to'] !== undefined) {
      releaseTo = new URL(flags['release-to'])
      if (releaseTo.protocol !== 'http:' && releaseTo.protocol !== 'https:') throw new Error('--release-to: an http(s) URL of the gateway admin listener')
    }
    if (flags['order-system'] !== undefined) {
      orderSystem = new URL(flags['order-system'])
      if (orderSystem.protocol !== 'http:' && orderSystem.protocol !== 'https:') throw new Error('--order-system: an http(s) URL of the order system')
    }
    if (flags.attempts !== undefined) {
      attempts = Number(flags.attempts)
      if (!Number.isSafeInteger(attempts) || attempts < 1 || attempts > 1000) throw new Error('--attempts: an integer 1..1000')
    }
    if (flags.backoff !== undefined) {
      backoffMs = parseDuration(flags.backoff)
      if (backoffMs < 1) throw new Error('--backoff: at least 1ms')
    }
    if (flags.listen !== undefined) listen = parseHostPort(flags.listen)
    if (flags['claim-idle'] !== undefined) claimIdleMs = parseDuration(flags['claim-idle'])
  } catch (err) {
    return usageError(err instanceof Error ? err.message : String(err))
  }
  const r = loadConfigFile(flags.config)
  if (!r.ok) {
    process.stderr.write(formatErrors(r) + '\n')
    return 1
  }
  for (const w of r.warnings) process.stderr.write(`warning: ${w}\n`)
  const log = createOriginLog({ base: { component: 'origin' } })
  let config = r.config
  if (orderSystem !== undefined || attempts !== undefined || backoffMs !== undefined) {
    const w = config.origin.writer ?? { url: null, ...WRITER_DEFAULTS }
    const b = backoffMs ?? w.backoffMs
    config = { ...config, origin: { ...config.origin, writer: { ...w, url: orderSystem?.href ?? w.url, attempts: attempts ?? w.attempts, backoffMs: b, maxBackoffMs: Math.max(b, w.maxBackoffMs) } } }
  }
  const opts: OriginOptions = {
    log,
    ...(flags.buffer !== undefined ? { bufferDir: flags.buffer } : {}),
    ...(listen !== undefined ? { listen } : {}),
    ...(claimIdleMs !== undefined ? { claimIdleMs } : {}),
    ...(releaseTo !== undefined ? { onRelease: releaser(releaseTo, process.env.FLASHGATE_ADMIN_TOKEN ?? null) } : {})
  }
  const origin = createOrigin(config, opts)
  try {
    const addr = await origin.start()
    // One plain line a script can wait for, besides the JSON log.
    process.stdout.write(`origin listening on ${addr.url}\n`)
  } catch (err) {
    await origin.close(0).catch(() => {})
    process.stderr.write(`flashgate origin: cannot start: ${err instanceof Error ? err.message : String(err)}\n`)
    return 1
  }
  return await new Promise<number>((resolve) => {
    const stop = (signal: NodeJS.Signals): void => {
      process.off('SIGTERM', stop)
      process.off('SIGINT', stop)
      log('info', 'origin stopping', { signal })
      origin.close().then(() => { resolve(0) }, (err: unknown) => {
        log('error', 'origin stop failed', { err: err instanceof Error ? err.message : String(err) })
        resolve(1)
      })
    }
    process.on('SIGTERM', stop)
    process.on('SIGINT', stop)
  })
}

const entry = process.argv[1]
if (entry !== undefined && import.meta.url === pathToFileURL(entry).href) {
  main(process.argv.slice(2)).then((code) => { process.exitCode = code }, (err: unknown) => {
    process.stderr.write(`flashgate origin: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
    process.exitCode = 1
  })
}
