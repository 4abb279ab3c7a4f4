#!/usr/bin/env node
// The `flashgate` command: a thin shim over the compiled CLI (run `npm run build` after a change).
import '../dist/gateway/cli.js'
