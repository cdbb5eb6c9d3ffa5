/**
 * Retrieve through the router (docs/funnel.md "Sharded serving"). Phase 1: every shard runs the
 * request as is (its own capped walk to K); the global walk over the merged lists gives exactly
 * the single server's winners. `capped` counts the eligible ads ranked above the K-th winner T
 * that the cap passed over: Σ_s (eligible ads of shard s before T) − (K − 1). A shard's count is
 * known from phase 1 when its list shows all its eligible ads before T (nothing capped locally,
 * and the list reaches T or is complete), or when T is its own K-th take (then its `capped` is
 * exactly what it passed over before T); the others are asked, in phase 2, for their uncapped top
 * list until it passes T (paged by excluding what was listed, at most MAX_ID_LIST ids).
 */
import { status } from '@grpc/grpc-js';
import { requestDecoder } from '../wire/codec.js';
import { MAX_ID_LIST, MAX_K, RequestError, validateRetrieve, type RetrieveInput } from '../handlers/validate.js';
import { before, idsOf, merged, walk, type Cand } from './merge.js';
import { F, stripFields, sumCounts, withFields, type Fanout, type ShardAnswer } from './shard-rpc.js';
import { winnerOf, type RouteContext, type RouteRpc } from './route-rpc.js';

/** Eligible ads of one shard ranked strictly before `t`, from its uncapped list (phase 2);
 *  undefined when the shard stopped answering. */
async function countBefore(ctx: RouteContext, raw: Buffer, excludedAlready: number, a: ShardAnswer, t: Cand, K: number, fan: Fanout): Promise<number | undefined> {
  // An upper bound on the count, so that the listing asks for no more than it needs: with j the
  // position in the shard's capped list of its first ad not before t, the ads before t are all
  // before that ad, and at most `capped` of those were passed over; a complete list (fewer than
  // K) had `capped` more; otherwise only `eligible` bounds it.
  const j = a.cands.findIndex((c) => !before(c, t));
  const bound = j >= 0 ? a.counts.capped + j : a.cands.length < K ? a.cands.length + a.counts.capped : a.counts.eligible;
  const base = stripFields(raw, [F.k, F.cap, F.modelVersion]);
  const listed: Cand[] = [];
  let count = 0;
  for (let page = 0; ; page++) {
    const k = Math.min(MAX_K, bound - listed.length, a.counts.eligible - listed.length);
    if (k <= 0) return count;
    if (excludedAlready + listed.length > MAX_ID_LIST)
      throw new RequestError(
        status.RESOURCE_EXHAUSTED,
        `the exact capped count needs more than ${listed.length} ads of shard ${a.shard} ranked above the K-th winner (the router pages with exclusions.ad_ids, at most ${MAX_ID_LIST}); lower per_advertiser_cap's effect or K`,
      );
    const bytes = withFields(base, { k, cap: 0, modelVersion: ctx.version, excludeAds: idsOf(listed) });
    const [ans] = await fan.phase('Retrieve', [{ shard: a.shard, bytes }], false);
    if (!ans) return undefined;
    for (const c of ans.cands) {
      if (!before(c, t)) return count;
      count++;
      listed.push(c);
    }
    if (ans.cands.length < k) return count;
  }
}

export const routeRetrieve: RouteRpc<RetrieveInput> = {
  name: 'Retrieve',
  decode: requestDecoder('adrank.v1.RetrieveRequest'),
  responseType: 'adrank.v1.RetrieveResponse',
  async route(ctx, raw, req, fan) {
    const er = validateRetrieve(req, ctx.config);
    const bytes = withFields(stripFields(raw, [F.modelVersion]), { modelVersion: ctx.version });
    const answers = await fan.phase('Retrieve', ctx.shards.map((_, shard) => ({ shard, bytes })), false);
    const counts = sumCounts(answers.map((a) => a.counts));
    const sel = walk(merged(answers.map((a) => a.cands)), er.k, er.cap, false);
    const K = er.k;
    if (er.cap === 0) counts.capped = 0;
    else if (sel.winners.length < K) counts.capped = counts.eligible - sel.winners.length;
    else {
      const t = sel.winners[K - 1];
      let above = 0;
      const ask: ShardAnswer[] = [];
      for (const a of answers) {
        const n = a.cands.length;
        const last = a.cands[n - 1];
        // nothing capped locally, and the list reaches t or holds all the shard's eligible ads
        if (a.counts.capped === 0 && (n < K || !before(last, t))) above += a.cands.filter((c) => before(c, t)).length;
        // t is this shard's own K-th take: its capped count is exactly what it passed over before t
        else if (n === K && last === t) above += a.counts.capped + (K - 1);
        else ask.push(a);
      }
      const more = await Promise.all(ask.map((a) => countBefore(ctx, raw, er.excludedAds.length, a, t, K, fan)));
      for (const m of more) above += m ?? 0;
      counts.capped = above - (K - 1);
    }
    return { winners: sel.winners.map((c) => winnerOf(c, false)), counts };
  },
};
