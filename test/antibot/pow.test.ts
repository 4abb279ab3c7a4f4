import t from 'tap'
import { createHash } from 'node:crypto'
import { captchaGuard, powKey } from '../../gateway/guards/captcha.js'
import { createEdgeHandlers } from '../../gateway/edge/handlers.js'
import { issueChallenge, leadingZeroBits, solveChallenge, verifySolution } from '../../antibot/captcha/pow.js'
import { PROCESS_KEYS } from '../../gateway/guards/captcha.js'
import { KeptState } from '../../gateway/pipeline/state.js'
import { createStore } from '../../limiter/index.js'
import { startRedis } from '../helpers/redis.js'
import { codeOf, guardOf, loadYaml, makeCtx, makeDeps, ready, routeYaml } from './helpers.js'
import type { TestDeps } from './helpers.js'
import { listen } from './server.js'

const NOW = Date.UTC(2030, 0, 1, 12, 30)
const KEY = Buffer.from('pow-key-0123456789abcdef')

t.test('leading zero bits', async (t) => {
  t.equal(leadingZeroBits(Uint8Array.from([0, 0, 0x80])), 16)
  t.equal(leadingZeroBits(Uint8Array.from([0x01])), 7)
  t.equal(leadingZeroBits(Uint8Array.from([0x0f, 0])), 4)
  t.equal(leadingZeroBits(Uint8Array.from([0, 0])), 16)
})

t.test('issue / solve / verify, tamper and expiry (pure)', async (t) => {
  const c = issueChallenge(KEY, 10, 60_000, NOW)
  const n = solveChallenge(c.challenge, 10)
  t.ok(leadingZeroBits(createHash('sha256').update(c.challenge + n).digest()) >= 10)
  t.equal(verifySolution(KEY, `${c.challenge}:${n}`, 10, NOW).result, 'ok')
  t.equal(verifySolution(KEY, `${c.challenge}:${n}`, 11, NOW).result, 'invalid', 'below the guard minimum')
  t.equal(verifySolution(KEY, `${c.challenge}:${n}`, 10, c.expiresAt - 1).result, 'ok', 'one ms before expiry')
  t.equal(verifySolution(KEY, `${c.challenge}:${n}`, 10, c.expiresAt).result, 'expired', 'at expiry')
  t.equal(verifySolution(Buffer.from('another-key-0123456789'), `${c.challenge}:${n}`, 10, NOW).result, 'invalid', 'another key')
  // a counter that does not meet the difficulty
  let bad = 0
  while (leadingZeroBits(createHash('sha256').update(c.challenge + bad).digest()) >= 10) bad++
  t.equal(verifySolution(KEY, `${c.challenge}:${bad}`, 10, NOW).result, 'invalid', 'work not done')
  // lower the difficulty inside the challenge: the HMAC no longer matches
  const parts = c.challenge.split('.')
  parts[2] = '1'
  const easy = parts.join('.')
  t.equal(verifySolution(KEY, `${easy}:${solveChallenge(easy, 1)}`, 1, NOW).result, 'invalid', 'tampered difficulty')
  const later = c.challenge.split('.'); later[3] = String(c.expiresAt + 1e9)
  t.equal(verifySolution(KEY, `${later.join('.')}:${n}`, 10, NOW).result, 'invalid', 'tampered expiry')
  for (const junk of ['', ':', `${c.challenge}`, `${c.challenge}:`, `${c.challenge}:-1`, `${c.challenge}:1e3`, `x:${n}`, `${c.challenge}x:${n}`, 'a'.repeat(300)]) {
    t.equal(verifySolution(KEY, junk, 1, NOW).result, 'invalid', `junk ${JSON.stringify(junk.slice(0, 30))}`)
  }
})

function powConfig (extra = ''): ReturnType<typeof loadYaml> {
  return loadYaml(routeYaml(`- captcha: { provider: pow, difficulty: 8, difficulty_under_load: 12, challenge_ttl: 30s${extra} }`))
}

async function challengeServer (t: { teardown: (fn: () => unknown) => void }, deps: TestDeps): Promise<string> {
  const h = createEdgeHandlers(deps)
  const { url } = await listen((req, res) => { void h['/_flashgate/challenge']?.(req, res, { clientIp: '127.0.0.1', now: deps.clock(), query: new URLSearchParams() }) }, t)
  return url + '/_flashgate/challenge'
}

t.test('the guard: /_flashgate/challenge, solve, pass once, replay refused', async (t) => {
  const config = powConfig()
  const deps = makeDeps(config, { now: NOW })
  const { route, cfg } = guardOf(config, 'captcha')
  const guard = captchaGuard(cfg, route, deps)
  const url = await challengeServer(t, deps)
  const res = await fetch(url)
  t.equal(res.headers.get('cache-control'), 'no-store')
  const ch = await res.json() as { challenge: string, difficulty: number, expires_at: number, algorithm: string }
  t.equal(ch.difficulty, 8)
  t.equal(ch.expires_at, NOW + 30_000)
  t.equal(ch.algorithm, 'SHA-256')
  const token = `${ch.challenge}:${solveChallenge(ch.challenge, ch.difficulty)}`
  const run = (tok: string | null, g = guard): Promise<string | undefined> => codeOf(g.check(makeCtx({ headers: tok === null ? {} : { 'x-flashgate-pow': tok }, now: deps.clock() })))
  t.equal(await run(null), 'CAPTCHA_REQUIRED')
  t.equal(await run(token), undefined, 'solved')
  t.equal(await run(token), 'CAPTCHA_INVALID', 'replayed on the same node')
  // another node (its own local cache) sharing the store
  const deps2 = { ...deps, kept: new KeptState() }
  deps2.kept.set(PROCESS_KEYS, new Map([['antibot:pow-key', powKey(deps)]]))
  const other = captchaGuard(cfg, route, deps2)
  t.equal(await run(token, other), 'CAPTCHA_INVALID', 'replayed on another node: the nonce was consumed on the store')
  // expiry
  const ch2 = await (await fetch(url)).json() as { challenge: string }
  const tok2 = `${ch2.challenge}:${solveChallenge(ch2.challenge, 8)}`
  deps.setNow(NOW + 30_000)
  t.equal(await run(tok2), 'CAPTCHA_INVALID', 'expired challenge')
  deps.setNow(NOW)
  t.equal(await run(tok2), undefined, 'the same solution inside its lifetime (expiry did not spend it)')
  t.equal(await run('v1.forged.8.99999999999999.AAAA:1'), 'CAPTCHA_INVALID')
})

t.test('difficulty rises while the global limiter is rejecting', async (t) => {
  const deps = makeDeps(powConfig(), { now: NOW })
  const url = await challengeServer(t, deps)
  deps.overload.active = true
  t.equal((await (await fetch(url)).json() as { difficulty: number }).difficulty, 12)
  deps.overload.active = false
  t.equal((await (await fetch(url)).json() as { difficulty: number }).difficulty, 8)
})

t.test('the browser solver (WebCrypto) produces tokens the guard accepts', async (t) => {
  const config = powConfig()
  const deps = makeDeps(config, { now: NOW })
  const { route, cfg } = guardOf(config, 'captcha')
  const guard = captchaGuard(cfg, route, deps)
  const url = await challengeServer(t, deps)
  const path = '../../antibot/pow-solver.js'
  await import(path)
  const solver = (globalThis as unknown as { flashgatePow: { fetchAndSolve: (u: string) => Promise<string> } }).flashgatePow
  for (let i = 0; i < 3; i++) {
    const token = await solver.fetchAndSolve(url)
    t.equal(await codeOf(guard.check(makeCtx({ headers: { 'x-flashgate-pow': token }, now: NOW }))), undefined, `browser solution ${i}`)
  }
})

t.test('single use across nodes on a real Redis; store down follows on_error', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const config = loadYaml(routeYaml('- captcha: { provider: pow, difficulty: 6 }', { store: `store: { kind: redis, url: "${redis.url}", timeout: 200ms }` }))
  const a = makeDeps(config, { now: NOW })
  const b = makeDeps(config, { now: NOW, store: createStore(config.store, { metrics: a.metrics, clock: a.clock }) })
  t.teardown(async () => { await a.store.close(); await b.store.close() })
  await ready(a.store)
  await ready(b.store)
  const { route, cfg } = guardOf(config, 'captcha')
  const ga = captchaGuard(cfg, route, a)
  const gb = captchaGuard(cfg, route, b)
  const key = powKey(a)
  const c = issueChallenge(key, 6, 60_000, NOW)
  const token = `${c.challenge}:${solveChallenge(c.challenge, 6)}`
  const run = (g: typeof ga, tok: string): Promise<string | undefined> => codeOf(g.check(makeCtx({ headers: { 'x-flashgate-pow': tok }, now: NOW })))
  t.equal(await run(ga, token), undefined, 'node A accepts')
  t.equal(await run(gb, token), 'CAPTCHA_INVALID', 'node B refuses the same solution')
  redis.kill()
  const c2 = issueChallenge(key, 6, 60_000, NOW)
  t.equal(await run(gb, `${c2.challenge}:${solveChallenge(c2.challenge, 6)}`), 'STORE_UNAVAILABLE', 'fail_closed (the store default) when Redis is down')
})
