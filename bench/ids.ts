/**
 * Request id and trace id generation, per call, side by side in one process:
 *
 *   node --import tsx bench/ids.ts
 *
 * gateway/trace.ts's request id (random per-process prefix + counter) against crypto.randomUUID(), and
 * its pooled-random trace and span ids against crypto.randomBytes(n).toString('hex'). Each is run in
 * 5 alternating rounds of 1,000,000 calls; the median ns per call is printed. A shared machine moves
 * the figures; read them side by side.
 */
import { randomBytes, randomUUID } from 'node:crypto'
import { newRequestId, newSpanId, newTraceId } from '../gateway/trace.js'

const N = 1_000_000
let sink = 0
const cases: Array<[string, () => string]> = [
  ['request id: prefix + counter (flashgate)', newRequestId],
  ['request id: crypto.randomUUID()', () => randomUUID()],
  ['trace id: pooled random, hex (flashgate)', newTraceId],
  ['trace id: randomBytes(16).toString(hex)', () => randomBytes(16).toString('hex')],
  ['span id: pooled random, hex (flashgate)', newSpanId],
  ['span id: randomBytes(8).toString(hex)', () => randomBytes(8).toString('hex')]
]
const times = new Map<string, number[]>(cases.map(([n]) => [n, []]))
for (let r = 0; r < 5; r++) {
  for (const [name, fn] of cases) {
    const t0 = process.hrtime.bigint()
    for (let i = 0; i < N; i++) sink += fn().length
    times.get(name)!.push(Number(process.hrtime.bigint() - t0) / N)
  }
}
const med = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
console.log('| generator | ns per call (median of 5 rounds of 1M) |\n|---|---:|')
for (const [name] of cases) console.log(`| ${name} | ${med(times.get(name)!).toFixed(0)} |`)
if (sink === 0) console.log('')
