// The issue-14 hardening suites run again with every gateway on the strict listener
// (server.parser: strict, gateway/http/raw-server.ts): hostile requests and generated mutations,
// headers/request/body timeouts, keep-alive, and slowhttptest's slow headers and slow bodies.
// test/helpers/config.ts reads FLASHGATE_TEST_PARSER (slow-clients.test.ts writes it into its file).
process.env.FLASHGATE_TEST_PARSER = 'strict'
await import('./hostile.test.js')
await import('./timeouts.test.js')
await import('./slow-clients.test.js')
