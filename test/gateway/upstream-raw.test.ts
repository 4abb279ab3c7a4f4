// The proxy suites run again with every upstream on `client: raw` (gateway/upstream/raw-pool.ts, the
// HTTP/1.1 client of flashgate's own) behind the strict listener: streaming both ways, backpressure,
// retries and passive health, the connection wait queue, the balancer, upstream timeouts, slow clients,
// and HTTP/2 and TLS clients (their listeners stay on node's stack; the upstream hop is the raw client).
// test/helpers/config.ts and test/gateway/upstream-harness.ts read FLASHGATE_TEST_UPSTREAM_CLIENT.
process.env.FLASHGATE_TEST_UPSTREAM_CLIENT = 'raw'
process.env.FLASHGATE_TEST_PARSER = 'strict'
await import('./proxy.test.js')
await import('./proxy-stream.test.js')
await import('./upstream-balancer.test.js')
await import('./timeouts.test.js')
await import('./slow-clients.test.js')
await import('./tls-h2.test.js')
