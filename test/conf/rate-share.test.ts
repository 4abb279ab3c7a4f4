/**
 * A rate limit's node-local bucket is a share of the limit (split across workers, or across every
 * gateway process for a cluster limit's fallback); a share the algorithms cannot represent is refused
 * at load, at the rate or burst, with the split that made it so.
 */
import t from 'tap'
import { loadConfigText } from '../../conf/load.js'

const yaml = (top: string, guard: string): string => `${top}
upstreams: { u: { targets: [http://127.0.0.1:9] } }
routes:
  - name: r
    upstream: u
    guards:
      - rate_limit: ${guard}
`
const errors = (text: string): string[] => { const r = loadConfigText(text, '/etc/fg.yaml', {}); return r.ok ? [] : r.errors }

t.test('leaky bucket: below 1 request per 1000s per worker is refused at the rate', async (t) => {
  t.same(errors(yaml('workers: 1', '{ rate: 1/500s, algorithm: leaky_bucket }')), [], 'one worker: 2 milli-requests/s, representable')
  t.same(errors(yaml('workers: 4', '{ rate: 1/500s, algorithm: leaky_bucket }')), [
    '/etc/fg.yaml:7:29: rate: "1/500s" is below the leaky bucket\'s resolution of 1 request per 1000s per worker (workers: 4), as nginx limit_req; use a higher rate or algorithm: token_bucket'
  ], 'four workers: each share is 0.5 milli-requests/s')
  t.same(errors(yaml('workers: 4', '{ rate: 1/500s }')), [], 'a token bucket has no such floor')
})

t.test('token bucket: burst × period must be a safe integer, for every split', async (t) => {
  t.same(errors(yaml('workers: 1', '{ rate: 1/365d, burst: 100000 }')), [], 'burst 100,000 × 365d fits')
  t.match(errors(yaml('workers: 1', '{ rate: 1/365d, burst: 1000000000 }')), [/^\/etc\/fg\.yaml:7:44: burst: burst \(1000000000\) × the rate's period \(31536000000ms\) is too large to count exactly/])
  t.match(errors(yaml('workers: 1', '{ rate: 1000000000/365d }')), [/^\/etc\/fg\.yaml:7:29: rate: burst \(1000000000\) × the rate's period/], 'the default burst (the count) is checked at the rate')
  t.match(errors(yaml('store: { kind: redis, gateway_nodes: 10000 }\nworkers: 1000', '{ rate: 1/365d, burst: 1, scope: cluster }')), [/too large to count exactly/], 'a cluster limit\'s fallback share, across 10,000 nodes × 1000 workers')
})
