/**
 * A real primary-side ledger in a child process: the test process plays the worker and reaches it through
 * IpcStore over the socketpair on the child's fd 4, as a gateway worker does. Sends `{type: 'ledger-ready'}`
 * over Node's IPC channel once serving; exits when that channel closes.
 */
import { Socket } from 'node:net'
import { LedgerStore, serveLedger, socketPeer } from '../../limiter/ipc-store.js'

const store = new LedgerStore({ maxKeys: 10_000, clock: Date.now })
serveLedger(store, socketPeer(new Socket({ fd: 4, readable: true, writable: true })))
process.on('disconnect', () => { process.exit(0) })
process.send?.({ type: 'ledger-ready' })
