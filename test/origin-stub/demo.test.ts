/**
 * `flashgate demo`: start it, wait for the sale to open, run the printed curl sequence with bash, see
 * an order; Ctrl-C (SIGINT) stops it with exit 0.
 */
import { spawn, spawnSync } from 'node:child_process'
import { join } from 'node:path'
import t from 'tap'
import { ROOT } from './helpers.js'
import { needTools } from '../helpers/tools.js'

t.test('the printed curl sequence buys and shows an order', async (t) => {
  if (!needTools(t, 'bash', 'curl')) return
  const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'gateway', 'cli.ts'), 'demo'], {
    cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, FLASHGATE_LOG_LEVEL: 'error' }
  })
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) { child.kill('SIGKILL'); await exited }
  })
  let out = ''
  let err = ''
  child.stderr.on('data', (d: Buffer) => { err += d.toString() })
  child.stdout.on('data', (d: Buffer) => { out += d.toString() })
  const waitFor = (re: RegExp, ms: number): Promise<RegExpExecArray> => new Promise((resolve, reject) => {
    const check = (): boolean => {
      const m = re.exec(out)
      if (m !== null) { clearTimeout(timer); child.stdout.off('data', onData); resolve(m); return true }
      return false
    }
    const onData = (): void => { check() }
    const timer = setTimeout(() => { child.stdout.off('data', onData); reject(new Error(`timeout waiting for ${re}: ${out}\n${err}`)) }, ms)
    child.stdout.on('data', onData)
    check()
  })

  const block = await waitFor(/^GW=[\s\S]*?^sleep 1;.*$/m, 30_000)
  const script = block[0]
  t.match(script, /_flashgate\/time[\s\S]*_flashgate\/challenge[\s\S]*_flashgate\/link[\s\S]*-X POST[\s\S]*\/orders\//, 'time → challenge → link → buy → order status')
  await waitFor(/\] OPEN \|/, 20_000)

  const run = spawnSync('bash', ['-e', '-c', script], { cwd: ROOT, encoding: 'utf8', timeout: 30_000 })
  t.equal(run.status, 0, `the sequence runs: ${run.stderr}`)
  const lines = run.stdout.trim().split('\n')
  t.match(JSON.parse(lines[0] ?? '{}'), { now: Number }, 'time')
  const buy = JSON.parse(lines[1] ?? '{}')
  t.match(buy, { status: 'QUEUED', order_id: /^demo:phone:[A-Za-z0-9_-]{22}$/ }, 'buy: 202 QUEUED')
  const order = JSON.parse(lines[2] ?? '{}')
  t.match(order, { order_id: buy.order_id, user: 'alice', campaign: 'demo', product: 'phone' }, 'the order')
  t.match(order.status, /^(QUEUED|CREATED)$/)

  await waitFor(/phone 99\/100 left/, 5000)
  t.pass('the live summary shows the unit taken')
  await waitFor(/requests: .*passed/, 5000)

  child.kill('SIGINT')
  t.equal(await exited, 0, 'Ctrl-C: exit 0')
  t.match(out, /stopped/)
})
