/**
 * The latency–throughput plot the benchmark writes itself: one SVG, x = throughput (req/s, log
 * scale, so Rank(10) and Rank(1,000) share it), y = p99 latency (ms, log scale), one line per
 * series (e.g. "Rank(10) on"), one point per concurrency, labelled with C. No dependency.
 */
export interface PlotPoint {
  x: number;
  y: number;
  label: string;
}
export interface PlotSeries {
  name: string;
  points: PlotPoint[];
  dashed?: boolean;
  /** series sharing a group share a colour */
  group: string;
}

const COLOURS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#e377c2', '#17becf'];

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** 1, 2, 5 × 10^e ticks within [10^lo, 10^hi]. */
function logTicks(lo: number, hi: number): { v: number; major: boolean }[] {
  const out: { v: number; major: boolean }[] = [];
  for (let e = lo; e <= hi; e++) for (const m of [1, 2, 5]) if (m * 10 ** e <= 10 ** hi) out.push({ v: +(m * 10 ** e).toPrecision(3), major: m === 1 });
  return out;
}

export function latencyThroughputSvg(title: string, series: PlotSeries[], subtitle = ''): string {
  const W = 900;
  const H = 560;
  const L = 80;
  const R = 230;
  const T = 60;
  const B = 60;
  const pts = series.flatMap((s) => s.points).filter((p) => p.x > 0 && p.y > 0);
  const xlo = Math.floor(Math.log10(Math.min(...pts.map((p) => p.x), 1)));
  const xhi = Math.ceil(Math.log10(Math.max(...pts.map((p) => p.x), 1)));
  const ymin = Math.min(...pts.map((p) => p.y), 1);
  const ymax = Math.max(...pts.map((p) => p.y), 1);
  const lo = Math.floor(Math.log10(ymin));
  const hi = Math.ceil(Math.log10(ymax));
  const sx = (x: number) => L + ((W - L - R) * (Math.log10(x) - xlo)) / Math.max(1, xhi - xlo);
  const sy = (y: number) => T + (H - T - B) * (1 - (Math.log10(y) - lo) / Math.max(1, hi - lo));
  const groups = [...new Set(series.map((s) => s.group))];
  const colour = (g: string) => COLOURS[groups.indexOf(g) % COLOURS.length];
  const o: string[] = [];
  o.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  o.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  o.push(`<text x="${L}" y="24" font-size="16" font-weight="bold">${esc(title)}</text>`);
  if (subtitle) o.push(`<text x="${L}" y="42" fill="#555">${esc(subtitle)}</text>`);
  // axes and grid
  for (const { v, major } of logTicks(xlo, xhi)) {
    o.push(`<line x1="${sx(v).toFixed(1)}" y1="${T}" x2="${sx(v).toFixed(1)}" y2="${H - B}" stroke="${major ? '#ddd' : '#f3f3f3'}"/>`);
    o.push(`<text x="${sx(v).toFixed(1)}" y="${H - B + 16}" text-anchor="middle">${v}</text>`);
  }
  for (const { v, major } of logTicks(lo, hi)) {
    o.push(`<line x1="${L}" y1="${sy(v).toFixed(1)}" x2="${W - R}" y2="${sy(v).toFixed(1)}" stroke="${major ? '#ddd' : '#f3f3f3'}"/>`);
    o.push(`<text x="${L - 6}" y="${sy(v) + 4}" text-anchor="end">${v}</text>`);
  }
  o.push(`<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="black"/><line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="black"/>`);
  o.push(`<text x="${(L + W - R) / 2}" y="${H - 16}" text-anchor="middle">throughput (requests/s answered OK, log scale)</text>`);
  o.push(`<text x="18" y="${(T + H - B) / 2}" text-anchor="middle" transform="rotate(-90 18 ${(T + H - B) / 2})">p99 latency (ms, log scale)</text>`);
  // series
  series.forEach((s, i) => {
    const c = colour(s.group);
    const p = s.points.filter((q) => q.x > 0 && q.y > 0);
    if (p.length) {
      o.push(`<polyline fill="none" stroke="${c}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''} points="${p.map((q) => `${sx(q.x).toFixed(1)},${sy(q.y).toFixed(1)}`).join(' ')}"/>`);
      for (const q of p) {
        o.push(`<circle cx="${sx(q.x).toFixed(1)}" cy="${sy(q.y).toFixed(1)}" r="3.5" fill="${s.dashed ? 'white' : c}" stroke="${c}" stroke-width="1.5"/>`);
        o.push(`<text x="${(sx(q.x) + 5).toFixed(1)}" y="${(sy(q.y) - 6).toFixed(1)}" font-size="10" fill="${c}">${esc(q.label)}</text>`);
      }
    }
    const ly = T + 10 + i * 20;
    o.push(`<line x1="${W - R + 16}" y1="${ly}" x2="${W - R + 46}" y2="${ly}" stroke="${c}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`);
    o.push(`<text x="${W - R + 52}" y="${ly + 4}">${esc(s.name)}</text>`);
  });
  o.push('</svg>');
  return o.join('\n') + '\n';
}
