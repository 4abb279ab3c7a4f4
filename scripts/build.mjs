#!/usr/bin/env node
// The TypeScript build (tsc -p tsconfig.json → dist/), skipped when nothing it compiles changed since
// the last successful build. Used by `npm start`/`npm test`/`npm run bench` (through setup.mjs), by
// `prepare` (npm install in a clone) and by `prepack` (with --clean: `npm pack` ships a dist/ built
// from these sources only). Node built-ins only.
//
// "Nothing changed": a fingerprint of every input — path, size and mtime of each .ts/.js/.json file
// under the folders tsconfig.json includes, plus tsconfig.json, package.json and package-lock.json — is
// the one written in dist/.build-stamp by the last build that succeeded, and dist/gateway/cli.js exists.
// An edited, added or deleted file changes the fingerprint. A no-op check stats a few hundred files
// (tens of ms) instead of running tsc (seconds).
//
//   node scripts/build.mjs            build if needed
//   node scripts/build.mjs --force    build
//   node scripts/build.mjs --clean    remove dist/ and build (prepack)
//   node scripts/build.mjs --check    exit 0 when up to date, 1 when a build is needed (no build)
import { spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const dist = join(root, 'dist')
const stampFile = join(dist, '.build-stamp')
const args = new Set(process.argv.slice(2))

/** The top-level folders tsconfig.json's `include` names (`gateway/**\/*.ts` → gateway). */
function includedFolders () {
  const text = readFileSync(join(root, 'tsconfig.json'), 'utf8')
  const m = /"include"\s*:\s*\[([^\]]*)\]/.exec(text)
  const folders = new Set()
  for (const g of (m?.[1] ?? '').matchAll(/"([^"/*]+)\//g)) folders.add(g[1])
  return [...folders].sort()
}

const SKIP = new Set(['node_modules', 'dist', 'results', '.tap', '.git'])

function walk (dir, out) {
  let entries
  try { entries = readdirSync(dir, { withFileTypes: true }) } catch { return }
  for (const e of entries) {
    if (SKIP.has(e.name)) continue
    const p = join(dir, e.name)
    if (e.isDirectory()) walk(p, out)
    else if (/\.(ts|mts|js|mjs|json)$/.test(e.name)) out.push(p)
  }
}

/** Fingerprint of every build input (path, size, mtime). */
export function fingerprint () {
  const files = ['tsconfig.json', 'package.json', 'package-lock.json'].map((f) => join(root, f)).filter((f) => existsSync(f))
  for (const f of includedFolders()) walk(join(root, f), files)
  files.sort()
  const h = createHash('sha256')
  for (const f of files) {
    const s = statSync(f)
    h.update(`${relative(root, f)}\0${s.size}\0${s.mtimeMs}\n`)
  }
  return `${files.length}:${h.digest('hex')}`
}

function upToDate (fp) {
  if (!existsSync(join(dist, 'gateway', 'cli.js'))) return false
  try { return readFileSync(stampFile, 'utf8') === fp } catch { return false }
}

const before = fingerprint()
if (args.has('--check')) process.exit(upToDate(before) ? 0 : 1)
if (args.has('--clean')) rmSync(dist, { recursive: true, force: true })
else if (!args.has('--force') && upToDate(before)) process.exit(0)

rmSync(stampFile, { force: true })
const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc')
const r = spawnSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.json')], { cwd: root, stdio: 'inherit' })
if (r.status !== 0) {
  console.error(`build: tsc failed (exit ${r.status ?? r.signal})`)
  process.exit(1)
}
// The stamp is what the inputs were when the build started: a file edited during the build rebuilds next time.
writeFileSync(stampFile, before)
