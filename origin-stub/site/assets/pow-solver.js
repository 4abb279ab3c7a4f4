/*
 * flashgate proof-of-work solver for browsers (plain JS, WebCrypto; no dependencies).
 *
 * Load it as a classic script (<script src="/static/pow-solver.js"></script>) or import it for its
 * side effect; it defines `globalThis.flashgatePow`:
 *
 *   const token = await flashgatePow.fetchAndSolve()             // GET /_flashgate/challenge, then solve
 *   await fetch('/buy/nov11/153?...', { method: 'POST', headers: { 'x-flashgate-pow': token } })
 *
 * The work: find the smallest counter such that SHA-256(challenge + String(counter)) starts with at
 * least `difficulty` zero bits; the token is `challenge + ':' + counter`. Expected 2^difficulty hashes.
 * Digests are requested in batches so the promise round trips of crypto.subtle overlap.
 */
(function (root) {
  'use strict'
  var BATCH = 256

  function zeroBits (buf) {
    var b = new Uint8Array(buf)
    var n = 0
    for (var i = 0; i < b.length; i++) {
      if (b[i] === 0) { n += 8; continue }
      return n + Math.clz32(b[i]) - 24
    }
    return n
  }

  /**
   * Solve a challenge `{ challenge, difficulty }` (as /_flashgate/challenge answers it).
   * opts.signal (AbortSignal) stops the search; opts.onProgress(counter) is called once per batch.
   * Resolves to the token to send in the captcha token header/field.
   */
  async function solve (ch, opts) {
    opts = opts || {}
    var subtle = root.crypto && root.crypto.subtle
    if (!subtle) throw new Error('flashgatePow: WebCrypto (crypto.subtle) is not available (needs a secure context)')
    var enc = new TextEncoder()
    var prefix = enc.encode(ch.challenge)
    var difficulty = ch.difficulty
    for (var base = 0; ; base += BATCH) {
      if (opts.signal && opts.signal.aborted) throw new Error('flashgatePow: aborted')
      var jobs = new Array(BATCH)
      for (var k = 0; k < BATCH; k++) {
        var digits = enc.encode(String(base + k))
        var msg = new Uint8Array(prefix.length + digits.length)
        msg.set(prefix, 0)
        msg.set(digits, prefix.length)
        jobs[k] = subtle.digest('SHA-256', msg)
      }
      var results = await Promise.all(jobs)
      for (var j = 0; j < BATCH; j++) {
        if (zeroBits(results[j]) >= difficulty) return ch.challenge + ':' + (base + j)
      }
      if (opts.onProgress) opts.onProgress(base + BATCH)
    }
  }

  /** Fetch a challenge from the gateway (default `/_flashgate/challenge`) and solve it. */
  async function fetchAndSolve (url, opts) {
    var res = await fetch(url || '/_flashgate/challenge', { credentials: 'same-origin', cache: 'no-store' })
    if (!res.ok) throw new Error('flashgatePow: challenge endpoint answered ' + res.status)
    return solve(await res.json(), opts)
  }

  root.flashgatePow = { solve: solve, fetchAndSolve: fetchAndSolve, zeroBits: zeroBits }
})(typeof globalThis !== 'undefined' ? globalThis : self)
