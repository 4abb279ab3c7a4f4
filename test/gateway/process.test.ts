import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { baseYaml, tempDir } from '../helpers/config.js'
import { client, fetchText, startOrigin } from '../helpers/gateway.js'
import { spawnCli } from '../helpers/process.js'

const SITE = '  - name: site\n    match: { path_prefix: / }\n    upstream: origin\n'

t.test('serve: SIGTERM drains an in-flight request, then exits 0; SIGHUP reloads', async (t) => {
  const origin = await startOrigin(t)
  const files = tempDir(t)
  const file = files.write('gw.yaml', baseYaml(origin.url, SITE, 'server: { drain_timeout: 10s }\n'))
  const p = spawnCli(t, ['serve', '--config', file])
  const listening = await p.waitFor((l) => l.msg === 'listening')
  // One process serving, started (by the test) without the shipped Node flags: it says which are missing.
  const hint = p.lines.find((l) => String(l.msg).startsWith('node runs without'))
  t.equal(hint?.level, 'warn')
  t.match(String(hint?.msg), 'node runs without --max-semi-space-size=64 --no-memory-reducer')
  const url = listening.url as string
  const adminUrl = listening.admin as string
  t.match(url, /^http:\/\/127\.0\.0\.1:\d+$/)
  const d = client(t)
  t.equal((await fetchText(d, url + '/x')).status, 200)

  // SIGHUP: an invalid file is rejected (old config serves), a valid one swaps
  files.write('gw.yaml', baseYaml(origin.url, SITE.replace('upstream: origin', 'upstream: missing')))
  p.child.kill('SIGHUP')
  const rejected = await p.waitFor((l) => l.msg === 'SIGHUP reload rejected' || l.msg === 'reload rejected')
  t.match(JSON.stringify(rejected.errors), /gw\.yaml:\d+:\d+: /)
  t.equal((await fetchText(d, url + '/x')).status, 200, 'old config still serving')
  files.write('gw.yaml', baseYaml(origin.url, SITE.replace('path_prefix: /', 'path_prefix: /only/')))
  p.child.kill('SIGHUP')
  await p.waitFor((l) => l.msg === 'config reloaded')
  t.equal((await fetchText(d, url + '/x')).status, 404, 'new table in force')
  const metrics = await fetchText(d, adminUrl + '/metrics')
  t.match(metrics.text, /flashgate_config_reloads_total\{result="failure"\} 1/)
  t.match(metrics.text, /flashgate_config_reloads_total\{result="success"\} 1/)

  // a slow request in flight when SIGTERM arrives completes with 200; the process exits 0
  const slow = fetchText(d, url + '/only/slow/700')
  await sleep(200)
  p.child.kill('SIGTERM')
  const a = await slow
  t.equal(a.status, 200, 'in-flight request completed')
  t.equal(a.json.path, '/only/slow/700')
  t.equal(await p.exited, 0, 'exit 0 after draining')
})

t.test('validate and usage errors', async (t) => {
  const files = tempDir(t)
  const good = files.write('good.yaml', baseYaml('http://127.0.0.1:9', SITE))
  const bad = files.write('bad.yaml', baseYaml('http://127.0.0.1:9', SITE.replace('upstream: origin', 'upstream: nope')) + 'bogus_key: 1\n')
  let p = spawnCli(t, ['validate', '--config', good])
  t.equal(await p.exited, 0)
  p = spawnCli(t, ['validate', '--config', bad])
  t.equal(await p.exited, 1)
  const lines = p.stdout().trim().split('\n')
  t.ok(lines.length >= 2, 'every problem reported')
  for (const l of lines) t.match(l, /^\/.*bad\.yaml:\d+:\d+: /)
  p = spawnCli(t, ['serve', '--config', good, '--frobnicate'])
  t.equal(await p.exited, 2)
  t.match(p.stderr(), /unknown option: --frobnicate/)
  p = spawnCli(t, ['nope'])
  t.equal(await p.exited, 2)
  p = spawnCli(t, ['serve', '--workers', 'x', '--config', good])
  t.equal(await p.exited, 2)
  p = spawnCli(t, ['serve', '--help'])
  t.equal(await p.exited, 0)
  t.match(p.stdout(), /Usage: flashgate serve/)
  p = spawnCli(t, ['serve', '--config', bad])
  t.equal(await p.exited, 1, 'serve refuses an invalid config')
  t.match(p.stderr(), /bad\.yaml:\d+:\d+: /)
})
