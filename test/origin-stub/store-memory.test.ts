import t from 'tap'
import { createMemoryOriginStore } from '../../origin-stub/memory-store.js'
import { storeBehaviour } from './store-behaviour.js'

storeBehaviour(t, async (t) => {
  const store = createMemoryOriginStore()
  t.teardown(async () => { await store.close() })
  return store
})
