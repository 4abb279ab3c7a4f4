/**
 * The Node/V8 flags flashgate is measured and shipped with. `npm start` and the bench pass them; `serve
 * --workers N` (N > 1) starts its workers with the ones the primary lacks; a single `serve` process that
 * lacks one logs a warning naming it. The `flashgate` shebang stays `#!/usr/bin/env node`: `env -S`
 * (needed to pass a flag there) is missing from some systems' env.
 *
 * `--no-memory-reducer` (command line only: Node refuses it in NODE_OPTIONS, and setting it at run time
 * with `v8.setFlagsFromString` was tried and does not stop the reducer reliably).
 *   When a busy process goes idle, V8's memory reducer runs a full GC some seconds later
 *   (`Mark-Compact (reduce)` in `--trace-gc`). Nothing request-scoped is alive then, so the hidden
 *   classes of request-scoped objects die, and every optimized function that embedded one is thrown away
 *   during that GC (`--trace-deopt`: 145 functions marked "reason: weak objects" — nextTick, the
 *   http server's and streams' hot paths, undici's, ioredis's, and our route and guards). They are
 *   optimized again, but in most runs the process stays slower for the rest of its life: in
 *   `bench --scenario reject --peers` the 429 path went from 12.1–12.7 to 16.8–18.2 µs of CPU per request
 *   after the idle gap in which the reduce GC ran, and a CPU profile puts most of the difference in the
 *   tick object `process.nextTick` builds (0.2 → 3.4 µs per request) and in `writev`. Why the
 *   re-optimized code is slower is not known. With the flag there is no reduce GC, no mass deopt, and
 *   every round runs at the round-1 speed. In production the idle gap is the quiet time before a sale
 *   opens, so the sale would meet the slow state. The cost: an idle gateway keeps the heap it grew under
 *   load (tens of MB) instead of handing it back.
 *
 * `--max-semi-space-size=64` (also accepted in NODE_OPTIONS): a larger young generation. In a side-by-side
 *   A/B the proxy path gained 5–14 %. (An earlier comparison, 54k vs 78k req/s on the reject path, was
 *   the slow state above, which this flag does not prevent.) The cost is memory: up to 3 × 64 MB of young
 *   generation per process.
 */
export const SEMI_SPACE_FLAG = '--max-semi-space-size=64'
export const NO_MEMORY_REDUCER_FLAG = '--no-memory-reducer'
/** In the order they are documented and passed. */
export const SHIPPED_FLAGS: readonly string[] = [SEMI_SPACE_FLAG, NO_MEMORY_REDUCER_FLAG]

/** True when this process runs with a --max-semi-space-size of its own (command line or NODE_OPTIONS). */
export function hasSemiSpaceFlag (execArgv: readonly string[] = process.execArgv, nodeOptions: string = process.env.NODE_OPTIONS ?? ''): boolean {
  return execArgv.some((a) => a.startsWith('--max-semi-space-size')) || /(^|\s)--max-semi-space-size/.test(nodeOptions)
}

/**
 * True when the memory reducer was decided on the command line, either way (`--no-memory-reducer`, or an
 * explicit `--memory-reducer` from an operator who wants the memory back; V8 also takes `_` for `-`).
 */
export function hasMemoryReducerFlag (execArgv: readonly string[] = process.execArgv): boolean {
  return execArgv.some((a) => /^--(no-)?memory[-_]reducer(=|$)/.test(a))
}

/** The shipped flags this process runs without (empty when it has them all). */
export function missingFlags (execArgv: readonly string[] = process.execArgv, nodeOptions: string = process.env.NODE_OPTIONS ?? ''): string[] {
  const missing: string[] = []
  if (!hasSemiSpaceFlag(execArgv, nodeOptions)) missing.push(SEMI_SPACE_FLAG)
  if (!hasMemoryReducerFlag(execArgv)) missing.push(NO_MEMORY_REDUCER_FLAG)
  return missing
}
