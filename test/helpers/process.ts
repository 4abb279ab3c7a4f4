/**
 * The gateway as a child process (`node --import tsx gateway/cli.ts ...`, no build needed), for tests
 * of signals and workers. Its stderr JSON log lines are collected; `waitFor` resolves on a matching one.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..')

export interface Proc {
  readonly child: ChildProcess
  readonly lines: Array<Record<string, unknown>>
  readonly stdout: () => string
  readonly stderr: () => string
  /** Resolves with the first log line (past or future) matching `pred`; rejects after `ms`. */
  waitFor (pred: (l: Record<string, unknown>) => boolean, ms?: number): Promise<Record<string, unknown>>
  /** Resolves with the exit code (or the signal name). */
  readonly exited: Promise<number | string>
}

export function spawnCli (t: { teardown: (fn: () => void) => void }, args: string[], env: NodeJS.ProcessEnv = {}): Proc {
  const child = spawn(process.execPath, ['--import', 'tsx', join(root, 'gateway', 'cli.ts'), ...args], {
    cwd: root, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe']
  })
  const lines: Array<Record<string, unknown>> = []
  let out = ''
  let err = ''
  let partial = ''
  const waiters: Array<{ pred: (l: Record<string, unknown>) => boolean, resolve: (l: Record<string, unknown>) => void }> = []
  child.stdout?.on('data', (c: Buffer) => { out += c.toString() })
  child.stderr?.on('data', (c: Buffer) => {
    err += c.toString()
    partial += c.toString()
    const parts = partial.split('\n')
    partial = parts.pop() ?? ''
    for (const p of parts) {
      let l: Record<string, unknown>
      try { l = JSON.parse(p) } catch { continue }
      lines.push(l)
      for (let i = waiters.length - 1; i >= 0; i--) {
        const w = waiters[i]
        if (w !== undefined && w.pred(l)) { waiters.splice(i, 1); w.resolve(l) }
      }
    }
  })
  const exited = new Promise<number | string>((resolve) => { child.on('exit', (code, signal) => { resolve(code ?? signal ?? -1) }) })
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  return {
    child,
    lines,
    stdout: () => out,
    stderr: () => err,
    exited,
    waitFor (pred, ms = 30_000) {
      const found = lines.find(pred)
      if (found !== undefined) return Promise.resolve(found)
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => { reject(new Error(`timed out waiting for a log line; stderr:\n${err}`)) }, ms)
        waiters.push({ pred, resolve: (l) => { clearTimeout(timer); resolve(l) } })
        void exited.then((code) => { clearTimeout(timer); reject(new Error(`process exited (${code}) before the log line; stderr:\n${err}`)) })
      })
    }
  }
}
