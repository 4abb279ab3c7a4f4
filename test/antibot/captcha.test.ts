import t from 'tap'
import { request } from 'node:http'
import { captchaGuard } from '../../gateway/guards/captcha.js'
import { createSiteverify } from '../../antibot/captcha/siteverify.js'
import { signClearance } from '../../antibot/captcha/clearance.js'
import type { Guard, RequestContext } from '../../gateway/pipeline/types.js'
import { codeOf, guardOf, loadYaml, makeCtx, makeDeps, routeYaml, SESSION_KEY } from './helpers.js'
import type { TestDeps } from './helpers.js'
import { listen, readBody } from './server.js'

const NOW = Date.UTC(2030, 0, 1, 12, 30)
const SECRET = 'prov-secret-123'

type Answer = Record<string, unknown>
type Mode = 'normal' | 'slow' | 'fail500' | 'fail500once' | 'garbage' | 'status403'

/**
 * A siteverify server as the providers document it: POST urlencoded secret/response/remoteip, JSON
 * answer with success and error-codes; a token verifies once (then `timeout-or-duplicate`), except a
 * Turnstile retry carrying the same idempotency_key, which gets the first answer again.
 */
async function provider (t: { teardown: (fn: () => unknown) => void }, path: string) {
  const answers = new Map<string, Answer>()
  const seen = new Map<string, { key: string | null, answer: Answer }>()
  const calls: Array<{ contentType: string | undefined, method: string | undefined, path: string | undefined, form: Record<string, string> }> = []
  const state = { mode: 'normal' as Mode, delayMs: 0 }
  const { url, server } = await listen((req, res) => {
    void (async () => {
      const body = await readBody(req)
      const form = Object.fromEntries(new URLSearchParams(body))
      calls.push({ contentType: req.headers['content-type'], method: req.method, path: req.url, form })
      const send = (status: number, obj: unknown): void => {
        if (res.destroyed) return
        const b = typeof obj === 'string' ? obj : JSON.stringify(obj)
        res.writeHead(status, { 'content-type': 'application/json' }).end(b)
      }
      if (state.mode === 'slow') await new Promise((resolve) => setTimeout(resolve, state.delayMs))
      if (state.mode === 'fail500') return send(500, { error: 'boom' })
      if (state.mode === 'fail500once') { state.mode = 'normal'; return send(502, 'bad gateway') }
      if (state.mode === 'garbage') return send(200, '<html>oops</html>')
      if (state.mode === 'status403') return send(403, { error: 'forbidden' })
      if (req.method !== 'POST' || req.url !== path) return send(404, { success: false, 'error-codes': ['not-found'] })
      if (form.secret !== SECRET) return send(200, { success: false, 'error-codes': ['invalid-input-secret'] })
      const token = form.response
      if (token === undefined || token === '') return send(200, { success: false, 'error-codes': ['missing-input-response'] })
      const prev = seen.get(token)
      if (prev !== undefined) {
        if (prev.key !== null && prev.key === (form.idempotency_key ?? null)) return send(200, prev.answer)
        return send(200, { success: false, 'error-codes': ['timeout-or-duplicate'] })
      }
      const answer = answers.get(token) ?? { success: false, 'error-codes': ['invalid-input-response'] }
      seen.set(token, { key: form.idempotency_key ?? null, answer })
      send(200, answer)
    })()
  }, t)
  return { url: url + path, answers, calls, state, server }
}

const PATHS = { turnstile: '/turnstile/v0/siteverify', hcaptcha: '/siteverify', recaptcha: '/recaptcha/api/siteverify' } as const
const TOKEN_HEADERS = { turnstile: 'cf-turnstile-response', hcaptcha: 'h-captcha-response', recaptcha: 'g-recaptcha-response' } as const

function build (yaml: string, now = NOW): { deps: TestDeps, guard: Guard } {
  const config = loadYaml(routeYaml(yaml))
  const deps = makeDeps(config, { now })
  const { route, cfg } = guardOf(config, 'captcha')
  const guard = captchaGuard(cfg, route, deps)
  return { deps, guard }
}

function ctxWith (headers: Record<string, string>, init: { ip?: string, query?: string, now?: number, encrypted?: boolean } = {}): RequestContext {
  return makeCtx({ headers, clientIp: init.ip ?? '198.51.100.7', query: init.query ?? '', now: init.now ?? NOW, encrypted: init.encrypted ?? false })
}

for (const name of ['turnstile', 'hcaptcha', 'recaptcha'] as const) {
  t.test(`${name}: the siteverify protocol, verdicts, replay`, async (t) => {
    const p = await provider(t, PATHS[name])
    const { guard, deps } = build(`- captcha: { provider: ${name}, secret: "${SECRET}", verify_url: "${p.url}", timeout: 500ms }`)
    t.teardown(() => guard.close?.())
    const h = TOKEN_HEADERS[name]
    p.answers.set('good-1', { success: true, hostname: 'shop.example', challenge_ts: new Date(NOW).toISOString() })
    p.answers.set('good-2', { success: true, hostname: 'shop.example' })

    t.equal(await codeOf(guard.check(ctxWith({}))), 'CAPTCHA_REQUIRED', 'no token')
    t.equal(p.calls.length, 0, 'no provider call without a token')
    t.equal(await codeOf(guard.check(ctxWith({ [h]: 'good-1' }))), undefined, 'good token passes')
    const call = p.calls[0]
    t.equal(call?.method, 'POST')
    t.equal(call?.contentType, 'application/x-www-form-urlencoded')
    t.equal(call?.form.secret, SECRET)
    t.equal(call?.form.response, 'good-1')
    t.equal(call?.form.remoteip, '198.51.100.7', 'remoteip is the trusted client address')
    t.equal(call?.form.idempotency_key !== undefined, name === 'turnstile', 'idempotency_key only for turnstile')
    t.equal(await codeOf(guard.check(ctxWith({ [h]: 'good-1' }))), 'CAPTCHA_INVALID', 'replayed token')
    t.equal(p.calls.length, 1, 'the replay was refused locally, before any network call')
    t.equal(await codeOf(guard.check(ctxWith({ [h]: 'nope' }))), 'CAPTCHA_INVALID', 'refused token (invalid-input-response)')
    // concurrent use of one token: only one may pass
    const [a, b] = await Promise.all([codeOf(guard.check(ctxWith({ [h]: 'good-2' }))), codeOf(guard.check(ctxWith({ [h]: 'good-2' })))])
    t.same([a, b].sort(), ['CAPTCHA_INVALID', undefined].sort(), 'two concurrent uses of one token: one passes')
    t.equal(await codeOf(guard.check(ctxWith({ [h]: 'x'.repeat(5000) }))), 'CAPTCHA_INVALID', 'oversized token refused locally')
    const metrics = await deps.registry.getSingleMetricAsString('flashgate_captcha_verifications_total')
    t.match(metrics, new RegExp(`provider="${name}",result="passed"\\} 2`))
    t.match(metrics, new RegExp(`provider="${name}",result="replayed"\\} 2`), 'the replay and the concurrent second use')
  })
}

t.test('a token the provider already saw on another node (timeout-or-duplicate) is refused', async (t) => {
  const p = await provider(t, PATHS.hcaptcha)
  p.answers.set('tok', { success: true })
  const a = build(`- captcha: { provider: hcaptcha, secret: "${SECRET}", verify_url: "${p.url}" }`)
  const b = build(`- captcha: { provider: hcaptcha, secret: "${SECRET}", verify_url: "${p.url}" }`)
  t.teardown(async () => { await a.guard.close?.(); await b.guard.close?.() })
  t.equal(await codeOf(a.guard.check(ctxWith({ 'h-captcha-response': 'tok' }))), undefined)
  t.equal(await codeOf(b.guard.check(ctxWith({ 'h-captcha-response': 'tok' }))), 'CAPTCHA_INVALID')
})

t.test('wrong secret, hostname mismatch', async (t) => {
  const p = await provider(t, PATHS.turnstile)
  p.answers.set('t1', { success: true, hostname: 'evil.example' })
  p.answers.set('t2', { success: true, hostname: 'Shop.Example' })
  const { guard } = build(`- captcha: { provider: turnstile, secret: "${SECRET}", verify_url: "${p.url}", hostname: shop.example }`)
  t.teardown(() => guard.close?.())
  t.equal(await codeOf(guard.check(ctxWith({ 'cf-turnstile-response': 't1' }))), 'CAPTCHA_INVALID', 'solved on another site')
  t.equal(await codeOf(guard.check(ctxWith({ 'cf-turnstile-response': 't2' }))), undefined, 'hostname compared case-insensitively')
  const wrong = build(`- captcha: { provider: turnstile, secret: "not-the-secret", verify_url: "${p.url}" }`)
  t.teardown(() => wrong.guard.close?.())
  p.answers.set('t3', { success: true })
  t.equal(await codeOf(wrong.guard.check(ctxWith({ 'cf-turnstile-response': 't3' }))), 'CAPTCHA_INVALID', 'invalid-input-secret')
})

t.test('recaptcha v3: min_score and action', async (t) => {
  const p = await provider(t, PATHS.recaptcha)
  const { guard } = build(`- captcha: { provider: recaptcha, secret: "${SECRET}", verify_url: "${p.url}", min_score: 0.5, action: buy }`)
  t.teardown(() => guard.close?.())
  p.answers.set('low', { success: true, score: 0.3, action: 'buy' })
  p.answers.set('edge', { success: true, score: 0.5, action: 'buy' })
  p.answers.set('wrong-action', { success: true, score: 0.9, action: 'login' })
  p.answers.set('no-score', { success: true, action: 'buy' })
  p.answers.set('high', { success: true, score: 0.9, action: 'buy' })
  const run = (tok: string): Promise<string | undefined> => codeOf(guard.check(ctxWith({ 'g-recaptcha-response': tok })))
  t.equal(await run('low'), 'CAPTCHA_INVALID', 'score below min_score')
  t.equal(await run('wrong-action'), 'CAPTCHA_INVALID', 'wrong action')
  t.equal(await run('no-score'), 'CAPTCHA_INVALID', 'v2 answer where v3 is required')
  t.equal(await run('edge'), undefined, 'score == min_score passes')
  t.equal(await run('high'), undefined)
})

t.test('provider timeout, down, 5xx, garbage: on_error fail_closed (503 OVERLOADED) and fail_open', async (t) => {
  const p = await provider(t, PATHS.hcaptcha)
  p.answers.set('a', { success: true })
  p.answers.set('b', { success: true })
  const closed = build(`- captcha: { provider: hcaptcha, secret: "${SECRET}", verify_url: "${p.url}", timeout: 100ms }`)
  const open = build(`- captcha: { provider: hcaptcha, secret: "${SECRET}", verify_url: "${p.url}", timeout: 100ms, on_error: fail_open }`)
  t.teardown(async () => { await closed.guard.close?.(); await open.guard.close?.() })
  p.state.mode = 'slow'
  p.state.delayMs = 400
  const r = await closed.guard.check(ctxWith({ 'h-captcha-response': 'a' }))
  t.equal(r?.code, 'OVERLOADED', 'timeout → fail_closed (the slow provider would have said success)')
  t.equal(r?.status, 503)
  t.same(r?.headers, ['retry-after', '1'])
  t.equal(await codeOf(open.guard.check(ctxWith({ 'h-captcha-response': 'b' }))), undefined, 'timeout → fail_open passes')
  p.state.mode = 'garbage'
  t.equal(await codeOf(closed.guard.check(ctxWith({ 'h-captcha-response': 'c' }))), 'OVERLOADED', 'non-JSON answer is a provider failure')
  p.state.mode = 'status403'
  t.equal(await codeOf(closed.guard.check(ctxWith({ 'h-captcha-response': 'c' }))), 'OVERLOADED', 'non-200 answer is a provider failure')
  p.state.mode = 'fail500'
  const before = p.calls.length
  t.equal(await codeOf(closed.guard.check(ctxWith({ 'h-captcha-response': 'c' }))), 'OVERLOADED', '5xx')
  t.equal(p.calls.length - before, 1, 'hcaptcha has no idempotency key: no retry')
  p.state.mode = 'normal'
  await new Promise((resolve) => setTimeout(resolve, 450)) // let the slow answers drain
  const n = p.calls.length
  await closed.guard.check(ctxWith({ 'h-captcha-response': 'a' }))
  t.equal(p.calls.length, n + 1, 'a token whose check failed is not spent locally: it goes to the provider again')
  const metrics = await closed.deps.registry.getSingleMetricAsString('flashgate_captcha_verifications_total')
  t.match(metrics, /result="error_closed"\} 4/)
  const om = await open.deps.registry.getSingleMetricAsString('flashgate_captcha_verifications_total')
  t.match(om, /result="error_open"\} 1/)
  // provider down: nothing listens any more
  p.server.closeAllConnections()
  await new Promise((resolve) => p.server.close(resolve))
  t.equal(await codeOf(closed.guard.check(ctxWith({ 'h-captcha-response': 'd' }))), 'OVERLOADED', 'connection refused')
})

t.test('turnstile retries a 5xx once with the same idempotency_key', async (t) => {
  const p = await provider(t, PATHS.turnstile)
  p.answers.set('tok', { success: true })
  const { guard } = build(`- captcha: { provider: turnstile, secret: "${SECRET}", verify_url: "${p.url}", timeout: 1s }`)
  t.teardown(() => guard.close?.())
  p.state.mode = 'fail500once'
  t.equal(await codeOf(guard.check(ctxWith({ 'cf-turnstile-response': 'tok' }))), undefined)
  t.equal(p.calls.length, 2)
  t.equal(p.calls[0]?.form.idempotency_key, p.calls[1]?.form.idempotency_key)
  t.match(p.calls[0]?.form.idempotency_key ?? '', /^[0-9a-f-]{36}$/)
})

t.test('circuit breaker: fails fast after consecutive failures, one probe after the backoff', async (t) => {
  const p = await provider(t, PATHS.hcaptcha)
  let now = 0
  const v = createSiteverify({ provider: 'hcaptcha', secret: SECRET, verifyUrl: p.url, timeoutMs: 500, clock: () => now, breakerFailures: 3, breakerBackoffMs: 1000 })
  t.teardown(() => v.close())
  p.state.mode = 'fail500'
  for (let i = 0; i < 3; i++) await t.rejects(v.verify('x' + i, ''), { code: 'FG_ERR_CAPTCHA_UNAVAILABLE' })
  t.equal(v.healthy, false)
  const calls = p.calls.length
  await t.rejects(v.verify('y', ''), { code: 'FG_ERR_CAPTCHA_BREAKER_OPEN' })
  t.equal(p.calls.length, calls, 'no call while open')
  now = 1000
  p.state.mode = 'normal'
  p.answers.set('z', { success: true })
  t.same(await v.verify('z', ''), { ok: true, codes: [] }, 'the probe goes out and closes the breaker')
  t.equal(v.healthy, true)
  p.answers.set('w', { success: false, 'error-codes': ['invalid-input-response'] })
  t.same(await v.verify('w', '127.0.0.1'), { ok: false, codes: ['invalid-input-response'] }, 'a refusal is an answer, not a failure')
})

t.test('token from a query param and from a form field (body buffered and kept for the proxy)', async (t) => {
  const p = await provider(t, PATHS.turnstile)
  p.answers.set('q-tok', { success: true })
  p.answers.set('f-tok', { success: true })
  const q = build(`- captcha: { provider: turnstile, secret: "${SECRET}", verify_url: "${p.url}", token: query cft }`)
  t.teardown(() => q.guard.close?.())
  t.equal(await codeOf(q.guard.check(ctxWith({}, { query: 'a=1&cft=q-tok' }))), undefined)
  t.equal(await codeOf(q.guard.check(ctxWith({}, { query: 'a=1' }))), 'CAPTCHA_REQUIRED')

  const f = build(`- captcha: { provider: turnstile, secret: "${SECRET}", verify_url: "${p.url}", token: form cf-turnstile-response }`)
  t.teardown(() => f.guard.close?.())
  // a real HTTP server plays the gateway: build the context from the real request, run the guard
  const { port } = await listen((req, res) => {
    const ctx = makeCtx({ headers: req.headers as Record<string, string> })
    Object.assign(ctx, { req })
    void Promise.resolve(f.guard.check(ctx)).then((v) => {
      res.writeHead(v?.status ?? 200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ code: v?.code ?? null, body: ctx.body?.toString() ?? null }))
    })
  }, t)
  const post = (body: string, type = 'application/x-www-form-urlencoded'): Promise<{ status: number, json: { code: string | null, body: string | null } }> => new Promise((resolve, reject) => {
    const r = request({ host: '127.0.0.1', port, method: 'POST', path: '/buy/c1/p1', headers: { 'content-type': type, 'content-length': Buffer.byteLength(body) } }, (res) => {
      void readBody(res).then((s) => resolve({ status: res.statusCode ?? 0, json: JSON.parse(s) }))
    })
    r.on('error', reject)
    r.end(body)
  })
  const body = 'qty=1&cf-turnstile-response=f-tok&note=hello'
  let r = await post(body)
  t.same(r, { status: 200, json: { code: null, body } }, 'passes, and the whole body is left in ctx.body for the proxy')
  r = await post('qty=1')
  t.equal(r.json.code, 'CAPTCHA_REQUIRED')
  r = await post(JSON.stringify({ 'cf-turnstile-response': 'x' }), 'application/json')
  t.equal(r.json.code, 'CAPTCHA_REQUIRED', 'only urlencoded forms are read')
  r = await post('cf-turnstile-response=x&pad=' + 'a'.repeat(70 * 1024))
  t.same([r.status, r.json.code], [413, 'PAYLOAD_TOO_LARGE'], 'the buffered form is bounded')
})

t.test('clearance cookie: set after a verified token, accepted instead of one; tampered/foreign ignored', async (t) => {
  const p = await provider(t, PATHS.turnstile)
  p.answers.set('tok', { success: true })
  const { guard } = build(`- captcha: { provider: turnstile, secret: "${SECRET}", verify_url: "${p.url}", clearance: 120s }`)
  t.teardown(() => guard.close?.())
  const first = ctxWith({ 'cf-turnstile-response': 'tok', 'x-user-id': 'alice', 'x-forwarded-proto': 'https' })
  t.equal(await codeOf(guard.check(first)), undefined)
  const setCookie = first.extraHeaders?.[1] ?? ''
  t.equal(first.extraHeaders?.[0], 'set-cookie')
  t.match(setCookie, /^fg_clearance=\d+\.[A-Za-z0-9_-]{43}; Path=\/; Max-Age=120; HttpOnly; SameSite=Lax; Secure$/)
  const value = /^fg_clearance=([^;]+)/.exec(setCookie)?.[1] ?? ''
  const calls = p.calls.length
  const withCookie = (cookie: string, over: { user?: string, ip?: string, now?: number } = {}): Promise<string | undefined> =>
    codeOf(guard.check(ctxWith({ cookie: `a=b; fg_clearance=${cookie}`, 'x-user-id': over.user ?? 'alice' }, { ip: over.ip ?? '198.51.100.7', now: over.now ?? NOW })))
  t.equal(await withCookie(value), undefined, 'the cookie stands in for a token')
  t.equal(await withCookie(value, { now: NOW + 119_999 }), undefined, 'until just before it expires')
  t.equal(p.calls.length, calls, 'no provider call')
  t.equal(await withCookie(value, { now: NOW + 120_000 }), 'CAPTCHA_REQUIRED', 'expired')
  t.equal(await withCookie(value, { user: 'bob' }), 'CAPTCHA_REQUIRED', 'another user')
  t.equal(await withCookie(value, { ip: '198.51.100.8' }), 'CAPTCHA_REQUIRED', 'another address')
  const [exp, mac] = value.split('.') as [string, string]
  t.equal(await withCookie(`${Number(exp) + 60_000}.${mac}`), 'CAPTCHA_REQUIRED', 'extended expiry')
  t.equal(await withCookie(`${exp}.${mac.slice(0, 42)}B`), 'CAPTCHA_REQUIRED', 'changed MAC')
  t.equal(await withCookie('garbage'), 'CAPTCHA_REQUIRED', 'garbage')
  const forged = signClearance(Buffer.from('another-key-0123456789'), 'fg_clearance', 'alice', '198.51.100.7', NOW + 60_000)
  t.equal(await withCookie(forged), 'CAPTCHA_REQUIRED', 'signed with another key')
  const ours = signClearance(Buffer.from(SESSION_KEY), 'fg_clearance', 'alice', '198.51.100.7', NOW + 60_000)
  t.equal(await withCookie(ours), undefined, 'signed with secrets.session')
  const plain = ctxWith({ 'cf-turnstile-response': 'nope', 'x-user-id': 'carol' })
  p.answers.set('tok2', { success: true })
  const c2 = ctxWith({ 'cf-turnstile-response': 'tok2' })
  t.equal(await codeOf(guard.check(c2)), undefined)
  t.notMatch(c2.extraHeaders?.[1] ?? '', /Secure/, 'no Secure flag over plain HTTP')
  t.equal(await codeOf(guard.check(plain)), 'CAPTCHA_INVALID')
  t.equal(plain.extraHeaders, null, 'no cookie after a refused token')
})
