// Repeated log lines are collapsed with a count (gateway/log.ts): 93,600 identical lines in 3 s (what a
// store outage wrote) become the first line and one "repeated" line when the window closes.
import t from 'tap'
import { createLog } from '../../gateway/log.js'

t.test('identical lines within the window are counted, then summarised', async (t) => {
  const lines: Array<Record<string, unknown>> = []
  let now = 1_000_000
  const log = createLog({ level: 'debug', write: (l) => { lines.push(JSON.parse(l)) }, now: () => now })
  for (let i = 0; i < 93_600; i++) {
    now = 1_000_000 + Math.floor(i * 3000 / 93_600)
    log('warn', 'store error in guard', { guard: 'buy#7:quota', err: new Error('connect ECONNREFUSED') })
    if (i % 1000 === 0) log('info', 'other line', { i })
  }
  t.equal(lines.filter((l) => l.msg === 'store error in guard').length, 1, 'one line written during the outage')
  t.match(lines[0], { level: 'warn', msg: 'store error in guard', guard: 'buy#7:quota', err: { message: 'connect ECONNREFUSED' } })
  t.equal(lines.filter((l) => l.msg === 'other line').length, 1, 'another message has its own window')
  now = 1_000_000 + 5000
  log('warn', 'store error in guard', { guard: 'buy#7:quota' })
  const summary = lines.find((l) => l.repeated !== undefined && l.msg === 'store error in guard')
  t.match(summary, { level: 'warn', msg: 'store error in guard', repeated: 93_599, window_s: 5, note: '… repeated 93599 times in the last 5 s' })
  t.equal(lines.at(-1)?.repeated, undefined, 'then the line itself again, opening a new window')
  t.equal(lines.at(-1)?.msg, 'store error in guard')
})

t.test('the timer closes a window with no further line', async (t) => {
  const lines: Array<Record<string, unknown>> = []
  const log = createLog({ level: 'debug', write: (l) => { lines.push(JSON.parse(l)) }, repeatWindowMs: 300 })
  for (let i = 0; i < 50; i++) log('error', 'upstream failed')
  t.equal(lines.length, 1)
  await new Promise((resolve) => setTimeout(resolve, 1200))
  t.match(lines[1], { msg: 'upstream failed', repeated: 49 })
  t.equal(lines.length, 2)
})

t.test('repeatWindowMs 0 writes every line', async (t) => {
  const lines: string[] = []
  const log = createLog({ level: 'debug', write: (l) => { lines.push(l) }, repeatWindowMs: 0 })
  for (let i = 0; i < 5; i++) log('warn', 'x')
  t.equal(lines.length, 5)
})
