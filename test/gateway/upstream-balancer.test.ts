import t from 'tap'
import {
  available, buildRing, hashKey, isUp, newPeer, pickFallback, pickHash, pickLeastConn, pickRoundRobin,
  recordFailure, recordSuccess
} from '../../gateway/upstream/balancer.js'
import type { HealthPolicy, PeerState } from '../../gateway/upstream/balancer.js'

const NAMES = 'abcdefgh'
const peersOf = (weights: number[]): PeerState[] => weights.map((w, i) => newPeer(i, w))
const name = (p: PeerState | null): string => p === null ? '-' : NAMES[p.index]!
const NO_HEALTH: HealthPolicy = { maxFails: 0, failTimeoutMs: 10_000 }
const H: HealthPolicy = { maxFails: 2, failTimeoutMs: 10_000 }
const T0 = 1_700_000_000_000

t.test('smooth weighted round robin: nginx sequences', async (t) => {
  const cases: Array<[number[], string]> = [
    [[5, 1, 1], 'aabacaa'],
    [[1, 1, 1], 'abcabc'],
    [[2, 1], 'aba'],
    [[3, 2], 'ababa'],
    [[4, 2, 1], 'abacaba']
  ]
  for (const [weights, expected] of cases) {
    const peers = peersOf(weights)
    let got = ''
    for (let i = 0; i < expected.length * 2; i++) got += name(pickRoundRobin(peers, NO_HEALTH, T0, null))
    t.equal(got, expected + expected, `weights ${weights.join(':')}`)
  }
})

t.test('smooth weighted round robin: 5:1:1 over 10k picks', async (t) => {
  const peers = peersOf([5, 1, 1])
  const n = [0, 0, 0]
  for (let i = 0; i < 10_000; i++) n[pickRoundRobin(peers, NO_HEALTH, T0, null)!.index]!++
  t.ok(Math.abs(n[0]! / 10_000 - 5 / 7) < 0.01, `a ${n[0]}`)
  t.ok(Math.abs(n[1]! / 10_000 - 1 / 7) < 0.01, `b ${n[1]}`)
  t.ok(Math.abs(n[2]! / 10_000 - 1 / 7) < 0.01, `c ${n[2]}`)
})

t.test('round robin skips tried peers and down peers', async (t) => {
  const peers = peersOf([1, 1, 1])
  t.equal(name(pickRoundRobin(peers, NO_HEALTH, T0, [peers[0]!, peers[1]!])), 'c')
  recordFailure(peers[1]!, H, T0)
  recordFailure(peers[1]!, H, T0)
  let got = ''
  for (let i = 0; i < 6; i++) got += name(pickRoundRobin(peers, H, T0 + 1, null))
  t.notMatch(got, /b/, 'b is ejected')
  t.equal(name(pickRoundRobin(peers, H, T0, [peers[0]!, peers[2]!])), 'b', 'only a down peer left: tried anyway (fallback)')
  t.equal(pickRoundRobin(peers, H, T0, [...peers]), null, 'every peer tried: none')
})

t.test('passive health: max_fails within fail_timeout, ejection, probe, recovery', async (t) => {
  const peers = peersOf([1, 1])
  const [a, b] = peers as [PeerState, PeerState]
  let now = T0
  t.equal(recordFailure(a, H, now), false, 'first failure: still up (max_fails 2)')
  t.ok(isUp(a, H))
  t.ok(available(a, H, now))
  now += 1000
  t.equal(recordFailure(a, H, now), true, 'second failure within fail_timeout takes it down')
  t.notOk(isUp(a, H))
  t.notOk(available(a, H, now + 10_000), 'down for fail_timeout (inclusive)')
  t.ok(available(a, H, now + 10_001), 'eligible again after fail_timeout')
  // During the down window only b serves.
  for (let i = 0; i < 4; i++) t.equal(pickRoundRobin(peers, H, now + 5000, null), b)
  // After the window one request probes a; the others skip it for another fail_timeout.
  now += 10_001
  const picks: PeerState[] = []
  for (let i = 0; i < 4; i++) picks.push(pickRoundRobin(peers, H, now, null)!)
  t.equal(picks.filter((p) => p === a).length, 1, 'exactly one probe of a')
  t.equal(a.checked, now, 'probe marks checked')
  t.equal(recordSuccess(a, H), true, 'a successful probe brings it back')
  t.ok(isUp(a, H))
  t.equal(a.fails, 0)
})

t.test('passive health: a failed probe keeps it down for another fail_timeout', async (t) => {
  const peers = peersOf([1, 1])
  const a = peers[0]!
  recordFailure(a, H, T0); recordFailure(a, H, T0)
  const probeAt = T0 + 10_001
  let probed = false
  for (let i = 0; i < 2; i++) if (pickRoundRobin(peers, H, probeAt, null) === a) probed = true
  t.ok(probed)
  recordFailure(a, H, probeAt)
  t.notOk(isUp(a, H))
  t.notOk(available(a, H, probeAt + 10_000))
  t.ok(available(a, H, probeAt + 10_001))
})

t.test('passive health: failures spread wider than fail_timeout do not add up', async (t) => {
  const peers = peersOf([1])
  const a = peers[0]!
  recordFailure(a, H, T0)
  t.equal(recordSuccess(a, H), false, 'a success right after a failure does not reset (not checked since)')
  t.equal(a.fails, 1)
  // 20 s later: the pick marks it checked, the success resets the count.
  pickRoundRobin(peers, H, T0 + 20_000, null)
  recordSuccess(a, H)
  t.equal(a.fails, 0)
  recordFailure(a, H, T0 + 21_000)
  t.ok(isUp(a, H), 'one failure in the new window: still up')
})

t.test('passive health: max_fails 0 disables it', async (t) => {
  const peers = peersOf([1, 1])
  for (let i = 0; i < 10; i++) recordFailure(peers[0]!, NO_HEALTH, T0)
  t.ok(isUp(peers[0]!, NO_HEALTH))
  t.ok(available(peers[0]!, NO_HEALTH, T0))
  t.equal(peers[0]!.effectiveWeight, 1, 'no weight penalty either')
})

t.test('failure lowers effective weight by weight/max_fails; selections restore it', async (t) => {
  const peers = peersOf([4, 4])
  const h: HealthPolicy = { maxFails: 4, failTimeoutMs: 10_000 }
  recordFailure(peers[0]!, h, T0)
  recordFailure(peers[0]!, h, T0)
  t.equal(peers[0]!.effectiveWeight, 2)
  pickRoundRobin(peers, h, T0, null)
  t.equal(peers[0]!.effectiveWeight, 3)
  pickRoundRobin(peers, h, T0, null)
  pickRoundRobin(peers, h, T0, null)
  t.equal(peers[0]!.effectiveWeight, 4, 'never above weight')
})

t.test('all down: the least recently failed is tried', async (t) => {
  const peers = peersOf([1, 1, 1])
  recordFailure(peers[1]!, H, T0 + 1); recordFailure(peers[1]!, H, T0 + 1)
  recordFailure(peers[0]!, H, T0 + 2); recordFailure(peers[0]!, H, T0 + 2)
  recordFailure(peers[2]!, H, T0 + 3); recordFailure(peers[2]!, H, T0 + 3)
  t.equal(name(pickRoundRobin(peers, H, T0 + 5, null)), 'b')
  t.equal(name(pickRoundRobin(peers, H, T0 + 6, null)), 'a', 'b now counts as probed just now')
  t.equal(name(pickFallback(peers, T0 + 7, [peers[0]!])), 'c')
})

t.test('least_conn: fewest active relative to weight, ties by weighted round robin', async (t) => {
  const peers = peersOf([1, 1, 1])
  peers[0]!.active = 3; peers[1]!.active = 1; peers[2]!.active = 2
  t.equal(name(pickLeastConn(peers, NO_HEALTH, T0, null)), 'b')
  // Weight-aware: 4 active on weight 4 beats 2 active on weight 1.
  const w = peersOf([4, 1])
  w[0]!.active = 4; w[1]!.active = 2
  t.equal(name(pickLeastConn(w, NO_HEALTH, T0, null)), 'a')
  // All idle: ties rotate by smooth weighted round robin, weight 2:1.
  const tie = peersOf([2, 1])
  let seq = ''
  for (let i = 0; i < 6; i++) seq += name(pickLeastConn(tie, NO_HEALTH, T0, null))
  t.equal(seq, 'abaaba')
  // Simulated load: requests stick to a peer until they finish; the slow peer gets fewer.
  const sim = peersOf([1, 1])
  const ends: Array<[number, PeerState]> = []
  const count = [0, 0]
  for (let tick = 0; tick < 1000; tick++) {
    for (let i = ends.length - 1; i >= 0; i--) if (ends[i]![0] <= tick) { ends[i]![1].active--; ends.splice(i, 1) }
    const p = pickLeastConn(sim, NO_HEALTH, T0, null)!
    p.active++
    count[p.index]!++
    ends.push([tick + (p.index === 0 ? 10 : 1), p]) // a is 10x slower
  }
  t.ok(count[1]! > count[0]! * 3, `fast peer serves most: ${count.join('/')}`)
  t.equal(name(pickLeastConn(peersOf([1, 1]), NO_HEALTH, T0, [sim[0]!, sim[1]!])), 'a', 'tried list is by identity')
})

t.test('least_conn skips down and tried peers', async (t) => {
  const peers = peersOf([1, 1, 1])
  peers[0]!.active = 5
  recordFailure(peers[1]!, H, T0); recordFailure(peers[1]!, H, T0)
  t.equal(name(pickLeastConn(peers, H, T0 + 1, null)), 'c')
  t.equal(name(pickLeastConn(peers, H, T0 + 1, [peers[2]!])), 'a')
})

t.test('hash: sticky, weight-proportional, minimal remap when a target is removed', async (t) => {
  const urls = ['http://127.0.0.1:7001', 'http://127.0.0.1:7002', 'http://127.0.0.1:7003']
  const ring = buildRing(urls.map((key) => ({ key, weight: 1 })))
  t.equal(ring.points.length, 480, '160 points per unit of weight')
  for (let i = 1; i < ring.points.length; i++) if (ring.points[i - 1]! > ring.points[i]!) t.fail('ring not sorted')
  const peers = peersOf([1, 1, 1])
  const owner = new Map<string, number>()
  const n = [0, 0, 0]
  for (let i = 0; i < 10_000; i++) {
    const key = `user-${i}`
    const p = pickHash(peers, ring, hashKey(key), NO_HEALTH, T0, null)!
    owner.set(key, p.index)
    n[p.index]!++
    if (i < 100) t.equal(pickHash(peers, ring, hashKey(key), NO_HEALTH, T0, null), p, 'same key, same peer')
  }
  for (const c of n) t.ok(c > 2500 && c < 4200, `balanced enough: ${n.join('/')}`)
  // Remove the middle target: only its keys move.
  const ring2 = buildRing([urls[0]!, urls[2]!].map((key) => ({ key, weight: 1 })))
  const peers2 = peersOf([1, 1])
  let moved = 0
  for (const [key, was] of owner) {
    const now = [0, 2][pickHash(peers2, ring2, hashKey(key), NO_HEALTH, T0, null)!.index]!
    if (was !== 1 && now !== was) moved++
  }
  t.equal(moved, 0, 'keys of the remaining targets stay where they were')
  // Weighted ring: weight 3 gets about 3/4.
  const wring = buildRing([{ key: urls[0]!, weight: 3 }, { key: urls[1]!, weight: 1 }])
  const wp = peersOf([3, 1])
  let a = 0
  for (let i = 0; i < 10_000; i++) if (pickHash(wp, wring, hashKey(`k${i}`), NO_HEALTH, T0, null)!.index === 0) a++
  t.ok(a > 6800 && a < 8200, `weight 3:1 → ${a}/10000`)
})

t.test('hash: a down or tried owner passes the key to the next peer on the ring', async (t) => {
  const urls = ['a', 'b', 'c']
  const ring = buildRing(urls.map((key) => ({ key, weight: 1 })))
  const peers = peersOf([1, 1, 1])
  const key = hashKey('some-user')
  const first = pickHash(peers, ring, key, H, T0, null)!
  const second = pickHash(peers, ring, key, H, T0, [first])!
  t.not(second, first)
  recordFailure(first, H, T0); recordFailure(first, H, T0)
  t.equal(pickHash(peers, ring, key, H, T0 + 1, null), second, 'down owner: same successor as a retry')
  recordSuccess(first, H)
  t.equal(pickHash(peers, ring, key, H, T0 + 20_000, null), first, 'after fail_timeout the key goes home (probe)')
})

t.test('hashKey is a 32-bit unsigned hash that spreads short keys', async (t) => {
  const seen = new Set<number>()
  let bad = 0
  for (let i = 0; i < 1000; i++) {
    const h = hashKey(String(i))
    if (!Number.isInteger(h) || h < 0 || h > 0xffffffff) bad++
    seen.add(h >>> 28)
  }
  t.equal(bad, 0, 'every hash is a uint32')
  t.equal(seen.size, 16, 'top nibble takes every value')
  t.equal(hashKey('user-1'), hashKey('user-1'), 'deterministic')
})
