/**
 * An open-loop load generator (wrk2-style constant arrival rate) on raw `net` sockets: request i is due
 * at t0 + i / rate whatever the server does, and its latency is measured from that intended send time,
 * not from when a connection was free to send it — so a server that stalls is charged for every request
 * that should have gone out meanwhile (no coordinated omission). A closed-loop generator (wrk,
 * autocannon) waits for an answer before sending the next request and so slows down with the server.
 *
 * Requests are pre-encoded bytes (one or a cycled list), one in flight per keep-alive connection (no
 * pipelining), at most `connections` sockets: a request due while every socket is busy waits in a queue
 * and that wait counts in its latency. Responses are read with a minimal HTTP/1.1 reader
 * (status line, Content-Length or chunked). Bounded: `seconds` of arrivals (at most `rate × seconds`
 * requests), then in-flight requests get `drainMs` to finish; what is unanswered by then is lost.
 * Loopback only (the caller's URL is checked by the bench's options).
 */
import { connect } from 'node:net'
import type { Socket } from 'node:net'
import { Histogram, latencyOf } from '../hist.js'
import type { LatencyMs } from '../hist.js'
import type { RequestSpec } from './types.js'

export interface OpenLoopOptions {
  readonly baseUrl: string
  readonly requests: readonly RequestSpec[]
  /** Arrivals per second. */
  readonly rate: number
  readonly seconds: number
  readonly connections: number
  /** After the last arrival, how long in-flight and queued requests may take (ms). */
  readonly drainMs?: number
}

export interface OpenLoopResult {
  readonly rate: number
  readonly seconds: number
  /** Requests due (rate × seconds) and requests written to a socket. */
  readonly intended: number
  readonly sent: number
  readonly answered: number
  /** Due but unanswered when the run ended (never sent, in flight, or on a socket that broke). */
  readonly lost: number
  /** Answers per second over the arrival window plus the drain. */
  readonly rps: number
  /** From the intended send time to the last byte of the answer (what a user would see). */
  readonly latencyMs: LatencyMs
  /** From the moment the request was written to the last byte (what a closed-loop generator reports). */
  readonly serviceMs: LatencyMs
  /** Most requests waiting for a free socket at once. */
  readonly maxQueued: number
  readonly statuses: Readonly<Record<string, number>>
  readonly socketErrors: number
}

/** The request's bytes, as an HTTP/1.1 keep-alive request. */
export function encodeRequest (host: string, r: RequestSpec): Buffer {
  const body = r.body ?? ''
  const lines = [`${r.method} ${r.path} HTTP/1.1`, `host: ${host}`]
  for (const [k, v] of Object.entries(r.headers ?? {})) lines.push(`${k}: ${v}`)
  if (body !== '' || r.method === 'POST' || r.method === 'PUT') lines.push(`content-length: ${Buffer.byteLength(body)}`)
  return Buffer.from(lines.join('\r\n') + '\r\n\r\n' + body, 'utf8')
}

/**
 * A minimal HTTP/1.1 response reader for one connection: feed it bytes, it calls `onResponse(status)`
 * for every complete response. Enough for the servers the bench measures (Content-Length or chunked).
 * Returns an error string when the bytes are not HTTP.
 */
export class ResponseReader {
  private buf: Buffer = Buffer.alloc(0)
  private need = -1 // body bytes still to skip for the current response; -1: reading a head
  private chunked = false
  private status = 0
  constructor (private readonly onResponse: (status: number) => void) {}

  feed (data: Buffer): string | null {
    this.buf = this.buf.length === 0 ? data : Buffer.concat([this.buf, data])
    for (;;) {
      if (this.need < 0) {
        const end = this.buf.indexOf('\r\n\r\n')
        if (end < 0) return this.buf.length > 65536 ? 'response head over 64 KiB' : null
        const head = this.buf.toString('latin1', 0, end)
        this.buf = this.buf.subarray(end + 4)
        const m = /^HTTP\/1\.[01] (\d{3})/.exec(head)
        if (m === null) return `not an HTTP response: ${head.slice(0, 40)}`
        this.status = Number(m[1])
        const cl = /\r\ncontent-length:\s*(\d+)/i.exec(head)
        this.chunked = cl === null && /\r\ntransfer-encoding:\s*chunked/i.test(head)
        this.need = cl !== null ? Number(cl[1]) : 0
        if (cl === null && !this.chunked && this.status !== 204 && this.status !== 304) return 'response without Content-Length or chunked encoding'
      }
      if (this.chunked) {
        // Small bodies: wait for the terminating chunk, then skip everything up to it.
        const end = this.buf.indexOf('\r\n0\r\n\r\n')
        const atStart = this.buf.subarray(0, 5).toString('latin1') === '0\r\n\r\n'
        if (!atStart && end < 0) return null
        this.buf = this.buf.subarray(atStart ? 5 : end + 7)
        this.chunked = false
        this.need = -1
        this.onResponse(this.status)
        continue
      }
      if (this.buf.length < this.need) return null
      this.buf = this.buf.subarray(this.need)
      this.need = -1
      this.onResponse(this.status)
      if (this.buf.length === 0) return null
    }
  }
}

interface Conn { socket: Socket, busy: boolean, intended: number, written: number, alive: boolean }

export async function runOpenLoop (o: OpenLoopOptions): Promise<OpenLoopResult> {
  if (!(o.rate > 0) || !(o.seconds > 0) || o.requests.length === 0) throw new Error('open-loop: rate, seconds and a request are required')
  const url = new URL(o.baseUrl)
  const port = Number(url.port)
  const host = url.hostname
  const encoded = o.requests.map((r) => encodeRequest(url.host, r))
  const intended = Math.floor(o.rate * o.seconds)
  const interval = 1000 / o.rate
  const drainMs = o.drainMs ?? 2000
  const latency = new Histogram()
  const service = new Histogram()
  const statuses: Record<string, number> = {}
  let issued = 0
  let sent = 0
  let answered = 0
  let socketErrors = 0
  let maxQueued = 0
  // Due requests waiting for a socket: their intended times (ms, performance.now() clock), in order.
  const queue: number[] = []
  let qHead = 0
  const idle: Conn[] = []
  const conns: Conn[] = []
  let t0 = 0
  let closing = false

  const send = (c: Conn, at: number): void => {
    c.busy = true
    c.intended = at
    c.written = performance.now()
    sent++
    c.socket.write(encoded[(sent - 1) % encoded.length] as Buffer)
  }
  const dispatch = (): void => {
    while (qHead < queue.length) {
      const c = idle.pop()
      if (c === undefined) break
      send(c, queue[qHead++] as number)
    }
    if (qHead > 4096 && qHead * 2 > queue.length) { queue.splice(0, qHead); qHead = 0 }
  }
  const open = async (): Promise<Conn> => await new Promise((resolve, reject) => {
    const socket = connect({ host, port, noDelay: true })
    const c: Conn = { socket, busy: false, intended: 0, written: 0, alive: true }
    const reader = new ResponseReader((status) => {
      const now = performance.now()
      answered++
      statuses[status] = (statuses[status] ?? 0) + 1
      latency.record((now - c.intended) * 1000)
      service.record((now - c.written) * 1000)
      c.busy = false
      if (!closing) { idle.push(c); dispatch() }
    })
    socket.once('connect', () => { resolve(c) })
    socket.on('data', (d: Buffer) => {
      const err = reader.feed(d)
      if (err !== null) { socketErrors++; socket.destroy() }
    })
    socket.on('error', (err) => { if (!c.alive) return; socketErrors++; reject(err) })
    socket.on('close', () => {
      c.alive = false
      const i = idle.indexOf(c)
      if (i >= 0) idle.splice(i, 1)
      // A socket that closes with a request on it loses that request (counted as lost at the end);
      // it is replaced so the pool keeps its size while arrivals go on.
      if (!closing) void open().then((n) => { conns.push(n); idle.push(n); dispatch() }, () => {})
    })
  })

  for (let i = 0; i < o.connections; i++) {
    const c = await open()
    conns.push(c)
    idle.push(c)
  }
  t0 = performance.now()
  const endArrivals = t0 + o.seconds * 1000
  await new Promise<void>((resolve) => {
    const tick = (): void => {
      const now = performance.now()
      // Everything due by now, with its own intended time (a late tick does not move the schedule).
      const due = Math.min(intended, Math.floor((now - t0) / interval) + 1)
      for (; issued < due; issued++) queue.push(t0 + issued * interval)
      if (queue.length - qHead > maxQueued) maxQueued = queue.length - qHead
      dispatch()
      if (issued >= intended || now >= endArrivals) { resolve(); return }
      // setTimeout(0) sleeps ~1 ms; the requests due meanwhile go out at the next tick, timed from
      // when they were due (the generator's own lateness is charged to latency, never hidden).
      setTimeout(tick, 0)
    }
    tick()
  })
  // Drain: answers to what is in flight or queued, bounded.
  const drainEnd = performance.now() + drainMs
  while ((conns.some((c) => c.alive && c.busy) || qHead < queue.length) && performance.now() < drainEnd) {
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
  closing = true
  const wall = (performance.now() - t0) / 1000
  for (const c of conns) c.socket.destroy()
  return {
    rate: o.rate,
    seconds: o.seconds,
    intended,
    sent,
    answered,
    lost: intended - answered,
    rps: answered / wall,
    latencyMs: latencyOf(latency),
    serviceMs: latencyOf(service),
    maxQueued,
    statuses,
    socketErrors
  }
}
