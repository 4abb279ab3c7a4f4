#!/usr/bin/env node
// Runs the whole suite with tap (TAP output, readable in CI logs) and ends with one plain line
// `tests: N passed, N failed` so any reader can see the counts. Extra arguments go to tap
// (e.g. `npm test -- test/limiter`).
import { spawn } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const tap = join(root, 'node_modules', 'tap', 'dist', 'esm', 'run.mjs')
const child = spawn(process.execPath, [tap, '--reporter=tap', ...process.argv.slice(2)], {
  cwd: root, stdio: ['ignore', 'pipe', 'inherit']
})
let summary = null
let buf = ''
child.stdout.on('data', (chunk) => {
  process.stdout.write(chunk)
  buf += chunk.toString('utf8')
  const lines = buf.split('\n')
  buf = lines.pop() ?? ''
  for (const line of lines) {
    // tap's top-level summary comment: `# { total: 12, pass: 11, fail: 1, skip: 0 }`
    const m = /^# \{ total: (\d+)(.*)\}$/.exec(line)
    if (m) summary = line
  }
})
child.on('close', (code, signal) => {
  let pass = 0; let fail = 0; let skip = 0
  if (summary) {
    pass = Number(/pass: (\d+)/.exec(summary)?.[1] ?? 0)
    fail = Number(/fail: (\d+)/.exec(summary)?.[1] ?? 0)
    skip = Number(/skip: (\d+)/.exec(summary)?.[1] ?? 0) + Number(/todo: (\d+)/.exec(summary)?.[1] ?? 0)
  }
  if (code !== 0 && fail === 0) fail = 1 // a crashed runner is a failure even with no counted assertion
  console.log(`tests: ${pass} passed, ${fail} failed${skip ? `, ${skip} skipped` : ''}`)
  process.exit(code ?? (signal ? 1 : 0))
})
