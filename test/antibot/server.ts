/** A real HTTP server on 127.0.0.1:0 for tests, closed on teardown. */
import { createServer } from 'node:http'
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

export async function listen (handler: (req: IncomingMessage, res: ServerResponse) => void, t?: { teardown: (fn: () => unknown) => void }): Promise<{ server: Server, url: string, port: number }> {
  const server = createServer(handler)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  t?.teardown(async () => {
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return { server, url: `http://127.0.0.1:${port}`, port }
}

/** Read a request body as text. */
export async function readBody (req: IncomingMessage): Promise<string> {
  let s = ''
  for await (const c of req) s += (c as Buffer).toString()
  return s
}
