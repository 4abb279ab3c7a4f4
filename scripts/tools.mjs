// The programs the tests and the bench start, and the Debian packages that bring them. One table for
// setup (which installs what is missing) and for the tests (which fail, naming the install command,
// when a program is still missing: a test never passes by skipping a tool).
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'

/** program → Debian packages that provide it (and the programs it is used with). */
export const TOOLS = {
  'redis-server': ['redis-server', 'redis-tools'],
  'redis-cli': ['redis-tools'],
  'redis-sentinel': ['redis-sentinel'],
  wrk: ['wrk'],
  nginx: ['nginx-light', 'libnginx-mod-http-lua'],
  curl: ['curl'],
  openssl: ['openssl'],
  promtool: ['prometheus'],
  prometheus: ['prometheus'],
  slowhttptest: ['slowhttptest'],
  h2load: ['nghttp2-client'],
  chromium: ['chromium'],
  git: ['git'],
  'systemd-analyze': ['systemd'],
  // Libraries the OpenResty-style peers of the bench load (bench/peers-kit/run-peers.sh): named by a file
  // they install, since they bring no program.
  '/usr/share/lua/5.1/resty/core.lua': ['lua-resty-core'],
  '/usr/share/lua/5.1/resty/lrucache.lua': ['lua-resty-lrucache'],
  '/usr/share/lua/5.1/nginx/redis.lua': ['lua-nginx-redis']
}

/** Is `bin` on the PATH (or, for an absolute path, does the file exist)? */
export function has (bin) {
  if (bin.startsWith('/')) return existsSync(bin)
  return spawnSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' }).status === 0
}

/** The command that installs what `bins` need. */
export function installCommand (bins) {
  const pkgs = [...new Set(bins.flatMap((b) => TOOLS[b] ?? [b]))]
  return `apt-get install -y --no-install-recommends ${pkgs.join(' ')}`
}

/** The programs of the table that are missing. */
export function missing (bins = Object.keys(TOOLS)) {
  return bins.filter((b) => !has(b))
}
