/**
 * The IPC store's failure behaviour against a real ledger process: a primary that stops answering
 * (SIGSTOP) is a store failure within the deadline, opens the breaker, late answers reach onLate, and
 * the store recovers on its own; a channel that is gone fails at once.
 */
import t from 'tap'
import type { StoreConfig } from '../../conf/types.js'
import { createMetrics } from '../../gateway/metrics.js'
import { IpcStore } from '../../limiter/ipc-store.js'
import type { CounterResult } from '../../limiter/store.js'
import { startLedgerProcess } from '../helpers/ledger.js'

const cfg: Pick<StoreConfig, 'timeoutMs' | 'breakerFailures' | 'breakerBackoffMs'> = { timeoutMs: 100, breakerFailures: 3, breakerBackoffMs: 300 }
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))
const codeOf = async (p: Promise<unknown>): Promise<string> => await p.then(() => 'resolved', (e: unknown) => String((e as { code?: string }).code))

t.test('a stopped primary: timeouts within the deadline, breaker, late answers, recovery', async (t) => {
  const { child, peer } = await startLedgerProcess(t)
  const metrics = createMetrics({ defaultMetrics: false })
  const store = new IpcStore(cfg, peer, { metrics, clock: Date.now })
  t.teardown(() => store.close())
  await store.ready()
  t.same(await store.addIfWithin('q', 1, 10), { ok: true, value: 1 })

  child.kill('SIGSTOP')
  const late: CounterResult[] = []
  const t0 = Date.now()
  const codes = await Promise.all([1, 2, 3].map(async () => await codeOf(store.addIfWithin('q', 1, 10, { onLate: (r) => { late.push(r) } }))))
  const took = Date.now() - t0
  t.same(codes, ['FG_ERR_STORE_TIMEOUT', 'FG_ERR_STORE_TIMEOUT', 'FG_ERR_STORE_TIMEOUT'], 'each call fails with a timeout')
  t.ok(took >= 100 && took < 1500, `within the deadline's bound (${took} ms)`)
  t.equal(store.healthy, false, 'unhealthy: the breaker opened after 3 failures')
  t.equal(await codeOf(store.get('q')), 'FG_ERR_STORE_BREAKER_OPEN', 'the next call fails fast')
  t.match(await metrics.registry.getSingleMetricAsString('flashgate_store_errors_total'), /op="add_if_within"} 3/)

  child.kill('SIGCONT')
  for (let i = 0; i < 100 && late.length < 3; i++) await sleep(20)
  t.same(late.map((r) => r.ok), [true, true, true], 'the late answers reach onLate: the primary did apply them')
  await sleep(350)
  t.equal(await store.get('q'), '4', 'the half-open probe goes through after the back-off')
  t.equal(store.healthy, true, 'and the breaker closes again')
})

t.test('the channel is gone: calls fail at once with FG_ERR_STORE_UNAVAILABLE', async (t) => {
  const { child, peer } = await startLedgerProcess(t)
  const store = new IpcStore(cfg, peer, { metrics: createMetrics({ defaultMetrics: false }), clock: Date.now })
  t.teardown(() => store.close())
  await store.ready()
  const gone = new Promise((resolve) => child.once('exit', resolve))
  child.kill('SIGKILL')
  await gone
  t.equal(await codeOf(store.addIfWithin('q', 1, 10)), 'FG_ERR_STORE_UNAVAILABLE', 'unavailable, not a timeout: no deadline waited for')
  t.equal(store.healthy, false)
})
