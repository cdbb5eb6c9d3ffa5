/**
 * `adrank client`: asks GetModel for the model's shape, sends a sample request of each RPC and
 * prints the winners as a table. A smoke test for a running server and an example client.
 */
import * as grpc from '@grpc/grpc-js';
import { loadProto } from '../wire/proto.js';
import { sampleRank, sampleRetrieve, sampleRetrieveAndRank } from '../handlers/sample.js';
import type { AdRankerClient } from '../generated/adrank/v1/AdRanker.js';
import type { GetModelResponse__Output } from '../generated/adrank/v1/GetModelResponse.js';
import type { RankResponse__Output } from '../generated/adrank/v1/RankResponse.js';
import { table } from './table.js';

export type ClientRpc = 'all' | 'rank' | 'retrieve' | 'retrieve-and-rank' | 'get-model';

export function connect(address: string): AdRankerClient {
  const { grpcObject } = loadProto();
  return new grpcObject.adrank.v1.AdRanker(address, grpc.credentials.createInsecure());
}

type Unary<Req, Res> = (req: Req, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: Res) => void) => unknown;

/** Promise form of a unary call on `client` with a deadline. */
export function call<Req, Res>(client: AdRankerClient, method: string, req: Req, timeoutMs = 10_000): Promise<Res> {
  const fn = (client as unknown as Record<string, Unary<Req, Res>>)[method].bind(client);
  return new Promise((resolve, reject) => fn(req, { deadline: Date.now() + timeoutMs }, (err, res) => (err ? reject(err) : resolve(res as Res))));
}

type EngineAnswer = Pick<RankResponse__Output, 'winners' | 'counts' | 'timings' | 'model'>;

export function printAnswer(title: string, a: EngineAnswer, tasks: string[], out: (s: string) => void): void {
  const priced = a.winners.some((w) => w.price !== undefined && w.price !== null);
  const probs = a.winners.some((w) => w.taskProbabilities.length > 0);
  const header = ['#', 'ad_id', 'advertiser', 'score', ...(probs ? tasks.map((t) => `p(${t})`) : []), ...(priced ? ['price'] : [])];
  const rows = a.winners.map((w, i) => [
    i + 1,
    w.adId,
    w.advertiserId,
    w.score.toFixed(5),
    ...(probs ? w.taskProbabilities.map((p) => p.toFixed(4)) : []),
    ...(priced ? [(w.price ?? 0).toFixed(4)] : []),
  ]);
  out(`\n${title} — model ${a.model?.name} v${a.model?.version}, ${a.winners.length} winners`);
  out(table(header, rows));
  const c = a.counts;
  if (c) {
    const dropped = Object.entries(c).filter(([k, v]) => k !== 'received' && k !== 'eligible' && v > 0);
    out(`received ${c.received}, eligible ${c.eligible}` + (dropped.length ? `, dropped: ${dropped.map(([k, v]) => `${k} ${v}`).join(', ')}` : ''));
  }
  const t = a.timings;
  if (t) out(`server µs: decode ${t.decodeUs.toFixed(1)}, validate ${t.validateUs.toFixed(1)}, bundle ${t.bundleUs.toFixed(1)}, engine ${t.engineTotalUs.toFixed(1)}, encode ${t.encodeUs.toFixed(1)}, total ${t.totalUs.toFixed(1)}`);
}

export async function runClient(address: string, rpc: ClientRpc, k: number, out: (s: string) => void = console.log): Promise<void> {
  const client = connect(address);
  try {
    const model = await call<object, GetModelResponse__Output>(client, 'GetModel', {});
    if (rpc === 'all' || rpc === 'get-model') {
      out(`model ${model.name} v${model.version}: ${model.numAds} ads, backend ${model.backend} (${model.device}; ${model.deviceReason})`);
      out(`tasks: ${model.tasks.join(', ')}; surfaces: ${model.surfaces.join(', ')}; targeting: ${model.targetingDims.join(', ') || '-'}; sha256 ${model.bundleSha256}`);
    }
    if (rpc === 'all' || rpc === 'retrieve' || rpc === 'rank') {
      // Rank needs real ad ids: take them from a Retrieve of 100 (plus one id the model lacks).
      const retrieved = await call<object, RankResponse__Output>(client, 'Retrieve', sampleRetrieve(model, rpc === 'rank' ? 100 : Math.max(k, 100)));
      if (rpc !== 'rank') printAnswer('Retrieve', { ...retrieved, winners: retrieved.winners.slice(0, k) }, model.tasks, out);
      if (rpc !== 'retrieve') {
        const ids = [...retrieved.winners.map((w) => w.adId), '-1'];
        printAnswer('Rank', await call(client, 'Rank', sampleRank(model, ids, k)), model.tasks, out);
      }
    }
    if (rpc === 'all' || rpc === 'retrieve-and-rank') {
      const r = await call<object, RankResponse__Output & { retrieved: number }>(client, 'RetrieveAndRank', sampleRetrieveAndRank(model, k));
      printAnswer(`RetrieveAndRank (retrieved ${r.retrieved})`, r, model.tasks, out);
    }
  } finally {
    client.close();
  }
}
