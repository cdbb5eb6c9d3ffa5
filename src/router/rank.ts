/**
 * Rank through the router (docs/funnel.md "Sharded serving"): each candidate goes to the shard
 * that owns it; every shard returns ALL its eligible candidates (no cap, K = its candidate
 * count, priced against reserve = FLT_MAX so that each price is the ad's bid), and the router
 * runs the request's selection (cap, mode, K, runner-up) and GSP prices on the union.
 */
import { requestDecoder } from '../wire/codec.js';
import { MAX_K, validateRank, type RankInput } from '../handlers/validate.js';
import { RankingMode } from '../features/feature-bundle.js';
import { shardOfWords } from '../model/shard-meta.js';
import { gspPrices, merged, select } from './merge.js';
import { F, FLT_MAX, stripFields, sumCounts, withFields } from './shard-rpc.js';
import { winnerOf, type RouteRpc } from './route-rpc.js';

/**
 * Candidate ids by owning shard, in request order, cut into lists of at most MAX_K distinct ids
 * (so that K = the list length returns every eligible one); repeats stay with their first
 * occurrence, so each shard counts duplicates as a single server would.
 */
export function splitCandidates(ids: BigInt64Array, shards: number): { shard: number; ids: BigInt64Array }[] {
  const words = new Uint32Array(ids.buffer, ids.byteOffset, 2 * ids.length);
  const per: number[][] = Array.from({ length: shards }, () => []);
  for (let i = 0; i < ids.length; i++) per[shardOfWords(words[2 * i], words[2 * i + 1], shards)].push(i);
  const out: { shard: number; ids: BigInt64Array }[] = [];
  const pick = (idx: number[]) => {
    const a = new BigInt64Array(idx.length);
    const w = new Uint32Array(a.buffer);
    for (let j = 0; j < idx.length; j++) {
      w[2 * j] = words[2 * idx[j]];
      w[2 * j + 1] = words[2 * idx[j] + 1];
    }
    return a;
  };
  per.forEach((idx, shard) => {
    if (idx.length === 0) return;
    if (idx.length <= MAX_K) {
      out.push({ shard, ids: pick(idx) });
      return;
    }
    const chunkOf = new Map<bigint, number>();
    const chunks: bigint[][] = [];
    const distinct: number[] = [];
    for (const i of idx) {
      const id = ids[i];
      let c = chunkOf.get(id);
      if (c === undefined) {
        c = chunks.length > 0 && distinct[chunks.length - 1] < MAX_K ? chunks.length - 1 : chunks.push([]) - 1;
        distinct[c] = (distinct[c] ?? 0) + 1;
        chunkOf.set(id, c);
      }
      chunks[c].push(id);
    }
    for (const c of chunks) out.push({ shard, ids: BigInt64Array.from(c) });
  });
  return out;
}

export const routeRank: RouteRpc<RankInput> = {
  name: 'Rank',
  decode: requestDecoder('adrank.v1.RankRequest', ['candidateAdIds']),
  responseType: 'adrank.v1.RankResponse',
  async route(ctx, raw, req, fan) {
    const er = validateRank(req, ctx.config, ctx.limits);
    const base = stripFields(raw, [F.k, F.cap, F.ranking, F.reserve, F.modelVersion, F.candidates, F.price]);
    const calls = splitCandidates(BigInt64Array.from(er.candidates), ctx.shards.length).map((c) => ({
      shard: c.shard,
      // priced against FLT_MAX only when the caller wants prices: then each price is the bid
      bytes: withFields(base, { k: Math.min(MAX_K, c.ids.length), cap: 0, modelVersion: ctx.version, candidates: c.ids, ...(er.price ? { reserve: FLT_MAX, price: true } : {}) }),
    }));
    const answers = calls.length > 0 ? await fan.phase('Rank', calls, er.price) : [];
    const counts = sumCounts(answers.map((a) => a.counts));
    const sel = select(merged(answers.map((a) => a.cands)), er.k, er.cap, er.mode === RankingMode.Local, er.partitions, er.price);
    counts.capped = sel.capped;
    const prices = er.price ? gspPrices(sel, Math.fround(er.reserve)) : undefined;
    return { winners: sel.winners.map((c, i) => winnerOf(c, true, prices?.[i])), counts };
  },
};
