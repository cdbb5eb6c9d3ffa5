/**
 * RetrieveAndRank through the router (docs/funnel.md "Sharded serving"). Phase 1: every shard
 * returns its top R eligible ads by retrieval score (a Retrieve with no cap and K = R) and its
 * eligibility counts; the global top R is the top R of their union. Phase 2: each shard ranks
 * the part of that global top R it owns and returns all of it (no cap, priced against
 * reserve = FLT_MAX so that each price is the bid); the router selects K with the request's cap
 * and mode and prices the winners, as the single server does on the same R ads.
 *
 * A blended request (candidate_ad_ids, docs/funnel.md "Blended retrieval sources") is refused with
 * UNIMPLEMENTED: the router does not yet run the caller source's intake across shards.
 */
import { status } from '@grpc/grpc-js';
import { requestDecoder } from '../server/codec.js';
import { RequestError, validateRetrieveAndRank, type RetrieveAndRankInput } from '../handlers/validate.js';
import { RankingMode } from '../features/feature-bundle.js';
import { gspPrices, idsOf, merged, select, take, type Cand } from './merge.js';
import { F, FLT_MAX, stripFields, sumCounts, withFields } from './shard-rpc.js';
import { winnerOf, type RouteRpc } from './route-rpc.js';

export const routeRetrieveAndRank: RouteRpc<RetrieveAndRankInput> = {
  name: 'RetrieveAndRank',
  decode: requestDecoder('adrank.v1.RetrieveAndRankRequest', ['candidateAdIds']),
  responseType: 'adrank.v1.RetrieveAndRankResponse',
  async route(ctx, raw, req, fan) {
    const er = validateRetrieveAndRank(req, ctx.config, ctx.limits);
    if (er.candidates.length > 0)
      throw new RequestError(status.UNIMPLEMENTED, 'candidate_ad_ids (blended retrieval sources) is not supported by adrank route yet; send blended RetrieveAndRank requests to a single server (docs/funnel.md "Blended retrieval sources")');
    const R = er.retrieveCount;
    const retrieve = withFields(stripFields(raw, [F.k, F.cap, F.ranking, F.modelVersion, F.retrieveCount]), { k: R, cap: 0, modelVersion: ctx.version });
    const first = await fan.phase('Retrieve', ctx.shards.map((_, shard) => ({ shard, bytes: retrieve })), false);
    const counts = sumCounts(first.map((a) => a.counts));
    const top = take(merged(first.map((a) => a.cands)), R);

    const owned = new Map<number, Cand[]>();
    for (const c of top) {
      const l = owned.get(c.shard);
      if (l) l.push(c);
      else owned.set(c.shard, [c]);
    }
    const base = stripFields(raw, [F.k, F.cap, F.ranking, F.reserve, F.modelVersion, F.retrieveCount]);
    const calls = [...owned].map(([shard, cs]) => ({
      shard,
      bytes: withFields(base, { k: cs.length, cap: 0, reserve: FLT_MAX, modelVersion: ctx.version, candidates: idsOf(cs), price: true }),
    }));
    const second = calls.length > 0 ? await fan.phase('Rank', calls, true) : [];
    const sel = select(merged(second.map((a) => a.cands)), er.k, er.cap, er.mode === RankingMode.Local, er.partitions, true);
    counts.capped = sel.capped;
    const prices = gspPrices(sel, Math.fround(er.reserve));
    const { capped: _capped, ...scanned } = counts;
    const sourceCounts = [
      { ...scanned, source: 1, earlierSource: 0, overQuota: 0, ranked: top.length, winners: sel.winners.length },
      { source: 2, received: 0, unknown: 0, duplicate: 0, earlierSource: 0, excludedAd: 0, excludedAdvertiser: 0, inactive: 0, outOfBudget: 0, targeting: 0, paced: 0, eligible: 0, overQuota: 0, ranked: 0, winners: 0 },
    ];
    return { winners: sel.winners.map((c, i) => winnerOf(c, true, prices[i], 1)), counts, retrieved: top.length, sourceCounts };
  },
};
