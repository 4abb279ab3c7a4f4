/** What a guard reader may consult beyond its own options: the sections read before the routes. */
import type { Checker, MapView } from '../../check.js'
import type { Pos } from '../../tree.js'
import type { FailurePolicy, RejectOverride, SecretsConfig } from '../../types.js'
import type { CampaignIndex } from '../campaigns.js'

export interface GuardEnv {
  readonly ck: Checker
  /** identity.user is set (guards that need to know the user say so at their position otherwise). */
  readonly identityUser: boolean
  readonly secrets: SecretsConfig
  /** store.on_error: what a guard without its own `on_error` inherits. */
  readonly storeOnError: FailurePolicy
  /** store.on_error is journal (an inheriting quota then journals instead of applying `local`). */
  readonly storeJournal: boolean
  /** `workers` and store.gateway_nodes: a node-local limit is split across the processes that enforce it. */
  readonly workers: number
  readonly gatewayNodes: number
  readonly campaigns: CampaignIndex
  /** Named rate limits seen so far: guards with one name share one limit, so their settings must agree. */
  readonly rateLimits: Map<string, { readonly sig: string, readonly pos: Pos }>
}

/** The route a guard sits on. */
export interface RouteCtx {
  readonly name: string
  readonly pos: Pos
  /** `:param` names of the route's path; null when the route matches by prefix. */
  readonly params: ReadonlySet<string> | null
  readonly pathText: string | null
}

/** The keys every guard takes, read before its own. */
export interface GuardCommon { readonly index: number, readonly shadow: boolean, readonly reject: RejectOverride | null }

/** One guard kind's reader: its options `m` (keys already checked), the position of its kind key. */
export type GuardReader<G> = (env: GuardEnv, m: MapView, pos: Pos, rc: RouteCtx, common: GuardCommon) => G | undefined

/** A guard that needs the user (identity.user) says so at its own position. */
export function needUser (env: GuardEnv, pos: Pos, what: string): void {
  if (!env.identityUser) env.ck.error(pos, `${what} needs identity.user (who the user is): set identity: { user: header x-user-id } or cookie NAME`)
}
