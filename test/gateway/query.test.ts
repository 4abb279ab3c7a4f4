import t from 'tap'
import { queryParam } from '../../gateway/http/query.js'

const expect = (q: string, name: string): string | null => new URLSearchParams(q).get(name)

t.test('answers as URLSearchParams.get on hand-picked queries', async (t) => {
  const cases: Array<[string, string]> = [
    ['', 'a'], ['a', 'a'], ['a=', 'a'], ['a=1', 'a'], ['a=1&a=2', 'a'], ['b=1&a=2', 'a'], ['ab=1&a=2', 'a'],
    ['a=1', 'ab'], ['&&a=1&&', 'a'], ['?a=1', 'a'], ['??a=1', '?a'], ['??a=1', 'a'], ['a=b=c', 'a'],
    ['a=x+y', 'a'], ['a=x%20y', 'a'], ['a=%zz', 'a'], ['a=%', 'a'], ['a=%e2%82', 'a'], ['a=%e2%82%ac', 'a'],
    ['a=%C3%A9', 'a'], ['a%3D=1', 'a='], ['a+b=1', 'a b'], ['a+b=1', 'a+b'], ['a%2Bb=1', 'a+b'], ['%61=1', 'a'],
    ['a=\u00e9', 'a'], ['a=\ud83d\ude00', 'a'], ['a=\ud83d', 'a'], ['\ud83d=1', '\ufffd'], ['a=1&', 'a'], ['=1', ''],
    ['&=1', ''], ['a=1#x', 'a'], ['sig=abc_-123&kid=k1&expires=1764612345000', 'expires']
  ]
  for (const [q, name] of cases) t.equal(queryParam(q, name), expect(q, name), `${JSON.stringify(q)} get ${JSON.stringify(name)}`)
})

t.test('answers as URLSearchParams.get on generated queries', async (t) => {
  // Queries over an alphabet rich in the characters that matter: separators, escapes, '+', non-ASCII.
  const alphabet = ['a', 'b', 'ab', '=', '&', '?', '+', '%', '%2', '%41', '%2B', '%26', '%3D', '%e2%82%ac', '%ff', '\u00e9', '\ud83d\ude00', '\ud83d', ' ', '1']
  const names = ['a', 'b', 'ab', '', 'a b', 'a+b', '+', '=', '\u00e9', 'A', '\ufffd', '?a']
  let seed = 12345
  const rand = (n: number): number => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n }
  let mismatches = 0
  for (let i = 0; i < 20000; i++) {
    let q = ''
    const len = rand(12)
    for (let j = 0; j < len; j++) q += alphabet[rand(alphabet.length)]
    for (const name of names) {
      if (queryParam(q, name) !== expect(q, name)) {
        mismatches++
        if (mismatches <= 5) t.fail(`${JSON.stringify(q)} get ${JSON.stringify(name)}: ${JSON.stringify(queryParam(q, name))} vs ${JSON.stringify(expect(q, name))}`)
      }
    }
  }
  t.equal(mismatches, 0, '240,000 lookups, none different')
})
