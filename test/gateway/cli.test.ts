/**
 * One argument parser (gateway/cli-args.ts, node:util parseArgs) for every flashgate subcommand and
 * every bench script: the parser's answers, then each command run as a real process — an unknown flag
 * exits 2 naming it, `--help` exits 0 with the usage.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { UsageError, numberArg, numberFlag, oneOfFlag, parseFlags } from '../../gateway/cli-args.js'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..')

t.test('parseFlags', async (t) => {
  const F = { config: 'string', workers: 'string', json: 'boolean' } as const
  const ok = (args: string[], max = 0): unknown => parseFlags(args, F, max)
  const fails = (args: string[], msg: RegExp, max = 0): void => {
    t.throws(() => parseFlags(args, F, max), msg, JSON.stringify(args))
    t.ok((() => { try { parseFlags(args, F, max); return false } catch (err) { return err instanceof UsageError } })(), `${JSON.stringify(args)}: a UsageError (exit 2)`)
  }
  t.same(ok(['--config', 'a.yaml', '--workers=2', '--json']), { values: { config: 'a.yaml', workers: '2', json: true }, positionals: [] }, '--name value, --name=value, a boolean')
  t.same(ok(['--config', 'a', '--config', 'b']), { values: { config: 'b' }, positionals: [] }, 'the last one wins, as before')
  t.same(ok(['--config', '-1']), { values: { config: '-1' }, positionals: [] }, 'a value may start with one dash')
  t.same(ok(['--config=--x']), { values: { config: '--x' }, positionals: [] }, 'an inline value may start with two')
  t.same(ok(['-h']), { values: { help: true }, positionals: [] }, '-h is --help')
  t.same(ok(['--help']), { values: { help: true }, positionals: [] })
  t.same(ok(['a', 'b'], 2), { values: {}, positionals: ['a', 'b'] }, 'positionals where the command takes them')
  fails(['--bogus'], /^unknown option: --bogus$/)
  fails(['--bogus=1'], /^unknown option: --bogus$/)
  fails(['-x'], /^unknown option: -x$/)
  fails(['--constructor'], /^unknown option: --constructor$/, )
  fails(['--config'], /^--config needs a value$/)
  fails(['--config='], /^--config needs a value$/)
  fails(['--config', '--workers', '2'], /^--config needs a value$/)
  fails(['--json=yes'], /^--json takes no value$/)
  fails(['--help=1'], /^--help takes no value$/)
  fails(['extra'], /^unexpected argument: extra$/)
  fails(['a', 'b', 'c'], /^unexpected argument: c$/, 2)
  fails(['--', '--config'], /^unexpected argument: --config$/)
})

t.test('value checks', async (t) => {
  t.equal(numberFlag(undefined, 'rounds', 1, 10), undefined, 'not given')
  t.equal(numberFlag('3', 'rounds', 1, 10), 3)
  t.equal(numberFlag('0.5', 'pause', 0, 60, false), 0.5)
  t.throws(() => numberFlag('0.5', 'rounds', 1, 10), /^--rounds: expected a whole number in 1\.\.10, got "0\.5"$/)
  t.throws(() => numberFlag('11', 'rounds', 1, 10), /--rounds: expected a whole number in 1\.\.10/)
  t.throws(() => numberFlag(' ', 'rounds', 1, 10), /--rounds/)
  t.throws(() => numberFlag('1e999', 'rounds', 1, 10), /--rounds/)
  t.throws(() => numberArg('x', 'ITERATIONS', 1, 10), /^ITERATIONS: expected a whole number in 1\.\.10, got "x"$/)
  t.equal(oneOfFlag('tls', 'part', ['tls', 'trace'] as const), 'tls')
  t.throws(() => oneOfFlag('h3', 'part', ['tls', 'trace'] as const), /^--part: expected one of tls, trace, got "h3"$/)
})

interface Run { code: number | string, stdout: string, stderr: string }

/** Run `node --import tsx FILE ARGS` to its end (bounded: killed after 60 s). */
function run (file: string, args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, file), ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (c: Buffer) => { stdout += c.toString() })
    child.stderr.on('data', (c: Buffer) => { stderr += c.toString() })
    const timer = setTimeout(() => { child.kill('SIGKILL') }, 60_000)
    child.on('exit', (code, signal) => { clearTimeout(timer); resolve({ code: code ?? signal ?? -1, stdout, stderr }) })
  })
}

/** Run every case, a few at a time (each is a tsx start-up: CPU, on a shared 2-core machine). */
async function runAll (cases: ReadonlyArray<readonly [string, string[]]>): Promise<Run[]> {
  const out: Run[] = new Array(cases.length)
  let next = 0
  await Promise.all(Array.from({ length: 3 }, async () => {
    while (next < cases.length) {
      const i = next++
      const [file, args] = cases[i] as readonly [string, string[]]
      out[i] = await run(file, args)
    }
  }))
  return out
}

t.test('every flashgate subcommand: unknown flag → exit 2, --help → exit 0', async (t) => {
  const subcommands: Array<[string, RegExp]> = [
    ['serve', /Usage: flashgate serve/],
    ['validate', /Usage: flashgate validate/],
    ['demo', /Usage: flashgate demo/],
    ['bench', /--scenario NAME/],
    ['capacity', /Usage: flashgate capacity/],
    ['audit-queue', /Usage: flashgate audit-queue/]
  ]
  const cases: Array<readonly [string, string[]]> = []
  for (const [cmd] of subcommands) cases.push(['gateway/cli.ts', [cmd, '--bogus-flag']], ['gateway/cli.ts', [cmd, '--help']])
  cases.push(['gateway/cli.ts', ['validate', '--config=']], ['gateway/cli.ts', ['validate', '--config', 'x.yaml', 'extra']], ['gateway/cli.ts', ['serve', '--help=yes']])
  const runs = await runAll(cases)
  subcommands.forEach(([cmd, usage], i) => {
    const bad = runs[2 * i] as Run
    const help = runs[2 * i + 1] as Run
    t.equal(bad.code, 2, `${cmd} --bogus-flag: exit 2`)
    t.match(bad.stderr, /unknown option: --bogus-flag/, `${cmd}: the message names the flag`)
    t.equal(help.code, 0, `${cmd} --help: exit 0`)
    t.match(help.stdout, usage, `${cmd} --help: the usage on stdout`)
  })
  const [empty, extra, boolValue] = runs.slice(2 * subcommands.length)
  t.equal(empty?.code, 2)
  t.match(empty?.stderr, /flashgate: --config needs a value/)
  t.equal(extra?.code, 2)
  t.match(extra?.stderr, /flashgate: unexpected argument: extra/)
  t.equal(boolValue?.code, 2)
  t.match(boolValue?.stderr, /flashgate: --help takes no value/)
})

t.test('every bench script: unknown flag → exit 2 before it starts anything', async (t) => {
  const scripts = ['alloc', 'ledger', 'journal-commit', 'reload-pause', 'pow-solve-time', 'guard-cost', 'redis-client', 'proxy-cpu', 'tls']
  const helped = ['tls', 'ledger', 'pow-solve-time']
  const cases: Array<readonly [string, string[]]> = scripts.map((s) => [`bench/${s}.ts`, ['--bogus-flag']])
  cases.push(...helped.map((s): [string, string[]] => [`bench/${s}.ts`, ['--help']]))
  cases.push(['bench/tls.ts', ['--part', 'h3']], ['bench/guard-cost.ts', ['5']], ['bench/ledger.ts', ['--rounds']])
  const runs = await runAll(cases)
  scripts.forEach((s, i) => {
    const bad = runs[i] as Run
    t.equal(bad.code, 2, `${s} --bogus-flag: exit 2`)
    t.match(bad.stderr, new RegExp(`^bench/${s}\\.ts: unknown option: --bogus-flag\\n\\nUsage: `), `${s}: the message, then the usage`)
  })
  helped.forEach((s, i) => {
    const help = runs[scripts.length + i] as Run
    t.equal(help.code, 0, `${s} --help: exit 0`)
    t.match(help.stdout, /^Usage: /, `${s} --help: the usage`)
  })
  const [part, iterations, rounds] = runs.slice(scripts.length + helped.length)
  t.equal(part?.code, 2)
  t.match(part?.stderr, /--part: expected one of tls, trace, all, got "h3"/)
  t.equal(iterations?.code, 2)
  t.match(iterations?.stderr, /ITERATIONS: expected a whole number in 1000\.\.10000000, got "5"/)
  t.equal(rounds?.code, 2)
  t.match(rounds?.stderr, /--rounds needs a value/)
})
