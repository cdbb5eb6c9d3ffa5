/**
 * `adrank explain`: sends AdRankerAdmin.Explain for a request and prints, per asked ad, where
 * and why it left the funnel (docs/explain.md). The request comes from a JSON file (a request
 * object, or a feature-log record) or is the sample request of `adrank client`.
 */
import { readFileSync } from 'node:fs';
import { connectAdmin } from '../admin/service.js';
import { sampleRank, sampleRetrieve, sampleRetrieveAndRank } from '../handlers/sample.js';
import type { GetModelResponse__Output } from '../generated/adrank/v1/GetModelResponse.js';
import type { ExplainResponse__Output } from '../generated/adrank/v1/ExplainResponse.js';
import type { RankResponse__Output } from '../generated/adrank/v1/RankResponse.js';
import { call, connect, printAnswer } from './client.js';
import { table } from './table.js';

export type ExplainRpc = 'rank' | 'retrieve' | 'retrieve-and-rank';

export interface ExplainFlags {
  address: string;
  rpc: ExplainRpc;
  request?: string;
  ads?: string;
  k: number;
  json?: boolean;
}

const FIELD: Record<ExplainRpc, 'rank' | 'retrieve' | 'retrieveAndRank'> = { rank: 'rank', retrieve: 'retrieve', 'retrieve-and-rank': 'retrieveAndRank' };
const BY_LOGGED_RPC: Record<string, ExplainRpc> = { Rank: 'rank', Retrieve: 'retrieve', RetrieveAndRank: 'retrieve-and-rank' };

/** A request from a file: a request object, or a feature-log record ({rpc, request, ...}). */
function fromFile(path: string, rpc: ExplainRpc): { rpc: ExplainRpc; request: Record<string, unknown> } {
  const j = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  if (typeof j.rpc === 'string' && j.request && typeof j.request === 'object') {
    const logged = BY_LOGGED_RPC[j.rpc];
    if (!logged) throw new Error(`expected a Rank, Retrieve or RetrieveAndRank record in ${path}, got rpc ${JSON.stringify(j.rpc)}`);
    return { rpc: logged, request: j.request as Record<string, unknown> };
  }
  return { rpc, request: j };
}

export function explanationTable(r: ExplainResponse__Output): string {
  const rows = r.explanations.map((e) => [
    e.adId,
    e.advertiserId === '0' ? '-' : e.advertiserId,
    e.outcome,
    e.position || '-',
    e.score === undefined || e.score === null ? '-' : e.score.toFixed(5),
    e.thresholdScore === undefined || e.thresholdScore === null ? '-' : e.thresholdScore.toFixed(5),
    e.price === undefined || e.price === null ? '-' : e.price.toFixed(4),
    e.detail,
  ]);
  return table(['ad_id', 'advertiser', 'outcome', 'position', 'score', 'threshold', 'price', 'detail'], rows);
}

export async function runExplain(f: ExplainFlags, out: (s: string) => void = console.log): Promise<void> {
  const client = connect(f.address);
  const admin = connectAdmin(f.address);
  try {
    let rpc = f.rpc;
    let request: Record<string, unknown>;
    let ads = f.ads ? f.ads.split(',').map((s) => s.trim()) : [];
    if (f.request) ({ rpc, request } = fromFile(f.request, f.rpc));
    else {
      const model = await call<object, GetModelResponse__Output>(client, 'GetModel', {});
      // real ad ids from a Retrieve (uncapped, 3 K deep), so there are losers to explain
      const pool = await call<object, RankResponse__Output>(client, 'Retrieve', { ...sampleRetrieve(model, Math.min(3 * f.k, 10_000)), perAdvertiserCap: 0 });
      const ids = pool.winners.map((w) => w.adId);
      if (rpc === 'rank') request = sampleRank(model, [...ids, ids[0] ?? '1', '-1'], f.k) as Record<string, unknown>;
      else request = (rpc === 'retrieve' ? sampleRetrieve(model, f.k) : sampleRetrieveAndRank(model, f.k)) as Record<string, unknown>;
      if (ads.length === 0 && rpc !== 'rank') ads = [...ids, '-1'];
    }
    const res = await call<object, ExplainResponse__Output>(admin as never, 'Explain', { [FIELD[rpc]]: request, adIds: ads });
    if (f.json) {
      out(JSON.stringify(res, null, 2));
      return;
    }
    const answer = res[FIELD[rpc]] as RankResponse__Output | null | undefined;
    const model = await call<object, GetModelResponse__Output>(client, 'GetModel', {});
    if (answer) printAnswer(`${rpc} as served`, { ...answer, timings: null }, model.tasks, out);
    out(`\nExplain — ${res.explanations.length} ads`);
    out(explanationTable(res));
    const byOutcome = new Map<string, number>();
    for (const e of res.explanations) byOutcome.set(String(e.outcome), (byOutcome.get(String(e.outcome)) ?? 0) + 1);
    out([...byOutcome].map(([o, n]) => `${o} ${n}`).join(', '));
  } finally {
    client.close();
    admin.close();
  }
}
