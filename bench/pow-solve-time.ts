/**
 * Measure proof-of-work solve time (not a test): median / p90 over N fresh challenges, for the Node
 * solver (node:crypto) and the browser solver (antibot/pow-solver.js on WebCrypto, run here under
 * Node's globalThis.crypto.subtle — a browser's WebCrypto is in the same range or slower).
 *
 *   npx tsx bench/pow-solve-time.ts [difficulty=16] [n=20]
 */
import { randomBytes } from 'node:crypto'
import { issueChallenge, solveChallenge } from '../antibot/captcha/pow.js'
import { numberArg, scriptOptions } from '../gateway/cli-args.js'

const { difficulty, n } = scriptOptions({
  prog: 'bench/pow-solve-time.ts',
  usage: 'Usage: npx tsx bench/pow-solve-time.ts [DIFFICULTY] [N]\n\n  DIFFICULTY   leading zero bits, 1..32 (default 16)\n  N            challenges per solver, 1..1000 (default 20)',
  flags: {},
  positionals: 2
}, ({ positionals }) => ({
  difficulty: numberArg(positionals[0], 'DIFFICULTY', 1, 32) ?? 16,
  n: numberArg(positionals[1], 'N', 1, 1000) ?? 20
}))
const key = randomBytes(32)

function stats (ms: number[]): string {
  const s = [...ms].sort((a, b) => a - b)
  const q = (p: number): number => s[Math.min(s.length - 1, Math.floor(p * s.length))] as number
  return `median ${q(0.5).toFixed(0)} ms, p90 ${q(0.9).toFixed(0)} ms, min ${q(0).toFixed(0)} ms, max ${q(1).toFixed(0)} ms`
}

const solverPath = '../antibot/pow-solver.js'
await import(solverPath)
const browser = (globalThis as unknown as { flashgatePow: { solve: (c: { challenge: string, difficulty: number }) => Promise<string> } }).flashgatePow

const nodeMs: number[] = []
const webMs: number[] = []
let tries = 0
for (let i = 0; i < n; i++) {
  const c = issueChallenge(key, difficulty, 60_000, Date.now())
  let t0 = performance.now()
  tries += solveChallenge(c.challenge, difficulty) + 1
  nodeMs.push(performance.now() - t0)
  const c2 = issueChallenge(key, difficulty, 60_000, Date.now())
  t0 = performance.now()
  await browser.solve(c2)
  webMs.push(performance.now() - t0)
}
console.log(`difficulty ${difficulty} (expected ${2 ** difficulty} hashes; mean counter seen ${(tries / n).toFixed(0)}), ${n} solves each`)
console.log(`node:crypto solver     ${stats(nodeMs)}`)
console.log(`WebCrypto solver (js)  ${stats(webMs)}`)
