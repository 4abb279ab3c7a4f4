/**
 * Load a config file on a worker thread, so a reload never stalls the serving event loop: not on a
 * hostile or huge file, and not on a valid one either (parsing and checking 300 routes takes 0.2–2 s of
 * CPU). The worker answers `{ ok, errors }` and, for a valid file, the loaded config itself with its
 * warnings: a Config is plain data (objects, arrays, Maps, strings, numbers, Buffers), so it crosses
 * by structured clone; `reviveConfig` turns the cloned Uint8Arrays back into Buffers and freezes it
 * again, which takes a few milliseconds where loading took hundreds. Should the clone ever fail (a
 * config field that is not cloneable), the worker answers `config: null` and the caller loads the file
 * itself as before. The worker is terminated after `timeoutMs` (30 s: a backstop only, parsing is
 * bounded by itself; at load 29 on 2 cores a valid 301-route file took more than 10 s of wall time).
 *
 * Run as a module it is the worker; imported, `checkConfigOffThread` starts one per call.
 */
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads'
import { deepFreeze } from './loader/freeze.js'
import { loadConfigFile } from './load.js'
import type { Config } from './types.js'

export interface OffThreadResult {
  readonly ok: boolean
  readonly errors: readonly string[]
  /** The loaded config (ok only; null when it could not be sent across: load it here instead). */
  readonly config?: Config | null
  readonly warnings?: readonly string[]
}

/** A structured clone of a loaded config made whole again: Buffers (cloned as Uint8Arrays), frozen. */
export function reviveConfig (cloned: unknown): Config {
  const walk = (v: unknown): unknown => {
    if (v === null || typeof v !== 'object') return v
    if (v instanceof Uint8Array) return Buffer.isBuffer(v) ? v : Buffer.from(v)
    if (v instanceof Map) {
      for (const [k, x] of v) v.set(k, walk(x))
      return v
    }
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) v[i] = walk(v[i])
      return v
    }
    const o = v as Record<string, unknown>
    for (const k of Object.keys(o)) o[k] = walk(o[k])
    return o
  }
  return deepFreeze(walk(cloned) as Config)
}

export function checkConfigOffThread (file: string, env: NodeJS.ProcessEnv, timeoutMs = 30_000): Promise<OffThreadResult> {
  const self = new URL(import.meta.url)
  return new Promise((resolve) => {
    let w: Worker
    try {
      const limits = { resourceLimits: { maxOldGenerationSizeMb: 512 }, workerData: { file, env } }
      // Under tsx (development, tests) a worker does not inherit its loader: register it there first.
      w = self.pathname.endsWith('.ts')
        ? new Worker(`import('tsx/esm/api').then((m) => { m.register(); return import(${JSON.stringify(self.href)}) })`, { ...limits, eval: true })
        : new Worker(self, limits)
    } catch (err) {
      resolve({ ok: false, errors: [`${file}:1:1: cannot check the config: ${(err as Error).message}`] })
      return
    }
    let done = false
    const finish = (r: OffThreadResult): void => {
      if (done) return
      done = true
      clearTimeout(timer)
      void w.terminate()
      resolve(r)
    }
    const timer = setTimeout(() => { finish({ ok: false, errors: [`${file}:1:1: checking the config took longer than ${timeoutMs} ms`] }) }, timeoutMs)
    w.once('message', (m: OffThreadResult) => {
      if (!m.ok || m.config == null) { finish(m); return }
      try {
        finish({ ok: true, errors: [], warnings: m.warnings ?? [], config: reviveConfig(m.config) })
      } catch {
        finish({ ok: true, errors: [], warnings: m.warnings ?? [], config: null })
      }
    })
    w.once('error', (err) => { finish({ ok: false, errors: [`${file}:1:1: checking the config failed: ${err.message}`] }) })
    w.once('exit', (code) => { finish({ ok: false, errors: [`${file}:1:1: the config check stopped (exit ${code})`] }) })
  })
}

if (!isMainThread && parentPort !== null && (workerData as { file?: unknown } | null)?.file !== undefined) {
  const { file, env } = workerData as { file: string, env: NodeJS.ProcessEnv }
  const r = loadConfigFile(file, env)
  if (!r.ok) {
    parentPort.postMessage({ ok: false, errors: r.errors })
  } else {
    try {
      parentPort.postMessage({ ok: true, errors: [], warnings: r.warnings, config: r.config })
    } catch {
      // not cloneable: the caller loads the file itself
      parentPort.postMessage({ ok: true, errors: [], warnings: r.warnings, config: null })
    }
  }
}
