/**
 * Judge a config file on a worker thread, so a reload never stalls the serving event loop on a hostile
 * or huge file: the gateway asks here first, and loads the file itself (fast, for a valid one) only when
 * the worker found it valid. The worker answers only `{ ok, errors }` (plain strings: nothing to clone
 * but text); it is terminated after `timeoutMs`.
 *
 * Run as a module it is the worker; imported, `checkConfigOffThread` starts one per call.
 */
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads'
import { loadConfigFile } from './load.js'

export interface OffThreadResult { readonly ok: boolean, readonly errors: readonly string[] }

export function checkConfigOffThread (file: string, env: NodeJS.ProcessEnv, timeoutMs = 10_000): Promise<OffThreadResult> {
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
    w.once('message', (m: OffThreadResult) => { finish(m) })
    w.once('error', (err) => { finish({ ok: false, errors: [`${file}:1:1: checking the config failed: ${err.message}`] }) })
    w.once('exit', (code) => { finish({ ok: false, errors: [`${file}:1:1: the config check stopped (exit ${code})`] }) })
  })
}

if (!isMainThread && parentPort !== null && (workerData as { file?: unknown } | null)?.file !== undefined) {
  const { file, env } = workerData as { file: string, env: NodeJS.ProcessEnv }
  const r = loadConfigFile(file, env)
  parentPort.postMessage(r.ok ? { ok: true, errors: [] } : { ok: false, errors: r.errors })
}
