/**
 * A journal on local disk: an append-only file of records, made durable in small batches (group
 * commit). No HTTP here; gateway/pending.ts decides what a record holds.
 *
 * Frame: `u32 length | u32 crc32(payload) | payload` (big-endian; payload = UTF-8 JSON). Reading stops at
 * the first frame that is short (the file ends inside it) or whose CRC does not match: a crash while
 * writing leaves at most a torn tail — the records of one batch that was never acknowledged — which is
 * counted, cut off (the file is truncated there) and never handed back as a record.
 *
 * Group commit: `append` queues a record and resolves once it is on disk. One write + fdatasync is in
 * flight at a time; records queued meanwhile go together in the next one, so under load each fsync
 * carries many records and nothing is acknowledged before its fsync returned.
 *
 * `rewrite` replaces the whole file atomically (write a temporary file, fsync, rename, fsync the
 * directory): compaction once nothing is left to replay.
 */
import { closeSync, fsyncSync, openSync } from 'node:fs'
import { open, rename, truncate, type FileHandle } from 'node:fs/promises'
import { crc32 } from 'node:zlib'
import { dirname } from 'node:path'
import { performance } from 'node:perf_hooks'

const HEADER = 8
/** A record bigger than this is refused (and a frame claiming more is torn/garbage). */
const MAX_RECORD = 16 * 1024 * 1024

export function encodeFrame (rec: unknown): Buffer {
  const payload = Buffer.from(JSON.stringify(rec))
  if (payload.length > MAX_RECORD) throw new RangeError(`journal record of ${payload.length} bytes exceeds ${MAX_RECORD}`)
  const out = Buffer.allocUnsafe(HEADER + payload.length)
  out.writeUInt32BE(payload.length, 0)
  out.writeUInt32BE(crc32(payload), 4)
  payload.copy(out, HEADER)
  return out
}

export interface Decoded {
  readonly records: unknown[]
  /** Bytes of whole, valid frames from the start; the rest (if any) is a torn tail. */
  readonly validBytes: number
  /** Bytes after validBytes (0 = clean). */
  readonly tornBytes: number
}

/** Decode frames from `buf`; stops at the first short or corrupt one. */
export function decodeFrames (buf: Buffer): Decoded {
  const records: unknown[] = []
  let off = 0
  while (off + HEADER <= buf.length) {
    const len = buf.readUInt32BE(off)
    if (len > MAX_RECORD || off + HEADER + len > buf.length) break
    const payload = buf.subarray(off + HEADER, off + HEADER + len)
    if (crc32(payload) !== buf.readUInt32BE(off + 4)) break
    let rec: unknown
    try { rec = JSON.parse(payload.toString('utf8')) } catch { break }
    records.push(rec)
    off += HEADER + len
  }
  return { records, validBytes: off, tornBytes: buf.length - off }
}

export interface JournalFileOptions {
  /** Called after each batch is durable: records in it, ms from the write's start to fsync's end. */
  readonly onBatch?: (records: number, ms: number) => void
}

interface Waiter { readonly resolve: () => void, readonly reject: (err: Error) => void }

export class JournalFile {
  private queue: Buffer[] = []
  private waiters: Waiter[] = []
  private flushing = false
  private idle: Array<() => void> = []
  private closed = false
  /** Set once a write or fsync failed: the file is in an unknown state, nothing more is acknowledged. */
  private broken: Error | null = null

  private constructor (readonly path: string, private fh: FileHandle, private readonly opts: JournalFileOptions) {}

  /**
   * Open (creating) the journal at `path`, read back its records, and cut off a torn tail. Throws when
   * the file cannot be opened for writing.
   */
  static async open (path: string, opts: JournalFileOptions = {}): Promise<{ file: JournalFile, records: unknown[], tornBytes: number }> {
    const fh = await open(path, 'a+', 0o600)
    try {
      const buf = await fh.readFile()
      const d = decodeFrames(buf)
      if (d.tornBytes > 0) {
        await fh.close()
        await truncate(path, d.validBytes)
        const again = await open(path, 'a+', 0o600)
        await again.datasync()
        return { file: new JournalFile(path, again, opts), records: d.records, tornBytes: d.tornBytes }
      }
      return { file: new JournalFile(path, fh, opts), records: d.records, tornBytes: 0 }
    } catch (err) {
      await fh.close().catch(() => {})
      throw err
    }
  }

  /** Resolves once `rec` is on disk (fdatasync returned). */
  append (rec: unknown): Promise<void> {
    if (this.closed) return Promise.reject(new Error('journal closed'))
    if (this.broken !== null) return Promise.reject(this.broken)
    let frame: Buffer
    try { frame = encodeFrame(rec) } catch (err) { return Promise.reject(err as Error) }
    return new Promise<void>((resolve, reject) => {
      this.queue.push(frame)
      this.waiters.push({ resolve, reject })
      if (!this.flushing) this.flush()
    })
  }

  private flush (): void {
    if (this.queue.length === 0) {
      this.flushing = false
      const idle = this.idle
      this.idle = []
      for (const f of idle) f()
      return
    }
    this.flushing = true
    const frames = this.queue
    const waiters = this.waiters
    this.queue = []
    this.waiters = []
    const t0 = performance.now()
    const buf = frames.length === 1 ? frames[0] as Buffer : Buffer.concat(frames)
    this.writeAll(buf).then(async () => { await this.fh.datasync() }).then(() => {
      this.opts.onBatch?.(frames.length, performance.now() - t0)
      for (const w of waiters) w.resolve()
      this.flush()
    }, (err: unknown) => {
      const e = err instanceof Error ? err : new Error(String(err))
      this.broken = e
      for (const w of waiters) w.reject(e)
      for (const w of this.waiters) w.reject(e)
      this.queue = []
      this.waiters = []
      this.flushing = false
      const idle = this.idle
      this.idle = []
      for (const f of idle) f()
    })
  }

  private async writeAll (buf: Buffer): Promise<void> {
    let off = 0
    while (off < buf.length) {
      const { bytesWritten } = await this.fh.write(buf, off, buf.length - off)
      off += bytesWritten
    }
  }

  /** Wait for every queued append. */
  drain (): Promise<void> {
    if (!this.flushing) return Promise.resolve()
    return new Promise<void>((resolve) => { this.idle.push(resolve) })
  }

  /** Replace the file's content with `records`, atomically; later appends go to the new file. */
  async rewrite (records: readonly unknown[]): Promise<void> {
    await this.drain()
    const tmp = `${this.path}.tmp`
    const fh = await open(tmp, 'w', 0o600)
    try {
      const frames = records.map((r) => encodeFrame(r))
      if (frames.length > 0) await fh.write(Buffer.concat(frames))
      await fh.datasync()
    } finally { await fh.close() }
    await rename(tmp, this.path)
    syncDir(dirname(this.path))
    const old = this.fh
    this.fh = await open(this.path, 'a+', 0o600)
    await old.close()
  }

  async close (): Promise<void> {
    if (this.closed) return
    await this.drain()
    this.closed = true
    await this.fh.close()
  }
}

/** fsync a directory (a rename is durable only then); ignored where the platform refuses it. */
function syncDir (dir: string): void {
  try {
    const fd = openSync(dir, 'r')
    try { fsyncSync(fd) } finally { closeSync(fd) }
  } catch { /* not supported on this platform/filesystem */ }
}
