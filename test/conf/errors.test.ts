// One fixture per kind of config error, each asserting the exact `FILE:LINE:COL: message` lines the
// loader reports (all of them, in file/line/column order), and `ok: false`.
import t from 'tap'
import { relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { loadConfigFile } from '../../conf/load.js'

const F = relative(process.cwd(), fileURLToPath(new URL('./fixtures', import.meta.url)))

const cases: Record<string, string[]> = {
  'admin-no-token.yaml': [
    `${F}/admin-no-token.yaml:1:8: admin: listening on non-loopback address 0.0.0.0 needs admin_token (or bind it to 127.0.0.1)`,
  ],
  'bad-cidr.yaml': [
    `${F}/bad-cidr.yaml:1:19: trusted_proxies: invalid CIDR "127.0.0.1/33": prefix length must be 0..32`,
    `${F}/bad-cidr.yaml:1:33: trusted_proxies: invalid CIDR "10.0.0.1/8": host bits are set below /8`,
    `${F}/bad-cidr.yaml:8:39: ips: invalid IP address or CIDR "300.1.1.1"`,
    `${F}/bad-cidr.yaml:8:50: ips: invalid CIDR "2001:db8::/129": prefix length must be 0..128`,
    `${F}/bad-cidr.yaml:9:42: ip_files: "missing.txt" does not exist`,
    `${F}/deny-bad.txt:3:3: invalid IP address or CIDR "198.51.100.300"`,
  ],
  'bad-duration.yaml': [
    `${F}/bad-duration.yaml:2:12: timeout: duration "50" needs a unit (ms, s, m, h, d), e.g. 50s or 50ms`,
    `${F}/bad-duration.yaml:6:19: fail_timeout: invalid duration "10 sec" (expected e.g. 250ms, 10s, 5m, 24h)`,
  ],
  'bad-rate.yaml': [
    `${F}/bad-rate.yaml:7:29: rate: a rate needs a period, e.g. 100/s or 100/m`,
    `${F}/bad-rate.yaml:8:29: rate: invalid rate "10/fortnight": unknown period "fortnight" (s, m, h, d or a duration such as 10s)`,
    `${F}/bad-rate.yaml:9:29: rate: rate "0.5/s": the count must be a whole number (write 1/2s for 0.5/s)`,
  ],
  'bad-size.yaml': [
    `${F}/bad-size.yaml:2:18: max_body_size: invalid size "1 megabyte" (expected e.g. 512, 16kb, 1mb, 1gb)`,
    `${F}/bad-size.yaml:6:44: max_body_size: size "1.5b" is not a whole number of bytes`,
  ],
  'captcha-no-secret.yaml': [
    `${F}/captcha-no-secret.yaml:7:9: captcha provider turnstile needs secret (e.g. secret: "\${TURNSTILE_SECRET}")`,
    `${F}/captcha-no-secret.yaml:8:9: captcha provider pow needs secrets.pow (or secrets.session) to sign its challenges`,
    `${F}/captcha-no-secret.yaml:9:51: difficulty: only applies to provider pow`,
  ],
  'duplicates.yaml': [
    `${F}/duplicates.yaml:9:15: duplicate product id "1" in campaign "c1" (first defined at ${F}/duplicates.yaml:8:15)`,
    `${F}/duplicates.yaml:10:9: duplicate campaign id "c1" (first defined at ${F}/duplicates.yaml:4:9)`,
    `${F}/duplicates.yaml:15:13: duplicate route name "r" (first defined at ${F}/duplicates.yaml:14:13)`,
  ],
  'env-missing.yaml': [
    `${F}/env-missing.yaml:2:15: environment variable ADMIN_TOKEN is not set (write \${ADMIN_TOKEN:-default} to give a default)`,
    `${F}/env-missing.yaml:4:20: environment variable SESSION_KEY is not set (write \${SESSION_KEY:-default} to give a default)`,
    `${F}/env-missing.yaml:6:26: environment variable UPSTREAM_URL is not set (write \${UPSTREAM_URL:-default} to give a default)`,
  ],
  'guard-shape.yaml': [
    `${F}/guard-shape.yaml:7:9: unknown guard "ratelimit" (did you mean "rate_limit"?)`,
    `${F}/guard-shape.yaml:8:9: a guard is a one-key map such as "- rate_limit: {...}", got keys rate_limit, rate (indent the options under rate_limit:)`,
    `${F}/guard-shape.yaml:10:42: shadow: expected true or false, got the string "maybe"`,
    `${F}/guard-shape.yaml:10:57: reject: needs status and/or body`,
    `${F}/guard-shape.yaml:10:67: status: 99 is out of range (200..599)`,
  ],
  'many.yaml': [
    `${F}/many.yaml:1:9: listen: invalid address "nowhere" (expected HOST:PORT, e.g. 0.0.0.0:8080 or [::1]:9090)`,
    `${F}/many.yaml:2:10: workers: 0 is out of range (1..1024)`,
    `${F}/many.yaml:3:28: url: expected a redis://HOST:PORT or rediss://HOST:PORT URL`,
    `${F}/many.yaml:3:62: timeout: duration "50" needs a unit (ms, s, m, h, d), e.g. 50s or 50ms`,
    `${F}/many.yaml:4:19: user: expected header NAME or cookie NAME, got "session x-user-id"`,
    `${F}/many.yaml:7:14: balance: expected round_robin, least_conn or hash header NAME, got "random"`,
    `${F}/many.yaml:8:14: targets: needs at least one target`,
    `${F}/many.yaml:10:11: name: "buy now" must be letters, digits, and . _ - (it is a metrics label)`,
    `${F}/many.yaml:11:20: path: must start with /`,
    `${F}/many.yaml:11:48: match: use either path or path_prefix, not both`,
    `${F}/many.yaml:12:15: upstream "v" is not defined (did you mean "u"?)`,
  ],
  'missing-campaign.yaml': [
    `${F}/missing-campaign.yaml:14:38: campaign_window: campaign "nov12" is not defined (did you mean "nov11"?)`,
    `${F}/missing-campaign.yaml:15:44: quota: product "999" is not defined in campaign "nov11"`,
  ],
  'missing-upstream.yaml': [
    `${F}/missing-upstream.yaml:5:15: upstream "purchse" is not defined (did you mean "purchase"?)`,
    `${F}/missing-upstream.yaml:7:15: upstream "other" is not defined (defined: purchase)`,
    `${F}/missing-upstream.yaml:8:5: route "nothing" is missing required key "upstream"`,
  ],
  'no-identity.yaml': [
    `${F}/no-identity.yaml:10:9: signed_link needs identity.user (who the user is): set identity: { user: header x-user-id } or cookie NAME`,
    `${F}/no-identity.yaml:11:9: dedupe needs identity.user (who the user is): set identity: { user: header x-user-id } or cookie NAME`,
    `${F}/no-identity.yaml:12:9: rate_limit key: user needs identity.user (who the user is): set identity: { user: header x-user-id } or cookie NAME`,
  ],
  'out-of-range.yaml': [
    `${F}/out-of-range.yaml:1:9: listen: invalid address "0.0.0.0:70000": port 70000 is above 65535`,
    `${F}/out-of-range.yaml:4:53: weight: 0 is out of range (1..1000000)`,
    `${F}/out-of-range.yaml:5:14: retries: -1 is out of range (0..100)`,
    `${F}/out-of-range.yaml:10:32: quota: -5 is out of range (0..1000000000000)`,
  ],
  'param-missing.yaml': [
    `${F}/param-missing.yaml:14:16: quota: campaign comes from route param :campaign but route "buy" path "/buy/:product" has no :campaign (by default campaign comes from param campaign; set campaign: to a param, header, query or a literal)`,
    `${F}/param-missing.yaml:15:29: dedupe: campaign comes from route param :camp but route "buy" path "/buy/:product" has no :camp`,
    `${F}/param-missing.yaml:20:38: campaign_window: campaign comes from route param :campaign but route "site" has no path: with params`,
  ],
  'signed-link-no-keys.yaml': [
    `${F}/signed-link-no-keys.yaml:9:9: signed_link (mode hmac) needs secrets.link_keys: { k1: "\${FLASHGATE_LINK_KEY}" }`,
    `${F}/signed-link-no-keys.yaml:10:9: signed_link mode nginx_secure_link_md5 needs secure_link_md5 (the nginx expression, e.g. "$secure_link_expires$uri secret")`,
  ],
  'target-url.yaml': [
    `${F}/target-url.yaml:4:14: url: "http://127.0.0.1:7001/api" must have no path, query or fragment (expected http://HOST:PORT)`,
    `${F}/target-url.yaml:5:9: targets: duplicate target http://127.0.0.1:7002`,
    `${F}/target-url.yaml:5:14: url: "ftp://127.0.0.1:21" must be http:// or https://`,
    `${F}/target-url.yaml:6:14: url: "127.0.0.1:7001" is not a URL (expected http://HOST:PORT)`,
  ],
  'unknown-key.yaml': [
    `${F}/unknown-key.yaml:1:1: unknown key "listn" in config (did you mean "listen"?)`,
    `${F}/unknown-key.yaml:5:5: unknown key "max_fail" in upstream "u" (did you mean "max_fails"?)`,
    `${F}/unknown-key.yaml:8:30: unknown key "method" in match (did you mean "methods"?)`,
  ],
  'window-order.yaml': [
    `${F}/window-order.yaml:6:14: ends_at: must be after starts_at`,
    `${F}/window-order.yaml:8:16: starts_at: "2026-11-11T12:00:00" needs a time zone (Z or an offset such as +08:00)`,
    `${F}/window-order.yaml:9:14: ends_at: expected an ISO 8601 date-time such as 2026-11-11T12:00:00+08:00, got "tomorrow"`,
  ],
  'wrong-type.yaml': [
    `${F}/wrong-type.yaml:1:10: workers: expected a number or auto, got "many"`,
    `${F}/wrong-type.yaml:2:24: enabled: expected true or false, got the string "yes"`,
    `${F}/wrong-type.yaml:4:17: targets: expected a list, got the string "http://127.0.0.1:7001"`,
    `${F}/wrong-type.yaml:7:15: upstream: expected a string, got a list`,
  ],
  'yaml-syntax.yaml': [
    `${F}/yaml-syntax.yaml:4:1: YAML: Flow sequence in block collection must be sufficiently indented and end with a ]`,
    `${F}/yaml-syntax.yaml:4:1: YAML: Flow map in block collection must be sufficiently indented and end with a }`,
  ],
  'include-bad/main.yaml': [
    `${F}/include-bad/main.yaml:4:5: include: cannot read "${F}/include-bad/nothere.yaml": ENOENT`,
    `${F}/include-bad/main.yaml:6:3: duplicate upstream "purchase" (first defined at ${F}/include-bad/routes/dup.yaml:3:3)`,
    `${F}/include-bad/main.yaml:8:13: duplicate route name "site" (first defined at ${F}/include-bad/routes/dup.yaml:5:13)`,
    `${F}/include-bad/routes/dup.yaml:1:1: key "listen" is not allowed in an included file (only routes, upstreams and campaigns)`,
    `${F}/include-bad/routes/dup.yaml:6:30: upstream "nope" is not defined (defined: purchase)`,
  ],
}

for (const [name, expected] of Object.entries(cases)) {
  t.test(name, async (t) => {
    const r = loadConfigFile(`${F}/${name}`, {})
    t.equal(r.ok, false, 'rejected')
    if (r.ok) return
    t.same(r.errors, expected, 'exact FILE:LINE:COL lines')
  })
}

t.test('an unreadable main file is one FILE:1:1 line', async (t) => {
  const r = loadConfigFile(`${F}/does-not-exist.yaml`, {})
  t.same(r, { ok: false, errors: [`${F}/does-not-exist.yaml:1:1: cannot read the config file: ENOENT`] })
})
