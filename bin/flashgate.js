#!/usr/bin/env node
// The `flashgate` command: a thin shim over the compiled CLI (run `npm run build` after a change).
// Development without a build: `node --import tsx gateway/cli.ts ...`.
let cli
try {
  cli = await import('../dist/gateway/cli.js')
} catch (err) {
  if (err?.code === 'ERR_MODULE_NOT_FOUND' && String(err.message).includes('dist/gateway/cli.js')) {
    process.stderr.write('flashgate: the compiled CLI is missing; run `npm run build` first\n')
    process.exit(1)
  }
  throw err
}
cli.run()
