/**
 * A real primary-side ledger in a child process (forked with an IPC channel): the test process plays the
 * worker and reaches it through IpcStore. Sends `{fg, type: 'ledger-ready'}` once serving; exits when the
 * channel closes.
 */
import { LedgerStore, serveLedger, type Peer } from '../../limiter/ipc-store.js'

const peer = process as unknown as Peer
const store = new LedgerStore({ maxKeys: 10_000, clock: Date.now })
serveLedger(store, peer)
process.on('disconnect', () => { process.exit(0) })
peer.send({ fg: true, type: 'ledger-ready' })
