/** Quote a value for a message, bounded so a pasted blob cannot flood the terminal. */
export function quote (v: unknown): string {
  const s = typeof v === 'string' ? v : String(v)
  return JSON.stringify(s.length > 60 ? s.slice(0, 57) + '...' : s)
}
