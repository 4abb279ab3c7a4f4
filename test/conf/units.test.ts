// Tables for the unit parsers every module shares: durations, rates, sizes, addresses, CIDRs.
import t from 'tap'
import { isLoopback as isLoopbackHost } from '../../conf/cidr.js'
import { checkCidr, parseDuration, parseHostPort, parseRate, parseSize, parseTimerDuration } from '../../conf/parse.js'

t.test('parseDuration', async (t) => {
  const good: Array<[string | number, number]> = [
    ['0', 0], [0, 0], ['1ms', 1], ['250ms', 250], ['10s', 10_000], ['5m', 300_000], ['24h', 86_400_000],
    ['2d', 172_800_000], ['1.5s', 1500], ['0.25s', 250], ['1m30s', 90_000], ['1h30m', 5_400_000],
    ['10S', 10_000], ['100MS', 100], [' 5s ', 5000], ['0s', 0], ['365d', 365 * 86_400_000]
  ]
  for (const [input, ms] of good) t.equal(parseDuration(input), ms, `${JSON.stringify(input)} → ${ms}`)
  const bad: Array<[string | number, RegExp]> = [
    [5, /needs a unit/], ['5', /needs a unit \(ms, s, m, h, d\), e\.g\. 5s or 5ms/], ['', /invalid duration/],
    ['10 sec', /invalid duration/], ['s', /invalid duration/], ['-1s', /invalid duration/], ['1.5ms', /whole number of milliseconds/],
    ['1w', /invalid duration/], ['1m30', /invalid duration/], ['366d', /longer than 365d/], ['ms', /invalid duration/]
  ]
  for (const [input, re] of bad) t.throws(() => parseDuration(input), re, `${JSON.stringify(input)} refused`)
  t.throws(() => parseDuration('1s'.repeat(1) + 'x'), RangeError)
})

t.test('parseTimerDuration caps at the setTimeout limit', async (t) => {
  t.equal(parseTimerDuration('24d'), 24 * 86_400_000)
  t.throws(() => parseTimerDuration('25d'), /timer limit/)
})

t.test('parseRate', async (t) => {
  const good: Array<[string, number, number]> = [
    ['25000/s', 25000, 1000], ['600/m', 600, 60_000], ['10/h', 10, 3_600_000], ['1/d', 1, 86_400_000],
    ['100/10s', 100, 10_000], ['1/2s', 1, 2000], ['5 / s', 5, 1000], ['3/500ms', 3, 500], ['7/S', 7, 1000]
  ]
  for (const [input, count, periodMs] of good) t.same(parseRate(input), { count, periodMs }, `${input}`)
  const bad: Array<[string, RegExp]> = [
    ['100', /invalid rate/], ['0/s', /at least 1/], ['0.5/s', /whole number \(write 1\/2s/], ['10/fortnight', /unknown period/],
    ['/s', /invalid rate/], ['ten/s', /invalid rate/], ['10/0s', /at least 1ms/], ['10/s/s', /unknown period/], ['1e3/s', /invalid rate/]
  ]
  for (const [input, re] of bad) t.throws(() => parseRate(input), re, `${input} refused`)
})

t.test('parseSize', async (t) => {
  const good: Array<[string | number, number]> = [
    [0, 0], [512, 512], ['512', 512], ['16kb', 16384], ['16k', 16384], ['16KiB', 16384], ['1mb', 1_048_576],
    ['1M', 1_048_576], ['1gb', 1_073_741_824], ['1.5kb', 1536], ['10b', 10], ['2 mb', 2_097_152]
  ]
  for (const [input, bytes] of good) t.equal(parseSize(input), bytes, `${JSON.stringify(input)} → ${bytes}`)
  const bad: Array<[string | number, RegExp]> = [
    [-1, /invalid size/], [1.5, /invalid size/], ['1 megabyte', /invalid size/], ['1.5b', /whole number of bytes/],
    ['kb', /invalid size/], ['1tb', /invalid size/], ['', /invalid size/]
  ]
  for (const [input, re] of bad) t.throws(() => parseSize(input), re, `${JSON.stringify(input)} refused`)
})

t.test('parseHostPort', async (t) => {
  const good: Array<[string | number, string, number]> = [
    ['0.0.0.0:8080', '0.0.0.0', 8080], ['127.0.0.1:0', '127.0.0.1', 0], ['[::1]:9090', '::1', 9090],
    [':8080', '0.0.0.0', 8080], ['8080', '0.0.0.0', 8080], [8080, '0.0.0.0', 8080], ['localhost:80', 'localhost', 80],
    ['gw-1.example.com:443', 'gw-1.example.com', 443]
  ]
  for (const [input, host, port] of good) t.same(parseHostPort(input), { host, port }, `${input}`)
  const bad: Array<[string, RegExp]> = [
    ['nowhere', /expected HOST:PORT/], ['0.0.0.0:70000', /above 65535/], ['::1:80', /expected HOST:PORT/],
    ['[1.2.3.4]:80', /not an IPv6/], ['http://x:80', /expected HOST:PORT/], ['a_b:80', /bad host/]
  ]
  for (const [input, re] of bad) t.throws(() => parseHostPort(input), re, `${input} refused`)
})

t.test('isLoopbackHost', async (t) => {
  for (const h of ['127.0.0.1', '127.1.2.3', '::1', 'localhost', '::ffff:127.0.0.1']) t.ok(isLoopbackHost(h), h)
  for (const h of ['0.0.0.0', '::', '10.0.0.1', '128.0.0.1', 'example.com', '::ffff:10.0.0.1']) t.notOk(isLoopbackHost(h), h)
})

t.test('checkCidr', async (t) => {
  for (const c of ['10.0.0.0/8', '203.0.113.7', '0.0.0.0/0', '127.0.0.1/32', '::1/128', '2001:db8::/32', '::/0', 'fe80::1', '::ffff:10.0.0.0/104']) {
    t.equal(checkCidr(c), null, `${c} accepted`)
  }
  const bad: Array<[string, RegExp]> = [
    ['10.0.0.1/8', /host bits are set below \/8/], ['127.0.0.1/33', /0\.\.32/], ['2001:db8::/129', /0\.\.128/],
    ['300.1.1.1', /invalid IP address/], ['10.0.0.0/', /prefix length/], ['10.0.0.0/x', /prefix length/], ['2001:db8::1/32', /host bits/],
    ['example.com', /invalid IP address/]
  ]
  for (const [c, re] of bad) t.match(checkCidr(c), re, `${c} refused`)
})
