/*
 * Solves the gateway's proof-of-work challenge off the page's main thread (the countdown and the buttons
 * stay responsive). Message in: { challenge, difficulty }; out: { progress: N } per batch, then
 * { token } or { error }. The solver is antibot/pow-solver.js, copied beside this file.
 */
/* global importScripts, flashgatePow */
'use strict'
importScripts('pow-solver.js')

self.onmessage = function (e) {
  var ch = e.data
  flashgatePow.solve(ch, { onProgress: function (n) { self.postMessage({ progress: n }) } }).then(
    function (token) { self.postMessage({ token: token }) },
    function (err) { self.postMessage({ error: String(err && err.message ? err.message : err) }) }
  )
}
