import { Readable } from 'node:stream'
import t from 'tap'
import type { RateLimitGuardConfig } from '../../conf/types.js'
import { StoreError } from '../../conf/errors.js'
import { rejection } from '../../gateway/pipeline/reject.js'
import type { Guard, GuardFactory, Outcome, RequestContext } from '../../gateway/pipeline/types.js'
import { baseYaml, yamlConfig } from '../helpers/config.js'
import { client, fetchText, memoryAccessLog, startOrigin, startTestGateway } from '../helpers/gateway.js'

/**
 * Test guards, picked by the rate_limit guard's `name`: each records what it saw and what its
 * settler was told, so the runner's contract is checked on real requests.
 */
const SOLD = rejection('SOLD_OUT', 'sold out', { headers: ['x-guard', 'sold'] })
interface Seen { checks: string[], settled: Array<{ guard: string, outcome: Outcome }>, ips: string[], trusted: boolean[] }

function factory (seen: Seen): GuardFactory<RateLimitGuardConfig> {
  return (cfg, route): Guard => {
    const id = `${route.name}#${cfg.index}:${cfg.name}`
    const settle = (_ctx: RequestContext, outcome: Outcome): void => { seen.settled.push({ guard: id, outcome }) }
    const check = (ctx: RequestContext): ReturnType<Guard['check']> => {
      seen.checks.push(id)
      switch (cfg.name) {
        case 'record': seen.ips.push(ctx.clientIp); seen.trusted.push(ctx.peerTrusted); return undefined
        case 'settle': (ctx.settlers ??= []).push(settle); (ctx.extraHeaders ??= []).push('x-extra', 'yes'); return undefined
        case 'pass-async': return Promise.resolve(undefined)
        case 'reject': return SOLD
        case 'reject-async': return new Promise((resolve) => setTimeout(() => { resolve(SOLD) }, 5))
        case 'throw': throw new Error('boom')
        case 'store-error': return Promise.reject(new StoreError('FG_ERR_STORE_UNAVAILABLE', 'down'))
        default: return undefined
      }
    }
    return { kind: 'rate_limit', id, check }
  }
}

const g = (name: string, extra = ''): string => `      - rate_limit: { name: ${name}, rate: 1/s${extra} }\n`
const route = (name: string, guards: string, upstream = 'origin', more = ''): string =>
  `  - name: ${name}\n    match: { path: /${name} }\n${more}    upstream: ${upstream}\n    guards:\n${guards}`

t.test('guard runner, settlers, shadow, failures', async (t) => {
  const origin = await startOrigin(t)
  const routes = [
    route('pass', g('settle') + g('pass-async') + g('record')),
    route('later-reject', g('settle') + g('pass-async') + g('reject')),
    route('async-reject', g('settle') + g('reject-async')),
    route('shadow', g('settle') + g('reject', ', shadow: true') + g('reject-async', ', shadow: true') + g('record')),
    route('throws', g('settle') + g('throw')),
    route('store', g('settle') + g('store-error')),
    route('dead', g('settle'), 'dead')
  ].join('')
  const yaml = baseYaml(origin.url, routes, 'trusted_proxies: [127.0.0.1/32]\n').replace('upstreams:\n', 'upstreams:\n  dead:\n    targets: [{ url: "http://127.0.0.1:1" }]\n    retries: 0\n')
  const seen: Seen = { checks: [], settled: [], ips: [], trusted: [] }
  const log = memoryAccessLog()
  const gw = await startTestGateway(t, { config: yamlConfig(yaml), factories: { rate_limit: factory(seen) }, accessLog: log })
  const d = client(t)
  const reset = (): void => { seen.checks.length = 0; seen.settled.length = 0; seen.ips.length = 0; seen.trusted.length = 0 }

  let a = await fetchText(d, gw.url + '/pass')
  t.equal(a.status, 200)
  t.equal(a.headers['x-extra'], 'yes', 'extra headers reach a proxied answer')
  t.same(seen.checks, ['pass#0:settle', 'pass#1:pass-async', 'pass#2:record'])
  t.same(seen.settled, [{ guard: 'pass#0:settle', outcome: { kind: 'upstream', status: 200 } }])

  reset()
  a = await fetchText(d, gw.url + '/later-reject')
  t.equal(a.status, 409)
  t.same(a.json, { code: 'SOLD_OUT', message: 'sold out' })
  t.equal(a.headers['x-guard'], 'sold')
  t.equal(a.headers['x-extra'], 'yes', 'extra headers reach a rejection')
  t.equal(a.headers['cache-control'], 'no-store')
  t.equal(seen.settled.length, 1)
  t.equal(seen.settled[0]?.outcome.kind, 'rejected')
  t.equal((seen.settled[0]?.outcome as { rejection: { code: string } }).rejection.code, 'SOLD_OUT')

  reset()
  a = await fetchText(d, gw.url + '/async-reject')
  t.equal(a.status, 409)
  t.equal(seen.settled[0]?.outcome.kind, 'rejected')

  reset()
  a = await fetchText(d, gw.url + '/shadow')
  t.equal(a.status, 200, 'shadow guards reject nothing')
  t.same(seen.checks, ['shadow#0:settle', 'shadow#1:reject', 'shadow#2:reject-async', 'shadow#3:record'], 'every guard after a shadow one still runs')
  const shadowText = await gw.metrics.registry.getSingleMetricAsString('flashgate_shadow_rejections_total')
  t.match(shadowText, /route="shadow",guard="shadow#1:reject",code="SOLD_OUT"\} 1/)
  t.match(shadowText, /route="shadow",guard="shadow#2:reject-async",code="SOLD_OUT"\} 1/)

  reset()
  a = await fetchText(d, gw.url + '/throws')
  t.equal(a.status, 500)
  t.equal(a.json.code, 'INTERNAL_ERROR')
  t.equal(seen.settled[0]?.outcome.kind, 'rejected')

  reset()
  a = await fetchText(d, gw.url + '/store')
  t.equal(a.status, 503)
  t.equal(a.json.code, 'STORE_UNAVAILABLE')
  t.equal(seen.settled.length, 1)

  reset()
  a = await fetchText(d, gw.url + '/dead')
  t.equal(a.status, 502)
  t.equal(a.json.code, 'UPSTREAM_UNAVAILABLE')
  t.same(seen.settled[0]?.outcome, { kind: 'failed', code: 'UPSTREAM_UNAVAILABLE' })

  // X-Forwarded-For: believed from a trusted peer (127.0.0.1 here), walked from the right
  reset()
  await fetchText(d, gw.url + '/pass', { headers: { 'x-forwarded-for': '198.51.100.7, 127.0.0.1' } })
  await fetchText(d, gw.url + '/pass', { headers: { 'x-forwarded-for': '10.9.9.9, 198.51.100.8' } })
  await fetchText(d, gw.url + '/pass', { headers: { 'x-forwarded-for': 'garbage, 127.0.0.5' } })
  t.same(seen.ips, ['198.51.100.7', '198.51.100.8', '127.0.0.5'])
  t.same(seen.trusted, [true, true, true])

  const requests = await gw.metrics.registry.getSingleMetricAsString('flashgate_requests_total')
  t.match(requests, /route="later-reject",outcome="SOLD_OUT"\} 1/)
  t.match(requests, /route="throws",outcome="INTERNAL_ERROR"\} 1/)
  t.match(requests, /route="dead",outcome="UPSTREAM_UNAVAILABLE"\} 1/)
  t.match(requests, /route="pass",outcome="passed"\} 4/)
  t.equal(gw.frontend.inflight, 0, 'every request settled')

  // access log lines: no query string, the fields we promise
  await fetchText(d, gw.url + '/pass?token=SECRET&captcha=XYZ', { headers: { cookie: 'session=SECRET2' } })
  const last = log.entries.at(-1)
  t.match(last, { route: 'pass', method: 'GET', path: '/pass', status: 200, outcome: 'passed', upstream: 'origin', target: origin.url, ip: '127.0.0.1' })
  t.type(last?.durationMs, 'number')
  t.notMatch(JSON.stringify(log.entries), /SECRET|XYZ/, 'no query strings or cookies in the access log')
  t.ok(log.entries.some((e) => e.route === 'store' && e.status === 503 && e.outcome === 'STORE_UNAVAILABLE'))
})

t.test('XFF ignored from untrusted peers', async (t) => {
  const origin = await startOrigin(t)
  const seen: Seen = { checks: [], settled: [], ips: [], trusted: [] }
  const gw = await startTestGateway(t, {
    config: yamlConfig(baseYaml(origin.url, route('pass', g('record')), 'trusted_proxies: [10.0.0.0/8]\n')),
    factories: { rate_limit: factory(seen) }
  })
  const d = client(t)
  await fetchText(d, gw.url + '/pass', { headers: { 'x-forwarded-for': '198.51.100.7' } })
  t.same(seen.ips, ['127.0.0.1'])
  t.same(seen.trusted, [false])
})

t.test('body size limit: 413 on Content-Length and on a streamed body', async (t) => {
  const origin = await startOrigin(t)
  const seen: Seen = { checks: [], settled: [], ips: [], trusted: [] }
  const routes = route('small', g('settle'), 'origin', '    max_body_size: 1kb\n') + route('open', g('settle'))
  const gw = await startTestGateway(t, { config: yamlConfig(baseYaml(origin.url, routes)), factories: { rate_limit: factory(seen) } })
  const d = client(t)

  let a = await fetchText(d, gw.url + '/small', { method: 'POST', body: Buffer.alloc(1024) })
  t.equal(a.status, 200, 'at the limit passes')
  const before = origin.seen.length
  a = await fetchText(d, gw.url + '/small', { method: 'POST', body: Buffer.alloc(1025) })
  t.equal(a.status, 413)
  t.equal(a.json.code, 'PAYLOAD_TOO_LARGE')
  t.equal(origin.seen.length, before, 'never proxied')

  // chunked (no Content-Length): counted while streaming, cut at the limit
  seen.settled.length = 0
  const chunks = function * (): Generator<Buffer> { for (let i = 0; i < 8; i++) yield Buffer.alloc(512) }
  let status: number | string
  try {
    status = (await fetchText(d, gw.url + '/small', { method: 'POST', body: Readable.from(chunks()) })).status
  } catch (err) {
    status = (err as { code?: string }).code ?? 'error'
  }
  t.ok(status === 413 || typeof status === 'string', `over-limit stream answered 413 or cut (${status})`)
  await new Promise((resolve) => setTimeout(resolve, 50))
  t.equal(seen.settled.length, 1)
  t.equal(seen.settled[0]?.outcome.kind, 'rejected', 'the settler is told the request was rejected')
  t.notOk(origin.seen.some((s) => s.bodyBytes > 1024), 'the origin never got more than the limit as a complete request')

  const small = function * (): Generator<Buffer> { yield Buffer.alloc(300); yield Buffer.alloc(300) }
  a = await fetchText(d, gw.url + '/small', { method: 'POST', body: Readable.from(small()) })
  t.equal(a.status, 200, 'a streamed body under the limit passes')
  t.equal(a.json.bodyBytes, 600)
  t.equal(gw.frontend.inflight, 0)
})
