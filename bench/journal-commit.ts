/**
 * What group commit buys the journal (`store.on_error: journal`, limiter/journal.ts): appends per second
 * and the time a buyer waits for durability, with C concurrent appenders (the buys of an outage), beside
 * the same appends made one at a time (one write + fdatasync each, which is what the journal would cost
 * without batching). Both on the same disk in the same run, for a bounded time each.
 *
 *   node --import tsx bench/journal-commit.ts [--seconds S] [--concurrency C] [--dir DIR]
 *
 * The record is a buy's size (~600 bytes of JSON). The machine may be shared: read the ratio, not the
 * absolute figures.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { JournalFile } from '../limiter/journal.js'
import { numberFlag, scriptOptions } from '../gateway/cli-args.js'

const opts = scriptOptions({
  prog: 'bench/journal-commit.ts',
  usage: `Usage: node --import tsx bench/journal-commit.ts [--seconds S] [--concurrency C] [--dir DIR]

  --seconds S       seconds per run, 1..30 (default 3)
  --concurrency C   concurrent appenders, 1..10000 (default 256)
  --dir DIR         where the journal files go (default: a temp dir, removed after)`,
  flags: { seconds: 'string', concurrency: 'string', dir: 'string' }
}, ({ values }) => ({
  seconds: numberFlag(values.seconds, 'seconds', 1, 30, false) ?? 3,
  concurrency: numberFlag(values.concurrency, 'concurrency', 1, 10_000) ?? 256,
  dir: values.dir ?? null
}))
const { seconds, concurrency } = opts
const base = opts.dir ?? mkdtempSync(join(tmpdir(), 'fg-journal-bench-'))

const record = (i: number): unknown => ({
  t: 'e', id: `0-${i.toString(16).padStart(32, '0')}`, at: Date.now(), user: `user-${i}`, who: `user-${i}`, rid: 'a'.repeat(32),
  campaign: 'nov11', product: '153', mark: { key: `dedupe:nov11:153:user-${i}`, ttlMs: 86_400_000 }, upstream: 'purchase',
  method: 'POST', url: '/buy/nov11/153?sig=abc', headers: ['host', 'seckill.example.com', 'x-user-id', `user-${i}`, 'content-type', 'application/json', 'x-forwarded-for', '203.0.113.9', 'x-request-id', 'b'.repeat(32)],
  body: Buffer.from(JSON.stringify({ qty: 1, address: 'x'.repeat(200) })).toString('base64')
})

function pct (xs: number[], p: number): number {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(p * s.length))] as number
}

async function run (label: string, workers: number): Promise<{ label: string, appends: number, perSecond: number, p50: number, p99: number, batches: number }> {
  const path = join(base, `${label}.fgj`)
  let batches = 0
  const { file } = await JournalFile.open(path, { onBatch: () => { batches++ } })
  const waits: number[] = []
  let n = 0
  const end = performance.now() + seconds * 1000
  await Promise.all(Array.from({ length: workers }, async () => {
    while (performance.now() < end) {
      const t0 = performance.now()
      await file.append(record(n++))
      waits.push(performance.now() - t0)
    }
  }))
  await file.close()
  return { label, appends: waits.length, perSecond: waits.length / seconds, p50: pct(waits, 0.5), p99: pct(waits, 0.99), batches }
}

const serial = await run('one-at-a-time', 1)
const group = await run(`group-commit-c${concurrency}`, concurrency)
if (opts.dir === null) rmSync(base, { recursive: true, force: true })
const fmt = (r: typeof serial): string => `${r.label.padEnd(22)} ${String(r.appends).padStart(8)} appends  ${r.perSecond.toFixed(0).padStart(8)}/s  wait p50 ${r.p50.toFixed(2)} ms  p99 ${r.p99.toFixed(2)} ms  ${r.batches} fsyncs (${(r.appends / Math.max(1, r.batches)).toFixed(1)} records each)`
process.stdout.write(`journal group commit, ${seconds} s each, dir ${base}\n${fmt(serial)}\n${fmt(group)}\nratio: group commit ${(group.perSecond / serial.perSecond).toFixed(1)}x the appends/s of one fsync per append\n`)
