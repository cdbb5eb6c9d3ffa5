/**
 * `adrank replay FILE --address H:P [--model-version V] [--rate R] [--json] [--max-divergence D]`:
 * re-sends the requests of a feature log (a file or a directory) and compares the answers with
 * the logged ones: overlap@K, rank correlation, |Δp| per task on common winners, and the
 * winners that entered and left by advertiser. Exits 1 when the divergence (1 − mean
 * overlap@K) is above --max-divergence, so it can gate a model push in CI (docs/feature-log.md).
 */
import { status } from '@grpc/grpc-js';
import type { GetModelResponse__Output } from '../generated/adrank/v1/GetModelResponse.js';
import type { RankResponse__Output } from '../generated/adrank/v1/RankResponse.js';
import { readFeatureLog } from '../featurelog/reader.js';
import { call, connect } from './client.js';
import { Divergence } from './compare.js';
import { table } from './table.js';

export interface ReplayFlags {
  address: string;
  modelVersion?: string;
  /** requests per second, 0 = as fast as answers come */
  rate: number;
  json?: boolean;
  maxDivergence?: number;
  /** compare the top K only (default: every winner) */
  k?: number;
  /** print per-advertiser rows for at most this many advertisers */
  advertisers: number;
}

export interface ReplaySummary {
  file: string;
  address: string;
  model: { name: string; version: string };
  records: number;
  skippedRecords: number;
  byRpc: Record<string, number>;
  failed: number;
  errors: Record<string, number>;
  overlapAtK: { mean: number; min: number; k: number | 'all' };
  rankCorrelation: number | null;
  deltaP: { task: string; max: number; mean: number }[];
  commonWinners: number;
  divergence: number;
  maxDivergence: number | null;
  advertisers: { advertiserId: string; entered: number; left: number }[];
  pass: boolean;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function replay(file: string, f: ReplayFlags): Promise<ReplaySummary> {
  const { records, skipped } = await readFeatureLog(file);
  const client = connect(f.address);
  try {
    const model = await call<object, GetModelResponse__Output>(client, 'GetModel', {});
    const d = new Divergence(f.k);
    const byRpc: Record<string, number> = {};
    const errors: Record<string, number> = {};
    const gap = f.rate > 0 ? 1000 / f.rate : 0;
    let next = performance.now();
    for (const rec of records) {
      if (gap > 0) {
        const wait = next - performance.now();
        if (wait > 0) await sleep(wait);
        next = Math.max(next, performance.now()) + gap;
      }
      byRpc[rec.rpc] = (byRpc[rec.rpc] ?? 0) + 1;
      // the logged pin is replaced: the served model, or the version asked for
      const request = { ...rec.request, modelVersion: f.modelVersion ?? '' };
      try {
        const now = await call<object, RankResponse__Output>(client, rec.rpc, request);
        d.add(rec.winners, now.winners);
      } catch (e) {
        const code = (e as { code?: number }).code;
        const key = code !== undefined ? status[code] : 'ERROR';
        errors[key] = (errors[key] ?? 0) + 1;
        d.fail();
      }
    }
    const advertisers = [...d.byAdvertiser]
      .map(([advertiserId, v]) => ({ advertiserId, ...v }))
      .sort((a, b) => b.entered + b.left - (a.entered + a.left) || (a.advertiserId < b.advertiserId ? -1 : 1));
    const summary: ReplaySummary = {
      file,
      address: f.address,
      model: { name: model.name, version: model.version },
      records: records.length,
      skippedRecords: skipped,
      byRpc,
      failed: d.failed,
      errors,
      overlapAtK: { mean: d.meanOverlap, min: d.minOverlap, k: f.k ?? 'all' },
      rankCorrelation: d.meanTau ?? null,
      deltaP: d.deltaP().map((x, t) => ({ task: model.tasks[t] ?? `task${t}`, ...x })),
      commonWinners: d.commonWinners,
      divergence: d.divergence,
      maxDivergence: f.maxDivergence ?? null,
      advertisers,
      pass: f.maxDivergence === undefined || d.divergence <= f.maxDivergence,
    };
    return summary;
  } finally {
    client.close();
  }
}

export function printReplay(s: ReplaySummary, maxAdvertisers: number, out: (line: string) => void): void {
  const rpcs = Object.entries(s.byRpc).map(([k, v]) => `${k} ${v}`).join(', ') || 'none';
  out(`replayed ${s.records} requests (${rpcs}) from ${s.file} against ${s.address}, model ${s.model.name} v${s.model.version}`);
  if (s.skippedRecords) out(`skipped ${s.skippedRecords} torn or unreadable record(s)`);
  if (s.failed) out(`failed: ${s.failed} (${Object.entries(s.errors).map(([k, v]) => `${k} ${v}`).join(', ')})`);
  out('');
  const f4 = (x: number | null) => (x === null ? '-' : x.toFixed(4));
  out(
    table(
      ['metric', 'value'],
      [
        [`overlap@${s.overlapAtK.k === 'all' ? 'K' : s.overlapAtK.k} (mean)`, f4(s.overlapAtK.mean)],
        [`overlap@${s.overlapAtK.k === 'all' ? 'K' : s.overlapAtK.k} (min)`, f4(s.overlapAtK.min)],
        ['rank correlation (Kendall tau, mean)', f4(s.rankCorrelation)],
        ['common winners compared', s.commonWinners],
        ['divergence (1 - mean overlap)', f4(s.divergence)],
        ['max divergence', f4(s.maxDivergence)],
      ],
    ),
  );
  if (s.deltaP.length) {
    out('');
    out(table(['task', 'max |dp|', 'mean |dp|'], s.deltaP.map((x) => [x.task, x.max.toExponential(3), x.mean.toExponential(3)])));
  }
  if (s.advertisers.length) {
    out('');
    out(`winners that entered and left, by advertiser (${Math.min(maxAdvertisers, s.advertisers.length)} of ${s.advertisers.length}):`);
    out(table(['advertiser', 'entered', 'left'], s.advertisers.slice(0, maxAdvertisers).map((a) => [a.advertiserId, a.entered, a.left])));
  }
  out('');
  out(s.pass ? 'PASS' : `FAIL: divergence ${s.divergence.toFixed(4)} > --max-divergence ${s.maxDivergence}`);
}
