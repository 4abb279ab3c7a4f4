/**
 * The origin's HTTP surface on the memory store (in-process), and the CLI's flags.
 */
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import t from 'tap'
import { createOrigin } from '../../origin-stub/origin.js'
import { ROOT, client, loadConfig, metricSum, originYaml, until } from './helpers.js'

t.test('routes and answers', async (t) => {
  // 1 order per 10 s with a burst of one: the first order is created at once, the second stays QUEUED.
  const config = loadConfig(originYaml({
    store: 'memory',
    products: [{ campaign: 'c1', product: 'p1', quota: 3 }, { campaign: 'c1', product: 'p2', quota: 1 }],
    orderRate: '1/10s',
    paymentTimeout: '10m'
  }))
  const origin = createOrigin(config, { listen: { host: '127.0.0.1', port: 0 }, defaultMetrics: false })
  t.teardown(async () => { await origin.close(0) })
  const { url } = await origin.start()
  const http = client(t, 4)

  t.match(await http('POST', `${url}/buy/c1/p1`), { status: 400, body: { code: 'BAD_REQUEST' } }, 'no user: 400')
  t.match(await http('POST', `${url}/buy/c1/p1`, { 'x-user-id': 'a\tb' }), { status: 400 }, 'invalid user (a tab): 400')
  t.match(await http('POST', `${url}/buy/c1/p1`, { 'x-user-id': 'x'.repeat(200) }), { status: 400 }, 'oversized user: 400')
  t.match(await http('POST', `${url}/buy/c1/nope`, { 'x-user-id': 'u' }), { status: 400, body: { code: 'BAD_REQUEST' } }, 'unknown product: 400')
  t.match(await http('POST', `${url}/buy/c1/%E0%A4%A`, { 'x-user-id': 'u' }), { status: 400 }, 'bad percent-encoding: 400')
  t.match(await http('GET', `${url}/buy/c1/p1`), { status: 405, headers: { allow: 'POST' } })
  t.match(await http('GET', `${url}/nothing/here`), { status: 404, body: { code: 'NOT_FOUND' } })
  t.match(await http('GET', `${url}/orders/c1:p1:99`, { 'x-user-id': 'u' }), { status: 404, body: { code: 'NOT_FOUND' } })
  t.match(await http('GET', `${url}/orders/%ZZ`, { 'x-user-id': 'u' }), { status: 404 })
  t.match(await http('GET', `${url}/stock/c1/nope`), { status: 404 })

  const r1 = await http('POST', `${url}/buy/c1/p1`, { 'x-user-id': 'alice' })
  t.match(r1, { status: 202, body: { status: 'QUEUED', order_id: /^c1:p1:[A-Za-z0-9_-]{22}$/ }, headers: { 'cache-control': 'no-store' } }, 'order id: product, then 128 random bits (base64url)')
  const id1 = String(r1.body.order_id)
  t.match(await http('POST', `${url}/buy/c1/p1`, { 'x-user-id': 'alice' }), { status: 409, body: { code: 'DUPLICATE', order_id: id1 } }, 'retried buy: same order')
  const r2 = await http('POST', `${url}/buy/c1/p1`, { 'x-user-id': 'bob' })
  t.equal(r2.status, 202)
  t.not(r2.body.order_id, id1)
  t.not(String(r2.body.order_id).slice(6), String(Number(id1.slice(6)) + 1), 'not sequential')
  t.match(await http('POST', `${url}/buy/c1/p2`, { 'x-user-id': 'alice' }), { status: 202 })
  t.match(await http('POST', `${url}/buy/c1/p2`, { 'x-user-id': 'bob' }), { status: 409, body: { code: 'SOLD_OUT' } })

  // only the buyer sees or pays an order
  t.match(await http('GET', `${url}/orders/${id1}`), { status: 403, body: { code: 'FORBIDDEN' } }, 'no user: 403')
  t.match(await http('GET', `${url}/orders/${id1}`, { 'x-user-id': 'bob' }), { status: 403, body: { code: 'FORBIDDEN' } }, 'another user: 403, the buyer is not shown')
  t.notMatch(JSON.stringify((await http('GET', `${url}/orders/${id1}`, { 'x-user-id': 'bob' })).body), /alice/)
  // a buyer who lost the 202 finds the order by product
  t.match(await http('GET', `${url}/orders?campaign=c1&product=p1`, { 'x-user-id': 'alice' }), { status: 200, body: { order_id: id1, user: 'alice' } }, 'lookup of my order')
  t.match(await http('GET', `${url}/orders?campaign=c1&product=p1`, { 'x-user-id': 'carol' }), { status: 404, body: { code: 'NOT_FOUND' } }, 'no order: 404')
  t.match(await http('GET', `${url}/orders?campaign=c1&product=p1`), { status: 400, body: { code: 'BAD_REQUEST' } }, 'lookup needs a user')
  t.match(await http('GET', `${url}/orders?campaign=c1&product=zz`, { 'x-user-id': 'alice' }), { status: 400 }, 'lookup of an unknown product')
  t.match(await http('GET', `${url}/orders?campaign=c1`, { 'x-user-id': 'alice' }), { status: 400 }, 'lookup without a product')
  t.match(await http('POST', `${url}/orders?campaign=c1&product=p1`, { 'x-user-id': 'alice' }), { status: 405 })

  t.ok(await until(async () => (await http('GET', `${url}/orders/${id1}`, { 'x-user-id': 'alice' })).body.status === 'CREATED', 5000), 'first order created')
  const o2 = await http('GET', `${url}/orders/${r2.body.order_id}`, { 'x-user-id': 'bob' })
  t.match(o2, { status: 200, body: { status: 'QUEUED', user: 'bob', created_at: null } }, 'second still queued (rate 1/10s)')
  t.match(await http('POST', `${url}/orders/${r2.body.order_id}/pay`, { 'x-user-id': 'bob' }), { status: 409, body: { code: 'ORDER_NOT_CREATED' } })
  t.match(await http('POST', `${url}/orders/${id1}/pay`, { 'x-user-id': 'bob' }), { status: 403, body: { code: 'FORBIDDEN' } }, 'another user cannot pay it')
  t.match(await http('POST', `${url}/orders/${id1}/pay`), { status: 403, body: { code: 'FORBIDDEN' } }, 'nor can anyone without a user')
  t.match(await http('POST', `${url}/orders/${id1}/pay`, { 'x-user-id': 'alice' }), { status: 200, body: { status: 'PAID', order_id: id1, paid_at: Number } })
  t.match(await http('POST', `${url}/orders/${id1}/pay`, { 'x-user-id': 'alice' }), { status: 200, body: { status: 'PAID' } }, 'double pay: 200')
  t.match(await http('GET', `${url}/orders/${id1}/pay`), { status: 405 })
  t.match(await http('POST', `${url}/orders/c1:p1:77/pay`, { 'x-user-id': 'alice' }), { status: 404 })
  t.same((await http('GET', `${url}/stock/c1/p1`)).body, { stock: 3, sale: 1, locked: 1, sold: 1 })

  t.match(await http('GET', `${url}/healthz`), { status: 200, body: { status: 'ok', store: 'up' } })
  t.match(await http('GET', `${url}/readyz`), { status: 200 })
  const m = await http('GET', `${url}/metrics`)
  t.equal(m.status, 200)
  t.equal(metricSum(m.body, 'flashgate_origin_buys_total', { result: 'queued' }), 3)
  t.equal(metricSum(m.body, 'flashgate_origin_buys_total', { result: 'duplicate' }), 1)
  t.equal(metricSum(m.body, 'flashgate_origin_buys_total', { result: 'sold_out' }), 1)
  t.equal(metricSum(m.body, 'flashgate_origin_buys_total', { result: 'bad_request' }), 5)
  t.equal(metricSum(m.body, 'flashgate_origin_orders_total', { status: 'paid' }), 1)
  t.equal(metricSum(m.body, 'flashgate_origin_queue_depth', { product: 'p1' }), 1)
  t.equal(metricSum(m.body, 'flashgate_origin_stock', { product: 'p1', state: 'sale' }), 1)
  t.equal(metricSum(m.body, 'flashgate_origin_store_up'), 1)
})

t.test('cli flags', async (t) => {
  const run = (...args: string[]): { status: number | null, out: string, err: string } => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'origin-stub', 'cli.ts'), ...args], { cwd: ROOT, encoding: 'utf8', timeout: 30_000 })
    return { status: r.status, out: r.stdout, err: r.stderr }
  }
  const help = run('--help')
  t.equal(help.status, 0)
  t.match(help.out, /Usage: flashgate origin --config FILE/)
  const bogus = run('--config', 'x.yaml', '--bogus')
  t.equal(bogus.status, 2, 'unknown flag: exit 2')
  t.match(bogus.err, /^flashgate origin: Unknown option '--bogus'\n\nUsage: flashgate origin --config FILE/, 'with the usage')
  t.equal(run('--config').status, 2, 'a flag without its value: exit 2')
  t.equal(run('--config', 'x.yaml', 'extra').status, 2, 'a positional argument: exit 2')
  t.equal(run('--config', 'x.yaml', '--attempts', '0').status, 2, 'bad --attempts: exit 2')
  t.equal(run('--config', 'x.yaml', '--order-system', 'ftp://x').status, 2, 'bad --order-system: exit 2')
  t.equal(run().status, 2, 'missing --config: exit 2')
  t.equal(run('--config', 'x.yaml', '--listen', 'nope').status, 2, 'bad --listen: exit 2')
  const missing = run('--config', '/nonexistent/flashgate.yaml')
  t.equal(missing.status, 1, 'unreadable config: exit 1')
})
