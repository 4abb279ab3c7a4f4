import t from 'tap'
import { compileCidrs, isLoopback, parseIPv4, parseIPv6 } from '../../conf/cidr.js'

t.test('parseIPv4', async (t) => {
  const cases: Array<[string, number]> = [
    ['0.0.0.0', 0], ['255.255.255.255', 0xffffffff], ['10.1.2.3', 0x0a010203], ['1.2.3', -1],
    ['1.2.3.4.5', -1], ['256.1.1.1', -1], ['01.2.3.4', -1], ['1..2.3', -1], ['', -1], ['a.b.c.d', -1], ['1.2.3.4 ', -1]
  ]
  for (const [s, v] of cases) t.equal(parseIPv4(s), v, s)
})

t.test('parseIPv6', async (t) => {
  const w = new Uint32Array(4)
  const ok: Array<[string, number[]]> = [
    ['::', [0, 0, 0, 0]],
    ['::1', [0, 0, 0, 1]],
    ['1::', [0x00010000, 0, 0, 0]],
    ['2001:db8::8a2e:370:7334', [0x20010db8, 0, 0x8a2e, 0x03707334]],
    ['::ffff:1.2.3.4', [0, 0, 0xffff, 0x01020304]],
    ['fe80::1%eth0', [0xfe800000, 0, 0, 1]],
    ['1:2:3:4:5:6:7:8', [0x00010002, 0x00030004, 0x00050006, 0x00070008]],
    ['ABCD:EF01::', [0xabcdef01, 0, 0, 0]]
  ]
  for (const [s, words] of ok) {
    t.ok(parseIPv6(s, w), s)
    t.same(Array.from(w), words, s)
  }
  for (const s of ['', ':', ':::', '1:2:3:4:5:6:7:8:9', '1::2::3', '12345::', 'g::', '1:2:3:4:5:6:7', '1:', ':1', '::1.2.3', '1.2.3.4']) {
    t.notOk(parseIPv6(s, w), `invalid ${JSON.stringify(s)}`)
  }
})

t.test('compileCidrs membership', async (t) => {
  const set = compileCidrs(['10.0.0.0/8', '192.168.1.7', '203.0.113.0/24', '2001:db8::/32', '::1', '::ffff:100.64.0.0/106', '  '])
  t.equal(set.size, 6)
  const table: Array<[string, boolean]> = [
    ['10.0.0.1', true], ['10.255.255.255', true], ['11.0.0.0', false],
    ['192.168.1.7', true], ['192.168.1.8', false],
    ['203.0.113.99', true], ['203.0.114.1', false],
    ['::ffff:10.2.3.4', true], ['::ffff:11.2.3.4', false],
    ['2001:db8:1::5', true], ['2001:db9::5', false],
    ['::1', true], ['::2', false],
    ['100.64.0.1', true], ['100.127.255.255', true], ['100.128.0.0', false],
    ['garbage', false], ['', false]
  ]
  for (const [ip, want] of table) t.equal(set.has(ip), want, ip)
})

t.test('catch-all and empty', async (t) => {
  t.ok(compileCidrs(['0.0.0.0/0']).has('8.8.8.8'))
  t.notOk(compileCidrs(['0.0.0.0/0']).has('2001::1'))
  t.ok(compileCidrs(['::/0']).has('2001::1'))
  t.notOk(compileCidrs([]).has('1.2.3.4'))
})

t.test('bad entries throw at compile', async (t) => {
  for (const bad of ['10.0.0.0/33', '1.2.3.400', 'fe80::/129', 'x', '10.0.0.0/', '10.0.0.0/a']) {
    t.throws(() => compileCidrs([bad]), `rejects ${bad}`)
  }
})

t.test('isLoopback', async (t) => {
  t.ok(isLoopback('127.0.0.1'))
  t.ok(isLoopback('127.9.9.9'))
  t.ok(isLoopback('::1'))
  t.ok(isLoopback('::ffff:127.0.0.1'))
  t.ok(isLoopback('localhost'))
  t.notOk(isLoopback('0.0.0.0'))
  t.notOk(isLoopback('::'))
  t.notOk(isLoopback('10.0.0.1'))
})
