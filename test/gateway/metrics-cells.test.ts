/**
 * The metric cells (CounterCell, GaugeCell, HistogramCell) write into prom-client's series entries
 * directly. Their exposition must be exactly prom-client's: the same operations through the cells and
 * through prom-client's own API, in two registries, give byte-identical /metrics text — also across a
 * reset() and a remove(), after which a cell falls back to prom-client and binds again.
 */
import t from 'tap'
import { Counter, Gauge, Histogram, Registry } from 'prom-client'
import { CounterCell, GaugeCell, HistogramCell, STORE_DURATION_BUCKETS } from '../../gateway/metrics.js'

function pair (): { reg: Registry, c: Counter<string>, g: Gauge<string>, h: Histogram<string> } {
  const reg = new Registry()
  return {
    reg,
    c: new Counter({ name: 'x_total', help: 'x', labelNames: ['a', 'b'], registers: [reg] }),
    g: new Gauge({ name: 'y', help: 'y', labelNames: ['a', 'b'], registers: [reg] }),
    h: new Histogram({ name: 'z_seconds', help: 'z', labelNames: ['op'], buckets: [...STORE_DURATION_BUCKETS], registers: [reg] })
  }
}

t.test('cells expose exactly what prom-client does', async (t) => {
  const viaApi = pair()
  const viaCells = pair()
  const l1 = { a: 'c1', b: 'p1' }
  const l2 = { a: 'c1', b: 'p2' }
  const cells = {
    c1: new CounterCell(viaCells.c, l1),
    c2: new CounterCell(viaCells.c, l2),
    g1: new GaugeCell(viaCells.g, l1),
    g2: new GaugeCell(viaCells.g, l2),
    h: new HistogramCell(viaCells.h, { op: 'get' }, STORE_DURATION_BUCKETS)
  }
  const same = async (what: string): Promise<void> => {
    t.equal(await viaCells.reg.metrics(), await viaApi.reg.metrics(), what)
  }
  const values = [0, 0.00005, 0.0001, 0.00011, 0.003, 0.1, 0.2, 7]
  for (let i = 0; i < 50; i++) {
    viaApi.c.inc(l1); cells.c1.inc()
    if (i % 3 === 0) { viaApi.c.inc(l2); cells.c2.inc() }
    viaApi.g.set(l1, 100 - i); cells.g1.set(100 - i)
    viaApi.g.set(l2, i * 1.5); cells.g2.set(i * 1.5)
    const v = values[i % values.length] as number
    viaApi.h.observe({ op: 'get' }, v); cells.h.observe(v)
  }
  await same('after 50 rounds of inc, set and observe')
  viaApi.c.reset(); viaCells.c.reset()
  viaApi.g.reset(); viaCells.g.reset()
  viaApi.h.reset(); viaCells.h.reset()
  await same('after reset()')
  for (let i = 0; i < 5; i++) {
    viaApi.c.inc(l1); cells.c1.inc()
    viaApi.g.set(l1, i); cells.g1.set(i)
    viaApi.h.observe({ op: 'get' }, 0.002); cells.h.observe(0.002)
  }
  await same('the cells bound again after the reset')
  viaApi.g.remove(l2); viaCells.g.remove(l2)
  await same('after remove()')
  viaApi.g.set(l2, 9); cells.g2.set(9)
  viaApi.g.set(l2, 10); cells.g2.set(10)
  await same('a removed series set again')
  t.match(await viaCells.reg.metrics(), /y\{a="c1",b="p2"\} 10/, 'and it holds the last value')
})
