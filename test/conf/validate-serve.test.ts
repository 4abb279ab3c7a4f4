/**
 * `validate` and `serve` judge a config the same (issue 12): every config serve refuses, validate refuses
 * at the same FILE:LINE:COL. The broken-config corpus (broken-cases.ts) and the configs only a guard
 * factory used to refuse (a leaky bucket with scope: cluster; a link key under 16 bytes, which the loader
 * only warned about; a quota with on_error fail_open, own or inherited; a rate the node-local bucket
 * cannot represent) go through the loader (what validate and reload run) and through a real in-process
 * start (what serve runs: the loader, then the guard factories); the factory cases also through the CLI.
 */
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { ConfigError } from '../../conf/errors.js'
import { loadConfigFile } from '../../conf/load.js'
import { silentLog } from '../../gateway/log.js'
import { startGateway } from '../../gateway/main.js'
import { ENV, routeYaml } from '../antibot/helpers.js'
import { tempDir } from '../helpers/config.js'
import { CASES } from './broken-cases.js'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..')

/** Configs the loader accepted and a factory refused, before conf owned the rule. */
const FACTORY_CASES: ReadonlyArray<readonly [string, string, RegExp]> = [
  ['leaky bucket with scope: cluster', routeYaml('- rate_limit: { rate: 10/s, algorithm: leaky_bucket, scope: cluster }'), /scope: cluster needs algorithm: token_bucket/],
  ['link key of 15 bytes', routeYaml('- signed_link: {}', { linkKeys: '{ k1: "fifteen-bytes-k" }' }), /link_keys\.k1: must be at least 16 bytes/],
  ['nginx secure_link_md5 with an unknown variable', routeYaml('- signed_link: { mode: nginx_secure_link_md5, secure_link_md5: "$secure_link_expires$uri$nonsense s3cret" }'), /secure_link_md5: unsupported variable \$nonsense/],
  ['quota with on_error: fail_open', routeYaml('- quota: { on_error: fail_open }'), /quota: on_error fail_open cannot bound the units sold/],
  ['quota inheriting store.on_error: fail_open', routeYaml('- quota: {}', { store: 'store: { kind: memory, on_error: fail_open }' }), /quota: on_error fail_open \(inherited from store\.on_error\) cannot bound/],
  ['leaky bucket below its resolution', routeYaml('- rate_limit: { rate: 1/h, algorithm: leaky_bucket }'), /rate: "1\/h" is below the leaky bucket's resolution/],
  ['token bucket whose burst × period is not a safe integer', routeYaml('- rate_limit: { rate: 1/365d, burst: 1000000000 }'), /burst: burst \(1000000000\) × the rate's period \(31536000000ms\) is too large/]
]

/** What serve answers: the problems of the ConfigError it stops with, [] when it starts. */
async function served (file: string): Promise<string[]> {
  try {
    const g = await startGateway({ configFile: file, env: ENV, listen: { host: '127.0.0.1', port: 0 }, admin: null, log: silentLog })
    await g.close()
    return []
  } catch (err) {
    if (err instanceof ConfigError) return [...err.problems]
    throw err
  }
}

t.test('every config serve refuses, validate refuses with the same FILE:LINE:COL lines', async (t) => {
  const dir = tempDir(t)
  const all = [...CASES.map(([name, text]) => [name, text] as const), ...FACTORY_CASES.map(([name, text]) => [name, text] as const)]
  for (const [i, [name, text]] of all.entries()) {
    const file = dir.write(`case-${i}.yaml`, text)
    const v = loadConfigFile(file, ENV)
    const s = await served(file)
    t.not(s.length, 0, `${name}: serve refuses`)
    t.same(v.ok ? [] : v.errors, s, `${name}: validate refuses with the same lines`)
  }
})

t.test('the rules factories used to judge are refused at load, with their position', async (t) => {
  const dir = tempDir(t)
  for (const [i, [name, text, want]] of FACTORY_CASES.entries()) {
    const file = dir.write(`factory-${i}.yaml`, text)
    const r = loadConfigFile(file, ENV)
    t.equal(r.ok, false, `${name}: refused by the loader`)
    const errors = r.ok ? [] : r.errors
    t.equal(errors.length, 1, `${name}: one problem`)
    t.match(errors[0] ?? '', new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\d+:\\d+: `), `${name}: at FILE:LINE:COL`)
    t.match(errors[0] ?? '', want, `${name}: says why`)
    // The real CLI: validate prints the lines on stdout and exits 1; serve prints the same on stderr, exits 1.
    const cli = (cmd: string) => spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'gateway', 'cli.ts'), cmd, '--config', file], { cwd: ROOT, encoding: 'utf8', timeout: 120_000, env: { ...process.env, ...ENV } })
    const v = cli('validate')
    t.equal(v.status, 1, `${name}: flashgate validate exits 1`)
    t.same(v.stdout.trim().split('\n'), errors, `${name}: validate prints the loader's lines`)
    const s = cli('serve')
    t.equal(s.status, 1, `${name}: flashgate serve exits 1`)
    t.same(s.stderr.trim().split('\n').filter((l) => !l.includes('"level"')), errors, `${name}: serve prints the same lines`)
  }
})
