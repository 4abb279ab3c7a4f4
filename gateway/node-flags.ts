/**
 * The Node/V8 flag flashgate is measured and shipped with: a larger young generation.
 *
 * Why: a proxy allocates a few kB of short-lived objects per request. With V8's default semi-space
 * (which starts at 1 MB, grows only under survival pressure and is shrunk again after idle periods),
 * a gateway that has been idle between bursts runs with a small new space: tens of scavenges a
 * second, requests in flight promoted to the old generation, and more mark-compacts. On the reject
 * bench with the peers (`bench --scenario reject --peers`) the same build answered 54k req/s with the
 * default and 78k with `--max-semi-space-size=64` (12.8 instead of 18.5 µs of CPU per request); the
 * proxy path gained 5–14 %. The cost is memory: up to 3 × 64 MB of young generation per process.
 *
 * `npm start`, the bench and the `flashgate` shebang pass it; `NODE_OPTIONS` accepts it too.
 */
export const SEMI_SPACE_FLAG = '--max-semi-space-size=64'

/** True when this process runs with a --max-semi-space-size of its own (command line or NODE_OPTIONS). */
export function hasSemiSpaceFlag (execArgv: readonly string[] = process.execArgv, nodeOptions: string = process.env.NODE_OPTIONS ?? ''): boolean {
  return execArgv.some((a) => a.startsWith('--max-semi-space-size')) || /(^|\s)--max-semi-space-size/.test(nodeOptions)
}
