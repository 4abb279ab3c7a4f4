/**
 * `listen`: `HOST:PORT`, or a list of those and `{ address, tls: { cert, key }, http2 }` maps. TLS
 * files are read and paired here (createSecureContext refuses a key that does not match its
 * certificate), so validate and reload refuse what serve could not use.
 */
import { readFileSync } from 'node:fs'
import { createSecureContext } from 'node:tls'
import { dirname, isAbsolute, resolve } from 'node:path'
import { failed } from '../check.js'
import type { Checker } from '../check.js'
import { parseHostPort } from '../parse.js'
import { quote } from '../quote.js'
import { fmtPos } from '../tree.js'
import type { PNode, Pos } from '../tree.js'
import type { ListenerConfig, TlsConfig } from '../types.js'
import { DEFAULTS } from './defaults.js'
import { hostPort } from './values.js'

/**
 * Why a PEM certificate chain and key cannot serve TLS, or null when they can (the key must match the
 * certificate). The message never contains key material. Used by the loader and on reload.
 */
export function tlsProblem (cert: string, key: string): string | null {
  try {
    createSecureContext({ cert, key })
    return null
  } catch (err) {
    const msg = (err as Error).message
    if (/key values mismatch/i.test(msg)) return 'the key does not match the certificate'
    if (/no start line|bad base64|PEM/i.test(msg)) return `not a PEM certificate and key (${msg.replace(/^error:[0-9A-F]+:/i, '').slice(0, 80)})`
    return `the certificate or key is not usable (${msg.slice(0, 80)})`
  }
}

export function readListeners (ck: Checker, n: PNode | undefined): ListenerConfig[] {
  if (n === undefined || failed(n)) return [{ address: parseHostPort(DEFAULTS.listen), tls: null, http2: false }]
  const items = n.kind === 'seq' ? n.items : [n]
  if (n.kind === 'seq' && items.length === 0) { ck.error(n.pos, 'listen: expected at least one address'); return [] }
  const out: ListenerConfig[] = []
  const seen = new Map<string, Pos>()
  for (const it of items) {
    let l: ListenerConfig | undefined
    if (it.kind === 'map') {
      const m = ck.map(it, 'listen', ['address', 'tls', 'http2'])
      if (m === undefined) continue
      const addrNode = m.get('address')
      if (addrNode === undefined) { ck.error(it.pos, 'listen: a listener needs an address'); continue }
      const address = hostPort(ck, addrNode, 'address')
      const tls = readTls(ck, m.get('tls'))
      const http2 = ck.bool(m.get('http2'), 'http2') ?? false
      if (http2 && m.get('tls') === undefined) ck.error(m.keyPos('http2'), 'http2: needs tls (HTTP/2 is served over TLS with ALPN; cleartext h2c is not supported)')
      if (address === undefined || tls === undefined) continue
      l = { address, tls, http2 }
    } else {
      const address = hostPort(ck, it, 'listen')
      if (address === undefined) continue
      l = { address, tls: null, http2: false }
    }
    const key = `${l.address.host}:${l.address.port}`
    const first = seen.get(key)
    if (first !== undefined && l.address.port !== 0) { ck.error(it.pos, `listen: ${key} is listed twice (first at ${fmtPos(first)})`); continue }
    seen.set(key, it.pos)
    out.push(l)
  }
  return out
}

/** `tls: { cert, key }` → absolute paths, checked readable and paired; null when absent, undefined on error. */
function readTls (ck: Checker, n: PNode | undefined): TlsConfig | null | undefined {
  if (n === undefined) return null
  const m = ck.map(n, 'tls', ['cert', 'key'])
  if (m === undefined) return undefined
  const base = dirname(n.pos.file)
  const file = (label: 'cert' | 'key'): { path: string, pem: string } | undefined => {
    const v = m.get(label)
    if (v === undefined) return ck.error(m.pos, `tls: ${label} is required (a PEM file)`)
    const p = ck.str(v, label)
    if (p === undefined) return undefined
    const path = isAbsolute(p) ? p : resolve(base, p)
    try {
      return { path, pem: readFileSync(path, 'utf8') }
    } catch (err) {
      return ck.error(v.pos, `${label}: cannot read ${quote(p)}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
    }
  }
  const cert = file('cert')
  const key = file('key')
  if (cert === undefined || key === undefined) return undefined
  const problem = tlsProblem(cert.pem, key.pem)
  if (problem !== null) return ck.error(m.get('cert')!.pos, `tls: ${problem}`)
  return { cert: cert.path, key: key.path }
}
