// net-fixed.mjs PORT: Node's I/O floor for an HTTP/1.1 answer. A bare node:net server that answers every
// request head it receives (each CRLF CRLF) with the same pre-encoded 200 {"status":"ok"}: no parsing,
// no headers object, no per-request allocation but the write. Nothing a Node server does on net.Socket
// can be cheaper per request, so a Node reject path is judged against it as well as against node:http.
// It is not an HTTP server (bodies, pipelined partial heads and errors are not handled): the bench only
// sends it keep-alive GETs. Usage: node net-fixed.mjs 18091   (listens on 127.0.0.1 only)
import { createServer } from 'node:net'

const port = Number(process.argv[2] ?? 18091)
const ANSWER = Buffer.from('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\nconnection: keep-alive\r\n\r\n{"status":"ok"}', 'latin1')
const EMPTY = Buffer.alloc(0)
const END = Buffer.from('\r\n\r\n', 'latin1')

const server = createServer((socket) => {
  socket.setNoDelay(true)
  // the bytes of a head cut by the previous chunk (at most 3: enough to find an END split across chunks)
  let carry = EMPTY
  socket.on('data', (chunk) => {
    const data = carry.length === 0 ? chunk : Buffer.concat([carry, chunk])
    let n = 0
    let at = data.indexOf(END)
    let last = -1
    while (at !== -1) { n++; last = at + 4; at = data.indexOf(END, last) }
    carry = last === data.length ? EMPTY : Buffer.from(data.subarray(Math.max(last, data.length - 3)))
    if (n === 1) socket.write(ANSWER)
    else if (n > 1) socket.write(Buffer.concat(Array(n).fill(ANSWER)))
  })
  socket.on('error', () => socket.destroy())
})
server.listen(port, '127.0.0.1', () => console.log(`net-fixed.mjs listening on 127.0.0.1:${port}`))
