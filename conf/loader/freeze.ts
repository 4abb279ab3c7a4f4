/** A loaded config is deep-frozen: nothing downstream can change what was validated. */

function frozenMap<K, V> (m: Map<K, V>): ReadonlyMap<K, V> {
  const fail = (): never => { throw new TypeError('config maps are frozen') }
  Object.defineProperties(m, { set: { value: fail }, delete: { value: fail }, clear: { value: fail } })
  return Object.freeze(m)
}

/** Deep-freeze plain objects, arrays and Maps (Buffers cannot be frozen and are left as they are). */
export function deepFreeze<T> (v: T): T {
  if (v === null || typeof v !== 'object' || Buffer.isBuffer(v) || Object.isFrozen(v)) return v
  if (v instanceof Map) {
    for (const [k, x] of v) { deepFreeze(k); deepFreeze(x) }
    return frozenMap(v) as T
  }
  for (const x of Object.values(v as object)) deepFreeze(x)
  return Object.freeze(v)
}
