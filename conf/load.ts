/**
 * The configuration loader: YAML (snake_case, `250ms`, `600/m`, `16kb`, `${VAR}`) → the normalised,
 * deep-frozen `Config` of `conf/types.ts`, or every problem at once as `FILE:LINE:COL: message` lines.
 *
 * Synchronous on purpose: it runs at start and on reload, never on the request path.
 *
 * Order of routes: first match wins, so order matters. Routes are taken in the order the main file's
 * keys are written: if `include:` comes before `routes:`, the included routes come first, else after.
 * Within `include:`, patterns are taken in list order and each glob's matches in alphabetical order.
 *
 * Units (see `conf/parse.ts`): durations need a unit (`250ms 10s 5m 24h`; a bare number is refused as
 * ambiguous, except `0`); rates are `COUNT/PERIOD` (`25000/s 600/m 100/10s`); sizes are bytes or
 * `16kb 1mb` (powers of 1024). `origin.order_rate` takes a number (per second) or a rate.
 *
 * Environment (see `conf/tree.ts`): `${VAR}` (unset is an error at its position), `${VAR:-default}`
 * (unset or empty), `$${` for a literal `${`. No message ever contains a substituted value.
 *
 * Relative paths (`include:`, `ip_files`, `access_log.path`) are relative to the file that names them.
 * `include:` files may hold only `routes`, `upstreams` and `campaigns`; no nested includes.
 *
 * Problems are errors (the config is refused) or warnings (it loads): e.g. a secret shorter than 16 bytes,
 * a route that can never match, an include pattern that matches nothing.
 *
 * This file is the entry point; the reading is done in `conf/loader/`: `config.ts` (the order of the
 * sections), `includes.ts`, `sections.ts`, `listeners.ts`, `upstreams.ts`, `campaigns.ts`, `routes.ts`
 * (+ `match.ts`), `guards/` (one module per guard kind), `refs.ts` (what guards name), `ip-files.ts`,
 * and the small value readers in `values.ts`.
 */
import { readFileSync } from 'node:fs'
import { ConfigError } from './errors.js'
import { Diagnostics } from './tree.js'
import type { Config } from './types.js'
import { readConfig } from './loader/config.js'
import { deepFreeze } from './loader/freeze.js'

/** The loader's answer: a frozen config and warnings, or every problem found. */
export type LoadResult =
  | { readonly ok: true, readonly config: Config, readonly warnings: string[] }
  | { readonly ok: false, readonly errors: string[] }

/**
 * What a loader may leave out. `requireRoutes` (on for files, as `serve`, reload and `validate` read
 * them): an empty file, or one with neither routes nor an `origin:` section, is an error.
 */
export interface LoadOptions { readonly requireRoutes?: boolean }

/** Read and load a config file (and what it includes). Never throws. */
export function loadConfigFile (file: string, env: NodeJS.ProcessEnv = process.env, opts: LoadOptions = { requireRoutes: true }): LoadResult {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    return { ok: false, errors: [`${file}:1:1: cannot read the config file: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`] }
  }
  return loadConfigText(text, file, env, opts)
}

/**
 * Load config from text; `file` names it in messages and anchors relative paths (`include:`, `ip_files`).
 * Never throws.
 */
export function loadConfigText (text: string, file: string, env: NodeJS.ProcessEnv = process.env, opts: LoadOptions = {}): LoadResult {
  const d = new Diagnostics()
  const config = readConfig(d, text, file, env, opts.requireRoutes === true)
  if (config === undefined || d.errorCount > 0) return { ok: false, errors: d.errors() }
  return { ok: true, config: deepFreeze(config), warnings: d.warnings() }
}

/** `loadConfigFile`, throwing a `ConfigError` (with `problems`) instead of answering `ok: false`. */
export function loadConfigOrThrow (file: string, env: NodeJS.ProcessEnv = process.env): Config {
  const r = loadConfigFile(file, env)
  if (!r.ok) throw new ConfigError(r.errors)
  return r.config
}

/** The problems as `flashgate validate` prints them: one per line. */
export function formatErrors (result: LoadResult): string {
  return result.ok ? '' : result.errors.join('\n')
}
