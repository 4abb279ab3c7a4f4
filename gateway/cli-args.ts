/**
 * The one command-line parser of flashgate's subcommands and bench scripts: node:util `parseArgs`,
 * wrapped so that every command answers the same way. `--name value` and `--name=value` take a value;
 * `--help` / `-h` print the usage (exit 0); an unknown option, a missing or empty value, a value given
 * to a boolean flag, or a positional argument where none is taken is a UsageError: the command prints
 * `PROG: message` and its usage on stderr and exits 2.
 *
 * parseArgs runs non-strict with tokens so the messages are ours (its own strict errors name no fix in
 * the command's words), and a value that starts with `--` is refused as a missing value, as before.
 */
import { parseArgs } from 'node:util'

/** Bad usage: the command exits 2 with this message and its usage. */
export class UsageError extends Error {}

/** The flags a command takes: name → 'string' (takes a value) or 'boolean'. `help` is always there. */
export type Flags = Readonly<Record<string, 'string' | 'boolean'>>

export type Values<F extends Flags> = { [K in keyof F]?: F[K] extends 'string' ? string : true } & { help?: true }

export interface Parsed<F extends Flags> {
  readonly values: Values<F>
  readonly positionals: readonly string[]
}

/**
 * Parse `args` (without node and the script) against `flags`; at most `maxPositionals` positional
 * arguments. Throws UsageError.
 */
export function parseFlags<F extends Flags> (args: readonly string[], flags: F, maxPositionals = 0): Parsed<F> {
  const options: Record<string, { type: 'string' | 'boolean', short?: string }> = { help: { type: 'boolean', short: 'h' } }
  for (const [name, type] of Object.entries(flags)) options[name] = { type }
  const { values, positionals, tokens } = parseArgs({ args: [...args], options, strict: false, allowPositionals: true, tokens: true })
  let seen = 0
  for (const tk of tokens) {
    if (tk.kind === 'positional') {
      if (++seen > maxPositionals) throw new UsageError(`unexpected argument: ${tk.value}`)
    } else if (tk.kind === 'option') {
      const o = Object.hasOwn(options, tk.name) ? options[tk.name] : undefined
      if (o === undefined) throw new UsageError(`unknown option: ${tk.rawName}`)
      if (o.type === 'boolean') {
        if (tk.value !== undefined) throw new UsageError(`${tk.rawName} takes no value`)
      } else if (tk.value === undefined || tk.value === '' || (tk.inlineValue !== true && tk.value.startsWith('--'))) {
        throw new UsageError(`${tk.rawName} needs a value`)
      }
    }
  }
  return { values: values as Values<F>, positionals }
}

/**
 * A number flag's value: undefined when not given; otherwise a number in min..max (a whole one unless
 * `integer` is false), else a UsageError naming the flag and the range.
 */
export function numberFlag (v: string | undefined, name: string, min: number, max: number, integer = true): number | undefined {
  return numberArg(v, `--${name}`, min, max, integer)
}

/** The same for a positional argument, named by `label` in the message (`iterations`). */
export function numberArg (v: string | undefined, label: string, min: number, max: number, integer = true): number | undefined {
  if (v === undefined) return undefined
  const n = Number(v)
  if (v.trim() === '' || !Number.isFinite(n) || (integer && !Number.isInteger(n)) || n < min || n > max) {
    throw new UsageError(`${label}: expected ${integer ? 'a whole number' : 'a number'} in ${min}..${max}, got "${v}"`)
  }
  return n
}

/** A flag's value that must be one of `allowed`; undefined when not given. */
export function oneOfFlag<T extends string> (v: string | undefined, name: string, allowed: readonly T[]): T | undefined {
  if (v === undefined) return undefined
  if (!(allowed as readonly string[]).includes(v)) throw new UsageError(`--${name}: expected one of ${allowed.join(', ')}, got "${v}"`)
  return v as T
}

export interface CommandSpec<F extends Flags> {
  /** What the messages start with: `flashgate`, `flashgate bench`, `bench/tls.ts`. */
  readonly prog: string
  readonly usage: string
  readonly flags: F
  readonly positionals?: number
}

function usageError (spec: { prog: string, usage: string }, err: UsageError): void {
  process.stderr.write(`${spec.prog}: ${err.message}\n\n${spec.usage.trimEnd()}\n`)
}

/**
 * Run a subcommand: parse, answer `--help`, run `body`; a UsageError (from parsing or from `body`
 * judging a value) becomes exit 2. Resolves with `body`'s exit code (null: the process keeps running).
 */
export async function command<F extends Flags> (spec: CommandSpec<F>, args: readonly string[], body: (p: Parsed<F>) => Promise<number | null> | number | null): Promise<number | null> {
  try {
    const p = parseFlags(args, spec.flags, spec.positionals ?? 0)
    if (p.values.help === true) { process.stdout.write(spec.usage.trimEnd() + '\n'); return 0 }
    return await body(p)
  } catch (err) {
    if (err instanceof UsageError) { usageError(spec, err); return 2 }
    throw err
  }
}

/**
 * The options of a bench script run on its own (`node --import tsx bench/X.ts ...`): parsed from
 * process.argv and turned into `T` by `read` before the script does anything. `--help` exits 0; bad
 * usage exits 2.
 */
export function scriptOptions<F extends Flags, T> (spec: CommandSpec<F>, read: (p: Parsed<F>) => T, argv: readonly string[] = process.argv.slice(2)): T {
  try {
    const p = parseFlags(argv, spec.flags, spec.positionals ?? 0)
    if (p.values.help === true) { process.stdout.write(spec.usage.trimEnd() + '\n'); process.exit(0) }
    return read(p)
  } catch (err) {
    if (err instanceof UsageError) { usageError(spec, err); process.exit(2) }
    throw err
  }
}
