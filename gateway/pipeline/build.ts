/**
 * Guard pipelines: each route's guards are built once per config load into an array, and one small
 * loop walks it per request. A guard answers `undefined` (pass), a Rejection, or a Promise of either;
 * only a thenable is awaited, so a route of synchronous guards never allocates a Promise, and a route
 * with no guards skips the runner entirely (`guards === null`).
 */
import type { Config, GuardConfig, GuardKind, RouteConfig } from '../../conf/types.js'
import { ConfigError } from '../../conf/errors.js'
import type { Guard, GuardDeps, GuardFactory, Rejection, RequestContext, Verdict } from './types.js'

/** Guard factories by kind, supplied by the composition root (limiter, antibot). */
export type GuardFactories = Partial<Record<GuardKind, GuardFactory<any>>>

/** A route ready to serve: its guards (null when none), shadow flags, and what it forwards to. */
export interface CompiledRoute {
  readonly index: number
  readonly name: string
  readonly route: RouteConfig
  readonly guards: readonly Guard[] | null
  /**
   * `guards[i].check` bound to its guard (null when no guards). The runner calls these: guards are
   * objects of many shapes, so loading `.check` from each was a megamorphic property load per guard per
   * request; an array element load is not.
   */
  readonly checks: ReadonlyArray<(ctx: RequestContext) => Verdict | Promise<Verdict>> | null
  /** `shadow[i]`: guard i only counts what it would reject. */
  readonly shadow: readonly boolean[]
  /** null for a static route (gateway/static.ts answers it). */
  readonly upstream: string | null
  readonly maxBodySize: number
}

/** Where the runner hands a request when the pipeline is done with it. */
export interface PipelineSink<C extends RequestContext> {
  /** Every guard passed. */
  pass (ctx: C): void
  /** A guard (not in shadow mode) rejected; `guard` is the one that did (absent: the gateway itself). */
  reject (ctx: C, rejection: Rejection, guard?: Guard): void
  /** A guard threw or its promise rejected. */
  fail (ctx: C, guard: Guard, err: unknown): void
  /** A shadow guard would have rejected. */
  shadow (ctx: C, guard: Guard, rejection: Rejection): void
}

/**
 * Build every route's guards. A kind without a factory, or a factory that throws, is a config problem
 * reported for the whole file at once (ConfigError); guards already built are closed.
 */
export function buildPipelines (config: Config, factories: GuardFactories, deps: GuardDeps): { routes: CompiledRoute[], guards: Guard[] } {
  const all: Guard[] = []
  const problems: string[] = []
  const routes = config.routes.map((route, index): CompiledRoute => {
    const guards: Guard[] = []
    const shadow: boolean[] = []
    for (const g of route.guards) {
      const guard = buildGuard(g, route, factories, deps, problems)
      if (guard === null) continue
      guards.push(guard)
      shadow.push(g.shadow)
      all.push(guard)
    }
    fuse(guards, shadow)
    return {
      index,
      name: route.name,
      route,
      guards: guards.length === 0 ? null : guards,
      checks: guards.length === 0 ? null : guards.map((g) => g.check.bind(g)),
      shadow,
      upstream: route.upstream,
      maxBodySize: route.maxBodySize
    }
  })
  if (problems.length > 0) {
    closeGuards(all, deps)
    throw new ConfigError(problems)
  }
  return { routes, guards: all }
}

function buildGuard (g: GuardConfig, route: RouteConfig, factories: GuardFactories, deps: GuardDeps, problems: string[]): Guard | null {
  const factory = factories[g.kind]
  const where = `${deps.config.file}: route "${route.name}" guard ${g.index} (${g.kind})`
  if (factory === undefined) {
    problems.push(`${where}: guard kind "${g.kind}" is not available in this build`)
    return null
  }
  try {
    return factory(g, route, deps)
  } catch (err) {
    problems.push(`${where}: ${err instanceof Error ? err.message : String(err)}`)
    return null
  }
}

/**
 * Let adjacent guards combine (Guard.fuseWith), e.g. dedupe + quota into one store round trip. Guards in
 * shadow mode are left alone: their rejections are only counted, which a combined guard cannot do for
 * one half. The guards fused stay in the list of guards to close.
 */
function fuse (guards: Guard[], shadow: boolean[]): void {
  for (let i = 0; i + 1 < guards.length; i++) {
    const a = guards[i] as Guard
    if (a.fuseWith === undefined || shadow[i] === true || shadow[i + 1] === true) continue
    const f = a.fuseWith(guards[i + 1] as Guard)
    if (f === null) continue
    guards.splice(i, 2, f)
    shadow.splice(i, 2, false)
  }
}

/** Close guards (a retired pipeline), logging — never throwing — on failure. */
export function closeGuards (guards: readonly Guard[], deps: Pick<GuardDeps, 'log'>): void {
  for (const g of guards) {
    if (g.close === undefined) continue
    try {
      const p = g.close()
      if (p !== undefined) p.catch((err: unknown) => { deps.log('warn', 'guard close failed', { guard: g.id, err }) })
    } catch (err) {
      deps.log('warn', 'guard close failed', { guard: g.id, err })
    }
  }
}

function isThenable (v: unknown): v is PromiseLike<Verdict> {
  return typeof (v as { then?: unknown }).then === 'function'
}

/**
 * Walk `route.guards` from `from`. Synchronous verdicts loop; the first thenable suspends the walk,
 * which resumes in its callback. Exactly one sink method is called per request.
 */
export function runPipeline<C extends RequestContext> (ctx: C, route: CompiledRoute, from: number, sink: PipelineSink<C>): void {
  const checks = route.checks as ReadonlyArray<(ctx: RequestContext) => Verdict | Promise<Verdict>>
  const n = checks.length
  for (let i = from; i < n; i++) {
    let v: Verdict | Promise<Verdict>
    try {
      v = (checks[i] as (ctx: RequestContext) => Verdict | Promise<Verdict>)(ctx)
    } catch (err) {
      sink.fail(ctx, guardAt(route, i), err)
      return
    }
    if (v === undefined) continue
    if (isThenable(v)) {
      v.then((r) => { resume(ctx, route, i, r, sink) }, (err: unknown) => { sink.fail(ctx, guardAt(route, i), err) })
      return
    }
    if (route.shadow[i] === true) {
      sink.shadow(ctx, guardAt(route, i), v)
      continue
    }
    sink.reject(ctx, v, guardAt(route, i))
    return
  }
  sink.pass(ctx)
}

function guardAt (route: CompiledRoute, i: number): Guard {
  return (route.guards as readonly Guard[])[i] as Guard
}

function resume<C extends RequestContext> (ctx: C, route: CompiledRoute, i: number, r: Verdict, sink: PipelineSink<C>): void {
  const g = guardAt(route, i)
  try {
    if (r !== undefined) {
      if (route.shadow[i] === true) {
        sink.shadow(ctx, g, r)
      } else {
        sink.reject(ctx, r, g)
        return
      }
    }
    runPipeline(ctx, route, i + 1, sink)
  } catch (err) {
    // The sink itself failed (a bug): still answer the request rather than leave it hanging.
    sink.fail(ctx, g, err)
  }
}
