#!/usr/bin/env node
// One-command set-up for `npm start`, `npm test` and `npm run bench` on a fresh clone:
// dependencies (npm ci when node_modules is missing or stale), the TypeScript build, and with --test
// every program the tests start (scripts/tools.mjs: redis-server, wrk, nginx, chromium, promtool…),
// installed with apt-get when missing and we are root. Node built-ins only:
// this runs before any dependency exists.
import { spawnSync } from 'node:child_process'
import { existsSync, statSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { has, installCommand, missing } from './tools.mjs'
import { ensureNode22, node22InstallCommand } from './node-lines.mjs'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const wantTest = process.argv.includes('--test')

function run (cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', ...opts })
  if (r.status !== 0) {
    console.error(`setup: \`${cmd} ${args.join(' ')}\` failed (exit ${r.status ?? r.signal})`)
    process.exit(1)
  }
}

// 1. dependencies
const stamp = join(root, 'node_modules', '.package-lock.json')
const lock = join(root, 'package-lock.json')
if (!existsSync(stamp) || statSync(lock).mtimeMs > statSync(stamp).mtimeMs) {
  console.error('setup: installing dependencies (npm ci)')
  run('npm', ['ci', '--no-audit', '--no-fund'])
}

// 2. build, skipped when no input changed since the last build (scripts/build.mjs)
run(process.execPath, [join(root, 'scripts', 'build.mjs')])

// 3. every program the tests start (scripts/tools.mjs), installed with apt-get when missing
if (wantTest) {
  const need = missing()
  if (need.length > 0) {
    const cmd = installCommand(need)
    if (process.getuid && process.getuid() === 0 && has('apt-get')) {
      console.error(`setup: installing what the tests start: ${need.join(', ')}`)
      const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
      run('apt-get', ['update', '-qq'], { env })
      run('sh', ['-c', `${cmd} -qq`], { env })
      const still = missing(need)
      if (still.length > 0) {
        console.error(`setup: still missing after apt-get: ${still.join(', ')}`)
        process.exit(1)
      }
    } else {
      console.error(`setup: the tests need ${need.join(', ')}: run \`sudo ${cmd}\` and retry`)
      process.exit(1)
    }
  }
}

// 4. the second Node line the tests run a part of the suite under (scripts/node-lines.mjs): an npm
//    registry package into node_modules/.cache, never the system node
if (wantTest && !ensureNode22()) {
  console.error(`setup: the tests need a Node 22 binary: run \`${node22InstallCommand()}\``)
  process.exit(1)
}
