import type { RequestContext } from '../pipeline/types.js'

/**
 * Read the request body whole, at most `limit` bytes, and keep it on `ctx.body` (the proxy then forwards
 * those bytes). Resolves to the body, or to `tooLarge` (declared or streamed past the limit) or `bad`
 * (the client went away mid-body). For the guards that must see the body before the upstream does.
 */
export function bufferBody<R> (ctx: RequestContext, limit: number, tooLarge: R, bad: R): Promise<Buffer | R> {
  if (ctx.body !== undefined && ctx.body !== null) return Promise.resolve(ctx.body)
  const req = ctx.req
  if (req.readableEnded) return Promise.resolve(Buffer.alloc(0))
  if (Number(req.headers['content-length'] ?? 0) > limit) return Promise.resolve(tooLarge)
  return new Promise((resolve) => {
    const chunks: Buffer[] = []
    let size = 0
    const done = (v: Buffer | R): void => {
      req.removeListener('data', onData)
      req.removeListener('end', onEnd)
      req.removeListener('error', onErr)
      req.removeListener('close', onClose)
      resolve(v)
    }
    const onData = (c: Buffer): void => {
      size += c.length
      if (size > limit) { req.pause(); done(tooLarge); return }
      chunks.push(c)
    }
    const onEnd = (): void => { const b = Buffer.concat(chunks, size); ctx.body = b; done(b) }
    const onErr = (): void => { done(bad) }
    const onClose = (): void => { if (!req.complete) done(bad) }
    req.on('data', onData)
    req.once('end', onEnd)
    req.once('error', onErr)
    req.once('close', onClose)
  })
}
