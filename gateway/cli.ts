/**
 * The `flashgate` command. Subcommands: serve, validate, origin, demo, bench, capacity, audit-queue.
 * Every one parses its flags with gateway/cli-args.ts (node:util parseArgs): unknown commands and
 * flags exit 2 with usage; `--help` works everywhere. `serve` logs JSON lines on stderr, including
 * one `listening` line with the public and admin URLs.
 */
import cluster from 'node:cluster'
import { readFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { pathToFileURL } from 'node:url'
import { loadConfigFile } from '../conf/load.js'
import { servePrimary, serveSingle, serveWorker } from './cluster.js'
import { ConfigError } from '../conf/errors.js'
import { createLog } from './log.js'
import { SHIPPED_FLAGS, missingFlags } from './node-flags.js'
import { VERSION } from './version.js'
import { UsageError, command } from './cli-args.js'
import type { AuditResult } from '../antibot/audit-queue.js'

const USAGE: Readonly<Record<string, string>> = {
  main: `Usage: flashgate <command> [options]

Commands:
  serve     --config FILE [--workers N|auto]   run the gateway (SIGHUP reloads, SIGTERM/SIGINT drain)
  validate  --config FILE                      check a config; prints FILE:LINE:COL: message per problem
  origin    --config FILE [--listen HOST:PORT] run the thin purchase origin
  demo                                         origin + gateway on the in-memory store, a sale open now
  bench     [--scenario NAME] [--json FILE]    flash-sale load scenario
  capacity  --from FILE.json [--peak N] [--mix LIST]   cores and Redis shards for a peak, from a bench run
  audit-queue --campaign C --seed HEX --joins FILE   recompute a waiting room's pre-queue order

Options:
  --version                                    print the version (flashgate X.Y.Z) and exit
  --help                                       this text

Run 'flashgate <command> --help' for a command's options.`,
  serve: `Usage: flashgate serve --config FILE [--workers N|auto]

  --config FILE      the YAML config (required)
  --workers N|auto   worker processes (default: the config's 'workers'); auto = one per CPU
  --help             this text

Signals: SIGHUP reloads the config (invalid files are rejected, the old config keeps serving);
SIGTERM/SIGINT stop accepting, let in-flight requests finish (server.drain_timeout), exit 0.`,
  'audit-queue': `Usage: flashgate audit-queue --campaign C --seed HEX --joins FILE

Recomputes a waiting room's pre-queue order from its revealed seed (GET /_flashgate/queue/seed after
starts_at) and its join log (GET /admin/queue/C/joins), prints "position<TAB>user" per line, and exits 1
when what was served differs (or the seed does not match the room's commitment).`,
  validate: `Usage: flashgate validate --config FILE

Exits 0 when the config is valid; otherwise exits 1 and prints one line per problem:
  FILE:LINE:COL: message`
}

function usageError (cmd: string, msg: string): number {
  process.stderr.write(`flashgate: ${msg}\n\n${USAGE[cmd] ?? USAGE.main}\n`)
  return 2
}

function parseWorkers (v: string): number | null {
  if (v === 'auto') return availableParallelism()
  if (!/^\d{1,3}$/.test(v)) return null
  const n = Number(v)
  return n >= 1 ? n : null
}

async function validate (args: readonly string[]): Promise<number | null> {
  return await command({ prog: 'flashgate', usage: USAGE.validate as string, flags: { config: 'string' } }, args, ({ values }) => {
    const file = values.config
    if (file === undefined) throw new UsageError('--config FILE is required')
    const r = loadConfigFile(file)
    if (!r.ok) { process.stdout.write(r.errors.join('\n') + '\n'); return 1 }
    for (const w of r.warnings) process.stderr.write(`warning: ${w}\n`)
    process.stdout.write(`${file}: ok\n`)
    return 0
  })
}

/** Returns null when the process should keep running (serving). */
async function serve (args: readonly string[]): Promise<number | null> {
  return await command({ prog: 'flashgate', usage: USAGE.serve as string, flags: { config: 'string', workers: 'string' } }, args, async ({ values }) => {
    const file = values.config
    if (file === undefined) throw new UsageError('--config FILE is required')
    let workers: number | null = null
    if (values.workers !== undefined) {
      workers = parseWorkers(values.workers)
      if (workers === null) throw new UsageError(`--workers must be a positive number or auto, not "${values.workers}"`)
    }
    return await serveWith(file, workers)
  })
}

async function serveWith (file: string, workers: number | null): Promise<number | null> {
  try {
    if (cluster.isWorker) {
      const index = Number(process.env.FLASHGATE_WORKER_INDEX ?? 0)
      const count = Number(process.env.FLASHGATE_WORKER_COUNT ?? 1)
      await serveWorker(file, index, count, createLog({ base: { worker: index } }))
      return null
    }
    const log = createLog()
    if (workers === null) {
      const r = loadConfigFile(file)
      if (!r.ok) throw new ConfigError(r.errors)
      workers = r.config.workers
    }
    // With several workers the primary passes the flags to them (servePrimary); one process serves itself.
    const missing = workers > 1 ? [] : missingFlags()
    if (missing.length > 0) log('warn', `node runs without ${missing.join(' ')}, which flashgate is measured with (see gateway/node-flags.ts): node ${SHIPPED_FLAGS.join(' ')} bin/flashgate.js serve …`)
    if (workers > 1) await servePrimary(file, workers, log)
    else await serveSingle(file, log)
    return null
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(err.problems.join('\n') + '\n')
      return 1
    }
    process.stderr.write(`flashgate: cannot start: ${err instanceof Error ? err.message : String(err)}\n`)
    return 1
  }
}

/** `flashgate audit-queue`: antibot/audit-queue.ts does the check; this reads the log and prints. */
async function auditQueueCommand (args: readonly string[]): Promise<number | null> {
  return await command({ prog: 'flashgate', usage: USAGE['audit-queue'] as string, flags: { campaign: 'string', seed: 'string', joins: 'string' } }, args, async ({ values }) => {
    const { campaign, seed, joins } = values
    if (campaign === undefined) throw new UsageError('--campaign is required')
    if (seed === undefined) throw new UsageError('--seed is required')
    if (joins === undefined) throw new UsageError('--joins is required')
    let text: string
    try { text = readFileSync(joins, 'utf8') } catch (err) {
      process.stderr.write(`flashgate: cannot read ${joins}: ${(err as NodeJS.ErrnoException).code ?? String(err)}\n`)
      return 2
    }
    const { auditQueue } = await import('../antibot/audit-queue.js')
    let r: AuditResult
    try { r = auditQueue(campaign, seed, text) } catch (err) {
      process.stderr.write(`flashgate: ${err instanceof Error ? err.message : String(err)}\n`)
      return 2
    }
    process.stdout.write(r.order.map((u, i) => `${i + 1}\t${u}`).join('\n') + (r.order.length > 0 ? '\n' : ''))
    for (const m of r.mismatches) process.stderr.write(`mismatch: ${m}\n`)
    if (r.mismatches.length > 0) return 1
    process.stderr.write(`ok: ${r.order.length} pre-queue positions match the seed\n`)
    return 0
  })
}

/** Delegate to another part's `main(args)`, loaded on demand. */
async function delegate (what: string, spec: string, args: readonly string[]): Promise<number> {
  let mod: { main?: (args: string[]) => Promise<number> }
  try {
    mod = await import(spec) as typeof mod
  } catch (err) {
    if ((err as { code?: string }).code === 'ERR_MODULE_NOT_FOUND') {
      process.stderr.write(`flashgate: '${what}' is not available in this build (${spec} is missing; run 'npm run build')\n`)
      return 1
    }
    throw err
  }
  if (typeof mod.main !== 'function') {
    process.stderr.write(`flashgate: '${what}' is not available in this build (${spec} has no main)\n`)
    return 1
  }
  return await mod.main([...args])
}

/**
 * Run the CLI with `args` (without node and script). Resolves to an exit code, or null when the
 * process must keep running (serve, demo).
 */
export async function main (args: readonly string[]): Promise<number | null> {
  const [cmd, ...rest] = args
  switch (cmd) {
    case undefined: return usageError('main', 'a command is required')
    case '--help': case '-h': case 'help': process.stdout.write(USAGE.main + '\n'); return 0
    case '--version': case '-V': case 'version': process.stdout.write(`flashgate ${VERSION}\n`); return 0
    case 'serve': return await serve(rest)
    case 'validate': return await validate(rest)
    // Sibling modules are resolved relative to this file (gateway/ → ../origin-stub etc.), in src (tsx) or dist.
    case 'origin': return await delegate('origin', new URL('../origin-stub/cli.js', import.meta.url).href, rest)
    case 'demo': return await delegate('demo', new URL('./demo.js', import.meta.url).href, rest)
    case 'bench': return await delegate('bench', new URL('../bench/cli.js', import.meta.url).href, rest)
    case 'capacity': return await delegate('capacity', new URL('../bench/capacity.js', import.meta.url).href, rest)
    case 'audit-queue': return await auditQueueCommand(rest)
    default: return usageError('main', `unknown command: ${cmd}`)
  }
}

/** Entry point used by bin/flashgate.js. */
export function run (argv: readonly string[] = process.argv.slice(2)): void {
  main(argv).then((code) => {
    if (code !== null) process.exitCode = code
  }, (err: unknown) => {
    process.stderr.write(`flashgate: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
    process.exitCode = 1
  })
}

const entry = process.argv[1]
if (entry !== undefined && import.meta.url === pathToFileURL(entry).href) run()
