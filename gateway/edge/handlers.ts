/**
 * The edge endpoints under /_flashgate/ that a config's guards need, one file each:
 * - `GET /_flashgate/link` — a signed purchase link (./link.ts);
 * - `GET /_flashgate/queue`, `GET /_flashgate/queue/seed` — the waiting room (./queue.ts);
 * - `GET /_flashgate/challenge` — a proof-of-work challenge (./challenge.ts).
 * `GET /_flashgate/time` (./time.ts) needs no guard and is mounted by the composition root.
 */
import type { EdgeHandler, GuardDeps } from '../pipeline/types.js'
import { challengeHandler } from './challenge.js'
import { linkHandler } from './link.js'
import { createQueueHandlers } from './queue.js'

/** Build the edge handlers for a config (called once per load by the core). */
export function createEdgeHandlers (deps: GuardDeps): Record<string, EdgeHandler> {
  const handlers: Record<string, EdgeHandler> = createQueueHandlers(deps)
  handlers['/_flashgate/link'] = linkHandler(deps)
  handlers['/_flashgate/challenge'] = challengeHandler(deps)
  return handlers
}
