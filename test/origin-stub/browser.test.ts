/**
 * The sale page in a real browser: headless Chromium (Debian's /usr/bin/chromium, driven by
 * playwright-core; no browser is downloaded) against a real gateway and purchase origin started as the
 * demo starts them (conf/demo.yaml, free ports, a campaign opening a few seconds later).
 *
 * A shopper opens the page before the start, sees the countdown synced with the gateway clock and
 * joins the campaign's waiting room (pre-queue: her place is drawn at the start); when the sale opens
 * she is admitted and buys: the page solves the proof-of-work in a Web Worker, fetches her signed link,
 * buys through the whole funnel (her room pass included), polls the order until CREATED and pays it. A
 * second browser context is another shopper who waits, is admitted and buys too. Reloading as the first
 * shopper shows her order again (PAID) and offers no second buy; a second buy by hand is refused at the
 * edge, and with a fresh page state her room pass no longer buys (a pass buys once).
 * Screenshots go to the test's temp dir (kept when FLASHGATE_KEEP_SCREENSHOTS=1).
 */
import { mkdtempSync, rmSync, readdirSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import t from 'tap'
import { chromium, type Browser, type Page } from 'playwright-core'
import { loadConfigFile } from '../../conf/load.js'
import type { Config } from '../../conf/types.js'
import { silentLog } from '../../gateway/log.js'
import { startGateway } from '../../gateway/main.js'
import { createOrigin } from '../../origin-stub/origin.js'
import { needTools } from '../helpers/tools.js'
import { ROOT } from './helpers.js'

const CHROMIUM = '/usr/bin/chromium'
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync']
/** The sale opens this long after the test starts it: time to launch the browser and open the page. */
const OPENS_IN_MS = 20_000
const STEP_MS = 30_000

function demoConfig (env: NodeJS.ProcessEnv): Config {
  const r = loadConfigFile(join(ROOT, 'conf', 'demo.yaml'), env)
  if (!r.ok) throw new Error(r.errors.join('\n'))
  return r.config
}

/** Wait (bounded) until a JavaScript expression is true in the page. */
async function until (page: Page, expr: string, timeout = STEP_MS): Promise<void> {
  await page.waitForFunction(expr, null, { timeout })
}
const enabled = "!document.getElementById('buy').disabled"
const orderIs = (s: string): string => `document.getElementById('order-status').dataset.status === '${s}'`
const phaseIs = (s: string): string => `document.getElementById('phase').dataset.phase === '${s}'`

async function text (page: Page, sel: string): Promise<string> {
  return (await page.locator(sel).textContent({ timeout: 5000 })) ?? ''
}

t.test('a shopper and another buy through the whole funnel in headless Chromium', async (t) => {
  if (!needTools(t, 'chromium')) return
  const shots = mkdtempSync(join(tmpdir(), 'flashgate-browser-'))
  t.teardown(() => { if (process.env.FLASHGATE_KEEP_SCREENSHOTS !== '1') rmSync(shots, { recursive: true, force: true }) })

  const startsAt = Math.ceil((Date.now() + OPENS_IN_MS) / 1000) * 1000
  const env: NodeJS.ProcessEnv = {
    FLASHGATE_DEMO_LISTEN: '127.0.0.1:0',
    FLASHGATE_DEMO_ADMIN: '127.0.0.1:0',
    FLASHGATE_DEMO_ORIGIN: '127.0.0.1:1',
    FLASHGATE_DEMO_STARTS_AT: new Date(startsAt).toISOString(),
    FLASHGATE_DEMO_ENDS_AT: new Date(startsAt + 30 * 60_000).toISOString(),
    FLASHGATE_LINK_KEY: randomBytes(32).toString('base64url'),
    FLASHGATE_POW_KEY: randomBytes(32).toString('base64url')
  }
  const origin = createOrigin(demoConfig(env), { listen: { host: '127.0.0.1', port: 0 }, log: silentLog, defaultMetrics: false })
  t.teardown(async () => { await origin.close(0) })
  const o = await origin.start()
  const config = demoConfig({ ...env, FLASHGATE_DEMO_ORIGIN: `127.0.0.1:${o.port}` })
  const gw = await startGateway({ config, listen: { host: '127.0.0.1', port: 0 }, admin: null, log: silentLog })
  t.teardown(async () => { await gw.close() })

  const browser: Browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS, timeout: STEP_MS })
  t.teardown(async () => { await browser.close() })
  const alice = await browser.newContext({ viewport: { width: 600, height: 900 } })
  const bob = await browser.newContext({ viewport: { width: 600, height: 900 } })
  const page = await alice.newPage()
  const page2 = await bob.newPage()
  page.setDefaultTimeout(STEP_MS)
  page2.setDefaultTimeout(STEP_MS)
  const workers: string[] = []
  page.on('worker', (w) => { workers.push(w.url()) })
  const errors: string[] = []
  for (const p of [page, page2]) {
    p.on('pageerror', (e) => { errors.push(e.message) })
    // Answers the page handles (404 from the room probe, 409 DUPLICATE) are logged by Chromium as
    // resource errors; anything else in the console is a script error.
    p.on('console', (m) => { if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) errors.push(m.text()) })
  }
  const missing: string[] = []
  for (const p of [page, page2]) {
    p.on('response', (r) => { if (r.status() === 404) missing.push(r.url()) })
  }
  const offsite: string[] = []
  for (const c of [alice, bob]) {
    await c.route('**/*', async (route) => {
      const u = new URL(route.request().url())
      if (u.origin !== gw.url) { offsite.push(u.href); await route.abort(); return }
      await route.continue()
    })
  }

  // Before the start: the countdown, synced with the gateway's clock; the button waits.
  await page.goto(gw.url + '/?user=alice')
  await page2.goto(gw.url + '/?user=bob&product=watch')
  await until(page, phaseIs('before'))
  t.ok(Date.now() < startsAt, 'the page is open before the sale starts')
  const countdown = await text(page, '#countdown')
  t.match(countdown, /^00:00:\d\d$/, `a countdown to the start (${countdown})`)
  t.ok(Number(countdown.slice(-2)) > 0, 'counting down, not yet at zero')
  t.match(await text(page, '#clock-note'), /Clock synced with the gateway/)
  t.ok(await page.locator('#buy').isDisabled(), 'buy is disabled before the start')
  t.match(await text(page, '#buy'), /Wait for the start/)
  t.equal(await page.locator('#user').inputValue(), 'alice', 'the user the page sends as x-user-id')
  // The waiting room: joined before the start, the place drawn when the sale opens.
  await until(page, "document.getElementById('room-status').dataset.status === 'waiting'")
  t.ok(await page.locator('#room').isVisible(), 'the waiting room is shown')
  t.equal(await text(page, '#room-position'), 'drawn at the start', 'pre-queue: the place is drawn at the start')
  t.match(await text(page, '#room-eta'), /^~00:00:\d\d$/, 'the estimated wait: until the start')
  await until(page2, "document.getElementById('room-status').dataset.status === 'waiting'")
  t.ok(Date.now() < startsAt, 'both shoppers are in the line before the start')
  await page.screenshot({ path: join(shots, '1-before-start.png') })

  // The sale opens: buy.
  await until(page, phaseIs('open'), OPENS_IN_MS + STEP_MS)
  t.ok(Date.now() >= startsAt - 1000, 'the page opened the sale at the gateway\'s start time')
  await until(page, "document.getElementById('room-status').dataset.status === 'admitted'")
  t.ok(Date.now() >= startsAt, 'admitted from the room only once the sale opened')
  t.equal(await text(page, '#room-eta'), 'now')
  await until(page, enabled)
  await page.click('#buy')
  await until(page, orderIs('CREATED'))
  const orderId = await text(page, '#order-id')
  t.match(orderId, /^demo:phone:/, `an order id (${orderId})`)
  t.equal(await text(page, '#order-status'), 'CREATED', 'the order status, polled: CREATED')
  t.equal(await page.locator('#status').getAttribute('data-state'), 'ok')
  t.ok(workers.some((u) => u === gw.url + '/assets/pow-worker.js'), `the proof-of-work was solved in a Web Worker (${workers.join(', ')})`)
  await page.screenshot({ path: join(shots, '2-order-created.png') })
  await page.click('#pay')
  await until(page, orderIs('PAID'))
  t.match(await text(page, '#status'), /Paid/)
  await page.screenshot({ path: join(shots, '3-paid.png') })

  // Another shopper in another context buys the other product.
  await until(page2, enabled)
  t.equal(await page2.locator('#product').inputValue(), 'watch')
  await page2.click('#buy')
  await until(page2, orderIs('CREATED'))
  t.match(await text(page2, '#order-id'), /^demo:watch:/, 'the second shopper has her own order')
  await page2.click('#pay')
  await until(page2, orderIs('PAID'))
  await page2.screenshot({ path: join(shots, '4-second-user-paid.png') })

  // The first shopper again: the page shows her order, and offers no second buy.
  await page.reload()
  await until(page, orderIs('PAID'))
  t.equal(await text(page, '#order-id'), orderId, 'a reload shows her order again')
  t.ok(await page.locator('#buy').isDisabled(), 'no further attempt offered')
  t.equal(await text(page, '#buy'), 'You got one')
  // Forget what the page remembered: the pass left the browser when it bought (a pass buys once), so
  // the room itself answers that her turn is over ("closed" before ends_at).
  await page.evaluate('localStorage.clear()')
  await page.reload()
  await until(page, "document.getElementById('status').dataset.state === 'duplicate'")
  t.match(await text(page, '#status'), /had your turn in the line|turn in the line has been used/, 'the used turn, said as such')
  t.ok(await page.locator('#buy').isDisabled(), 'no further attempt offered')
  await page.screenshot({ path: join(shots, '5-turn-used.png') })
  // And the edge agrees: her pass cookie no longer buys.
  const again = await page.evaluate(`fetch('/_flashgate/link?campaign=demo&product=phone', { headers: { 'x-user-id': 'alice' } })
    .then((r) => r.json()).then((l) => fetch(l.url, { method: 'POST', headers: { 'x-user-id': 'alice' } })).then((r) => r.json())`)
  t.match(again, { code: /^(CAPTCHA_REQUIRED|QUEUE_REQUIRED)$/ }, 'a second buy by hand is refused at the edge')

  // What the origin saw: one unit of each product sold, and paid.
  const phone = origin.products.find((p) => p.product === 'phone')
  const watch = origin.products.find((p) => p.product === 'watch')
  t.ok(phone !== undefined && watch !== undefined)
  if (phone !== undefined && watch !== undefined) {
    t.match(await origin.store.stock(phone), { sale: 99, sold: 1 }, 'the origin: one phone sold')
    t.match(await origin.store.stock(watch), { sale: 19, sold: 1 }, 'the origin: one watch sold')
  }
  t.same(errors, [], 'no script errors in the pages')
  t.same(offsite, [], 'the page asked nothing of any other origin')
  t.same(missing, [], 'every file the page loads is there, and the room answers')
  const files = readdirSync(shots).filter((f) => f.endsWith('.png'))
  t.equal(files.length, 5, 'five screenshots')
  t.ok(files.every((f) => statSync(join(shots, f)).size > 5000), 'screenshots are real images')
  t.comment(`screenshots: ${shots}`)
})
