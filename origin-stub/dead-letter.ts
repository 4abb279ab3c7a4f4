/**
 * The order path when the order system fails (issue 17; the seed course's 151): the worker hands each
 * queued order to the order writer (the order system: `httpOrderWriter` POSTs it to a URL) before it
 * creates the order. A failed hand-over is retried, with the worker's back-off growing from 100 ms to
 * 2 s between rounds (the entry stays pending in the queue meanwhile, so a crash loses nothing); after
 * `maxAttempts` failures the entry is parked in the product's dead-letter stream (`OriginStore.deadLetter`),
 * so that one poisoned order cannot hold the queue. An operator looks at them (`GET
 * /admin/dead-letters/C/P` on the origin) and sends them back into the queue once the order system is
 * fixed (`POST /admin/dead-letters/C/P/redrive`).
 *
 * Stock: a parked order stays QUEUED and keeps its unit locked, so `sale + locked + sold == stock`
 * holds at every step; re-driven, it is created as usual (and cancelled after its payment timeout if
 * unpaid, which gives the unit back).
 */
import type { QueueEntry } from './types.js'

/** Hands one queued order to the order system; rejects when it did not take it. */
export type OrderWriter = (entry: QueueEntry) => Promise<void>

/** The order system over HTTP: POST `{"order_id","campaign","product"}` to `url`; 2xx = taken. */
export function httpOrderWriter (url: string, timeoutMs = 2000): OrderWriter {
  return async (entry) => {
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ order_id: entry.orderId, campaign: entry.ref.campaign, product: entry.ref.product }),
      signal: AbortSignal.timeout(timeoutMs)
    })
    await res.arrayBuffer().catch(() => undefined)
    if (res.status < 200 || res.status > 299) throw new Error(`order system answered ${res.status}`)
  }
}

export interface Attempts {
  /**
   * Hand each entry to the writer; answers the entries it took (to be completed), the entries to park
   * now (their `maxAttempts`-th failure, with the reason) and whether any others failed (retry later).
   */
  send(batch: readonly QueueEntry[]): Promise<{ taken: QueueEntry[], park: Array<{ entry: QueueEntry, reason: string, attempts: number }>, retry: boolean }>
}

/** Failure counts per entry (bounded: entries leave when taken or parked; at most `maxTracked`). */
export function orderAttempts (writer: OrderWriter, maxAttempts: number, maxTracked = 100_000): Attempts {
  const failures = new Map<string, number>()
  return {
    async send (batch) {
      const outcome = await Promise.allSettled(batch.map(async (e) => { await writer(e) }))
      const taken: QueueEntry[] = []
      const park: Array<{ entry: QueueEntry, reason: string, attempts: number }> = []
      let retry = false
      outcome.forEach((o, i) => {
        const e = batch[i] as QueueEntry
        const key = `${e.ref.campaign}\u0000${e.ref.product}\u0000${e.entryId}`
        if (o.status === 'fulfilled') { failures.delete(key); taken.push(e); return }
        const n = (failures.get(key) ?? 0) + 1
        if (n >= maxAttempts) {
          failures.delete(key)
          park.push({ entry: e, reason: o.reason instanceof Error ? o.reason.message : String(o.reason), attempts: n })
          return
        }
        if (failures.size >= maxTracked && !failures.has(key)) failures.delete(failures.keys().next().value as string)
        failures.set(key, n)
        retry = true
      })
      return { taken, park, retry }
    }
  }
}
