/** Pure algorithms as tables with a fake clock: no sleeps, no timers. */
import t from 'tap'
import { take, giveBack, tokenBucketPolicy, type TokenBucketState } from '../../limiter/token-bucket.js'
import { leak, leakyBucketPolicy, unleak, type LeakyBucketState } from '../../limiter/leaky-bucket.js'
import { gcraStep } from '../../limiter/gcra.js'

type Step = [at: number, ok: boolean, remaining: number, retryAfterMs: number]

function runTb (count: number, periodMs: number, burst: number, steps: Step[]): Array<[number, boolean, number, number]> {
  const p = tokenBucketPolicy(count, periodMs, burst)
  let s: TokenBucketState | null = null
  return steps.map(([at]) => {
    const r = take(s, at, p, 1)
    s = r.state
    return [at, r.ok, r.remaining, r.retryAfterMs]
  })
}

t.test('token bucket tables', async (t) => {
  const cases: Array<{ name: string, rate: [number, number, number], steps: Step[] }> = [
    {
      name: 'burst then refill at 10/s',
      rate: [10, 1000, 3],
      steps: [[0, true, 2, 0], [0, true, 1, 0], [0, true, 0, 0], [0, false, 0, 100], [99, false, 0, 1], [100, true, 0, 0], [300, true, 1, 0]]
    },
    {
      name: 'fractional rate 3/s (333.33 ms per token) without drift',
      rate: [3, 1000, 1],
      steps: [[0, true, 0, 0], [333, false, 0, 1], [334, true, 0, 0], [667, false, 0, 1], [668, true, 0, 0], [1000, false, 0, 2], [1002, true, 0, 0]]
    },
    {
      name: 'fractional rate 3/s, burst 3: exactly 3 tokens back after 1 s (integer units, no float drift)',
      rate: [3, 1000, 3],
      steps: [[0, true, 2, 0], [0, true, 1, 0], [0, true, 0, 0], [999, true, 1, 0], [1000, true, 1, 0], [1000, true, 0, 0], [1000, false, 0, 334]]
    },
    {
      name: '600/m is 10/s',
      rate: [600, 60_000, 2],
      steps: [[0, true, 1, 0], [0, true, 0, 0], [0, false, 0, 100], [100, true, 0, 0]]
    },
    {
      name: 'long idle refills to the burst, never above',
      rate: [1, 1000, 5],
      steps: [[0, true, 4, 0], [1e12, true, 4, 0], [1e12, true, 3, 0]]
    },
    {
      name: 'clock going backwards refills nothing and counts no time twice',
      rate: [1, 1000, 1],
      steps: [[10_000, true, 0, 0], [9_000, false, 0, 2000], [10_999, false, 0, 1], [11_000, true, 0, 0]]
    }
  ]
  for (const c of cases) {
    t.same(runTb(...c.rate, c.steps), c.steps.map(([a, b, r, ra]) => [a, b, r, ra]), c.name)
  }
  const p = tokenBucketPolicy(1, 1000, 2)
  const a = take(null, 0, p)
  const b = take(a.state, 0, p)
  t.equal(take(b.state, 0, p).ok, false)
  t.equal(take(giveBack(b.state, p), 0, p).ok, true, 'give back restores a token')
  t.equal(giveBack(giveBack(a.state, p), p).units, p.capacity, 'give back capped at capacity')
  t.equal(take(null, 0, p, 3).retryAfterMs, Infinity, 'cost above burst never fits')
  t.throws(() => tokenBucketPolicy(0, 1000, 1))
  t.throws(() => tokenBucketPolicy(1, 1000, 0))
})

t.test('leaky bucket: nginx limit_req values', async (t) => {
  // Each row: [at ms, ok, delayMs]; expected values worked out from ngx_http_limit_req_module.c.
  const cases: Array<{ name: string, rate: [number, number], burst: number, delay: number | 'nodelay', steps: Array<[number, boolean, number]> }> = [
    {
      name: 'rate=1r/s burst=0: one per second',
      rate: [1, 1000], burst: 0, delay: 0,
      steps: [[0, true, 0], [500, false, 0], [999, false, 0], [1000, true, 0], [1500, false, 0]]
    },
    {
      name: 'rate=2r/s burst=3 (delay all excess): excess is queued at 500 ms each',
      rate: [2, 1000], burst: 3, delay: 0,
      steps: [[0, true, 0], [0, true, 500], [0, true, 1000], [0, true, 1500], [0, false, 0], [500, true, 1500]]
    },
    {
      name: 'rate=2r/s burst=3 nodelay',
      rate: [2, 1000], burst: 3, delay: 'nodelay',
      steps: [[0, true, 0], [0, true, 0], [0, true, 0], [0, true, 0], [0, false, 0], [500, true, 0]]
    },
    {
      name: 'rate=2r/s burst=4 delay=2: two excess served at once, then delayed',
      rate: [2, 1000], burst: 4, delay: 2,
      steps: [[0, true, 0], [0, true, 0], [0, true, 0], [0, true, 500], [0, true, 1000], [0, false, 0]]
    },
    {
      name: 'rate=1r/m burst=1: nginx rate 16 milli-req/s',
      rate: [1, 60_000], burst: 1, delay: 'nodelay',
      steps: [[0, true, 0], [0, true, 0], [1000, false, 0], [62_500, true, 0]]
    },
    {
      name: 'clock backwards by <= 60 s counts as no time; more as 1 ms',
      rate: [1, 1000], burst: 1, delay: 'nodelay',
      steps: [[100_000, true, 0], [99_000, true, 0], [98_000, false, 0], [10_000, false, 0], [101_000, true, 0]]
    }
  ]
  for (const c of cases) {
    const p = leakyBucketPolicy(c.rate[0], c.rate[1], c.burst, c.delay)
    let s: LeakyBucketState | null = null
    const got = c.steps.map(([at]) => {
      const r = leak(s, at, p)
      if (r.ok) s = r.state
      return [at, r.ok, r.delayMs]
    })
    t.same(got, c.steps, c.name)
  }
  t.equal(leakyBucketPolicy(1, 60_000, 0, 0).rate, 16, 'nginx rounds 1r/m down to 16')
  const p = leakyBucketPolicy(1, 1000, 0, 0)
  const a = leak(null, 0, p)
  t.equal(leak(a.state, 0, p).ok, false)
  const r = leak(a.state, 0, p)
  t.equal(r.retryAfterMs, 1000, 'retry after one emission interval')
  t.same(unleak({ excess: 500, last: 0 }), { excess: 0, last: 0 }, 'uncommit floors at 0')
})

t.test('gcra tables (units: ms)', async (t) => {
  // interval 100, burst 3
  const rows: Array<[now: number, cost: number, ok: boolean, remaining: number, retryAfter: number]> = [
    [0, 1, true, 2, 0], [0, 1, true, 1, 0], [0, 1, true, 0, 0], [0, 1, false, 0, 100],
    [250, 1, true, 1, 0], [250, 2, false, 1, 50], [250, 1, true, 0, 0], [200, 1, false, 0, 100],
    [300, -1, true, 2, 0], [10_000, 1, true, 2, 0], [10_000, 4, false, 2, Infinity]
  ]
  let tat: number | null = null
  for (const [now, cost, ok, remaining, retry] of rows) {
    const s = gcraStep(tat, now, 100, 3, cost)
    t.same([s.ok, s.remaining, s.retryAfter], [ok, remaining, retry], `now=${now} cost=${cost}`)
    tat = s.tat
  }
})
