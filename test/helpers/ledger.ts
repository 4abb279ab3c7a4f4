/** The primary's ledger in a real child process, for the IPC store's tests (the test process plays the worker). */
import { fork, type ChildProcess } from 'node:child_process'
import { dirname, join } from 'node:path'
import type { Duplex } from 'node:stream'
import { fileURLToPath } from 'node:url'
import { socketPeer, type Peer } from '../../limiter/ipc-store.js'

/**
 * A real ledger process (test/helpers/ledger-process.ts) with a socketpair as its fd 4, as the gateway's
 * primary gives each worker; resolves once it serves, with the worker's end of the channel.
 */
export async function startLedgerProcess (t: { teardown: (fn: () => void | Promise<void>) => void }): Promise<{ child: ChildProcess, peer: Peer }> {
  const child = fork(join(dirname(fileURLToPath(import.meta.url)), 'ledger-process.ts'), [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc', 'pipe'] })
  t.teardown(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return
    const gone = new Promise((resolve) => child.once('exit', resolve))
    child.kill('SIGCONT')
    child.kill('SIGKILL')
    await gone
  })
  await new Promise<void>((resolve, reject) => {
    child.once('exit', (code) => { reject(new Error(`ledger process exited (${code})`)) })
    child.on('message', (m: { type?: string }) => { if (m.type === 'ledger-ready') resolve() })
  })
  return { child, peer: socketPeer(child.stdio[4] as Duplex) }
}
