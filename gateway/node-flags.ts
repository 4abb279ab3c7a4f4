/**
 * The Node/V8 flag flashgate is measured and shipped with: a larger young generation.
 *
 * Why (measured, not explained): in the bench beside the peers (`bench --scenario reject --peers`)
 * the same build rejected 54k req/s at 18.5 µs of CPU per request with V8's default young generation and
 * 78k at 12.8 µs with 64 MB semi-spaces; the proxy path gained 5–14 % in a side-by-side A/B. The slow
 * state appears after a sequence of other traffic (proxying, quota, the peers' runs) and persists; a
 * fresh process under the same load does not show it. GC traces of the slow state rule out GC pauses
 * (about 2 % of the time) and promotion (with --no-allocation-site-pretenuring nothing is promoted and
 * it is just as slow). Why a larger young generation avoids it is not known. The cost is memory: up to
 * 3 × 64 MB of young generation per process.
 *
 * `npm start` and the bench pass it; `serve` logs a hint without it. `NODE_OPTIONS` accepts it too. The
 * `flashgate` shebang stays `#!/usr/bin/env node`: `env -S` (needed to pass a flag there) is missing
 * from some systems' env.
 */
export const SEMI_SPACE_FLAG = '--max-semi-space-size=64'

/** True when this process runs with a --max-semi-space-size of its own (command line or NODE_OPTIONS). */
export function hasSemiSpaceFlag (execArgv: readonly string[] = process.execArgv, nodeOptions: string = process.env.NODE_OPTIONS ?? ''): boolean {
  return execArgv.some((a) => a.startsWith('--max-semi-space-size')) || /(^|\s)--max-semi-space-size/.test(nodeOptions)
}
