/**
 * Prometheus tools for tests: `promtool check metrics` on an exposition (stdin), and a scrape parsed
 * into samples. promtool is a real program (Debian's prometheus package, scripts/tools.mjs).
 */
import { spawn } from 'node:child_process'

/** Run `promtool ARGS` with `stdin`; resolves with its exit code and output (bounded: 30 s). */
export async function promtool (args: readonly string[], stdin = ''): Promise<{ code: number | null, out: string }> {
  return await new Promise((resolve, reject) => {
    const p = spawn('promtool', [...args], { stdio: ['pipe', 'pipe', 'pipe'] })
    let out = ''
    const timer = setTimeout(() => { p.kill('SIGKILL') }, 30_000)
    p.stdout.on('data', (c: Buffer) => { out += c.toString() })
    p.stderr.on('data', (c: Buffer) => { out += c.toString() })
    p.on('error', (err) => { clearTimeout(timer); reject(err) })
    p.on('close', (code) => { clearTimeout(timer); resolve({ code, out }) })
    p.stdin.end(stdin)
  })
}

export interface Sample { readonly name: string, readonly labels: Record<string, string>, readonly value: number }

/** Parse the Prometheus text format's sample lines (comments skipped). */
export function parseSamples (text: string): Sample[] {
  const out: Sample[] = []
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)/.exec(line)
    if (m === null) continue
    const labels: Record<string, string> = {}
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1] as string] = (l[2] as string).replace(/\\(.)/g, '$1')
    out.push({ name: m[1] as string, labels, value: Number(m[3]) })
  }
  return out
}

/** Samples named `name` whose labels include `match`. */
export function samples (all: readonly Sample[], name: string, match: Record<string, string> = {}): Sample[] {
  return all.filter((s) => s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v))
}
