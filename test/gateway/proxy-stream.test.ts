/**
 * Large bodies stream through forward() both ways with flat memory, and backpressure holds in both
 * directions: a slow client slows the upstream, a slow upstream slows the client.
 */
import { createHash } from 'node:crypto'
import { request as httpRequest } from 'node:http'
import type { IncomingMessage } from 'node:http'
import { Readable } from 'node:stream'
import t from 'tap'
import { gateway, origin, upstreamConfig } from './upstream-harness.js'

const MB = 1 << 20
const SIZE = 50 * MB
const CHUNK = Buffer.alloc(64 * 1024)
for (let i = 0; i < CHUNK.length; i++) CHUNK[i] = (i * 31 + 7) & 0xff

/** A lazy `size`-byte stream of one shared chunk (no allocation per chunk). */
function source (size: number): Readable {
  let left = size
  return new Readable({
    read () {
      if (left === 0) { this.push(null); return }
      const n = Math.min(left, CHUNK.length)
      left -= n
      this.push(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n))
    }
  })
}

function expectedDigest (size: number): string {
  const h = createHash('sha1')
  for (let left = size; left > 0; left -= CHUNK.length) h.update(left >= CHUNK.length ? CHUNK : CHUNK.subarray(0, left))
  return h.digest('hex')
}

/** Peak RSS growth over `base` while `work` runs, sampled every 20 ms. */
async function peakRss<T> (work: () => Promise<T>): Promise<{ result: T, growth: number }> {
  const base = process.memoryUsage().rss
  let peak = base
  const timer = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss) }, 20)
  try {
    const result = await work()
    peak = Math.max(peak, process.memoryUsage().rss)
    return { result, growth: peak - base }
  } finally {
    clearInterval(timer)
  }
}

t.test('50 MB up and 50 MB down with flat memory', async (t) => {
  const o = await origin(t, 'o', (req, res) => {
    if (req.method === 'PUT') {
      const h = createHash('sha1')
      let n = 0
      req.on('data', (c: Buffer) => { n += c.length; h.update(c) })
      req.on('end', () => res.end(`${n} ${h.digest('hex')}`))
      return
    }
    req.resume()
    res.writeHead(200, { 'content-length': String(SIZE), 'content-type': 'application/octet-stream' })
    source(SIZE).pipe(res)
  })
  const gw = await gateway(t, [upstreamConfig('u', [o.url], { timeoutMs: 30_000 })])
  const digest = expectedDigest(SIZE)
  // Warm up the paths so the baseline includes code and pools.
  await upload(gw.url, MB)
  await download(gw.url)

  const up = await peakRss(async () => await upload(gw.url, SIZE))
  t.equal(up.result, `${SIZE} ${digest}`, 'origin received every byte, in order (chunked upload)')
  t.ok(up.growth < 20 * MB, `upload RSS growth ${(up.growth / MB).toFixed(1)} MB for a 50 MB body`)

  const down = await peakRss(async () => await download(gw.url))
  t.equal(down.result.bytes, SIZE)
  t.equal(down.result.digest, digest, 'client received every byte, in order')
  t.equal(down.result.length, String(SIZE), 'Content-Length passed through')
  t.ok(down.growth < 20 * MB, `download RSS growth ${(down.growth / MB).toFixed(1)} MB for a 50 MB body`)
  await gw.settled(4)
  t.same(gw.outcomes.map((x) => x.outcome.kind), ['upstream', 'upstream', 'upstream', 'upstream'])
})

async function upload (url: string, size: number): Promise<string> {
  return await new Promise((resolve, reject) => {
    const req = httpRequest(url + '/', { method: 'PUT', agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { body += c })
      res.on('end', () => resolve(body))
    })
    req.on('error', reject)
    source(size).pipe(req)
  })
}

async function download (url: string): Promise<{ bytes: number, digest: string, length: string | undefined }> {
  return await new Promise((resolve, reject) => {
    const req = httpRequest(url + '/', { agent: false }, (res) => {
      const h = createHash('sha1')
      let bytes = 0
      res.on('data', (c: Buffer) => { bytes += c.length; h.update(c) })
      res.on('end', () => resolve({ bytes, digest: h.digest('hex'), length: res.headers['content-length'] }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}

t.test('a slow client holds the upstream back (no buffering in the gateway)', async (t) => {
  let written = 0
  const o = await origin(t, 'o', (req, res) => {
    req.resume()
    res.writeHead(200, { 'content-length': String(SIZE) })
    let left = SIZE
    const pump = (): void => {
      while (left > 0) {
        left -= CHUNK.length
        written += CHUNK.length
        if (!res.write(CHUNK)) return
      }
      res.end()
    }
    res.on('drain', pump)
    pump()
  })
  const gw = await gateway(t, [upstreamConfig('u', [o.url], { timeoutMs: 30_000 })])
  const res = await new Promise<IncomingMessage>((resolve, reject) => {
    const req = httpRequest(gw.url + '/', { agent: false }, resolve)
    req.on('error', reject)
    req.end()
  })
  res.pause()
  await new Promise((resolve) => setTimeout(resolve, 700))
  t.ok(written < 16 * MB, `origin could write only ${(written / MB).toFixed(1)} MB while the client read nothing`)
  let got = 0
  res.on('data', (c: Buffer) => { got += c.length })
  res.resume()
  await new Promise((resolve) => res.on('end', resolve))
  t.equal(got, SIZE, 'then everything arrives')
  t.equal(written, SIZE)
})

t.test('a slow upstream holds the client back', async (t) => {
  let upstreamReq: IncomingMessage | null = null
  const o = await origin(t, 'o', (req, res) => {
    upstreamReq = req
    req.pause() // read nothing for now
    req.on('end', () => res.end('done'))
  })
  const gw = await gateway(t, [upstreamConfig('u', [o.url], { timeoutMs: 30_000 })])
  let sent = 0
  const body = source(SIZE)
  body.on('data', (c: Buffer) => { sent += c.length })
  const answer = new Promise<string>((resolve, reject) => {
    const req = httpRequest(gw.url + '/', { method: 'POST', agent: false, headers: { 'content-length': String(SIZE) } }, (res) => {
      let s = ''
      res.on('data', (c: Buffer) => { s += c.toString() })
      res.on('end', () => resolve(s))
    })
    req.on('error', reject)
    body.pipe(req)
  })
  while (upstreamReq === null) await new Promise((resolve) => setTimeout(resolve, 10))
  await new Promise((resolve) => setTimeout(resolve, 700))
  t.ok(sent < 16 * MB, `client could send only ${(sent / MB).toFixed(1)} MB while the origin read nothing`)
  let got = 0
  const r = upstreamReq as IncomingMessage
  r.on('data', (c: Buffer) => { got += c.length })
  r.resume()
  t.equal(await answer, 'done')
  t.equal(got, SIZE, 'Content-Length body arrives whole')
})
