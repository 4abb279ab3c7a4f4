import t from 'tap'
import { createSecretKey } from 'node:crypto'
import { createEdgeHandlers } from '../../gateway/edge/handlers.js'
import { signedLinkGuard } from '../../gateway/guards/signed-link.js'
import { signLinkQuery, linkMessage } from '../../antibot/signed-link.js'
import type { LinkClaims } from '../../antibot/signed-link.js'
import { LINK_KEY, LINK_KEY2, codeOf, guardOf, loadYaml, makeCtx, makeDeps, routeYaml } from './helpers.js'
import { listen } from './server.js'

const START = Date.UTC(2030, 0, 1, 12)
const END = Date.UTC(2030, 0, 1, 13)
const NOW = Date.UTC(2030, 0, 1, 12, 30)
const EXP = END + 60_000

const config = loadYaml(routeYaml('- signed_link: {}'))
const deps = makeDeps(config)
const { route, cfg } = guardOf(config, 'signed_link')
const guard = signedLinkGuard(cfg, route, deps)
const k1 = createSecretKey(Buffer.from(LINK_KEY))
const k2 = createSecretKey(Buffer.from(LINK_KEY2))

const base: LinkClaims = { method: 'POST', path: '/buy/c1/p1', user: 'alice', campaign: 'c1', product: 'p1', expiresAt: EXP }

function q (over: Partial<LinkClaims> = {}, kid = 'k1', key = k1): string {
  return signLinkQuery(kid, key, { ...base, ...over })
}

function check (query: string, init: { path?: string, user?: string | null, method?: string, now?: number, params?: Record<string, string> } = {}): Promise<string | undefined> {
  const headers: Record<string, string> = {}
  if (init.user !== null) headers['x-user-id'] = init.user ?? 'alice'
  return codeOf(guard.check(makeCtx({
    path: init.path ?? '/buy/c1/p1',
    query,
    headers,
    method: init.method ?? 'POST',
    now: init.now ?? NOW,
    ...(init.params === undefined ? {} : { params: init.params })
  })))
}

function withParam (query: string, name: string, value: string): string {
  const p = new URLSearchParams(query)
  p.set(name, value)
  return p.toString()
}
function without (query: string, name: string): string {
  const p = new URLSearchParams(query)
  p.delete(name)
  return p.toString()
}

t.test('a genuine link passes; the signature covers length-prefixed fields', async (t) => {
  t.equal(await check(q()), undefined)
  t.not(linkMessage({ ...base, user: 'a|b', campaign: 'c' }), linkMessage({ ...base, user: 'a', campaign: 'b|c' }))
})

t.test('tamper table → LINK_INVALID', async (t) => {
  const good = q()
  const sig = new URLSearchParams(good).get('sig') as string
  t.equal(sig.length, 43)
  // the last base64url char of a 32-byte MAC carries 2 unused bits: a variant with them set decodes to the same bytes
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
  const lastIdx = alphabet.indexOf(sig[42] as string)
  const nonCanonical = sig.slice(0, 42) + alphabet[(lastIdx & ~3) | ((lastIdx & 3) ^ 1)]
  const flipped = sig.slice(0, 10) + (sig[10] === 'A' ? 'B' : 'A') + sig.slice(11)
  const rows: Array<[string, Promise<string | undefined>]> = [
    ['path changed (same params)', check(good, { path: '/buy/c1/p1/', params: { campaign: 'c1', product: 'p1' } })],
    ['another user', check(good, { user: 'mallory' })],
    ['another product', check(good, { path: '/buy/c1/p2' })],
    ['another campaign', check(good, { path: '/buy/c2/p1' })],
    ['another method', check(good, { method: 'PUT' })],
    ['expiry changed', check(withParam(good, 'expires', String(EXP + 1)))],
    ['expiry with a leading zero', check(withParam(good, 'expires', '0' + String(EXP)))],
    ['expiry not numeric', check(withParam(good, 'expires', 'soon'))],
    ['kid of another (known) key', check(withParam(good, 'kid', 'k2'))],
    ['unknown kid', check(withParam(good, 'kid', 'k9'))],
    ['signature truncated', check(withParam(good, 'sig', sig.slice(0, 42)))],
    ['signature padded with =', check(withParam(good, 'sig', sig + '='))],
    ['signature with an extra char', check(withParam(good, 'sig', sig + 'A'))],
    ['signature in standard base64', check(withParam(good, 'sig', Buffer.from(sig, 'base64url').toString('base64')))],
    ['signature with a non-base64url char', check(withParam(good, 'sig', sig.slice(0, 42) + '!'))],
    ['signature non-canonical last char', check(withParam(good, 'sig', nonCanonical))],
    ['one signature char flipped', check(withParam(good, 'sig', flipped))],
    ['signature empty', check(withParam(good, 'sig', ''))],
    ['no sig', check(without(good, 'sig'))],
    ['no kid', check(without(good, 'kid'))],
    ['no expires', check(without(good, 'expires'))],
    ['no query at all', check('')]
  ]
  t.not(nonCanonical, sig)
  for (const [name, p] of rows) t.equal(await p, 'LINK_INVALID', name)
  t.equal(await check(good), undefined, 'the untouched link still passes')
})

t.test('no user → UNAUTHENTICATED', async (t) => {
  t.equal(await check(q(), { user: null }), 'UNAUTHENTICATED')
})

t.test('expiry at the exact boundary: expires_at itself is expired', async (t) => {
  t.equal(await check(q(), { now: EXP - 1 }), undefined, 'one ms before')
  t.equal(await check(q(), { now: EXP }), 'LINK_EXPIRED', 'at expires_at')
  t.equal(await check(q(), { now: EXP + 1 }), 'LINK_EXPIRED', 'after')
  t.equal(await check(withParam(q(), 'expires', String(EXP + 5)), { now: EXP + 1 }), 'LINK_INVALID', 'a tampered expired link is invalid, not expired')
})

t.test('key rotation: the first key signs, all verify', async (t) => {
  t.equal(await check(q({}, 'k2', k2)), undefined, 'a link signed with k2 verifies while k2 is listed')
  const rotated = loadYaml(routeYaml('- signed_link: {}', { linkKeys: '{ k2: "${FG_LINK_K2}", k1: "${FG_LINK_K1}" }' }))
  const rdeps = makeDeps(rotated)
  const g2 = guardOf(rotated, 'signed_link')
  const rguard = signedLinkGuard(g2.cfg, g2.route, rdeps)
  const run = (query: string): Promise<string | undefined> => codeOf(rguard.check(makeCtx({ query, headers: { 'x-user-id': 'alice' }, now: NOW })))
  t.equal(await run(q()), undefined, 'old k1 links still verify after k2 became the signer')
  const only2 = loadYaml(routeYaml('- signed_link: {}', { linkKeys: '{ k2: "${FG_LINK_K2}" }' }))
  const g3 = guardOf(only2, 'signed_link')
  const oguard = signedLinkGuard(g3.cfg, g3.route, makeDeps(only2))
  t.equal(await codeOf(oguard.check(makeCtx({ query: q(), headers: { 'x-user-id': 'alice' }, now: NOW }))), 'LINK_INVALID', 'k1 links die once k1 is removed')
  // the edge endpoint signs with the first key
  const handlers = createEdgeHandlers(rdeps)
  const { url } = await listen((req, res) => { void handlers['/_flashgate/link']?.(req, res, { clientIp: '127.0.0.1', now: NOW, query: new URL(req.url ?? '/', 'http://x').searchParams }) }, t)
  const body = await (await fetch(`${url}/_flashgate/link?campaign=c1&product=p1`, { headers: { 'x-user-id': 'alice' } })).json() as { url: string }
  t.equal(new URL(body.url, 'http://x').searchParams.get('kid'), 'k2')
})

t.test('single_use: a link works once, on the store', async (t) => {
  const c = loadYaml(routeYaml('- signed_link: { single_use: true }'))
  const d = makeDeps(c)
  const g = guardOf(c, 'signed_link')
  const sguard = signedLinkGuard(g.cfg, g.route, d)
  const run = (query: string, fresh = false): Promise<string | undefined> => {
    const gd = fresh ? signedLinkGuard(g.cfg, g.route, d) : sguard
    return codeOf(gd.check(makeCtx({ query, headers: { 'x-user-id': 'alice' }, now: NOW })))
  }
  const link = q({ nonce: 'AAAAAAAAAAAAAAAA' })
  t.equal(await run(q()), 'LINK_INVALID', 'a link without a nonce is refused by a single_use guard')
  t.equal(await run(withParam(link, 'nonce', 'AAAAAAAAAAAAAAAB')), 'LINK_INVALID', 'nonce is signed')
  t.equal(await run(link), undefined, 'first use')
  t.equal(await run(link), 'LINK_INVALID', 'second use, same node (local cache)')
  t.equal(await run(link, true), 'LINK_INVALID', 'second use seen by another guard instance (store)')
})

t.test('edge /_flashgate/link: window edges, identity, unknown ids, and the link passes the guard', async (t) => {
  const d = makeDeps(config)
  const handlers = createEdgeHandlers(d)
  const { url } = await listen((req, res) => {
    void handlers['/_flashgate/link']?.(req, res, { clientIp: '127.0.0.1', now: d.clock(), query: new URL(req.url ?? '/', 'http://x').searchParams })
  }, t)
  const get = async (qs: string, user: string | null = 'alice', method = 'GET'): Promise<{ status: number, body: Record<string, unknown> }> => {
    const r = await fetch(`${url}/_flashgate/link?${qs}`, { method, headers: user === null ? {} : { 'x-user-id': user } })
    t.equal(r.headers.get('cache-control'), 'no-store')
    return { status: r.status, body: await r.json() as Record<string, unknown> }
  }
  const reveal = START - 60_000
  d.setNow(reveal - 1)
  let r = await get('campaign=c1&product=p1')
  t.same([r.status, r.body.code], [409, 'NOT_STARTED'], 'one ms before the reveal')
  t.equal(r.body.now, reveal - 1)
  t.equal(r.body.starts_in, 61)
  t.equal(r.body.reveal_in, 1)
  d.setNow(reveal)
  r = await get('campaign=c1&product=p1')
  t.equal(r.status, 200, 'at starts_at - link_reveal')
  t.equal(r.body.expires_at, EXP, 'expires link_grace after ends_at')
  const link = new URL(r.body.url as string, 'http://x')
  t.equal(link.pathname, '/buy/c1/p1')
  const pass = (u: URL, user: string, now: number): Promise<string | undefined> =>
    codeOf(guard.check(makeCtx({ path: u.pathname, query: u.search.slice(1), headers: { 'x-user-id': user }, now })))
  t.equal(await pass(link, 'alice', NOW), undefined, 'the issued link passes the guard')
  t.equal(await pass(link, 'bob', NOW), 'LINK_INVALID', 'but not for bob')
  d.setNow(END - 1)
  t.equal((await get('campaign=c1&product=p2')).status, 200, 'one ms before ends_at')
  d.setNow(END)
  r = await get('campaign=c1&product=p1')
  t.same([r.status, r.body.code], [409, 'ENDED'], 'at ends_at')
  d.setNow(NOW)
  t.equal((await get('campaign=c1&product=p1', null)).body.code, 'UNAUTHENTICATED')
  t.equal((await get('campaign=zz&product=p1')).status, 404)
  t.equal((await get('campaign=c1&product=p9')).status, 404)
  t.equal((await get('campaign=c1')).status, 400)
  t.equal((await get('campaign=c1&product=p1', 'alice', 'POST')).status, 405)
})

t.test('link_ttl shortens the link; a link route without signed_link guard → 404', async (t) => {
  const c = loadYaml(routeYaml('- signed_link: {}').replace('link_reveal: 60s', 'link_reveal: 60s\n    link_ttl: 30s'))
  const d = makeDeps(c)
  const handlers = createEdgeHandlers(d)
  const { url } = await listen((req, res) => { void handlers['/_flashgate/link']?.(req, res, { clientIp: '127.0.0.1', now: NOW, query: new URL(req.url ?? '/', 'http://x').searchParams }) }, t)
  const body = await (await fetch(`${url}/_flashgate/link?campaign=c1&product=p1`, { headers: { 'x-user-id': 'alice' } })).json() as { expires_at: number }
  t.equal(body.expires_at, NOW + 30_000)
  const none = loadYaml(routeYaml('- campaign_window: {}'))
  const h2 = createEdgeHandlers(makeDeps(none))
  const s2 = await listen((req, res) => { void h2['/_flashgate/link']?.(req, res, { clientIp: '127.0.0.1', now: NOW, query: new URL(req.url ?? '/', 'http://x').searchParams }) }, t)
  t.equal((await fetch(`${s2.url}/_flashgate/link?campaign=c1&product=p1`, { headers: { 'x-user-id': 'alice' } })).status, 404)
})

t.test('hmacB64url is HMAC-SHA256 (RFC 2104): the same as createHmac for every key and message length', async (t) => {
  const { createHmac, randomBytes } = await import('node:crypto')
  const { hmacB64url, macMatches } = await import('../../antibot/util.js')
  const messages = ['', 'a', 'fg-link|v1|4:POST|', 'ünïcødé ✓ 秒杀 \u{1F600}', 'lone surrogate \uD800 end', 'x'.repeat(1023), 'y'.repeat(1024), 'é'.repeat(1500), 'z'.repeat(5000)]
  let n = 0
  for (const len of [1, 16, 32, 63, 64, 65, 100, 200]) {
    const raw = randomBytes(len)
    for (const key of [raw, createSecretKey(raw)]) {
      for (const m of messages) {
        const want = createHmac('sha256', key).update(m).digest('base64url')
        if (hmacB64url(key, m) !== want) t.fail(`key ${len} bytes (${Buffer.isBuffer(key) ? 'Buffer' : 'KeyObject'}), message of ${m.length}: differs`)
        if (!macMatches(key, m, want)) t.fail(`macMatches refuses the right MAC (key ${len}, message ${m.length})`)
        n++
      }
    }
  }
  // Calls in a row reuse the per-key scratch: a long message then a short one must not leak bytes.
  const key = createSecretKey(randomBytes(32))
  hmacB64url(key, 'q'.repeat(900))
  t.equal(hmacB64url(key, 'short'), createHmac('sha256', key).update('short').digest('base64url'), 'no bytes left over from a longer message')
  t.equal(n, 8 * 2 * messages.length, 'every combination compared')
})
