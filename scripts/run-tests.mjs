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
// Every failed assertion with the subtests around it, printed again at the end: CI logs are read from
// their tail, and a failure 10,000 lines up is otherwise invisible.
const open = [] // subtest names by depth (4 spaces per level)
const failures = []
child.stdout.on('data', (chunk) => {
  process.stdout.write(chunk)
  buf += chunk.toString('utf8')
  const lines = buf.split('\n')
  buf = lines.pop() ?? ''
  for (const line of lines) {
    // tap's top-level summary comment: `# { total: 12, pass: 11, fail: 1, skip: 0 }`
    const m = /^# \{ total: (\d+)(.*)\}$/.exec(line)
    if (m) summary = line
    const sub = /^( *)# Subtest: (.*)$/.exec(line)
    if (sub) { open.length = sub[1].length / 4; open.push(sub[2]) }
    const bad = /^( *)not ok \d+ - (.*)$/.exec(line)
    if (bad) {
      const depth = bad[1].length / 4
      // a failed parent repeats its failed children: only the innermost lines are printed
      failures.push([...open.slice(0, depth), bad[2]].join(' > '))
    }
  }
})
child.on('close', (code, signal) => {
  let pass = 0; let fail = 0; let skip = 0
  if (summary) {
    pass = Number(/pass: (\d+)/.exec(summary)?.[1] ?? 0)
    fail = Number(/fail: (\d+)/.exec(summary)?.[1] ?? 0)
    skip = Number(/skip: (\d+)/.exec(summary)?.[1] ?? 0) + Number(/todo: (\d+)/.exec(summary)?.[1] ?? 0)
  }
  const leaves = failures.filter((f) => !failures.some((g) => g !== f && g.startsWith(f.replace(/ # time=.*$/, '') + ' > ')))
  if (leaves.length > 0) {
    console.log('\nfailed:')
    for (const f of leaves.slice(0, 50)) console.log(`  ${f}`)
  }
  if (code !== 0 && fail === 0) fail = 1 // a crashed runner is a failure even with no counted assertion
  console.log(`tests: ${pass} passed, ${fail} failed${skip ? `, ${skip} skipped` : ''}`)
  process.exit(code ?? (signal ? 1 : 0))
})
