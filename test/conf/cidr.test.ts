/** One CIDR parser (conf/cidr.ts parseCidr): what the loader accepts is what the deny guard and trusted_proxies compile. */
import t from 'tap'
import { compileCidrs, parseCidr } from '../../conf/cidr.js'
import { checkCidr } from '../../conf/parse.js'

const INPUTS = [
  '10.0.0.0/8', '203.0.113.7', '0.0.0.0/0', '::1/128', '2001:db8::/32', '::/0', 'fe80::1%eth0', '::ffff:10.0.0.0/104',
  ' 192.168.0.0/16 ', '10.0.0.1/8', '2001:db8::1/32', '127.0.0.1/33', '2001:db8::/129', '300.1.1.1', '01.2.3.4',
  '10.0.0.0/', '10.0.0.0/x', 'example.com', 'fe80::1%', 'fe80::1%a%b', '1::2::3', '1.2.3.4%eth0'
]

t.test('checkCidr is parseCidr (strict): the same answer and the same message', async (t) => {
  for (const s of INPUTS) {
    const r = parseCidr(s, true)
    t.equal(checkCidr(s), typeof r === 'string' ? r : null, s)
  }
  t.equal(checkCidr('10.0.0.1/8'), 'invalid CIDR "10.0.0.1/8": host bits are set below /8')
  t.equal(checkCidr('fe80::1%'), 'invalid IP address or CIDR "fe80::1%"')
  t.equal(checkCidr('::/129'), 'invalid CIDR "::/129": prefix length must be 0..128')
})

t.test('compileCidrs refuses exactly what checkCidr refuses, host bits aside (it masks them)', async (t) => {
  for (const s of INPUTS) {
    const strict = checkCidr(s)
    let thrown: string | null = null
    try { compileCidrs([s]) } catch (err) { thrown = (err as Error).message }
    if (strict === null) t.equal(thrown, null, `${s}: compiles`)
    else if (/host bits/.test(strict)) t.equal(thrown, null, `${s}: compiles, host bits masked`)
    else t.equal(thrown, strict, `${s}: refused with the loader's message`)
  }
  const masked = compileCidrs(['10.0.0.1/8'])
  t.ok(masked.has('10.200.0.1'), 'a compiled CIDR with host bits covers its whole network')
  t.ok(compileCidrs(['fe80::1%eth0']).has('fe80::1'), 'a zone names an interface and is ignored')
})
