import t from 'tap'
import { readFileSync } from 'node:fs'
import { SHIPPED_FLAGS } from '../../gateway/node-flags.js'
import { baseYaml, tempDir } from '../helpers/config.js'
import { client, fetchText, startOrigin } from '../helpers/gateway.js'
import { spawnCli } from '../helpers/process.js'

const SITE = '  - name: site\n    match: { path_prefix: / }\n    upstream: origin\n'

t.test('serve --workers 2: both serve, /metrics aggregates both, SIGHUP reloads all, SIGTERM exits 0', async (t) => {
  const origin = await startOrigin(t)
  const files = tempDir(t)
  const file = files.write('gw.yaml', baseYaml(origin.url, SITE))
  const p = spawnCli(t, ['serve', '--config', file, '--workers', '2'])
  const listening = await p.waitFor((l) => l.msg === 'listening' && l.workers === 2, 60_000)
  const url = listening.url as string
  const adminUrl = listening.admin as string
  t.equal(p.lines.filter((l) => l.msg === 'listening' && typeof l.worker === 'number').length, 2, 'two workers listening')

  // many fresh connections so both workers take some
  const N = 60
  for (let i = 0; i < N; i++) {
    const d = client(t, { pipelining: 0 })
    t.equal((await fetchText(d, url + '/x', { headers: { connection: 'close' } })).status, 200)
  }
  const m = await fetchText(client(t), adminUrl + '/metrics')
  t.equal(m.status, 200)
  const count = Number(/flashgate_requests_total\{route="site",outcome="passed"\} (\d+)/.exec(m.text)?.[1])
  t.equal(count, N, 'the aggregate counts every worker\'s requests')
  // (the primary spreads connections round-robin over the two workers, so a count of N means both were summed)
  t.equal(new Set(p.lines.filter((l) => l.msg === 'listening' && typeof l.worker === 'number').map((l) => l.pid)).size, 2, 'two worker processes')
  // The test starts the primary without the shipped Node flags: the workers get them (gateway/node-flags.ts).
  for (const pid of new Set(p.lines.filter((l) => l.msg === 'listening' && typeof l.worker === 'number').map((l) => l.pid as number))) {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')
    for (const f of SHIPPED_FLAGS) t.ok(argv.includes(f), `worker ${pid} runs with ${f}`)
  }
  t.notOk(p.lines.some((l) => String(l.msg).startsWith('node runs without')), 'no missing-flag warning with workers')

  files.write('gw.yaml', baseYaml(origin.url, SITE.replace('path_prefix: /', 'path_prefix: /v2/')))
  const r = await fetchText(client(t), adminUrl + '/admin/reload', { method: 'POST' })
  t.equal(r.status, 200)
  for (let i = 0; i < 6; i++) {
    t.equal((await fetchText(client(t), url + '/x', { headers: { connection: 'close' } })).status, 404, 'every worker has the new table')
  }
  const m2 = await fetchText(client(t), adminUrl + '/metrics')
  t.match(m2.text, /flashgate_config_reloads_total\{result="success"\} 2/, 'each worker reloaded once')

  // a dead worker is restarted
  const workerPid = p.lines.find((l) => l.msg === 'listening' && l.worker === 0)?.pid as number
  process.kill(workerPid, 'SIGKILL')
  await p.waitFor((l) => l.msg === 'worker died; restarting')
  await p.waitFor((l) => l.msg === 'listening' && l.worker === 0 && l.pid !== workerPid, 60_000)
  t.pass('worker restarted')

  p.child.kill('SIGTERM')
  t.equal(await p.exited, 0)
})

