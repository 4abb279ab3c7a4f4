/**
 * Config fixtures for gateway tests: YAML text → a temp file → the real loader. Tests thus exercise
 * the same normalised Config the CLI builds.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { loadConfigText } from '../../conf/load.js'
import type { Config } from '../../conf/types.js'

/** Load YAML text as a config (throws with the problems when invalid). */
export function yamlConfig (text: string, file = '/virtual/flashgate.yaml', env: NodeJS.ProcessEnv = {}): Config {
  const r = loadConfigText(text, file, env)
  if (!r.ok) throw new Error('test config invalid:\n' + r.errors.join('\n'))
  return withTestParser(r.config)
}

/**
 * FLASHGATE_TEST_PARSER=strict|node runs a test file's gateways on that listener (set by
 * test/gateway/strict-hardening.test.ts to hold the hardening suites to the strict parser too).
 */
export function withTestParser (c: Config): Config {
  const p = process.env.FLASHGATE_TEST_PARSER
  const out = p !== 'strict' && p !== 'node' ? c : Object.freeze({ ...c, server: Object.freeze({ ...c.server, parser: p }) })
  return withTestClient(out)
}

/**
 * FLASHGATE_TEST_UPSTREAM_CLIENT=raw|undici puts every upstream of a test file's gateways on that HTTP
 * client (set by test/gateway/upstream-raw.test.ts to hold the proxy suites to `client: raw` too).
 */
export function withTestClient (c: Config): Config {
  const k = process.env.FLASHGATE_TEST_UPSTREAM_CLIENT
  if (k !== 'raw' && k !== 'undici') return c
  const ups = new Map([...c.upstreams].map(([n, u]) => [n, Object.freeze({ ...u, client: k })]))
  return Object.freeze({ ...c, upstreams: ups })
}

/** A temp directory removed at teardown; `write(name, text)` returns the file's path. */
export function tempDir (t: { teardown: (fn: () => void) => void }): { dir: string, write: (name: string, text: string) => string } {
  const dir = mkdtempSync(join(tmpdir(), 'flashgate-test-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  return {
    dir,
    write (name, text) {
      const p = join(dir, name)
      writeFileSync(p, text)
      return p
    }
  }
}

/** A minimal gateway config: one upstream `origin` at `originUrl`, the given routes YAML (indented list items). */
export function baseYaml (originUrl: string, routes: string, extra = ''): string {
  return `listen: 127.0.0.1:0
admin: 127.0.0.1:0
access_log: { enabled: false }
upstreams:
  origin:
    targets:
      - { url: ${originUrl} }
    retries: 0
${extra}
routes:
${routes}
`
}
