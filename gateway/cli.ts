/**
 * The `flashgate` command. Subcommands: serve, validate, origin, demo, bench. Unknown commands and
 * flags exit 2 with usage; `--help` works everywhere. `serve` logs JSON lines on stderr, including
 * one `listening` line with the public and admin URLs.
 */
import cluster from 'node:cluster'
import { availableParallelism } from 'node:os'
import { pathToFileURL } from 'node:url'
import { loadConfigFile } from '../conf/load.js'
import { servePrimary, serveSingle, serveWorker } from './cluster.js'
import { ConfigError } from '../conf/errors.js'
import { createLog } from './log.js'
import { SHIPPED_FLAGS, missingFlags } from './node-flags.js'
import { VERSION } from './version.js'

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
  validate: `Usage: flashgate validate --config FILE

Exits 0 when the config is valid; otherwise exits 1 and prints one line per problem:
  FILE:LINE:COL: message`
}

interface Parsed { flags: Map<string, string | true>, error: string | null }

/** Parse `--name value` / `--name=value` / boolean `--help`; anything else is an error. */
function parseFlags (args: readonly string[], valued: readonly string[], booleans: readonly string[] = ['help']): Parsed {
  const flags = new Map<string, string | true>()
  for (let i = 0; i < args.length; i++) {
    const a = args[i] as string
    if (a === '-h') { flags.set('help', true); continue }
    if (!a.startsWith('--')) return { flags, error: `unexpected argument: ${a}` }
    const eq = a.indexOf('=')
    const name = eq === -1 ? a.slice(2) : a.slice(2, eq)
    if (booleans.includes(name)) {
      if (eq !== -1) return { flags, error: `--${name} takes no value` }
      flags.set(name, true)
    } else if (valued.includes(name)) {
      const v = eq === -1 ? args[++i] : a.slice(eq + 1)
      if (v === undefined || v === '') return { flags, error: `--${name} needs a value` }
      flags.set(name, v)
    } else {
      return { flags, error: `unknown option: --${name}` }
    }
  }
  return { flags, error: null }
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

async function validate (args: readonly string[]): Promise<number> {
  const p = parseFlags(args, ['config'])
  if (p.error !== null) return usageError('validate', p.error)
  if (p.flags.has('help')) { process.stdout.write(USAGE.validate + '\n'); return 0 }
  const file = p.flags.get('config')
  if (typeof file !== 'string') return usageError('validate', '--config FILE is required')
  const r = loadConfigFile(file)
  if (!r.ok) { process.stdout.write(r.errors.join('\n') + '\n'); return 1 }
  for (const w of r.warnings) process.stderr.write(`warning: ${w}\n`)
  process.stdout.write(`${file}: ok\n`)
  return 0
}

/** Returns null when the process should keep running (serving). */
async function serve (args: readonly string[]): Promise<number | null> {
  const p = parseFlags(args, ['config', 'workers'])
  if (p.error !== null) return usageError('serve', p.error)
  if (p.flags.has('help')) { process.stdout.write(USAGE.serve + '\n'); return 0 }
  const file = p.flags.get('config')
  if (typeof file !== 'string') return usageError('serve', '--config FILE is required')
  const wflag = p.flags.get('workers')
  let workers: number | null = null
  if (typeof wflag === 'string') {
    workers = parseWorkers(wflag)
    if (workers === null) return usageError('serve', `--workers must be a positive number or auto, not "${wflag}"`)
  }
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
    case 'audit-queue': return await delegate('audit-queue', new URL('../antibot/audit-queue.js', import.meta.url).href, rest)
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
