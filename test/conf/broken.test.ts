// About 50 broken configs (test/conf/broken-cases.ts), each written to a file and loaded as serve,
// reload and validate load it: every one is refused with its exact FILE:LINE:COL message, and nothing
// else is reported.
import t from 'tap'
import { loadConfigFile } from '../../conf/load.js'
import { tempDir } from '../helpers/config.js'
import { CASES } from './broken-cases.js'

const WANT: Record<string, (F: string) => string[]> = {
  "empty file": (F) => [`${F}:1:1: the config file is empty`],
  "only a comment": (F) => [`${F}:1:1: the config file is empty`],
  "no routes": (F) => [`${F}:1:1: no routes: the gateway would answer 404 NOT_FOUND to every request (add routes:)`],
  "routes: empty list": (F) => [`${F}:3:1: no routes: the gateway would answer 404 NOT_FOUND to every request (add routes:)`],
  "top level is a list": (F) => [`${F}:1:1: config: expected a map, got a list`],
  "top level is a scalar": (F) => [`${F}:1:1: config: expected a map, got the string "hello"`],
  "tab indentation": (F) => [`${F}:3:1: YAML: Tabs are not allowed as indentation`],
  "unclosed flow map": (F) => [`${F}:2:1: YAML: Flow map in block collection must be sufficiently indented and end with a }`],
  "unclosed quote": (F) => [`${F}:6:1: YAML: Missing closing "quote`],
  "duplicate key": (F) => [`${F}:2:1: YAML: Map keys must be unique`],
  "unknown top key": (F) => [`${F}:1:1: unknown key "lisen" in config (did you mean "listen"?)`],
  "unknown server key": (F) => [`${F}:1:11: unknown key "header_timeout" in server (did you mean "headers_timeout"?)`],
  "server parser unknown": (F) => [`${F}:1:19: parser: expected one of node, strict, got "llhttp"`],
  "upstream client unknown": (F) => [`${F}:2:47: client: expected one of undici, raw, got "curl"`],
  "upstream client raw with https": (F) => [`${F}:2:48: client: raw speaks http:// only (target https://127.0.0.1:1); use client: undici for https targets`],
  "unknown upstream key": (F) => [`${F}:2:39: unknown key "timeot" in upstream "u" (did you mean "timeout"?)`],
  "unknown route key": (F) => [`${F}:4:56: unknown key "guard" in route (did you mean "guards"?)`],
  "unknown match key": (F) => [`${F}:4:25: unknown key "prefix" in match`],
  "bad listen": (F) => [`${F}:1:9: listen: invalid address "localhost" (expected HOST:PORT, e.g. 0.0.0.0:8080 or [::1]:9090)`],
  "listen port too big": (F) => [`${F}:1:9: listen: invalid address "127.0.0.1:70000": port 70000 is above 65535`],
  "admin not loopback without token": (F) => [`${F}:1:8: admin: listening on non-loopback address 0.0.0.0 needs admin_token (or bind it to 127.0.0.1)`],
  "workers zero": (F) => [`${F}:1:10: workers: 0 is out of range (1..1024)`],
  "workers words": (F) => [`${F}:1:10: workers: expected a number or auto, got "many"`],
  "store kind unknown": (F) => [`${F}:1:16: kind: expected one of memory, redis, redis-cluster, got "etcd"`],
  "store url bad": (F) => [`${F}:1:28: url: expected a redis://HOST:PORT or rediss://HOST:PORT URL`],
  "store timeout no unit": (F) => [`${F}:1:33: timeout: duration "50" needs a unit (ms, s, m, h, d), e.g. 50s or 50ms`],
  "trusted_proxies bad cidr": (F) => [`${F}:1:19: trusted_proxies: invalid CIDR "10.0.0.0/33": prefix length must be 0..32`],
  "headers_timeout > request_timeout": (F) => [`${F}:1:28: headers_timeout: must not be longer than request_timeout`],
  "body_timeout zero": (F) => [`${F}:1:25: body_timeout: must be at least 1ms`],
  "body_buffer_size words": (F) => [`${F}:1:29: body_buffer_size: invalid size "lots" (expected e.g. 512, 16kb, 1mb, 1gb)`],
  "max_header_size too small": (F) => [`${F}:1:28: max_header_size: must be at least 1024 bytes`],
  "upstream without targets": (F) => [`${F}:2:17: targets: needs at least one target`],
  "upstream target not http": (F) => [`${F}:2:18: url: "ftp://127.0.0.1:1" must be http:// or https://`],
  "upstream queue negative": (F) => [`${F}:2:46: queue: -1 is out of range (0..1000000)`],
  "upstream connections zero": (F) => [`${F}:2:52: connections: 0 is out of range (1..100000)`],
  "upstream balance unknown": (F) => [`${F}:2:48: balance: expected round_robin, least_conn or hash header NAME, got "random"`],
  "route without name": (F) => [`${F}:4:5: route is missing required key "name"`],
  "route without upstream": (F) => [`${F}:4:5: route "r" is missing required key "upstream"`],
  "route upstream undefined": (F) => [`${F}:4:53: upstream "v" is not defined (did you mean "u"?)`],
  "route name with a space": (F) => [`${F}:4:13: name: "a b" must be letters, digits, and . _ - (it is a metrics label)`],
  "duplicate route name": (F) => [`${F}:5:13: duplicate route name "r" (first defined at ${F}:4:13)`],
  "path without slash": (F) => [`${F}:4:31: path: must start with /`],
  "path and path_prefix": (F) => [`${F}:4:48: match: use either path or path_prefix, not both`],
  "param twice": (F) => [`${F}:4:31: path: param :x appears twice`],
  "method not a word": (F) => [`${F}:4:45: methods: "G-T" is not an HTTP method`],
  "methods empty": (F) => [`${F}:4:44: methods: needs at least one method (leave methods out to match any)`],
  "host with a port": (F) => [`${F}:4:31: host: "a.test:80" must be a host name or *.domain (no port, no scheme)`],
  "unknown guard": (F) => [`${F}:4:61: unknown guard "ratelimit" (did you mean "rate_limit"?)`],
  "rate without period": (F) => [`${F}:4:90: rate: invalid rate "100" (expected COUNT/UNIT, e.g. 25000/s, 600/m, 10/h)`],
  "funnel bypass": (F) => [`${F}:5:5: funnel bypass: route "site" sends paths of route "buy" (${F}:4:5) to the same upstream "u" for methods other than POST, without its rate_limit guard; narrow "site"'s match, or accept it with allow_bypass_of: [buy] on route "site"`],
  "allow_bypass_of unknown route": (F) => [`${F}:4:68: allow_bypass_of: route "nobody" is not defined`],
  "allow_bypass_of not a list": (F) => [`${F}:4:67: allow_bypass_of: expected a list, got the string "buy"`],
  "env var missing": (F) => [`${F}:1:15: environment variable NOPE is not set (write \${NOPE:-default} to give a default)`],
  "bad env reference": (F) => [`${F}:1:15: invalid reference "\${1X}": expected \${NAME} or \${NAME:-default}`],
  "alias bomb": (F) => [`${F}:1:24: YAML: the document expands to more than 100000 nodes (aliases count as often as they are used): an alias bomb?`],
  "unresolved alias": (F) => [`${F}:1:9: YAML: unresolved alias *nowhere`],
  "campaign ends before it starts": (F) => [`${F}:4:56: ends_at: must be after starts_at`],
  "quota negative": (F) => [`${F}:4:105: quota: -1 is out of range (0..1000000000000)`],
  "dedupe after quota with the journal": (F) => [`${F}:13:9: route "buy": dedupe after quota (at ${F}:12:9): a buy journaled while the store is down is answered 202 PENDING by the quota before this dedupe runs, so one user could get several units; put dedupe before quota when store.on_error is journal`]
}

t.test('every broken config is refused at its FILE:LINE:COL', async (t) => {
  const dir = tempDir(t)
  t.ok(CASES.length >= 50, `${CASES.length} cases`)
  CASES.forEach(([name, text], i) => {
    const file = dir.write(`case-${i}.yaml`, text)
    const r = loadConfigFile(file, {})
    const want = WANT[name]
    t.ok(want !== undefined, `${name}: has an expected answer`)
    t.same(r.ok ? [] : r.errors, want?.(file) ?? [], name)
  })
})
