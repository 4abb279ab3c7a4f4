import t from 'tap'
import { run } from '../../bench/proc.js'

t.test('run: a command past its time limit is killed and says so; a normal exit does not', async (t) => {
  const slow = await run(process.execPath, ['-e', 'setTimeout(() => {}, 10000)'], { timeoutMs: 300 })
  t.equal(slow.timedOut, true)
  t.equal(slow.signal, 'SIGKILL')
  t.equal(slow.code, null)
  const ok = await run(process.execPath, ['-e', 'process.stdout.write("x"); process.exit(3)'], { timeoutMs: 10_000 })
  t.equal(ok.timedOut, false)
  t.equal(ok.signal, null)
  t.equal(ok.code, 3)
  t.equal(ok.stdout, 'x')
})
