/**
 * `flashgate origin --config FILE [--listen HOST:PORT]`: the thin purchase origin. Reads the same
 * config as the gateway (`campaigns`, `store`, `origin`). SIGTERM / SIGINT stop accepting, finish
 * in-flight requests, stop the order worker (its unfinished entries stay pending and are taken over by
 * another origin or by this one's next start) and exit 0.
 *
 * Runs as `flashgate origin ...` (gateway/cli.ts delegates to it) or directly:
 * `node --import tsx gateway/origin-cli.ts --config FILE`.
 */
import { pathToFileURL } from 'node:url'
import { request } from 'undici'
import { formatErrors, loadConfigFile } from '../conf/load.js'
import { parseDuration, parseHostPort } from '../conf/parse.js'
import type { HostPort } from '../conf/types.js'
import { createLog } from './log.js'
import { createOrigin, type OriginOptions } from '../origin-stub/origin.js'

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
  --help                 this text

SIGTERM/SIGINT: stop accepting, finish in-flight requests, exit 0.`

function usageError (msg: string): number {
  process.stderr.write(`flashgate origin: ${msg}\n\n${USAGE}\n`)
  return 2
}

interface Flags { config?: string, listen?: string, claimIdle?: string, releaseTo?: string, help: boolean }

function parseArgs (args: readonly string[]): Flags | string {
  const out: Flags = { help: false }
  const valued: Record<string, 'config' | 'listen' | 'claimIdle' | 'releaseTo'> = { config: 'config', listen: 'listen', 'claim-idle': 'claimIdle', 'release-to': 'releaseTo' }
  for (let i = 0; i < args.length; i++) {
    const a = args[i] as string
    if (a === '-h' || a === '--help') { out.help = true; continue }
    if (!a.startsWith('--')) return `unexpected argument: ${a}`
    const eq = a.indexOf('=')
    const name = eq === -1 ? a.slice(2) : a.slice(2, eq)
    const key = valued[name]
    if (key === undefined) return `unknown option: --${name}`
    const v = eq === -1 ? args[++i] : a.slice(eq + 1)
    if (v === undefined || v === '') return `--${name} needs a value`
    out[key] = v
  }
  return out
}

/** onRelease for --release-to: the gateway admin's release endpoint (a refusal or failure is logged by the origin). */
function releaser (base: URL, token: string | null): NonNullable<OriginOptions['onRelease']> {
  return async (ref, units) => {
    const url = new URL(`admin/quota/${encodeURIComponent(ref.campaign)}/${encodeURIComponent(ref.product)}/release`, base.href.endsWith('/') ? base : new URL(base.href + '/'))
    const r = await request(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token !== null ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify({ units }),
      headersTimeout: 5000,
      bodyTimeout: 5000
    })
    const text = await r.body.text()
    if (r.statusCode !== 200) throw new Error(`release to ${base.origin}: ${r.statusCode} ${text.slice(0, 200)}`)
  }
}

/** The `origin` subcommand. Resolves with the exit code once the origin has stopped. */
export async function main (args: string[]): Promise<number> {
  const flags = parseArgs(args)
  if (typeof flags === 'string') return usageError(flags)
  if (flags.help) { process.stdout.write(USAGE + '\n'); return 0 }
  if (flags.config === undefined) return usageError('--config FILE is required')
  let listen: HostPort | undefined
  let claimIdleMs: number | undefined
  let releaseTo: URL | undefined
  try {
    if (flags.releaseTo !== undefined) {
      releaseTo = new URL(flags.releaseTo)
      if (releaseTo.protocol !== 'http:' && releaseTo.protocol !== 'https:') throw new Error('--release-to: an http(s) URL of the gateway admin listener')
    }
    if (flags.listen !== undefined) listen = parseHostPort(flags.listen)
    if (flags.claimIdle !== undefined) claimIdleMs = parseDuration(flags.claimIdle)
  } catch (err) {
    return usageError(err instanceof Error ? err.message : String(err))
  }
  const r = loadConfigFile(flags.config)
  if (!r.ok) {
    process.stderr.write(formatErrors(r) + '\n')
    return 1
  }
  for (const w of r.warnings) process.stderr.write(`warning: ${w}\n`)
  const log = createLog({ base: { component: 'origin' } })
  const opts: OriginOptions = {
    log,
    ...(listen !== undefined ? { listen } : {}),
    ...(claimIdleMs !== undefined ? { claimIdleMs } : {}),
    ...(releaseTo !== undefined ? { onRelease: releaser(releaseTo, process.env.FLASHGATE_ADMIN_TOKEN ?? null) } : {})
  }
  const origin = createOrigin(r.config, opts)
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
