/**
 * `adrank compare-modes`: the local-vs-global shift report (docs/funnel.md "Reading
 * compare-modes"). Runs the same requests in GLOBAL and in LOCAL(P) for each P, on a running
 * server, and reports per mode: overlap@K with GLOBAL, advertiser concentration (top-10 share,
 * HHI), winners by advertiser size (ads per advertiser, from the bundle), mean utility, mean
 * price, total expected value, and the winner score distribution, plus an SVG of the
 * distributions side by side. Requests come from a feature log or are generated.
 */
import { existsSync, writeFileSync } from 'node:fs';
import type { GetModelResponse__Output } from '../generated/adrank/v1/GetModelResponse.js';
import type { RankResponse__Output } from '../generated/adrank/v1/RankResponse.js';
import { sampleRetrieveAndRank } from '../handlers/sample.js';
import { readFeatureLog } from '../featurelog/reader.js';
import { loadBundle } from '../model/bundle.js';
import { call, connect } from './client.js';
import { overlapAtK } from './compare.js';
import { table } from './table.js';

export interface CompareModesFlags {
  address: string;
  log?: string;
  generate?: number;
  partitions: number[];
  k: number;
  retrieveCount: number;
  cap: number;
  bundle?: string;
  plot: string;
  json?: boolean;
}

interface Req {
  rpc: 'Rank' | 'RetrieveAndRank';
  request: Record<string, unknown>;
}

export interface ModeReport {
  mode: string;
  requests: number;
  failed: number;
  winners: number;
  overlapWithGlobal: number;
  top10AdvertiserShare: number;
  hhi: number;
  advertisers: number;
  /** share of winner slots by advertiser-size bucket (ads per advertiser); empty without a bundle */
  bySize: Record<string, number>;
  meanUtility: number;
  meanPrice: number | null;
  totalExpectedValue: number;
  scores: { p10: number; p50: number; p90: number; mean: number };
}

export interface CompareModesReport {
  address: string;
  model: { name: string; version: string };
  source: string;
  requests: number;
  k: number;
  modes: ModeReport[];
  histogram: { edges: number[]; counts: Record<string, number[]> };
  plot: string;
}

const SIZE_BUCKETS = [1, 2, 4, 8, 16, 32, 64];
function sizeBucket(n: number): string {
  for (let i = SIZE_BUCKETS.length - 1; i >= 0; i--) {
    if (n >= SIZE_BUCKETS[i]) return i === SIZE_BUCKETS.length - 1 ? `${SIZE_BUCKETS[i]}+` : SIZE_BUCKETS[i + 1] - 1 === SIZE_BUCKETS[i] ? `${SIZE_BUCKETS[i]}` : `${SIZE_BUCKETS[i]}-${SIZE_BUCKETS[i + 1] - 1}`;
  }
  return '0';
}

const quantile = (sorted: number[], q: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] : NaN);

async function requestsFrom(f: CompareModesFlags, model: GetModelResponse__Output): Promise<{ source: string; reqs: Req[] }> {
  if (f.log) {
    const { records } = await readFeatureLog(f.log);
    const reqs = records.filter((r) => r.rpc === 'Rank' || r.rpc === 'RetrieveAndRank').map((r) => ({ rpc: r.rpc as Req['rpc'], request: r.request }));
    return { source: `feature log ${f.log} (${reqs.length} Rank/RetrieveAndRank of ${records.length} records)`, reqs };
  }
  const n = f.generate ?? 100;
  const reqs: Req[] = Array.from({ length: n }, (_, i) => ({
    rpc: 'RetrieveAndRank',
    request: {
      ...sampleRetrieveAndRank(model, f.k, i + 1),
      requestId: `compare-modes-${i + 1}`,
      surface: model.surfaces[i % model.surfaces.length],
      retrieveCount: Math.max(f.k, f.retrieveCount),
      perAdvertiserCap: f.cap,
    },
  }));
  return { source: `${n} generated RetrieveAndRank requests (K ${f.k}, R ${Math.max(f.k, f.retrieveCount)}, cap ${f.cap})`, reqs };
}

/** ads per advertiser from the bundle, when one is given or the demo bundle is at hand */
async function advertiserSizes(path: string | undefined): Promise<Map<string, number> | undefined> {
  const p = path ?? (existsSync('demo/adrank-demo.safetensors') ? 'demo/adrank-demo.safetensors' : undefined);
  if (!p) return undefined;
  const b = await loadBundle(p);
  const m = new Map<string, number>();
  for (const a of b.tensors['ads.advertiser'] as BigInt64Array) {
    const k = a.toString();
    m.set(k, (m.get(k) ?? 0) + 1);
  }
  return m;
}

export async function compareModes(f: CompareModesFlags): Promise<CompareModesReport> {
  const client = connect(f.address);
  try {
    const model = await call<object, GetModelResponse__Output>(client, 'GetModel', {});
    const { source, reqs } = await requestsFrom(f, model);
    const sizes = await advertiserSizes(f.bundle);
    const modes = [{ name: 'GLOBAL', ranking: { mode: 'GLOBAL', partitions: 0 } }, ...f.partitions.map((p) => ({ name: `LOCAL(${p})`, ranking: { mode: 'LOCAL', partitions: p } }))];
    const answers = new Map<string, (RankResponse__Output | undefined)[]>();
    for (const m of modes) answers.set(m.name, []);
    for (const r of reqs) {
      // the modes of one request concurrently (the engine runs them side by side)
      const got = await Promise.all(
        modes.map((m) => {
          const req = { ...r.request, ranking: m.ranking, modelVersion: '', ...(r.rpc === 'Rank' ? { price: true } : {}) };
          return call<object, RankResponse__Output>(client, r.rpc, req).catch(() => undefined);
        }),
      );
      modes.forEach((m, i) => answers.get(m.name)!.push(got[i]));
    }
    const global = answers.get('GLOBAL')!;
    const allScores = [...answers.values()].flatMap((list) => list.flatMap((a) => a?.winners.map((w) => w.score) ?? []));
    const lo = allScores.length ? allScores.reduce((a, b) => Math.min(a, b)) : 0;
    const hi = allScores.length ? allScores.reduce((a, b) => Math.max(a, b)) : 1;
    const BINS = 30;
    const width = hi > lo ? (hi - lo) / BINS : 1;
    const edges = Array.from({ length: BINS + 1 }, (_, i) => lo + i * width);
    const counts: Record<string, number[]> = {};

    const reports: ModeReport[] = modes.map((m) => {
      const list = answers.get(m.name)!;
      let overlap = 0;
      let compared = 0;
      const slots = new Map<string, number>();
      const bySizeCount = new Map<string, number>();
      const scores: number[] = [];
      let prices = 0;
      let priced = 0;
      list.forEach((a, i) => {
        if (!a) return;
        const g = global[i];
        if (g) {
          overlap += overlapAtK(g.winners.map((w) => w.adId), a.winners.map((w) => w.adId));
          compared++;
        }
        for (const w of a.winners) {
          slots.set(w.advertiserId, (slots.get(w.advertiserId) ?? 0) + 1);
          if (sizes) {
            const b = sizeBucket(sizes.get(w.advertiserId) ?? 0);
            bySizeCount.set(b, (bySizeCount.get(b) ?? 0) + 1);
          }
          scores.push(w.score);
          if (w.price !== undefined && w.price !== null) {
            prices += w.price;
            priced++;
          }
        }
      });
      const total = scores.length;
      const shares = [...slots.values()].sort((x, y) => y - x).map((v) => v / (total || 1));
      const hist = new Array<number>(BINS).fill(0);
      for (const s of scores) hist[Math.min(BINS - 1, Math.floor((s - lo) / width))]++;
      counts[m.name] = hist;
      const sorted = [...scores].sort((x, y) => x - y);
      const sum = scores.reduce((s, x) => s + x, 0);
      const bySize: Record<string, number> = {};
      for (const [b, n] of [...bySizeCount].sort((x, y) => parseInt(x[0]) - parseInt(y[0]))) bySize[b] = n / (total || 1);
      return {
        mode: m.name,
        requests: list.length,
        failed: list.filter((a) => !a).length,
        winners: total,
        overlapWithGlobal: compared ? overlap / compared : NaN,
        top10AdvertiserShare: shares.slice(0, 10).reduce((s, x) => s + x, 0),
        hhi: shares.reduce((s, x) => s + (100 * x) ** 2, 0),
        advertisers: slots.size,
        bySize,
        meanUtility: total ? sum / total : NaN,
        meanPrice: priced ? prices / priced : null,
        totalExpectedValue: sum,
        scores: { p10: quantile(sorted, 0.1), p50: quantile(sorted, 0.5), p90: quantile(sorted, 0.9), mean: total ? sum / total : NaN },
      };
    });
    const report: CompareModesReport = { address: f.address, model: { name: model.name, version: model.version }, source, requests: reqs.length, k: f.k, modes: reports, histogram: { edges, counts }, plot: f.plot };
    writeFileSync(f.plot, renderSvg(report));
    return report;
  } finally {
    client.close();
  }
}

export function printCompareModes(r: CompareModesReport, out: (s: string) => void): void {
  out(`compare-modes: ${r.source} against ${r.address}, model ${r.model.name} v${r.model.version}`);
  out('');
  const n4 = (x: number | null) => (x === null || Number.isNaN(x) ? '-' : x.toFixed(4));
  const buckets = [...new Set(r.modes.flatMap((m) => Object.keys(m.bySize)))].sort((a, b) => parseInt(a) - parseInt(b));
  out(
    table(
      ['mode', 'requests', 'failed', 'winners', 'overlap@K', 'top-10 adv share', 'HHI', 'advertisers', 'mean utility', 'mean price', 'total exp. value', 'p10', 'p50', 'p90'],
      r.modes.map((m) => [m.mode, m.requests, m.failed, m.winners, n4(m.overlapWithGlobal), n4(m.top10AdvertiserShare), m.hhi.toFixed(1), m.advertisers, n4(m.meanUtility), n4(m.meanPrice), m.totalExpectedValue.toFixed(3), n4(m.scores.p10), n4(m.scores.p50), n4(m.scores.p90)]),
    ),
  );
  if (buckets.length) {
    out('');
    out('share of winner slots by advertiser size (ads per advertiser):');
    out(table(['mode', ...buckets], r.modes.map((m) => [m.mode, ...buckets.map((b) => n4(m.bySize[b] ?? 0))])));
  }
  out('');
  out(`plot: ${r.plot}`);
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');

/** Winner score histograms, one panel per mode, side by side on shared axes. */
export function renderSvg(r: CompareModesReport): string {
  const { edges, counts } = r.histogram;
  const modes = r.modes.map((m) => m.mode);
  const PW = 260;
  const PH = 180;
  const M = { l: 44, r: 12, t: 40, b: 40 };
  const W = modes.length * (PW + M.l + M.r);
  const H = PH + M.t + M.b + 20;
  const ymax = Math.max(1, ...modes.flatMap((m) => counts[m] ?? []));
  const bins = edges.length - 1;
  const colors = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#edc948', '#b07aa1'];
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`);
  parts.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  parts.push(`<text x="${W / 2}" y="16" text-anchor="middle" font-size="13">Winner score distribution by ranking mode — ${esc(r.model.name)} v${esc(r.model.version)}, ${r.requests} requests</text>`);
  modes.forEach((mode, i) => {
    const x0 = i * (PW + M.l + M.r) + M.l;
    const y0 = M.t;
    const rep = r.modes[i];
    parts.push(`<g class="panel" data-mode="${esc(mode)}">`);
    parts.push(`<text x="${x0 + PW / 2}" y="${y0 - 8}" text-anchor="middle" font-weight="bold">${esc(mode)}</text>`);
    parts.push(`<line x1="${x0}" y1="${y0 + PH}" x2="${x0 + PW}" y2="${y0 + PH}" stroke="black"/>`);
    parts.push(`<line x1="${x0}" y1="${y0}" x2="${x0}" y2="${y0 + PH}" stroke="black"/>`);
    const c = counts[mode] ?? [];
    const bw = PW / bins;
    c.forEach((n, b) => {
      if (n === 0) return;
      const h = (n / ymax) * PH;
      parts.push(`<rect x="${(x0 + b * bw).toFixed(1)}" y="${(y0 + PH - h).toFixed(1)}" width="${Math.max(0.5, bw - 1).toFixed(1)}" height="${h.toFixed(1)}" fill="${colors[i % colors.length]}"/>`);
    });
    if (Number.isFinite(rep.scores.mean) && edges[bins] > edges[0]) {
      const mx = x0 + ((rep.scores.mean - edges[0]) / (edges[bins] - edges[0])) * PW;
      parts.push(`<line x1="${mx.toFixed(1)}" y1="${y0}" x2="${mx.toFixed(1)}" y2="${y0 + PH}" stroke="black" stroke-dasharray="4 3"/>`);
      parts.push(`<text x="${(mx + 3).toFixed(1)}" y="${y0 + 12}">mean ${rep.scores.mean.toPrecision(3)}</text>`);
    }
    parts.push(`<text x="${x0}" y="${y0 + PH + 14}">${edges[0].toPrecision(3)}</text>`);
    parts.push(`<text x="${x0 + PW}" y="${y0 + PH + 14}" text-anchor="end">${edges[bins].toPrecision(3)}</text>`);
    parts.push(`<text x="${x0 + PW / 2}" y="${y0 + PH + 28}" text-anchor="middle">winner score (utility)</text>`);
    parts.push(`<text x="${x0 - 4}" y="${y0 + 4}" text-anchor="end">${ymax}</text>`);
    parts.push(`<text x="${x0 - 4}" y="${y0 + PH}" text-anchor="end">0</text>`);
    parts.push(`<text x="${x0 + PW / 2}" y="${y0 + PH + 44}" text-anchor="middle">overlap@K ${rep.overlapWithGlobal.toFixed(3)} · HHI ${rep.hhi.toFixed(0)} · top-10 ${(100 * rep.top10AdvertiserShare).toFixed(1)}%</text>`);
    parts.push('</g>');
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}
