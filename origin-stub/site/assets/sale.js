/*
 * The flashgate sale page (plain JS, no build step). It talks only to the gateway's edge endpoints and
 * to the guarded purchase routes:
 *
 *   GET  /_flashgate/time?campaign=C        the server clock and the sale's start/end (countdown)
 *   GET  /_flashgate/queue?campaign=C       the waiting room, when the campaign has one (404: none)
 *   GET  /_flashgate/challenge              a proof-of-work puzzle, solved in a Web Worker (404: no pow)
 *   GET  /_flashgate/link?campaign&product  the purchase URL signed for this user
 *   POST <that URL>                         the buy, through the whole funnel
 *   GET  /orders/:id, POST /orders/:id/pay  the order status (polled) and the payment
 *   GET  /_flashgate/pending/:ticket        a buy answered 202 PENDING (store journaled it)
 *
 * Every answer is shown for what it is: SOLD_OUT, DUPLICATE, RATE_LIMITED (the button waits out
 * Retry-After), PENDING, QUEUE_REQUIRED (back to the room), NOT_STARTED, ENDED.
 */
(function () {
  'use strict'

  var body = document.body
  var params = new URLSearchParams(location.search)
  var campaign = params.get('campaign') || body.dataset.campaign || 'demo'
  var products = []
  ;[params.get('product')].concat((body.dataset.products || '').split(',')).forEach(function (p) {
    p = (p || '').trim()
    if (p !== '' && products.indexOf(p) === -1) products.push(p)
  })
  var userHeader = body.dataset.userHeader || ''
  var powHeader = body.dataset.powHeader || 'x-flashgate-pow'
  var POW_TIMEOUT_MS = 60000
  var ORDER_POLL_MS = 10 * 60000

  function $ (id) { return document.getElementById(id) }

  var state = {
    offset: 0, // server clock - this clock, ms
    rtt: null,
    startsAt: null,
    endsAt: null,
    user: '',
    room: { present: null, status: '', admitted: false, timer: null, generation: 0 },
    busy: false,
    final: null, // a label once this user's attempt is over (bought, sold out, duplicate, ended)
    retryUntil: 0,
    order: null
  }
  window.flashgateSale = state // for a curious developer (and the browser test)

  // ---- identity -------------------------------------------------------------------------------

  function randomUser () {
    var a = new Uint8Array(4)
    crypto.getRandomValues(a)
    return 'shopper-' + Array.prototype.map.call(a, function (b) { return ('0' + b.toString(16)).slice(-2) }).join('')
  }

  function loadUser () {
    var u = params.get('user')
    if (!u) { try { u = localStorage.getItem('flashgate-user') } catch (e) { u = null } }
    setUser(u || randomUser())
  }

  function setUser (u) {
    state.user = String(u).trim().slice(0, 64)
    $('user').value = state.user
    try { localStorage.setItem('flashgate-user', state.user) } catch (e) { /* private mode */ }
  }

  // ---- requests -------------------------------------------------------------------------------

  function api (method, url, extra) {
    var h = {}
    if (userHeader !== '' && state.user !== '') h[userHeader] = state.user
    if (extra) Object.keys(extra).forEach(function (k) { h[k] = extra[k] })
    return fetch(url, { method: method, headers: h, credentials: 'same-origin', cache: 'no-store' }).then(function (res) {
      return res.text().then(function (text) {
        var json = null
        try { json = JSON.parse(text) } catch (e) { json = null }
        return { status: res.status, json: json, headers: res.headers }
      })
    })
  }

  function q (v) { return encodeURIComponent(v) }

  // ---- the clock ------------------------------------------------------------------------------

  /** Three samples of the gateway's clock; the one with the shortest round trip sets the offset. */
  function syncClock () {
    var best = null
    var n = 0
    function sample () {
      var t0 = performance.now()
      var w0 = Date.now()
      return api('GET', '/_flashgate/time?campaign=' + q(campaign)).then(function (r) {
        var rtt = performance.now() - t0
        if (r.status !== 200 || !r.json || typeof r.json.now !== 'number') throw new Error('the clock endpoint answered ' + r.status + (r.json && r.json.code ? ' ' + r.json.code : ''))
        if (best === null || rtt < best.rtt) best = { rtt: rtt, offset: r.json.now - (w0 + rtt / 2), json: r.json }
        if (++n < 3) return sample()
      })
    }
    return sample().then(function () {
      state.offset = best.offset
      state.rtt = best.rtt
      if (typeof best.json.starts_at === 'number') state.startsAt = best.json.starts_at
      if (typeof best.json.ends_at === 'number') state.endsAt = best.json.ends_at
      $('clock-note').textContent = 'Clock synced with the gateway (±' + Math.ceil(best.rtt / 2) + ' ms)'
      tick()
    })
  }

  function serverNow () { return Date.now() + state.offset }

  function two (n) { return (n < 10 ? '0' : '') + n }
  function duration (ms) {
    var s = Math.max(0, Math.ceil(ms / 1000))
    var d = Math.floor(s / 86400)
    var h = Math.floor(s / 3600) % 24
    var m = Math.floor(s / 60) % 60
    return (d > 0 ? d + 'd ' : '') + two(h) + ':' + two(m) + ':' + two(s % 60)
  }

  function phase () {
    if (state.startsAt === null) return 'loading'
    var now = serverNow()
    if (now < state.startsAt) return 'before'
    if (state.endsAt !== null && now >= state.endsAt) return 'ended'
    return 'open'
  }

  function tick () {
    var p = phase()
    var el = $('phase')
    var now = serverNow()
    if (el.dataset.phase !== p) el.dataset.phase = p
    if (p === 'before') { el.textContent = 'The sale opens in'; $('countdown').textContent = duration(state.startsAt - now) }
    else if (p === 'open') { el.textContent = 'The sale is open — ends in'; $('countdown').textContent = state.endsAt === null ? 'OPEN' : duration(state.endsAt - now) }
    else if (p === 'ended') { el.textContent = 'The sale has ended'; $('countdown').textContent = '00:00:00' }
    updateButton()
  }

  // ---- the waiting room -----------------------------------------------------------------------

  function restartRoom () {
    var room = state.room
    room.generation++
    clearTimeout(room.timer)
    room.present = null
    room.admitted = false
    room.status = ''
    pollRoom(room.generation)
  }

  function pollRoom (generation) {
    var room = state.room
    if (generation !== room.generation || room.present === false) return
    api('GET', '/_flashgate/queue?campaign=' + q(campaign)).then(function (r) {
      if (generation !== room.generation) return
      var next = 2000
      if (r.status === 404 && room.present === null) { room.present = false; $('room').hidden = true; updateButton(); return }
      room.present = true
      $('room').hidden = false
      if (r.status === 200 && r.json) {
        room.status = r.json.status
        $('room-status').dataset.status = r.json.status
        // Position 0 while waiting: joined during the pre-queue, the order is drawn (shuffled) at the start.
        $('room-position').textContent = typeof r.json.position !== 'number' ? '–' : r.json.position === 0 ? (r.json.status === 'waiting' ? 'drawn at the start' : '–') : '#' + r.json.position
        $('room-eta').textContent = typeof r.json.eta_ms === 'number' ? '~' + duration(r.json.eta_ms) : '–'
        if (typeof r.json.poll_ms === 'number') next = r.json.poll_ms
        switch (r.json.status) {
          case 'not_open': $('room-status').textContent = 'The line opens before the sale starts; keep this page open.'; break
          case 'waiting':
            $('room-status').textContent = r.json.position === 0
              ? 'You are in the line. Everyone who joins before the start gets a fair, random place when it opens.'
              : 'You are in line. Keep this page open: your place is kept while it polls.'
            break
          case 'admitted':
            room.admitted = true
            $('room-status').textContent = 'It is your turn: you may buy now.'
            $('room-position').textContent = '–'
            $('room-eta').textContent = 'now'
            updateButton()
            return // the pass is in a cookie; back to the room only if a buy says QUEUE_REQUIRED
          case 'sold_out':
            $('room-status').textContent = 'Sold out while you waited — sorry.'
            finish('Sold out', 'sold_out', 'Sold out — every unit is taken.')
            return
          case 'closed':
            // Before ends_at, "closed" for this user means their turn was used: a pass buys once.
            if (phase() === 'open') {
              $('room-status').textContent = 'Your turn has been used: one purchase per turn.'
              finish('Turn used', 'duplicate', 'You have had your turn in the line (one purchase per turn).')
            } else {
              $('room-status').textContent = 'The waiting room is closed.'
              finish('The sale has ended', 'error', 'The waiting room is closed.')
            }
            return
          default: $('room-status').textContent = r.json.status
        }
      } else if (r.status === 429) {
        next = retryAfterMs(r, 2000)
        $('room-status').textContent = 'The line is busy; retrying in ' + Math.ceil(next / 1000) + ' s.'
      } else if (r.status === 401) {
        $('room-status').textContent = 'Say who you are to join the line.'
      } else {
        $('room-status').textContent = 'The line answered ' + r.status + (r.json && r.json.code ? ' ' + r.json.code : '') + '; retrying.'
      }
      updateButton()
      room.timer = setTimeout(function () { pollRoom(generation) }, Math.min(30000, Math.max(250, next)))
    }, function () {
      if (generation !== room.generation) return
      room.timer = setTimeout(function () { pollRoom(generation) }, 2000)
    })
  }

  // ---- the proof-of-work ----------------------------------------------------------------------

  function solveInWorker (ch) {
    return new Promise(function (resolve, reject) {
      var w
      try { w = new Worker('/assets/pow-worker.js') } catch (e) { reject(e); return }
      var bar = $('pow-progress')
      var expected = Math.pow(2, ch.difficulty)
      bar.hidden = false
      bar.value = 0
      var timer = setTimeout(function () { w.terminate(); bar.hidden = true; reject(new Error('the puzzle took too long')) }, POW_TIMEOUT_MS)
      w.onmessage = function (e) {
        var m = e.data
        if (typeof m.progress === 'number') { bar.value = Math.min(0.95, 1 - Math.exp(-m.progress / expected)); return }
        clearTimeout(timer)
        w.terminate()
        bar.value = 1
        bar.hidden = true
        if (typeof m.token === 'string') resolve(m.token); else reject(new Error(m.error || 'the puzzle failed'))
      }
      w.onerror = function (e) { e.preventDefault(); clearTimeout(timer); w.terminate(); bar.hidden = true; reject(new Error('the puzzle worker failed: ' + (e.message || 'error'))) }
      w.postMessage({ challenge: ch.challenge, difficulty: ch.difficulty })
    })
  }

  // ---- buying ---------------------------------------------------------------------------------

  function setStatus (kind, text) {
    var el = $('status')
    el.dataset.state = kind
    el.textContent = text
  }

  function finish (label, kind, text) {
    state.final = label
    setStatus(kind, text)
    updateButton()
  }

  function retryAfterMs (r, dflt) {
    var v = r.headers.get('retry-after')
    var s = v === null ? NaN : Number(v)
    return Number.isFinite(s) && s >= 0 ? Math.max(1000, s * 1000) : dflt
  }

  function updateButton () {
    var b = $('buy')
    var p = phase()
    var label
    var enabled = false
    if (state.final !== null) label = state.final
    else if (state.busy) label = 'Working…'
    else if (p === 'loading') label = 'Connecting…'
    else if (p === 'before') label = 'Wait for the start'
    else if (p === 'ended') label = 'The sale has ended'
    else if (state.room.present === true && !state.room.admitted) label = 'Waiting in line…'
    else if (state.room.present === null) label = 'Checking the line…'
    else if (Date.now() < state.retryUntil) label = 'Retry in ' + Math.ceil((state.retryUntil - Date.now()) / 1000) + ' s'
    else if (state.user === '') label = 'Say who you are first'
    else { label = 'Buy now'; enabled = true }
    if (b.textContent !== label) b.textContent = label
    b.disabled = !enabled
  }

  function buy () {
    if (state.busy || state.final !== null) return
    var product = $('product').value
    state.busy = true
    updateButton()
    setStatus('wait', 'Solving the anti-bot puzzle…')
    var token = null
    api('GET', '/_flashgate/challenge').then(function (ch) {
      if (ch.status === 404) return null // no proof-of-work captcha on this gateway
      if (ch.status !== 200 || !ch.json) throw new Error('the puzzle endpoint answered ' + ch.status)
      return solveInWorker(ch.json)
    }).then(function (t) {
      token = t
      setStatus('wait', 'Getting your purchase link…')
      return api('GET', '/_flashgate/link?campaign=' + q(campaign) + '&product=' + q(product))
    }).then(function (link) {
      if (link.status !== 200 || !link.json || typeof link.json.url !== 'string') return rejected(link)
      setStatus('wait', 'Buying…')
      var extra = {}
      if (token !== null) extra[powHeader] = token
      return api(link.json.method || 'POST', link.json.url, extra).then(bought)
    }).catch(function (e) {
      setStatus('error', 'Something went wrong (' + e.message + ') — try again.')
    }).then(function () {
      state.busy = false
      updateButton()
    })
  }

  function bought (r) {
    if (r.status >= 200 && r.status < 300 && r.json) {
      if (r.json.status === 'PENDING' && r.json.ticket) {
        setStatus('pending', 'Your purchase is in progress (PENDING): it is recorded and will be confirmed here in a moment…')
        pollPending(r.json.ticket, Date.now() + ORDER_POLL_MS)
        return
      }
      if (r.json.order_id) {
        finish('You got one', 'ok', 'You got one! Your order is being created.')
        remember(r.json.order_id)
        showOrder(r.json.order_id, r.json.status || 'QUEUED')
        return
      }
      finish('Done', 'ok', 'The shop answered ' + r.status + '.')
      return
    }
    rejected(r)
  }

  function rejected (r) {
    var code = r.json && r.json.code ? r.json.code : String(r.status)
    switch (code) {
      case 'SOLD_OUT': finish('Sold out', 'sold_out', 'Sold out — every unit is taken.'); break
      case 'DUPLICATE':
        finish('Already tried', 'duplicate', 'You have already tried for this product: one attempt per person (DUPLICATE).')
        if (r.json && r.json.order_id) showOrder(r.json.order_id, 'QUEUED')
        break
      case 'RATE_LIMITED': {
        var ms = retryAfterMs(r, 1000)
        state.retryUntil = Date.now() + ms
        setStatus('limited', 'Too many requests right now (RATE_LIMITED): retry in ' + Math.ceil(ms / 1000) + ' s.')
        break
      }
      case 'NOT_STARTED':
        if (r.json && typeof r.json.starts_at === 'number') {
          state.startsAt = r.json.starts_at
          if (typeof r.json.now === 'number') state.offset = r.json.now - Date.now()
        }
        setStatus('wait', 'The sale has not started yet (NOT_STARTED).')
        break
      case 'ENDED': finish('The sale has ended', 'error', 'The sale has ended (ENDED).'); break
      case 'QUEUE_REQUIRED':
        if (state.room.admitted) {
          // The room said "admitted" and the buy says no pass: this turn's pass is used (it buys once).
          finish('Turn used', 'duplicate', 'Your turn in the line has been used: one purchase per turn (QUEUE_REQUIRED).')
        } else {
          setStatus('wait', 'You need a turn from the waiting room (QUEUE_REQUIRED): back in line.')
          restartRoom()
        }
        break
      case 'CAPTCHA_REQUIRED': case 'CAPTCHA_INVALID':
        setStatus('error', 'The anti-bot check did not pass (' + code + ') — try again.')
        break
      case 'LINK_INVALID': case 'LINK_EXPIRED':
        setStatus('error', 'The purchase link is no longer valid (' + code + ') — try again.')
        break
      case 'UNAUTHENTICATED': setStatus('error', 'Say who you are first (UNAUTHENTICATED).'); break
      case 'BLOCKED': finish('Blocked', 'error', 'This connection is blocked (BLOCKED).'); break
      case 'STORE_UNAVAILABLE': case 'UPSTREAM_UNAVAILABLE': case 'UPSTREAM_TIMEOUT': case 'OVERLOADED':
        setStatus('error', 'The shop is overloaded (' + code + ') — try again in a moment.')
        break
      default: setStatus('error', 'Unexpected answer: ' + r.status + ' ' + code + '.')
    }
  }

  function pollPending (ticket, deadline) {
    if (Date.now() > deadline) { setStatus('error', 'No confirmation yet — check your orders later.'); return }
    api('GET', '/_flashgate/pending/' + q(ticket)).then(function (r) {
      var s = r.json && r.json.status
      if (r.status === 200 && s === 'PENDING') { setTimeout(function () { pollPending(ticket, deadline) }, 1000); return }
      if (r.status === 200 && s === 'ADMITTED') {
        // The gateway replayed the buy to the shop: `upstream` is the shop's own answer to it.
        var up = r.json.upstream || { status: 200, body: {} }
        var body = up.body && typeof up.body === 'object' ? up.body : {}
        if (up.status >= 400) { rejected({ status: up.status, json: body, headers: r.headers }); return }
        finish('You got one', 'ok', 'Confirmed: you got one!')
        var id = body.order_id || r.json.order_id
        if (id) { remember(id); showOrder(id, body.status || 'QUEUED') }
        return
      }
      if (s === 'SOLD_OUT' || s === 'DUPLICATE') { rejected({ status: 409, json: { code: s }, headers: r.headers }); return }
      if (s === 'FAILED') { setStatus('error', 'The shop could not take your purchase (' + (r.json.code || 'FAILED') + ') — try again.'); return }
      setTimeout(function () { pollPending(ticket, deadline) }, 2000)
    }, function () { setTimeout(function () { pollPending(ticket, deadline) }, 2000) })
  }

  // ---- the order ------------------------------------------------------------------------------

  /** The order this user got in this campaign, kept so a reload shows it again. */
  function orderKey () { return 'flashgate-order:' + campaign + ':' + state.user }
  function remember (id) { try { localStorage.setItem(orderKey(), id) } catch (e) { /* private mode */ } }
  function remembered () { try { return localStorage.getItem(orderKey()) } catch (e) { return null } }

  /** Show this user's earlier order, if any: the attempt is over, the order may still need paying. */
  function resume () {
    var id = remembered()
    if (id === null) return false
    finish('You got one', 'ok', 'You got one earlier in this sale.')
    showOrder(id, 'QUEUED')
    return true
  }

  function renderOrder (status) {
    var el = $('order-status')
    el.dataset.status = status
    el.textContent = status
    $('pay').hidden = status !== 'CREATED'
  }

  function showOrder (id, status) {
    state.order = { id: id, status: status }
    $('order').hidden = false
    $('order-id').textContent = id
    renderOrder(status)
    pollOrder(id, Date.now() + ORDER_POLL_MS, 300)
  }

  function pollOrder (id, deadline, wait) {
    if (state.order === null || state.order.id !== id) return
    if (Date.now() > deadline) return
    setTimeout(function () {
      api('GET', '/orders/' + q(id)).then(function (r) {
        if (r.status === 200 && r.json && r.json.status) {
          state.order.status = r.json.status
          renderOrder(r.json.status)
          if (r.json.status === 'CREATED') setStatus('ok', 'Your order is created: pay to keep it.')
          if (r.json.status === 'CREATED' || r.json.status === 'PAID' || r.json.status === 'CANCELLED') return
        }
        pollOrder(id, deadline, Math.min(2000, wait * 1.5))
      }, function () { pollOrder(id, deadline, 2000) })
    }, wait)
  }

  function pay () {
    var o = state.order
    if (o === null) return
    $('pay').disabled = true
    api('POST', '/orders/' + q(o.id) + '/pay').then(function (r) {
      if (r.status === 200 && r.json && r.json.status === 'PAID') {
        o.status = 'PAID'
        renderOrder('PAID')
        setStatus('ok', 'Paid. Thank you!')
      } else if (r.json && r.json.code === 'ORDER_CANCELLED') {
        renderOrder('CANCELLED')
        setStatus('error', 'The order was cancelled: it was not paid in time.')
      } else {
        setStatus('error', 'Payment answered ' + r.status + (r.json && r.json.code ? ' ' + r.json.code : '') + ' — try again.')
      }
    }, function (e) { setStatus('error', 'Payment failed (' + e.message + ') — try again.') }).then(function () { $('pay').disabled = false })
  }

  // ---- start ----------------------------------------------------------------------------------

  $('campaign-id').textContent = campaign
  products.forEach(function (p) {
    var o = document.createElement('option')
    o.value = p
    o.textContent = p
    $('product').appendChild(o)
  })
  loadUser()
  $('user').addEventListener('change', function () {
    setUser($('user').value)
    state.final = null
    state.order = null
    $('order').hidden = true
    setStatus('idle', '')
    if (!resume()) restartRoom()
  })
  $('buy').addEventListener('click', buy)
  $('pay').addEventListener('click', pay)
  setInterval(tick, 200)
  setInterval(function () { syncClock().catch(function () {}) }, 60000)
  // The room after the clock: what a room answer means depends on the sale's phase.
  syncClock().catch(function (e) {
    $('phase').textContent = 'Cannot reach the gateway clock'
    $('clock-note').textContent = e.message
  }).then(function () { if (!resume()) restartRoom() })
})()
