/**
 * The chart: requests/s and p99 over time per outcome (top), and requests/s per target with the peers
 * (bottom, flashgate in colour, peers in grey, ratio labels). Plain SVG 1.1 with inline styles and
 * system fonts, so it renders the same in any browser and on GitHub.
 */
import type { Report } from './report.js'

const W = 1200
const PAD = 70
const FONT = 'font-family="system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif"'
const PALETTE = ['#2563eb', '#dc2626', '#16a34a', '#d97706', '#7c3aed', '#0891b2', '#db2777', '#65a30d', '#ea580c', '#475569', '#9333ea', '#0d9488']

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')

function niceMax (v: number): number {
  if (v <= 0) return 1
  const p = 10 ** Math.floor(Math.log10(v))
  for (const m of [1, 1.2, 1.6, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p
  return 10 * p
}

const fmt = (v: number): string => v >= 1e6 ? `${(v / 1e6).toFixed(1)}M` : v >= 1e4 ? `${Math.round(v / 1e3)}k` : v >= 1e3 ? `${(v / 1e3).toFixed(1)}k` : v >= 10 ? String(Math.round(v)) : v.toFixed(v >= 1 ? 1 : 2)

interface Series { readonly name: string, readonly color: string, readonly points: ReadonlyArray<readonly [number, number]> }

function lineChart (title: string, unit: string, series: readonly Series[], x0: number, y0: number, w: number, h: number, tMax: number): string {
  const out: string[] = []
  const yMax = niceMax(Math.max(0, ...series.flatMap((s) => s.points.map((p) => p[1]))))
  const X = (t: number): number => x0 + (tMax > 0 ? (t / tMax) * w : 0)
  const Y = (v: number): number => y0 + h - (v / yMax) * h
  out.push(`<text x="${x0}" y="${y0 - 12}" ${FONT} font-size="15" font-weight="600" fill="#111827">${esc(title)}</text>`)
  for (let i = 0; i <= 4; i++) {
    const v = (yMax * i) / 4
    out.push(`<line x1="${x0}" y1="${Y(v).toFixed(1)}" x2="${x0 + w}" y2="${Y(v).toFixed(1)}" stroke="#e5e7eb" stroke-width="1"/>`)
    out.push(`<text x="${x0 - 8}" y="${(Y(v) + 4).toFixed(1)}" ${FONT} font-size="11" fill="#6b7280" text-anchor="end">${fmt(v)}</text>`)
  }
  const step = tMax > 40 ? 10 : tMax > 15 ? 5 : tMax > 6 ? 2 : 1
  for (let t = 0; t <= tMax + 1e-9; t += step) {
    out.push(`<text x="${X(t).toFixed(1)}" y="${y0 + h + 16}" ${FONT} font-size="11" fill="#6b7280" text-anchor="middle">${t}s</text>`)
  }
  out.push(`<text x="${x0 - 8}" y="${y0 - 12}" ${FONT} font-size="10" fill="#6b7280" text-anchor="end">${esc(unit)}</text>`)
  out.push(`<line x1="${x0}" y1="${y0 + h}" x2="${x0 + w}" y2="${y0 + h}" stroke="#9ca3af" stroke-width="1"/>`)
  for (const s of series) {
    if (s.points.length === 0) continue
    const d = s.points.map((p, i) => `${i === 0 ? 'M' : 'L'}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(' ')
    out.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2" stroke-linejoin="round"/>`)
    for (const p of s.points) out.push(`<circle cx="${X(p[0]).toFixed(1)}" cy="${Y(p[1]).toFixed(1)}" r="2.2" fill="${s.color}"/>`)
  }
  return out.join('\n')
}

function legend (series: readonly Series[], x: number, y: number, maxW: number): { svg: string, height: number } {
  const out: string[] = []
  let cx = x
  let cy = y
  for (const s of series) {
    const wItem = 34 + s.name.length * 7.6
    if (cx + wItem > x + maxW) { cx = x; cy += 18 }
    out.push(`<rect x="${cx}" y="${cy - 9}" width="14" height="10" rx="2" fill="${s.color}"/>`)
    out.push(`<text x="${cx + 19}" y="${cy}" ${FONT} font-size="12" fill="#374151">${esc(s.name)}</text>`)
    cx += wItem
  }
  return { svg: out.join('\n'), height: cy - y + 18 }
}

export function chart (r: Report): string {
  const parts: string[] = []
  let y = 40
  const title = `flashgate bench · ${r.scenario} · ${r.date.slice(0, 16).replace('T', ' ')} UTC`
  parts.push(`<text x="${PAD}" y="${y}" ${FONT} font-size="20" font-weight="700" fill="#111827">${esc(title)}</text>`)
  y += 22
  const sub = `${r.correctness.ok ? '✓ correctness OK' : '✗ correctness FAILED'} · ${String(r.machine.cpus)} CPUs · Node ${r.versions.node ?? ''} · generator ${r.generator}`
  parts.push(`<text x="${PAD}" y="${y}" ${FONT} font-size="13" fill="${r.correctness.ok ? '#15803d' : '#b91c1c'}">${esc(sub)}</text>`)
  y += 30

  const tl = r.timeline ?? []
  if (tl.length > 0) {
    const outcomes = [...new Set(tl.flatMap((p) => Object.keys(p.outcomes)))]
    const totals = new Map(outcomes.map((o) => [o, tl.reduce((a, p) => a + (p.outcomes[o]?.count ?? 0), 0)]))
    outcomes.sort((a, b) => (totals.get(b) ?? 0) - (totals.get(a) ?? 0))
    const shown = outcomes.slice(0, PALETTE.length)
    const color = new Map(shown.map((o, i) => [o, PALETTE[i] ?? '#000']))
    const tMax = Math.max(...tl.map((p) => p.t))
    let prevT = 0
    const rate: Array<{ t: number, o: Record<string, number>, p99: Record<string, number | null> }> = []
    for (const p of tl) {
      const dt = Math.max(0.1, p.t - prevT)
      prevT = p.t
      const o: Record<string, number> = {}
      const q: Record<string, number | null> = {}
      for (const [k, v] of Object.entries(p.outcomes)) { o[k] = v.count / dt; q[k] = v.p99 }
      rate.push({ t: p.t, o, p99: q })
    }
    const rpsSeries: Series[] = shown.map((o) => ({ name: o, color: color.get(o) ?? '#000', points: rate.map((p) => [p.t, p.o[o] ?? 0] as const) }))
    const p99Series: Series[] = shown.map((o) => ({ name: o, color: color.get(o) ?? '#000', points: rate.filter((p) => typeof p.p99[o] === 'number').map((p) => [p.t, p.p99[o] ?? 0] as const) }))
    const lg = legend(rpsSeries, PAD, y, W - 2 * PAD)
    parts.push(lg.svg)
    y += lg.height + 26
    const cw = (W - 2 * PAD - 60) / 2
    const ch = 240
    const of = r.timelineOf === null ? '' : ` (${r.timelineOf})`
    parts.push(lineChart(`answers/s by outcome${of}`, 'requests/s', rpsSeries, PAD, y, cw, ch, tMax))
    parts.push(lineChart('p99 latency by outcome', 'ms', p99Series, PAD + cw + 60, y, cw, ch, tMax))
    y += ch + 50
  }

  const targets = (r.targets ?? []).filter((t) => t.rps !== null)
  if (targets.length > 0) {
    parts.push(`<text x="${PAD}" y="${y}" ${FONT} font-size="15" font-weight="600" fill="#111827">requests/s on one core, flashgate beside the peers (same run, interleaved rounds)</text>`)
    y += 14
    const labelW = 190
    const barX = PAD + labelW
    const barW = W - barX - PAD - 260
    const max = niceMax(Math.max(...targets.map((t) => t.rps ?? 0)))
    const rowH = 24
    const ratios = new Map<string, string>()
    for (const c of r.comparisons) {
      if (c.ratio === null) continue
      const prev = ratios.get(c.target)
      const s = `${c.ratio.toFixed(2)}× ${c.reference}${c.goal !== null ? (c.met === true ? ' ✓' : ' ✗') : ''}`
      ratios.set(c.target, prev === undefined ? s : `${prev} · ${s}`)
    }
    for (let i = 0; i <= 4; i++) {
      const gx = barX + (barW * i) / 4
      parts.push(`<line x1="${gx.toFixed(1)}" y1="${y + 4}" x2="${gx.toFixed(1)}" y2="${y + 8 + targets.length * rowH}" stroke="#e5e7eb"/>`)
      parts.push(`<text x="${gx.toFixed(1)}" y="${y + 20 + targets.length * rowH}" ${FONT} font-size="11" fill="#6b7280" text-anchor="middle">${fmt((max * i) / 4)}</text>`)
    }
    y += 8
    for (const t of targets) {
      const w = ((t.rps ?? 0) / max) * barW
      const fill = t.kind === 'flashgate' ? '#ea580c' : '#9ca3af'
      parts.push(`<text x="${barX - 8}" y="${y + 16}" ${FONT} font-size="12" fill="#111827" text-anchor="end" font-weight="${t.kind === 'flashgate' ? 700 : 400}">${esc(t.target)}</text>`)
      parts.push(`<rect x="${barX}" y="${y + 4}" width="${Math.max(1, w).toFixed(1)}" height="${rowH - 8}" rx="3" fill="${fill}"/>`)
      const label = `${fmt(t.rps ?? 0)} · p99 ${t.p99 === null ? '–' : t.p99.toFixed(2)} ms`
      parts.push(`<text x="${(barX + w + 6).toFixed(1)}" y="${y + 16}" ${FONT} font-size="11" fill="#374151">${esc(label)}</text>`)
      const rt = ratios.get(t.target)
      if (rt !== undefined) parts.push(`<text x="${W - PAD}" y="${y + 16}" ${FONT} font-size="11" fill="#9a3412" text-anchor="end">${esc(rt.length > 44 ? rt.slice(0, 43) + '…' : rt)}</text>`)
      y += rowH
    }
    y += 40
  }

  if (r.funnel !== null && r.funnel.length > 0) {
    parts.push(`<text x="${PAD}" y="${y}" ${FONT} font-size="15" font-weight="600" fill="#111827">CPU µs per request as guards are added (funnel pass path)</text>`)
    y += 14
    const vals = r.funnel.map((c) => c.cpuUsPerReq ?? 0)
    const max = niceMax(Math.max(...vals))
    const barX = PAD + 230
    const barW = W - barX - PAD - 160
    for (const c of r.funnel) {
      const w = ((c.cpuUsPerReq ?? 0) / max) * barW
      parts.push(`<text x="${barX - 8}" y="${y + 16}" ${FONT} font-size="12" fill="#111827" text-anchor="end">${esc(`${c.step} ${c.guard}`)}</text>`)
      parts.push(`<rect x="${barX}" y="${y + 4}" width="${Math.max(1, w).toFixed(1)}" height="16" rx="3" fill="#2563eb"/>`)
      parts.push(`<text x="${(barX + w + 6).toFixed(1)}" y="${y + 16}" ${FONT} font-size="11" fill="#374151">${esc(`${c.cpuUsPerReq === null ? '–' : c.cpuUsPerReq.toFixed(1)} µs${c.addedUs === null ? '' : ` (${c.addedUs >= 0 ? '+' : ''}${c.addedUs.toFixed(1)})`}`)}</text>`)
      y += 24
    }
    y += 30
  }

  if (tl.length === 0 && targets.length === 0) {
    parts.push(`<text x="${PAD}" y="${y}" ${FONT} font-size="14" fill="#6b7280">no figures in this run</text>`)
    y += 30
  }
  const H = Math.ceil(y)
  return `<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}">
<rect width="${W}" height="${H}" fill="#ffffff"/>
${parts.join('\n')}
</svg>
`
}
