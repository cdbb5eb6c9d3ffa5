/**
 * RetrieveAndRank through the router (docs/funnel.md "Sharded serving"). Phase 1: every shard
 * returns its top R eligible ads by retrieval score (a Retrieve with no cap and K = R) and its
 * eligibility counts; the global top R is the top R of their union. Phase 2: each shard ranks
 * the part of that global top R it owns and returns all of it (no cap, priced against
 * reserve = FLT_MAX so that each price is the bid); the router selects K with the request's cap
 * and mode and prices the winners, as the single server does on the same R ads.
 *
 * A blended request (candidate_ad_ids, docs/funnel.md "Blended retrieval sources") adds one more
 * phase, run beside phase 1: each caller id goes to the shard that owns it, as a Rank with K = its
 * list (every eligible one comes back, scored, with the shard's intake counts). The router then
 * walks the caller's list in request order as one server does: ids retrieval already passed are
 * credited to it (earlier_source), the first `candidate_quota` other eligible ones are ranked, the
 * rest are over quota; the selection runs on the union.
 */
import { requestDecoder } from '../wire/codec.js';
import { MAX_K, validateRetrieveAndRank, type RetrieveAndRankInput } from '../handlers/validate.js';
import { RankingMode } from '../features/feature-bundle.js';
import { byOrder, gspPrices, idsOf, int64Key, merged, select, take, type Cand } from './merge.js';
import { F, FLT_MAX, stripFields, sumCounts, withFields, type ShardAnswer } from './shard-rpc.js';
import { splitCandidates } from './rank.js';
import { winnerOf, type RouteRpc } from './route-rpc.js';

export const routeRetrieveAndRank: RouteRpc<RetrieveAndRankInput> = {
  name: 'RetrieveAndRank',
  decode: requestDecoder('adrank.v1.RetrieveAndRankRequest', ['candidateAdIds']),
  responseType: 'adrank.v1.RetrieveAndRankResponse',
  async route(ctx, raw, req, fan) {
    const er = validateRetrieveAndRank(req, ctx.config, ctx.limits);
    const R = er.retrieveCount;
    const strip = [F.k, F.cap, F.ranking, F.modelVersion, F.retrieveCount, F.candidates, F.quota];
    const retrieve = withFields(stripFields(raw, strip), { k: R, cap: 0, modelVersion: ctx.version });
    const callerIds = BigInt64Array.from(er.candidates);
    // the caller's intake, by owning shard, beside phase 1 (it does not depend on retrieval)
    const callerBase = stripFields(raw, [...strip, F.reserve, F.price]);
    const callerCalls = splitCandidates(callerIds, ctx.shards.length).map((c) => ({
      shard: c.shard,
      bytes: withFields(callerBase, { k: Math.min(MAX_K, c.ids.length), cap: 0, reserve: FLT_MAX, price: true, modelVersion: ctx.version, candidates: c.ids }),
    }));
    const [first, callerAnswers] = await Promise.all([
      fan.phase('Retrieve', ctx.shards.map((_, shard) => ({ shard, bytes: retrieve })), false),
      callerCalls.length > 0 ? fan.phase('Rank', callerCalls, true) : Promise.resolve([]),
    ]);
    const counts = sumCounts(first.map((a) => a.counts));
    const top = take(merged(first.map((a) => a.cands)), R);

    const owned = new Map<number, Cand[]>();
    for (const c of top) {
      const l = owned.get(c.shard);
      if (l) l.push(c);
      else owned.set(c.shard, [c]);
    }
    const base = stripFields(raw, [...strip, F.reserve]);
    const calls = [...owned].map(([shard, cs]) => ({
      shard,
      bytes: withFields(base, { k: cs.length, cap: 0, reserve: FLT_MAX, modelVersion: ctx.version, candidates: idsOf(cs), price: true }),
    }));
    const second = calls.length > 0 ? await fan.phase('Rank', calls, true) : [];
    const caller = callerSource(callerIds, er.candidateQuota ?? 0, top, callerAnswers);
    const fromCaller = new Set(caller.ranked);
    const sel = select(merged([...second.map((a) => a.cands), caller.ranked]), er.k, er.cap, er.mode === RankingMode.Local, er.partitions, true);
    counts.capped = sel.capped;
    const prices = gspPrices(sel, Math.fround(er.reserve));
    const { capped: _capped, ...scanned } = counts;
    const callerWinners = sel.winners.filter((c) => fromCaller.has(c)).length;
    const sourceCounts = [
      { ...scanned, source: 1, earlierSource: 0, overQuota: 0, ranked: top.length, winners: sel.winners.length - callerWinners },
      { ...caller.counts, source: 2, winners: callerWinners },
    ];
    return { winners: sel.winners.map((c, i) => winnerOf(c, true, prices[i], fromCaller.has(c) ? 2 : 1)), counts, retrieved: top.length, sourceCounts };
  },
};

/**
 * The caller source as one server walks it (docs/funnel.md "Blended retrieval sources"): the
 * shards counted unknown, repeated and ineligible ids of the ids they own and returned the
 * eligible ones scored; here, in request order, an eligible id that retrieval passed is
 * earlier_source, the first `quota` others (all when 0) are ranked, the rest over_quota.
 */
function callerSource(ids: BigInt64Array, quota: number, top: readonly Cand[], answers: readonly ShardAnswer[]) {
  const key = (hi: number, lo: number) => int64Key(hi, lo >>> 0);
  const retrieved = new Set(top.map((c) => key(c.idHi, c.idLo)));
  const eligible = new Map<number | string, Cand>();
  for (const a of answers) for (const c of a.cands) eligible.set(key(c.idHi, c.idLo), c);
  const shard = sumCounts(answers.map((a) => a.counts));
  const words = new Uint32Array(ids.buffer, ids.byteOffset, 2 * ids.length);
  const seen = new Set<number | string>();
  const ranked: Cand[] = [];
  let earlierSource = 0;
  let overQuota = 0;
  for (let i = 0; i < ids.length; i++) {
    const k = key(words[2 * i + 1] | 0, words[2 * i]);
    if (seen.has(k)) continue;
    seen.add(k);
    const c = eligible.get(k);
    if (!c) continue; // unknown or ineligible: counted by its shard
    if (retrieved.has(k)) earlierSource++;
    else if (quota === 0 || ranked.length < quota) ranked.push(c);
    else overQuota++;
  }
  ranked.sort(byOrder);
  const { capped: _c, eligible: _e, ...drops } = shard;
  return {
    ranked,
    counts: { ...drops, received: ids.length, earlierSource, eligible: ranked.length + overQuota, overQuota, ranked: ranked.length },
  };
}
