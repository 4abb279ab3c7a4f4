/**
 * limiter/journal.ts on a real file: records come back in order after a reopen, a torn or corrupt tail
 * (a crash mid-write) is cut off and never returned, group commit puts concurrent appends in few fsyncs,
 * and rewrite replaces the content atomically.
 */
import t from 'tap'
import { appendFileSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { JournalFile, decodeFrames, encodeFrame } from '../../limiter/journal.js'
import { tempDir } from '../helpers/config.js'

t.test('records survive a reopen, in order', async (t) => {
  const { dir } = tempDir(t)
  const path = join(dir, 'j.fgj')
  const a = await JournalFile.open(path)
  t.same(a.records, [])
  for (let i = 0; i < 5; i++) await a.file.append({ i })
  await a.file.close()
  t.equal(statSync(path).mode & 0o777, 0o600, 'the journal is readable by its owner only (it holds request headers)')
  const b = await JournalFile.open(path)
  t.same(b.records, [0, 1, 2, 3, 4].map((i) => ({ i })))
  t.equal(b.tornBytes, 0)
  await b.file.append({ i: 5 })
  await b.file.close()
  const c = await JournalFile.open(path)
  t.equal(c.records.length, 6, 'appends after a reopen go after the old records')
  await c.file.close()
})

t.test('a torn last record is dropped and the file cut back to whole records', async (t) => {
  const { dir } = tempDir(t)
  const path = join(dir, 'j.fgj')
  const a = await JournalFile.open(path)
  await a.file.append({ id: 'one' })
  await a.file.append({ id: 'two' })
  await a.file.close()
  const whole = statSync(path).size
  const frame = encodeFrame({ id: 'three', body: 'x'.repeat(100) })
  appendFileSync(path, frame.subarray(0, frame.length - 7)) // the crash cut the write short
  const b = await JournalFile.open(path)
  t.same(b.records, [{ id: 'one' }, { id: 'two' }], 'the torn record is not handed back')
  t.equal(b.tornBytes, frame.length - 7)
  t.equal(statSync(path).size, whole, 'the file is truncated to its whole records')
  await b.file.append({ id: 'four' })
  await b.file.close()
  const c = await JournalFile.open(path)
  t.same(c.records, [{ id: 'one' }, { id: 'two' }, { id: 'four' }], 'a record after the cut reads back (not glued to garbage)')
  await c.file.close()
})

t.test('a record whose bytes changed (CRC mismatch) ends the valid part', async (t) => {
  const f1 = encodeFrame({ a: 1 })
  const f2 = encodeFrame({ a: 2 })
  const f3 = encodeFrame({ a: 3 })
  const buf = Buffer.concat([f1, f2, f3])
  buf[f1.length + 9] = (buf[f1.length + 9] as number) ^ 0xff
  const d = decodeFrames(buf)
  t.same(d.records, [{ a: 1 }])
  t.equal(d.validBytes, f1.length)
  t.equal(d.tornBytes, f2.length + f3.length)
  // A length field pointing far past the end (garbage) is not read as a record either.
  const junk = Buffer.from([0x7f, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5])
  t.same(decodeFrames(Buffer.concat([f1, junk])).records, [{ a: 1 }])
})

t.test('group commit: concurrent appends share fsyncs; each resolves only after its batch is durable', async (t) => {
  const { dir } = tempDir(t)
  const path = join(dir, 'j.fgj')
  const batches: number[] = []
  const { file } = await JournalFile.open(path, { onBatch: (n) => { batches.push(n) } })
  let resolvedBeforeBatch = 0
  const all = Array.from({ length: 500 }, async (_, i) => {
    const before = batches.length
    await file.append({ i })
    if (batches.length === before) resolvedBeforeBatch++
  })
  await Promise.all(all)
  t.equal(resolvedBeforeBatch, 0, 'no append resolved before a batch completed')
  t.equal(batches.reduce((a, b) => a + b, 0), 500, 'every record in exactly one batch')
  t.ok(batches.length < 500, `500 appends in ${batches.length} fsyncs`)
  t.equal(batches[0], 1, 'the first append goes alone (nothing waits for a batch to fill)')
  await file.close()
  const b = await JournalFile.open(path)
  t.same(b.records.map((r) => (r as { i: number }).i), Array.from({ length: 500 }, (_, i) => i), 'on disk in append order')
  await b.file.close()
})

t.test('rewrite replaces the content atomically and appends continue after it', async (t) => {
  const { dir } = tempDir(t)
  const path = join(dir, 'j.fgj')
  const { file } = await JournalFile.open(path)
  for (let i = 0; i < 10; i++) await file.append({ i })
  await file.rewrite([{ kept: true }])
  await file.append({ after: 1 })
  await file.close()
  const b = await JournalFile.open(path)
  t.same(b.records, [{ kept: true }, { after: 1 }])
  await b.file.close()
})

t.test('a closed journal refuses appends', async (t) => {
  const { dir } = tempDir(t)
  const path = join(dir, 'j.fgj')
  writeFileSync(path, '')
  const { file } = await JournalFile.open(path)
  await file.close()
  await t.rejects(file.append({ x: 1 }), /closed/)
  t.equal(readFileSync(path).length, 0)
})
