/**
 * `flashgate demo` (`npm start`): the embedded default a newcomer sees first. One process runs the
 * purchase origin and the gateway (through the gateway's composition root, `startGateway`) on the memory
 * store with `conf/demo.yaml`: a campaign opening a few seconds after start, two products, the full
 * funnel (deny → global and per-IP limits → proof-of-work captcha → signed link → campaign window →
 * waiting room → one attempt per user → quota → origin). It prints the URLs and a copy-paste curl
 * sequence (time → challenge → queue → link → buy → order status), then one summary line per second. Ctrl-C (SIGINT) or
 * SIGTERM stops everything and exits 0.
 *
 * Ports: 8080 (gateway), 9090 (admin), 7001 (origin) when free, else free ports picked at start.
 */
import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { createServer } from 'node:net'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { formatErrors, loadConfigFile } from '../conf/load.js'
import type { Config } from '../conf/types.js'
import { command } from './cli-args.js'
import { createLog } from './log.js'
import { startGateway, type Gateway } from './main.js'
import { createOrigin, type Origin } from '../origin-stub/origin.js'

export const USAGE = `Usage: flashgate demo

Runs the gateway and the purchase origin in one process on the in-memory store, with a demo campaign
that opens a few seconds after start (conf/demo.yaml). Prints the URLs and a curl sequence to try, then
one line per second: requests by outcome and the stock left. Ctrl-C stops it.

  --help   this text`

const HOST = '127.0.0.1'
const OPENS_IN_MS = 5000
const LASTS_MS = 30 * 60_000

function canBind (port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer()
    s.once('error', () => resolve(false))
    s.listen({ port, host: HOST, exclusive: true }, () => s.close(() => resolve(true)))
  })
}

async function pickPort (preferred: number, taken: Set<number>): Promise<number> {
  if (!taken.has(preferred) && await canBind(preferred)) { taken.add(preferred); return preferred }
  for (let i = 0; i < 50; i++) {
    const port = await new Promise<number>((resolve, reject) => {
      const s = createServer()
      s.once('error', reject)
      s.listen({ port: 0, host: HOST, exclusive: true }, () => {
        const a = s.address()
        const p = typeof a === 'object' && a !== null ? a.port : 0
        s.close(() => resolve(p))
      })
    })
    if (!taken.has(port)) { taken.add(port); return port }
  }
  throw new Error('no free port')
}

/** conf/demo.yaml beside the sources (tsx) or two levels up from dist/origin-stub (built). */
function demoFile (): string {
  for (const rel of ['../conf/demo.yaml', '../../conf/demo.yaml']) {
    const f = fileURLToPath(new URL(rel, import.meta.url))
    if (existsSync(f)) return f
  }
  throw new Error('conf/demo.yaml not found')
}

// A dependency-free proof-of-work solver for the shell (the challenge JSON on stdin).
const SOLVER = 'const c=JSON.parse(require("fs").readFileSync(0,"utf8")),h=require("crypto");' +
  'for(let i=0;;i++){const d=h.createHash("sha256").update(c.challenge+i).digest();let z=0;' +
  'for(const b of d){if(b===0){z+=8;continue}z+=Math.clz32(b)-24;break}' +
  'if(z>=c.difficulty){console.log(c.challenge+":"+i);break}}'

/** The copy-paste sequence the demo prints (and its test runs with bash). */
function curlSequence (gateway: string, campaign: string, product: string, user: string): string {
  const field = (name: string): string => `node -p 'JSON.parse(require("fs").readFileSync(0,"utf8")).${name}'`
  return [
    `GW=${gateway}; U=${user}`,
    '# 1. the server clock (for a countdown)',
    'curl -s "$GW/_flashgate/time"; echo',
    '# 2. a proof-of-work challenge, solved locally',
    `POW=$(curl -s "$GW/_flashgate/challenge" | node -e '${SOLVER}')`,
    '# 3. the waiting room: join, poll until admitted; the pass comes back in the JSON (and as a cookie)',
    `for i in $(seq 1 120); do PASS=$(curl -s -H "x-user-id: $U" "$GW/_flashgate/queue?campaign=${campaign}" | ${field('pass||""')}); [ -n "$PASS" ] && break; sleep 0.5; done`,
    '# 4. a purchase link signed for this user and product',
    `LINK=$(curl -s -H "x-user-id: $U" "$GW/_flashgate/link?campaign=${campaign}&product=${product}" | ${field('url')})`,
    '# 5. buy with the pass (202 QUEUED with an order id; 409 NOT_STARTED before the sale opens;',
    '#    202 PENDING with a ticket when the gateway journaled it (store down): your purchase is in progress, poll the ticket)',
    'BUY=$(curl -s -X POST -H "x-user-id: $U" -H "x-flashgate-pow: $POW" -H "x-flashgate-pass: $PASS" "$GW$LINK"); echo "$BUY"',
    `TICKET=$(echo "$BUY" | sed -n 's/.*"ticket":"\\([^"]*\\)".*/\\1/p')`,
    `if [ -n "$TICKET" ]; then for i in $(seq 1 60); do BUY=$(curl -s -H "x-user-id: $U" "$GW/_flashgate/pending/$TICKET"); echo "$BUY"; echo "$BUY" | grep -q '"PENDING"' || break; sleep 1; done; BUY=$(echo "$BUY" | node -p 'const j=JSON.parse(require("fs").readFileSync(0,"utf8"));JSON.stringify(j.upstream?j.upstream.body:{})'); fi`,
    `ORDER=$(echo "$BUY" | ${field('order_id')})`,
    '# 6. the order: QUEUED, then CREATED; pay it with POST $GW/orders/$ORDER/pay',
    'sleep 1; curl -s -H "x-user-id: $U" "$GW/orders/$ORDER"; echo'
  ].join('\n')
}

function clockTime (ms: number): string {
  return new Date(ms).toISOString().slice(11, 19)
}

async function summaryLine (gw: Gateway, origin: Origin, config: Config, startsAt: number): Promise<string> {
  const byOutcome = new Map<string, number>()
  const m = await gw.metrics.requests.get()
  for (const v of m.values) {
    const o = String(v.labels.outcome ?? '?')
    byOutcome.set(o, (byOutcome.get(o) ?? 0) + v.value)
  }
  const outcomes = [...byOutcome].filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]).map(([o, n]) => `${o} ${n}`).join(' · ')
  const stock: string[] = []
  for (const p of origin.products) {
    const s = await origin.store.stock(p).catch(() => null)
    if (s !== null) stock.push(`${p.product} ${s.sale}/${s.stock} left (${s.locked} locked, ${s.sold} sold)`)
  }
  const now = Date.now()
  const c = config.campaigns.get('demo')
  const phase = now < startsAt ? `opens in ${Math.ceil((startsAt - now) / 1000)}s` : c !== undefined && now >= c.endsAt ? 'ended' : 'OPEN'
  return `[${clockTime(now)}] ${phase} | requests: ${outcomes === '' ? 'none yet' : outcomes} | ${stock.join(' · ')}`
}

/** The `demo` subcommand. Resolves with the exit code once stopped (Ctrl-C). */
export async function main (args: string[]): Promise<number> {
  return await command({ prog: 'flashgate demo', usage: USAGE, flags: {} }, args, runDemo) ?? 0
}

async function runDemo (): Promise<number> {
  const taken = new Set<number>()
  const gwPort = await pickPort(8080, taken)
  const adminPort = await pickPort(9090, taken)
  const originPort = await pickPort(7001, taken)
  const now = Date.now()
  const startsAt = Math.ceil((now + OPENS_IN_MS) / 1000) * 1000
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    FLASHGATE_DEMO_LISTEN: `${HOST}:${gwPort}`,
    FLASHGATE_DEMO_ADMIN: `${HOST}:${adminPort}`,
    FLASHGATE_DEMO_ORIGIN: `${HOST}:${originPort}`,
    FLASHGATE_DEMO_STARTS_AT: new Date(startsAt).toISOString(),
    FLASHGATE_DEMO_ENDS_AT: new Date(startsAt + LASTS_MS).toISOString(),
    // Fresh keys per run: nothing secret sits in the file.
    FLASHGATE_LINK_KEY: randomBytes(32).toString('base64url'),
    FLASHGATE_POW_KEY: randomBytes(32).toString('base64url')
  }
  const file = demoFile()
  const r = loadConfigFile(file, env)
  if (!r.ok) {
    process.stderr.write(formatErrors(r) + '\n')
    return 1
  }
  const config = r.config
  const log = createLog({ level: 'warn' })

  let gateway: Gateway | null = null
  // One ledger on the memory store: units the origin releases (unpaid orders cancelled) go back to the
  // gateway's quota in this process (on a shared Redis the origin writes them to the edge's counters).
  const onRelease = async (ref: { campaign: string, product: string }, units: number): Promise<void> => {
    if (config.store.kind !== 'memory') return
    const r = await gateway?.quotaAdmin()?.release?.(ref.campaign, ref.product, units)
    if (r != null && 'conflict' in r) log('warn', 'demo: release refused by the gateway', { ...ref, units, code: r.conflict })
  }
  const origin = createOrigin(config, { log, defaultMetrics: false, onRelease })
  try {
    await origin.start()
    gateway = await startGateway({ config, configFile: file, env, log })
  } catch (err) {
    await gateway?.close()
    await origin.close(0)
    process.stderr.write(`flashgate demo: cannot start: ${err instanceof Error ? err.message : String(err)}\n`)
    return 1
  }
  const gw = gateway
  const products = [...config.campaigns.values()].flatMap((c) => c.products.map((p) => `${p.id} (${p.quota})`)).join(', ')
  process.stdout.write(`flashgate demo — gateway and purchase origin on the in-memory store

  sale page ${gw.url}/         (open it in a browser: countdown, pow in a Web Worker, buy, order, pay)
  gateway   ${gw.url}          (the edge: every request goes through here)
  admin     ${gw.adminUrl ?? '-'}          (/metrics /healthz /readyz /admin/quota/demo/phone)
  origin    http://${HOST}:${originPort}   (/stock/demo/phone /metrics; behind the gateway)

  campaign  demo: ${products}; opens at ${clockTime(startsAt)} UTC (in ${Math.round((startsAt - Date.now()) / 1000)} s), lasts ${LASTS_MS / 60_000} min
  funnel    deny → rate limits (global, per IP) → pow captcha → signed link → window → waiting room → one per user → quota → origin

Try it (bash; needs curl and node):

${curlSequence(gw.url, 'demo', 'phone', 'alice')}

Ctrl-C stops the demo.

`)

  let busy = false
  const timer = setInterval(() => {
    if (busy) return
    busy = true
    summaryLine(gw, origin, config, startsAt)
      .then((line) => { process.stdout.write(line + '\n') }, () => {})
      .finally(() => { busy = false })
  }, 1000)

  return await new Promise<number>((resolve) => {
    const stop = (): void => {
      process.off('SIGINT', stop)
      process.off('SIGTERM', stop)
      clearInterval(timer)
      process.stdout.write('\nstopping...\n')
      Promise.all([gw.close(), origin.close(2000)]).then(() => {
        process.stdout.write('stopped\n')
        resolve(0)
      }, (err: unknown) => {
        process.stderr.write(`flashgate demo: stop failed: ${err instanceof Error ? err.message : String(err)}\n`)
        resolve(1)
      })
    }
    process.on('SIGINT', stop)
    process.on('SIGTERM', stop)
  })
}

const entry = process.argv[1]
if (entry !== undefined && import.meta.url === pathToFileURL(entry).href) {
  main(process.argv.slice(2)).then((code) => { process.exitCode = code }, (err: unknown) => {
    process.stderr.write(`flashgate demo: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
    process.exitCode = 1
  })
}
