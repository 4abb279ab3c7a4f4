/**
 * Smoke test of `flashgate bench`: each scenario runs for a second or two against a stack the bench
 * starts itself (memory store, its own upstream / origin), through the real `flashgate` command. Checks
 * the report's shape and the correctness counters, never the speed.
 */
import t from 'tap'
import type { Test } from 'tap'
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const dir = mkdtempSync(join(tmpdir(), 'fg-bench-smoke-'))
t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })

interface Result { code: number | null, stdout: string, stderr: string }

/** Run `flashgate bench ARGS` from the sources, bounded in time. */
async function bench (args: string[], timeoutMs = 50_000): Promise<Result> {
  return await new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'gateway', 'cli.ts'), 'bench', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString('utf8') })
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString('utf8') })
    // SIGINT makes the bench stop every process it started before exiting.
    const timer = setTimeout(() => { child.kill('SIGINT') }, timeoutMs)
    child.once('close', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }) })
  })
}

interface Check { name: string, value: unknown, ok: boolean | null }
interface Summary { target: string, kind: string, rps: number | null, lost: number, outcomes: Record<string, number> | null }
interface Report {
  tool: string
  schema: number
  scenario: string
  correctness: { ok: boolean, checks: Check[] }
  targets: Summary[] | null
  comparisons: unknown[]
  funnel: Array<{ step: string, guard: string, rps: number | null }> | null
  runs: Array<{ target: string, load: { sent: number, answered: number, lost: number } }>
  sale: null | {
    products: Array<{ product: string, quota: number, orders: number, oversold: number, invariantOk: boolean | null, originMatchesOrders: boolean | null }>
    correctness: { oversold: number, usersWithSeveralOrders: number, lost: number, ok: boolean }
    users: { sent: number, answered: number, lost: number, buyOutcomes: Record<string, number>, timeline: unknown[] }
  }
  timeline: unknown[] | null
}

function readReport (t: Test, name: string): Report {
  const file = join(dir, `${name}.json`)
  t.ok(existsSync(file), `${name}: JSON written`)
  const svg = readFileSync(join(dir, `${name}.svg`), 'utf8')
  t.match(svg, /^<\?xml[^]*<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"[^]*<\/svg>\s*$/, `${name}: SVG chart written`)
  t.ok(existsSync(join(dir, `${name}.md`)), `${name}: markdown written`)
  const r = JSON.parse(readFileSync(file, 'utf8')) as Report
  t.equal(r.tool, 'flashgate bench')
  t.equal(r.schema, 1)
  t.ok(r.correctness.checks.length > 0, 'correctness checks present')
  for (const c of r.correctness.checks) t.not(c.ok, false, `check holds: ${c.name} (${String(c.value)})`)
  t.equal(r.correctness.ok, true, 'correctness ok')
  return r
}

const common = ['--store', 'memory', '--connections', '8', '--rounds', '1', '--quiet']

t.test('usage: --help exits 0, unknown flags exit 2', async (t) => {
  const help = await bench(['--help'])
  t.equal(help.code, 0)
  t.match(help.stdout, /--scenario NAME/)
  const bad = await bench(['--bogus'])
  t.equal(bad.code, 2)
  t.match(bad.stderr, /unknown option --bogus/)
  const badValue = await bench(['--scenario', 'nope'])
  t.equal(badValue.code, 2)
  const remote = await bench(['--target', 'http://192.0.2.1:8080/'])
  t.equal(remote.code, 2, 'non-loopback targets are refused')
})

t.test('proxy', async (t) => {
  const r = await bench(['--scenario', 'proxy', '--duration', '2', '--warmup', '0', '--json', join(dir, 'proxy.json'), ...common])
  t.equal(r.code, 0, r.stderr)
  const rep = readReport(t, 'proxy')
  t.equal(rep.scenario, 'proxy')
  const fg = rep.targets?.find((x) => x.target === 'fg-proxy')
  t.ok(fg !== undefined && fg.rps !== null && fg.rps > 0, 'fg-proxy measured')
  t.equal(fg?.lost, 0)
  t.equal(fg?.outcomes?.passed !== undefined && fg.outcomes.passed > 0, true, 'answers counted from the gateway metrics')
  t.match(r.stdout, /\| \*\*fg-proxy\*\* \|/, 'table printed')
})

t.test('proxy with autocannon', async (t) => {
  const r = await bench(['--scenario', 'proxy', '--generator', 'autocannon', '--duration', '1', '--warmup', '0', '--json', join(dir, 'proxy-ac.json'), ...common])
  t.equal(r.code, 0, r.stderr)
  const rep = readReport(t, 'proxy-ac')
  const run = rep.runs[0]
  t.ok(run !== undefined && run.load.answered > 0)
  t.ok(rep.timeline !== null && rep.timeline.length > 0, 'per-second timeline from the generator')
})

t.test('reject', async (t) => {
  const r = await bench(['--scenario', 'reject', '--duration', '1', '--warmup', '0', '--json', join(dir, 'reject.json'), ...common])
  t.equal(r.code, 0, r.stderr)
  const rep = readReport(t, 'reject')
  const byName = new Map((rep.targets ?? []).map((x) => [x.target, x]))
  t.ok((byName.get('fg-reject-429')?.outcomes?.RATE_LIMITED ?? 0) > 0, 'global limit rejects with 429 RATE_LIMITED')
  t.ok((byName.get('fg-soldout')?.outcomes?.SOLD_OUT ?? 0) > 0, 'sold-out product answers SOLD_OUT')
  t.ok((byName.get('fg-quota-redis')?.outcomes?.passed ?? 0) > 0, 'quota path admits')
})

t.test('funnel', async (t) => {
  const r = await bench(['--scenario', 'funnel', '--duration', '1', '--warmup', '0', '--json', join(dir, 'funnel.json'), ...common])
  t.equal(r.code, 0, r.stderr)
  const rep = readReport(t, 'funnel')
  t.equal(rep.funnel?.length, 10, 'one row per step: the bare route and each of the 9 guards')
  for (const s of rep.funnel ?? []) t.ok(s.rps !== null && s.rps > 0, `${s.step} (${s.guard}) passes and is measured`)
})

t.test('flash-sale', async (t) => {
  const r = await bench(['--scenario', 'flash-sale', '--users', '200', '--duration', '7', '--ramp', '1', '--products', 'hot:20,cold:500', '--json', join(dir, 'sale.json'), ...common])
  t.equal(r.code, 0, r.stderr)
  const rep = readReport(t, 'sale')
  const s = rep.sale
  t.ok(s !== null)
  if (s === null) return
  t.equal(s.correctness.oversold, 0)
  t.equal(s.correctness.usersWithSeveralOrders, 0)
  t.equal(s.correctness.lost, 0)
  t.equal(s.users.sent, s.users.answered, 'every request answered')
  const hot = s.products.find((p) => p.product === 'hot')
  t.equal(hot?.orders, 20, 'the hot product sells out exactly')
  t.equal(hot?.invariantOk, true, 'origin invariant')
  t.equal(hot?.originMatchesOrders, true, 'origin units taken == orders seen')
  t.ok((s.users.buyOutcomes.SOLD_OUT ?? 0) > 0, 'SOLD_OUT answered at the edge')
  t.ok(s.users.timeline.length > 0, 'timeline')
})
