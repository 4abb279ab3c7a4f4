/**
 * One config file (and what it includes) → `Config`: the sections in the order they depend on each
 * other (secrets before identity, store and campaigns before the guards that inherit or name them).
 */
import { resolve } from 'node:path'
import { Checker } from '../check.js'
import { parseHostPort } from '../parse.js'
import { parseYaml } from '../tree.js'
import type { Diagnostics } from '../tree.js'
import type { Config } from '../types.js'
import { readCampaigns } from './campaigns.js'
import { DEFAULTS } from './defaults.js'
import type { GuardEnv } from './guards/env.js'
import { gatherParts, TOP_KEYS } from './includes.js'
import { readListeners } from './listeners.js'
import { readRoutes } from './routes.js'
import { readAccessLog, readAdmin, readIdentity, readOrigin, readSecrets, readServer, readStore, readTracing, readWorkers } from './sections.js'
import { readUpstreams } from './upstreams.js'
import { cidrList } from './values.js'

/** The config, or undefined when `d` has errors. `requireRoutes`: a file with neither routes nor `origin:` is an error. */
export function readConfig (d: Diagnostics, text: string, file: string, env: NodeJS.ProcessEnv, requireRoutes: boolean): Config | undefined {
  const ck = new Checker(d)
  const root = parseYaml(text, file, env, d)
  if (root === null) return undefined
  const top = ck.map(root, 'config', TOP_KEYS)
  if (top === undefined) return undefined
  if (requireRoutes && top.node.entries.length === 0) { ck.error(top.pos, 'the config file is empty'); return undefined }

  const parts = gatherParts(ck, top, file, env)
  if (parts === undefined) return undefined

  const secrets = readSecrets(ck, top.get('secrets'))
  const identity = readIdentity(ck, top.get('identity'), secrets)

  const listeners = readListeners(ck, top.get('listen'))
  const listen = listeners[0]?.address ?? parseHostPort(DEFAULTS.listen)
  const tracing = readTracing(ck, top.get('tracing'))
  const { admin, adminToken } = readAdmin(ck, top)

  const workers = readWorkers(ck, top.get('workers'))
  const store = readStore(ck, top.get('store'))
  const trustedProxies = cidrList(ck, top.get('trusted_proxies'), 'trusted_proxies')
  const server = readServer(ck, top.get('server'))
  const accessLog = readAccessLog(ck, top.get('access_log'), file)
  const origin = readOrigin(ck, top.get('origin'), store)

  const { upstreams, positions: upstreamPos } = readUpstreams(ck, parts.upstreams)
  const { campaigns, index } = readCampaigns(ck, parts.campaigns)

  const guardEnv: GuardEnv = {
    ck,
    identityUser: identity.user !== null,
    secrets,
    storeOnError: store.onError,
    storeJournal: store.journal != null,
    workers,
    gatewayNodes: store.gatewayNodes ?? 1,
    campaigns: index,
    rateLimits: new Map()
  }
  const routes = readRoutes(guardEnv, parts.routes, upstreamPos, server.maxBodySize, file)
  // A gateway without routes answers 404 to everything; an origin-only file (origin:) needs none.
  if (requireRoutes && parts.routes.length === 0 && !top.has('origin')) ck.error(top.has('routes') ? top.keyPos('routes') : top.pos, 'no routes: the gateway would answer 404 NOT_FOUND to every request (add routes:)')

  if (d.errorCount > 0) return undefined
  return {
    file: resolve(file),
    listen,
    listeners,
    tracing,
    admin,
    adminToken,
    workers,
    store,
    trustedProxies,
    identity,
    secrets,
    server,
    accessLog,
    upstreams,
    campaigns,
    routes,
    origin
  }
}
