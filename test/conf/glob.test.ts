// The small include: glob — `*` and `?` per segment, sorted, dotfiles hidden, files only.
import t from 'tap'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { globSync, hasMagic } from '../../conf/glob.js'

t.test('globSync', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fg-glob-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  for (const p of ['routes/b.yaml', 'routes/a.yaml', 'routes/a.yml', 'routes/ab.yaml', 'routes/.hidden.yaml', 'routes/sub/c.yaml', 'teams/x/r.yaml', 'teams/y/r.yaml', 'teams/y/s.txt', 'a+b(1).yaml']) {
    mkdirSync(join(dir, p, '..'), { recursive: true })
    writeFileSync(join(dir, p), '')
  }
  mkdirSync(join(dir, 'routes', 'dir.yaml'))
  const rel = (list: string[]): string[] => list.map((p) => p.slice(dir.length + 1))
  t.same(rel(globSync('routes/*.yaml', dir)), ['routes/a.yaml', 'routes/ab.yaml', 'routes/b.yaml'], 'sorted; no dotfiles; no directories; no recursion')
  t.same(rel(globSync('routes/?.yaml', dir)), ['routes/a.yaml', 'routes/b.yaml'], '? is one character')
  t.same(rel(globSync('routes/a.y*ml', dir)), ['routes/a.yaml', 'routes/a.yml'])
  t.same(rel(globSync('routes/.*.yaml', dir)), ['routes/.hidden.yaml'], 'a leading dot in the pattern matches dotfiles')
  t.same(rel(globSync('teams/*/r.yaml', dir)), ['teams/x/r.yaml', 'teams/y/r.yaml'], 'wildcards in directory segments')
  t.same(rel(globSync('teams/*/*', dir)), ['teams/x/r.yaml', 'teams/y/r.yaml', 'teams/y/s.txt'])
  t.same(rel(globSync('a+b(1).*', dir)), ['a+b(1).yaml'], 'regex characters are literal')
  t.same(globSync('nothing/*.yaml', dir), [], 'a missing directory matches nothing')
  t.same(globSync(join(dir, 'routes', 'b.*'), '/elsewhere'), [join(dir, 'routes', 'b.yaml')], 'absolute patterns ignore the base')
  t.same(globSync('routes/b.yaml', dir), [join(dir, 'routes/b.yaml')], 'no wildcard: the file itself')
  t.throws(() => globSync('routes/**/*.yaml', dir), /"\*\*" is not supported/)
  t.throws(() => globSync('routes/[ab].yaml', dir), /not supported/)
  t.ok(hasMagic('a/*.yaml'))
  t.ok(hasMagic('a/?.yaml'))
  t.notOk(hasMagic('a/b.yaml'))
})
