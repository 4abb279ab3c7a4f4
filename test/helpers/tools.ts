/**
 * The programs a test starts (redis-server, wrk, nginx, chromium, promtool…) come from setup
 * (`scripts/tools.mjs`). A test that needs one never passes by skipping it: when it is missing the
 * test fails with the command that installs it.
 */
import type { Test } from 'tap'
// @ts-expect-error: a plain .mjs module of the setup scripts, without types
import { has, installCommand } from '../../scripts/tools.mjs'

/** True when every program in `bins` is on the PATH; otherwise fails `t`, naming the install command. */
export function needTools (t: Test, ...bins: string[]): boolean {
  const missing = bins.filter((b) => !(has as (b: string) => boolean)(b))
  if (missing.length === 0) return true
  t.fail(`${missing.join(', ')} not installed: run \`npm run setup -- --test\` or \`${(installCommand as (b: string[]) => string)(missing)}\``)
  return false
}
