/**
 * Progress on stderr: a redrawn bar when stderr is a terminal, plain lines (at most one per 5 s, or
 * when the phase changes) otherwise, so CI logs stay readable.
 */
export interface Progress {
  update(done: number, total: number, label: string, extra?: string): void
  /** A log line that must not be overwritten by the bar. */
  line(text: string): void
  end(): void
}

export function createProgress (stream: NodeJS.WriteStream = process.stderr, quiet = false): Progress {
  const tty = stream.isTTY === true
  let lastPlain = 0
  let lastLabel = ''
  let drawn = false
  const clear = (): void => { if (drawn) { stream.write('\r\x1b[2K'); drawn = false } }
  return {
    update (done, total, label, extra = '') {
      if (quiet) return
      const frac = total > 0 ? Math.min(1, Math.max(0, done / total)) : 0
      if (tty) {
        const width = 28
        const full = Math.round(frac * width)
        const cols = stream.columns ?? 100
        const text = `[${'█'.repeat(full)}${'░'.repeat(width - full)}] ${String(Math.round(frac * 100)).padStart(3)}% ${label}${extra === '' ? '' : ` · ${extra}`}`
        stream.write(`\r\x1b[2K${text.slice(0, cols - 1)}`)
        drawn = true
      } else {
        const now = Date.now()
        if (label !== lastLabel || now - lastPlain >= 5000) {
          stream.write(`bench: ${String(Math.round(frac * 100)).padStart(3)}% ${label}${extra === '' ? '' : ` · ${extra}`}\n`)
          lastPlain = now
          lastLabel = label
        }
      }
    },
    line (text) {
      if (quiet) return
      clear()
      stream.write(`${text}\n`)
    },
    end () { clear() }
  }
}
