#!/usr/bin/env node
// One-command set-up for `npm start`, `npm test` and `npm run bench` on a fresh clone:
// dependencies (npm ci when node_modules is missing or stale), the TypeScript build, and with --test
// a redis-server binary (installed with apt-get when missing and we are root). Node built-ins only:
// this runs before any dependency exists.
import { spawnSync } from 'node:child_process'
import { existsSync, statSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const wantTest = process.argv.includes('--test')

function run (cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', ...opts })
  if (r.status !== 0) {
    console.error(`setup: \`${cmd} ${args.join(' ')}\` failed (exit ${r.status ?? r.signal})`)
    process.exit(1)
  }
}

function has (bin) {
  return spawnSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' }).status === 0
}

// 1. dependencies
const stamp = join(root, 'node_modules', '.package-lock.json')
const lock = join(root, 'package-lock.json')
if (!existsSync(stamp) || statSync(lock).mtimeMs > statSync(stamp).mtimeMs) {
  console.error('setup: installing dependencies (npm ci)')
  run('npm', ['ci', '--no-audit', '--no-fund'])
}

// 2. build (incremental: a no-op build takes about a second)
run(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'])

// 3. redis-server for the tests
if (wantTest && !(has('redis-server') && has('redis-cli'))) {
  if (process.getuid && process.getuid() === 0 && has('apt-get')) {
    console.error('setup: installing redis-server with apt-get (tests start their own on loopback ports)')
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
    run('apt-get', ['update', '-qq'], { env })
    run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', 'redis-server', 'redis-tools'], { env })
  } else {
    console.error('setup: redis-server is needed by the tests: run `sudo apt-get install -y redis-server redis-tools` and retry')
    process.exit(1)
  }
}
