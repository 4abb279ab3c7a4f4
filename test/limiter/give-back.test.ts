/**
 * Give-back as lua-resty-limit-traffic does it: a rate limit's token goes back only when a later limit
 * rejects the request, or the store or the upstream fails it — never when a guard judged the client.
 * The case through the real gateway: a per-IP limit (1/m, burst 2) before signed_link, ten
 * requests with a bad link from one address → 403 LINK_INVALID twice, then 429 RATE_LIMITED.
 */
import t from 'tap'
import { limitGivesBack } from '../../gateway/pipeline/settle.js'
import { rejection } from '../../gateway/pipeline/reject.js'
import type { Outcome, RejectCode } from '../../gateway/pipeline/types.js'
import { client, fetchText, memoryAccessLog, startOrigin, startTestGateway } from '../helpers/gateway.js'
import { loadYaml } from '../antibot/helpers.js'

t.test('limitGivesBack: later limits and failures give back, judgements of the client do not', async (t) => {
  const rej = (code: RejectCode): Outcome => ({ kind: 'rejected', rejection: rejection(code, 'x') })
  for (const code of ['RATE_LIMITED', 'STORE_UNAVAILABLE', 'UPSTREAM_UNAVAILABLE', 'UPSTREAM_TIMEOUT', 'OVERLOADED', 'INTERNAL_ERROR'] as const) {
    t.equal(limitGivesBack(rej(code)), true, `${code} gives the token back`)
  }
  for (const code of ['BLOCKED', 'CAPTCHA_REQUIRED', 'CAPTCHA_INVALID', 'LINK_INVALID', 'LINK_EXPIRED', 'DUPLICATE', 'NOT_STARTED', 'ENDED', 'SOLD_OUT', 'UNAUTHENTICATED', 'BAD_REQUEST', 'NOT_FOUND', 'PAYLOAD_TOO_LARGE'] as const) {
    t.equal(limitGivesBack(rej(code)), false, `${code} keeps the token spent`)
  }
  t.equal(limitGivesBack({ kind: 'rejected', rejection: { ...rejection('BLOCKED', 'x'), code: 'QUEUE_REQUIRED' } }), false, 'QUEUE_REQUIRED keeps it')
  t.equal(limitGivesBack({ kind: 'failed', code: 'UPSTREAM_TIMEOUT' }), true, 'no upstream answer')
  t.equal(limitGivesBack({ kind: 'failed', code: 'CLIENT_ABORTED' }), false, 'the client leaving is not a failure of ours')
  t.equal(limitGivesBack({ kind: 'upstream', status: 502 }), true, 'upstream 5xx')
  t.equal(limitGivesBack({ kind: 'upstream', status: 429 }), true, "the upstream's own limit")
  for (const status of [200, 202, 400, 403, 409]) t.equal(limitGivesBack({ kind: 'upstream', status }), false, `upstream ${status} keeps it`)
})

const gatewayYaml = (origin: string, guards: string, scope = 'node'): string => {
  const now = Date.now()
  return `
listen: 127.0.0.1:0
store: { kind: memory }
identity: { user: header x-user-id }
secrets:
  link_keys: { k1: "\${FG_LINK_K1}" }
upstreams:
  purchase:
    targets: [{ url: "${origin}" }]
    retries: 0
campaigns:
  - id: c1
    starts_at: ${new Date(now - 60_000).toISOString()}
    ends_at: ${new Date(now + 3_600_000).toISOString()}
    products:
      - { id: p1, quota: 100 }
routes:
  - name: buy
    match: { path: /buy/:campaign/:product, methods: [POST] }
    guards:
      - rate_limit: { name: per-ip, key: ip, rate: 1/m, burst: 2, scope: ${scope} }
${guards}
    upstream: purchase
`
}

for (const scope of ['node', 'cluster']) {
  t.test(`the issue's case (scope ${scope}): 10 bad-link requests from one IP → 429 from the third on`, async (t) => {
    const origin = await startOrigin(t)
    const config = loadYaml(gatewayYaml(origin.url, '      - signed_link: {}', scope))
    const gw = await startTestGateway(t, { config, admin: null, accessLog: memoryAccessLog() })
    const http = client(t)
    const codes: string[] = []
    for (let i = 0; i < 10; i++) {
      const r = await fetchText(http, `${gw.url}/buy/c1/p1?exp=9999999999&kid=k1&sig=AAAA`, { method: 'POST', headers: { 'x-user-id': `guesser-${i}` } })
      codes.push(`${r.status} ${String(r.json?.code)}`)
    }
    t.same(codes.slice(0, 2), ['403 LINK_INVALID', '403 LINK_INVALID'], 'the burst of 2 is spent on two bad links')
    t.same(codes.slice(2), Array(8).fill('429 RATE_LIMITED'), 'from the third request on: 429, the link guard never sees them')
    t.equal(origin.seen.length, 0, 'nothing reached the upstream')
  })
}

t.test('a later limit, the upstream failing and an upstream 5xx give the token back; DUPLICATE does not', async (t) => {
  let status = 502
  const origin = await startOrigin(t, (req, res) => {
    req.resume()
    req.on('end', () => { res.writeHead(status, { 'content-type': 'application/json' }).end('{}') })
  })
  const config = loadYaml(gatewayYaml(origin.url, `      - rate_limit: { name: inner, rate: 1/m, burst: 1 }
      - dedupe: { ttl: 1h }`))
  const gw = await startTestGateway(t, { config, admin: null, accessLog: memoryAccessLog() })
  const http = client(t)
  const buy = async (user: string): Promise<string> => {
    const r = await fetchText(http, `${gw.url}/buy/c1/p1`, { method: 'POST', headers: { 'x-user-id': user } })
    const policy = r.headers['ratelimit-policy']
    return `${r.status} ${String(r.json?.code ?? '')}${typeof policy === 'string' ? ' ' + policy.split(';')[0] : ''}`.trim()
  }
  // 502 from the upstream: both limits and the dedupe mark give back, so the same user can try again
  t.equal(await buy('a'), '502', 'upstream 5xx')
  t.equal(await buy('a'), '502', 'again: per-ip and inner tokens were given back, the mark was released')
  // the inner (global) limit now rejects, which gives the per-ip token back each time
  status = 202
  t.equal(await buy('b'), '202', 'inner limit spends its only token')
  // per-ip burst 2: b's 202 spent one; were the inner 429s not giving theirs back, the second would come from per-ip
  for (let i = 0; i < 5; i++) t.equal(await buy(`c${i}`), '429 RATE_LIMITED "inner"', 'the inner limit rejects, and the per-ip token is returned')
})

t.test('DUPLICATE keeps the per-ip token spent', async (t) => {
  const origin = await startOrigin(t)
  const config = loadYaml(gatewayYaml(origin.url, '      - dedupe: { ttl: 1h }'))
  const gw = await startTestGateway(t, { config, admin: null, accessLog: memoryAccessLog() })
  const http = client(t)
  const codes: string[] = []
  for (let i = 0; i < 5; i++) {
    const r = await fetchText(http, `${gw.url}/buy/c1/p1`, { method: 'POST', headers: { 'x-user-id': 'hammer' } })
    codes.push(`${r.status} ${String(r.json?.code ?? '')}`.trim())
  }
  t.same(codes, ['200', '409 DUPLICATE', '429 RATE_LIMITED', '429 RATE_LIMITED', '429 RATE_LIMITED'], 'a DUPLICATE spends a token: hammering is slowed')
})
