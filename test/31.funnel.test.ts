/**
 * The funnel (docs/funnel.md) on the CPU engine. Hand-built cases use crafted bundles
 * (test/support/craft.ts: utility = bid, retrieval score = ads.retrieval[c, 0]) so every answer
 * below is worked out by hand; randomised runs then compare the engine with test/reference.
 */
import { expect } from 'chai';
import { Engine, type NativeResult } from '../src/engine/index.js';
import { adRows, type LoadedBundle } from '../src/model/bundle.js';
import { makeDemoBundle, makeRandomConfig } from '../src/model/demo.js';
import type { EngineRequest } from '../src/features/feature-bundle.js';
import { applyAdState, defaultAdState, pacingDraw, refRank, refRetrieve, refRetrieveAndRank, type AdState, type RankScore } from './reference/funnel.js';
import { requestKey } from '../src/features/feature-bundle.js';
import { addonBuilt, expectClose, randomRequest, Rng, toLoaded } from './support/index.js';
import { ALL, craftBundle, craftRequest, type CraftAd } from './support/craft.js';

const ad = (id: number, advertiser: number, bid: number, extra: Partial<CraftAd> = {}): CraftAd => ({ id: BigInt(id), advertiser: BigInt(advertiser), bid, ...extra });
const ids = (r: NativeResult) => Array.from(r.adIds, Number);
const counts = (r: NativeResult, ...keys: (keyof NativeResult['counts'])[]) => Object.fromEntries(keys.map((k) => [k, r.counts[k]]));

describe('31 funnel (CPU engine)', function () {
  let engine: Engine | undefined;
  before(function () {
    if (!addonBuilt()) this.skip();
  });
  afterEach(() => {
    engine?.dispose();
    engine = undefined;
  });
  const open = (b: LoadedBundle) => (engine = Engine.fromBundle(b, { device: 'cpu' }));

  describe('hand-built cases', () => {
    // advertiser 10 has three strong ads; the cap is a greedy walk, not "best ad per advertiser"
    const capAds = [ad(1, 10, 8), ad(2, 10, 7), ad(3, 10, 6), ad(4, 20, 5), ad(5, 30, 4), ad(6, 20, 3.5)];

    it('sanity: utility = bid and probabilities 0.5 on the crafted bundle', async () => {
      const b = craftBundle(capAds);
      const e = open(b);
      const r = await e.rank(craftRequest(b, { k: 6 }));
      expect(ids(r)).to.deep.equal([1, 2, 3, 4, 5, 6]);
      expect(Array.from(r.scores)).to.deep.equal([8, 7, 6, 5, 4, 3.5]);
      expect(Array.from(r.probs)).to.deep.equal(new Array(12).fill(0.5));
      expect(Array.from(r.advertisers, Number)).to.deep.equal([10, 10, 10, 20, 30, 20]);
      expect(r.prices.length).to.equal(0); // price not requested
    });

    it('per-advertiser cap is the greedy walk (cap 2: the third ad of advertiser 10 is passed over)', async () => {
      const b = craftBundle(capAds);
      const e = open(b);
      const r = await e.rank(craftRequest(b, { k: 4, cap: 2 }));
      expect(ids(r)).to.deep.equal([1, 2, 4, 5]);
      expect(counts(r, 'capped', 'eligible')).to.deep.equal({ capped: 1, eligible: 6 });
      // cap 1 with K = 4: only three advertisers exist, the walk runs out with 3 winners
      const r1 = await e.rank(craftRequest(b, { k: 4, cap: 1 }));
      expect(ids(r1)).to.deep.equal([1, 4, 5]);
      expect(r1.counts.capped).to.equal(3);
      // the walk stops at K: with K = 2 nothing is passed over by the cap
      const r2 = await e.rank(craftRequest(b, { k: 2, cap: 2 }));
      expect(ids(r2)).to.deep.equal([1, 2]);
      expect(r2.counts.capped).to.equal(0);
    });

    it('ties are broken by ad id ascending', async () => {
      const b = craftBundle([ad(30, 1, 2), ad(10, 2, 2), ad(1, 3, 1), ad(20, 4, 2), ad(5_000_000_000, 5, 2)]);
      const e = open(b);
      const r = await e.rank(craftRequest(b, { k: 3 }));
      expect(ids(r)).to.deep.equal([10, 20, 30]);
      const all = await e.rank(craftRequest(b, { k: 10 }));
      expect(ids(all)).to.deep.equal([10, 20, 30, 5_000_000_000, 1]);
    });

    it('local(P) differs from global on a crafted case; the cap is per partition', async () => {
      // even ids (partition 0) are strong, odd ids (partition 1) weak
      const b = craftBundle([ad(2, 1, 9), ad(4, 2, 8), ad(6, 3, 7), ad(1, 4, 3), ad(3, 5, 2)]);
      const e = open(b);
      expect(ids(await e.rank(craftRequest(b, { k: 2 })))).to.deep.equal([2, 4]);
      expect(ids(await e.rank(craftRequest(b, { k: 2, mode: 1, partitions: 2 })))).to.deep.equal([2, 1]);
      // K = 3, P = 2: K' = 2 per partition → {2, 4} and {1, 3}, merged [2, 4, 1, 3] cut to 3
      expect(ids(await e.rank(craftRequest(b, { k: 3, mode: 1, partitions: 2 })))).to.deep.equal([2, 4, 1]);
      engine!.dispose();
      // cap 1, advertiser 7 owns ids 2 and 1 (different partitions): global takes one, local both
      const b2 = craftBundle([ad(2, 7, 9), ad(1, 7, 8), ad(4, 8, 7)]);
      const e2 = open(b2);
      expect(ids(await e2.rank(craftRequest(b2, { k: 2, cap: 1 })))).to.deep.equal([2, 4]);
      const local = await e2.rank(craftRequest(b2, { k: 2, cap: 1, mode: 1, partitions: 2 }));
      expect(ids(local)).to.deep.equal([2, 1]);
      expect(local.counts.capped).to.equal(0); // partition 0 = {2, 4} with K' = 1 stops before 4
      engine!.dispose();
      // negative ids use the mathematical modulo: with P = 3, -1 is in partition 2 (not 1 as |id| mod P
      // or a truncating % would give), 4 and 7 in 1, -3 in 0; K' = 1
      const b3 = craftBundle([ad(-1, 1, 9), ad(4, 2, 8), ad(-3, 3, 1), ad(7, 4, 5)]);
      const e3 = open(b3);
      const neg = await e3.rank(craftRequest(b3, { k: 2, mode: 1, partitions: 3, price: true }));
      expect(ids(neg)).to.deep.equal([-1, 4]);
      // merged partition winners [-1, 4, -3]: the runner-up is -3 (utility 1)
      expect(Array.from(neg.prices)).to.deep.equal([8, 1]);
      // K = 3: merged winners are exactly K, no runner-up: the last winner pays the reserve (0)
      const neg3 = await e3.rank(craftRequest(b3, { k: 3, mode: 1, partitions: 3, price: true }));
      expect(ids(neg3)).to.deep.equal([-1, 4, -3]);
      expect(Array.from(neg3.prices)).to.deep.equal([8, 1, 0]);
      expect(ids(await e3.rank(craftRequest(b3, { k: 3 })))).to.deep.equal([-1, 4, 7]);
    });

    it('exclusions by ad and by advertiser, counted under the first reason', async () => {
      const b = craftBundle([ad(1, 10, 5), ad(2, 10, 4), ad(3, 20, 3), ad(4, 30, 2)]);
      const e = open(b);
      const r = await e.rank(craftRequest(b, { excludedAds: BigInt64Array.of(1n, 4n, 999n), excludedAdvertisers: BigInt64Array.of(10n) }));
      expect(ids(r)).to.deep.equal([3]);
      expect(counts(r, 'excludedAd', 'excludedAdvertiser', 'eligible')).to.deep.equal({ excludedAd: 2, excludedAdvertiser: 1, eligible: 1 });
    });

    it('targeting: value bits, untargeted ads, and unknown values matching only untargeted ads', async () => {
      const bit = (...v: number[]) => v.reduce((m, x) => m | (1n << BigInt(x)), 0n);
      const b = craftBundle([
        ad(1, 1, 6, { targeting: [ALL, ALL] }),
        ad(2, 2, 5, { targeting: [bit(3), ALL] }),
        ad(3, 3, 4, { targeting: [bit(0, 3), bit(1, 2)] }),
        ad(4, 4, 3, { targeting: [bit(63), ALL] }),
        ad(5, 5, 2, { targeting: [ALL, bit(5)] }),
      ]);
      const e = open(b);
      const on = async (t: number[]) => e.rank(craftRequest(b, { targeting: Uint32Array.from(t) }));
      expect(ids(await on([3, 5]))).to.deep.equal([1, 2, 5]);
      expect(ids(await on([3, 2]))).to.deep.equal([1, 2, 3]);
      expect(ids(await on([63, 5]))).to.deep.equal([1, 4, 5]);
      const unknown = await on([70, 1000]);
      expect(ids(unknown)).to.deep.equal([1]);
      expect(unknown.counts.targeting).to.equal(4);
    });

    it('unknown and duplicate candidate ids are skipped and counted', async () => {
      const b = craftBundle([ad(1, 1, 3), ad(2, 2, 2)]);
      const e = open(b);
      const r = await e.rank(craftRequest(b, { candidates: BigInt64Array.of(2n, 999n, 2n, 1n, -5n, 1n, 2n) }));
      expect(ids(r)).to.deep.equal([1, 2]);
      expect(counts(r, 'received', 'unknown', 'duplicate', 'eligible')).to.deep.equal({ received: 7, unknown: 2, duplicate: 3, eligible: 2 });
      const empty = await e.rank(craftRequest(b, { candidates: new BigInt64Array(0) }));
      expect(ids(empty)).to.deep.equal([]);
    });

    it('inactive and out-of-budget ads via setAdState (first reason wins; unknown ids counted)', async () => {
      const b = craftBundle([ad(1, 1, 5), ad(2, 2, 4), ad(3, 3, 3), ad(4, 4, 2)]);
      const e = open(b);
      const unknown = e.setAdState(BigInt64Array.of(1n, 2n, 3n, 77n), Uint8Array.of(0, 1, 0, 1), Uint8Array.of(1, 0, 0, 1), Float32Array.of(1, 1, 1, 1));
      expect(unknown).to.equal(1);
      const r = await e.rank(craftRequest(b));
      expect(ids(r)).to.deep.equal([4]);
      expect(counts(r, 'inactive', 'outOfBudget', 'eligible')).to.deep.equal({ inactive: 2, outOfBudget: 1, eligible: 1 });
      e.setAdState(BigInt64Array.of(1n, 3n), Uint8Array.of(1, 1), Uint8Array.of(1, 1), Float32Array.of(1, 1));
      expect(ids(await e.rank(craftRequest(b)))).to.deep.equal([1, 3, 4]);
    });

    it('pacing rate 0 drops, rate 1 keeps, rate ½ follows the documented hash', async () => {
      const ads = Array.from({ length: 40 }, (_, i) => ad(1000 + 37 * i, i, 40 - i));
      const b = craftBundle(ads);
      const e = open(b);
      const all = BigInt64Array.from(ads, (a) => a.id);
      const rate = (v: number) => e.setAdState(all, new Uint8Array(40).fill(1), new Uint8Array(40).fill(1), new Float32Array(40).fill(v));
      rate(0);
      const none = await e.rank(craftRequest(b, { k: 40 }));
      expect(ids(none)).to.deep.equal([]);
      expect(none.counts.paced).to.equal(40);
      rate(1);
      expect((await e.rank(craftRequest(b, { k: 40 }))).counts.paced).to.equal(0);
      rate(0.5);
      for (const requestId of ['a', 'b', 'req-7']) {
        const key = requestKey(requestId);
        const kept = ads.filter((a) => pacingDraw(key, a.id) < 0.5).map((a) => Number(a.id));
        expect(kept.length).to.be.within(5, 35); // the hash does split
        const r = await e.rank(craftRequest(b, { k: 40, requestId }));
        expect(ids(r), requestId).to.deep.equal(kept);
        expect(r.counts.paced).to.equal(40 - kept.length);
      }
    });

    it('GSP prices: next utility / own value, reserve, cap-skipping runner-up, no runner-up', async () => {
      const b = craftBundle([ad(1, 1, 8), ad(2, 1, 7), ad(3, 2, 6), ad(4, 3, 5)]);
      const e = open(b);
      const price = (o: Partial<EngineRequest>) => e.rank(craftRequest(b, { price: true, ...o }));
      // value = 1: winner i pays the next utility; the third winner pays the runner-up's (5)
      let r = await price({ k: 3 });
      expect(ids(r)).to.deep.equal([1, 2, 3]);
      expect(Array.from(r.prices)).to.deep.equal([7, 6, 5]);
      // reserve 6.5: max(reserve, next) capped at own bid
      r = await price({ k: 3, reserve: 6.5 });
      expect(Array.from(r.prices)).to.deep.equal([7, 6.5, 6]);
      // cap 1: ad 2 is passed over; the runner-up of [1, 3] is ad 4, not ad 2
      r = await price({ k: 2, cap: 1 });
      expect(ids(r)).to.deep.equal([1, 3]);
      expect(Array.from(r.prices)).to.deep.equal([6, 5]);
      // no runner-up: the last winner pays min(bid, reserve)
      r = await price({ k: 3, cap: 1 });
      expect(ids(r)).to.deep.equal([1, 3, 4]);
      expect(Array.from(r.prices)).to.deep.equal([6, 5, 0]);
      r = await price({ k: 3, cap: 1, reserve: 1.5 });
      expect(Array.from(r.prices)).to.deep.equal([6, 5, 1.5]);
      // task-weight override [1, 0]: value = 0.5, utility = bid / 2, price = (bid_next / 2) / 0.5
      r = await price({ k: 2, taskWeights: Float32Array.of(1, 0) });
      expect(Array.from(r.scores)).to.deep.equal([4, 3.5]);
      expect(Array.from(r.prices)).to.deep.equal([7, 6]);
    });

    it('Retrieve: top K by retrieval score with eligibility and the cap', async () => {
      const b = craftBundle([ad(1, 1, 1, { score: 0.5 }), ad(2, 1, 9, { score: 0.75 }), ad(3, 2, 2, { score: 0.25 }), ad(4, 3, 3, { score: -0.5 }), ad(5, 4, 4, { score: 0.25 })]);
      const e = open(b);
      const r = await e.retrieve(craftRequest(b, { k: 3, candidates: new BigInt64Array(0) }));
      expect(ids(r)).to.deep.equal([2, 1, 3]);
      expect(Array.from(r.scores)).to.deep.equal([0.75, 0.5, 0.25]);
      expect(r.counts.received).to.equal(5);
      const capped = await e.retrieve(craftRequest(b, { k: 3, cap: 1, candidates: new BigInt64Array(0), excludedAds: BigInt64Array.of(3n) }));
      expect(ids(capped)).to.deep.equal([2, 5, 4]);
      expect(counts(capped, 'capped', 'excludedAd', 'eligible')).to.deep.equal({ capped: 1, excludedAd: 1, eligible: 4 });
    });

    it('RetrieveAndRank: top R by score (no cap), ranked by utility, priced', async () => {
      const b = craftBundle([ad(1, 1, 1, { score: 0.5 }), ad(2, 1, 2, { score: 0.75 }), ad(3, 2, 8, { score: 0.25 }), ad(4, 3, 9, { score: -0.5 }), ad(5, 1, 4, { score: 0.125 })]);
      const e = open(b);
      // R = 4 → {2, 1, 3, 5}; by bid: 3 (8), 5 (4), 2 (2), 1 (1); ad 4 (bid 9) never retrieved
      const r = await e.retrieveAndRank(craftRequest(b, { k: 2, retrieveCount: 4, candidates: new BigInt64Array(0) }));
      expect(r.retrieved).to.equal(4);
      expect(ids(r)).to.deep.equal([3, 5]);
      expect(Array.from(r.prices)).to.deep.equal([4, 2]);
      // cap 1 in the ranking stage: 5 and 2 share advertiser 1 → [3, 5], runner-up skips 2 and 1 → none
      const c = await e.retrieveAndRank(craftRequest(b, { k: 3, cap: 1, retrieveCount: 4, candidates: new BigInt64Array(0) }));
      expect(ids(c)).to.deep.equal([3, 5]);
      expect(Array.from(c.prices)).to.deep.equal([4, 0]);
    });
  });

  describe('blended retrieval sources (docs/funnel.md)', () => {
    // retrieval score orders 2 > 1 > 3 > 5 > 4 > 7 > 8 > 6; utility = bid (value 1, so a GSP price is the next bid)
    const blendAds = [
      ad(1, 1, 1, { score: 0.5 }), ad(2, 1, 2, { score: 0.75 }), ad(3, 2, 8, { score: 0.25 }), ad(4, 3, 9, { score: -0.5 }),
      ad(5, 1, 4, { score: 0.125 }), ad(6, 4, 7, { score: -1 }), ad(7, 5, 6, { score: -0.75 }), ad(8, 6, 5, { score: -0.9 }),
    ];
    const caller = BigInt64Array.of(4n, 99n, 2n, 4n, 6n, 7n, 8n);
    const sc = (r: NativeResult) => r.sourceCounts.map((c) => ({ ...c }));

    it('unions retrieval’s top R with the caller’s ids: dedupe credits retrieval, Rank intake and eligibility, the quota in request order', async () => {
      const b = craftBundle(blendAds);
      const e = open(b);
      expect(e.setAdState(BigInt64Array.of(6n), Uint8Array.of(0), Uint8Array.of(1), Float32Array.of(1))).to.equal(0);
      // R = 2 → {2, 1}. Caller: 4 ranked, 99 unknown, 2 retrieved already, 4 again a duplicate, 6 inactive,
      // 7 ranked, 8 past the quota of 2. Union {2, 1, 4, 7} by bid: 4 (9), 7 (6), 2 (2), 1 (1).
      const r = await e.retrieveAndRank(craftRequest(b, { k: 3, retrieveCount: 2, candidates: caller, candidateQuota: 2 }));
      expect(ids(r)).to.deep.equal([4, 7, 2]);
      expect(Array.from(r.sources)).to.deep.equal([2, 2, 1]);
      expect(Array.from(r.prices)).to.deep.equal([6, 2, 1]);
      expect(r.retrieved).to.equal(2);
      // the top-level counts stay the retrieval source's (the corpus scan), capped over the union
      expect(counts(r, 'received', 'unknown', 'duplicate', 'inactive', 'eligible', 'capped')).to.deep.equal({ received: 8, unknown: 0, duplicate: 0, inactive: 1, eligible: 7, capped: 0 });
      const zero = { unknown: 0, duplicate: 0, earlierSource: 0, excludedAd: 0, excludedAdvertiser: 0, outOfBudget: 0, targeting: 0, paced: 0, overQuota: 0 };
      expect(sc(r)).to.deep.equal([
        { ...zero, source: 1, received: 8, inactive: 1, eligible: 7, ranked: 2, winners: 1 },
        { ...zero, source: 2, received: 7, unknown: 1, duplicate: 1, earlierSource: 1, inactive: 1, eligible: 3, overQuota: 1, ranked: 2, winners: 2 },
      ]);
      // quota 0 = every eligible caller candidate: 8 (bid 5) is ranked and takes the third slot
      const all = await e.retrieveAndRank(craftRequest(b, { k: 3, retrieveCount: 2, candidates: caller }));
      expect(ids(all)).to.deep.equal([4, 7, 8]);
      expect(Array.from(all.sources)).to.deep.equal([2, 2, 2]);
      expect([all.sourceCounts[1].ranked, all.sourceCounts[1].overQuota, all.sourceCounts[0].winners]).to.deep.equal([3, 0, 0]);
      // the cap applies to the union: advertiser 1 owns retrieved 2 and 1 and caller ad 5
      const capped = await e.retrieveAndRank(craftRequest(b, { k: 4, cap: 1, retrieveCount: 2, candidates: BigInt64Array.of(5n) }));
      expect(ids(capped)).to.deep.equal([5]);
      expect(capped.counts.capped).to.equal(2);
      expect(Array.from(capped.sources)).to.deep.equal([2]);
    });

    it('exclusions drop caller ids under their first reason; retrieval alone reports an empty caller entry', async () => {
      const b = craftBundle(blendAds);
      const e = open(b);
      const r = await e.retrieveAndRank(craftRequest(b, { k: 5, retrieveCount: 1, candidates: BigInt64Array.of(3n, 4n, 7n), excludedAds: BigInt64Array.of(4n), excludedAdvertisers: BigInt64Array.of(5n) }));
      expect(ids(r)).to.deep.equal([3, 2]); // 2 retrieved (R = 1), 3 from the caller
      expect(Array.from(r.sources)).to.deep.equal([2, 1]);
      expect([r.sourceCounts[1].excludedAd, r.sourceCounts[1].excludedAdvertiser, r.sourceCounts[1].ranked]).to.deep.equal([1, 1, 1]);
      const plain = await e.retrieveAndRank(craftRequest(b, { k: 2, retrieveCount: 4, candidates: new BigInt64Array(0) }));
      expect(Array.from(plain.sources)).to.deep.equal([1, 1]);
      expect(plain.sourceCounts.map((c) => [c.source, c.received, c.ranked, c.winners])).to.deep.equal([[1, 8, 4, 2], [2, 0, 0, 0]]);
    });

    it('a micro-batch answers blended requests exactly as each alone', async () => {
      const b = craftBundle(blendAds);
      const e = open(b);
      const reqs = [
        craftRequest(b, { k: 3, retrieveCount: 2, candidates: caller, candidateQuota: 2 }),
        craftRequest(b, { k: 2, candidates: BigInt64Array.of(8n, 3n) }),
        craftRequest(b, { k: 3, retrieveCount: 1, candidates: BigInt64Array.of(7n, 2n, 5n), candidateQuota: 1 }),
      ];
      const ops = Uint8Array.of(2, 0, 2);
      const batch = await e.runBatch(ops, reqs.map((r) => e.pack(r)));
      const alone = [await e.retrieveAndRank(reqs[0]), await e.rank(reqs[1]), await e.retrieveAndRank(reqs[2])];
      for (let i = 0; i < 3; i++) {
        const got = batch[i] as NativeResult;
        expect([ids(got), Array.from(got.sources), Array.from(got.prices), sc(got)], `entry ${i}`).to.deep.equal([ids(alone[i]), Array.from(alone[i].sources), Array.from(alone[i].prices), sc(alone[i])]);
      }
      expect(ids(alone[2])).to.deep.equal([7, 2]);
    });
  });

  describe('randomised runs vs the reference (selection on the engine’s own scores)', () => {
    /** Rank scores from explain() over the whole corpus (exact float32 values the engine ranks on). */
    async function engineScores(e: Engine, b: LoadedBundle, r: EngineRequest) {
      const ex = await e.explain({ ...r, candidates: b.tensors['ads.id'] as BigInt64Array });
      const T = b.config.tasks.length;
      const w = r.taskWeights ? Array.from(r.taskWeights as ArrayLike<number>) : Array.from((b.tensors['utility.task_weights'] as Float32Array).subarray(r.surface * T, (r.surface + 1) * T));
      const rank = new Map<number, RankScore>();
      const retrieval = new Map<number, number>();
      ex.rows.forEach((row, i) => {
        const probs = ex.probs.subarray(i * T, (i + 1) * T);
        rank.set(row, { utility: ex.utility[i], value: probs.reduce((s, p, t) => s + w[t] * p, 0), probs });
        retrieval.set(row, ex.retrievalScores[i]);
      });
      return { rank: (row: number) => rank.get(row)!, retrieval: (row: number) => retrieval.get(row)! };
    }

    function same(label: string, got: NativeResult, want: ReturnType<typeof refRank>) {
      expect(Array.from(got.adIds), `${label}: ids`).to.deep.equal(want.adIds);
      expect(Array.from(got.advertisers), `${label}: advertisers`).to.deep.equal(want.advertisers);
      expect(Array.from(got.rows), `${label}: rows`).to.deep.equal(want.rows);
      expectClose(`${label}: scores`, got.scores, want.scores, 1e-6, 1e-7);
      expectClose(`${label}: probs`, got.probs, want.probs.flat(), 1e-6, 1e-7);
      expectClose(`${label}: prices`, got.prices, want.prices, 1e-5, 1e-6);
      expect(got.counts, `${label}: counts`).to.deep.include(want.counts);
    }

    it('Rank, Retrieve and RetrieveAndRank on random bundles, requests and ad states (bid overrides included)', async () => {
      let winners = 0;
      let capped = 0;
      let callerWinners = 0;
      let credited = 0;
      let overQuota = 0;
      for (let seed = 0; seed < 3; seed++) {
        const rng = new Rng(3100 + seed);
        const config = makeRandomConfig(rng, { surfaces: 2 });
        config.targeting_dims = ['a', 'b'];
        const b = toLoaded(config, makeDemoBundle({ config, ads: 150, seed: 3100 + seed }).tensors);
        // few advertisers so that the cap bites
        const adv = b.tensors['ads.advertiser'] as BigInt64Array;
        for (let i = 0; i < adv.length; i++) adv[i] = BigInt(i % 9);
        const e = open(b);
        const state: AdState = defaultAdState(b.numAds);
        const allIds = b.tensors['ads.id'] as BigInt64Array;
        const pick = (n: number) => BigInt64Array.from({ length: n }, () => allIds[rng.int(0, b.numAds - 1)]);
        const flags = (n: number, p: number) => Uint8Array.from({ length: n }, () => (rng.uniform() < p ? 0 : 1));
        const upd = pick(40);
        // live bid overrides on some ads (NaN = the bundle's bid): utility and GSP prices follow them
        const bids = Float32Array.from({ length: 40 }, () => rng.pick([NaN, NaN, 0, 0.37, 2.5]));
        const unk = applyAdState(b, state, upd, flags(40, 0.2), flags(40, 0.2), Float32Array.from({ length: 40 }, () => rng.pick([0, 0.3, 0.7, 1])), bids);
        const at = (id: bigint) => adRows(b).get(id)!;
        expect(e.setAdState(upd, Uint8Array.from(upd, (id) => state.active[at(id)]), Uint8Array.from(upd, (id) => state.inBudget[at(id)]), Float32Array.from(upd, (id) => state.pacing[at(id)]), Float32Array.from(upd, (id) => state.bid[at(id)]))).to.equal(unk);
        for (let q = 0; q < 6; q++) {
          const r = randomRequest(rng, b, { candidates: rng.int(20, 120), k: rng.int(1, 15), cap: rng.int(0, 3), taskWeights: q % 2 === 1, unknown: 0.05, duplicate: 0.1 });
          r.excludedAds = pick(5);
          r.excludedAdvertisers = BigInt64Array.of(BigInt(rng.int(0, 8)));
          r.reserve = rng.pick([0, 0.05]);
          if (q % 3 === 2) {
            r.mode = 1;
            r.partitions = rng.int(2, 4);
          }
          r.retrieveCount = rng.int(5, 60);
          const s = await engineScores(e, b, r);
          const label = `seed ${seed} request ${q}`;
          same(`${label} rank`, await e.rank(r), refRank(b, r, state, s.rank));
          same(`${label} retrieve`, await e.retrieve({ ...r, candidates: new BigInt64Array(0) }), refRetrieve(b, r, state, s.retrieval));
          const alone = { ...r, candidates: new BigInt64Array(0) };
          const rar = await e.retrieveAndRank(alone);
          const want = refRetrieveAndRank(b, alone, state, s.retrieval, s.rank);
          same(`${label} retrieveAndRank`, rar, want);
          expect(rar.retrieved, `${label} retrieved`).to.equal(want.retrieved);
          expect(rar.sourceCounts, `${label} source counts`).to.deep.equal(want.sourceCounts);
          // blended: the caller's list (unknown and repeated ids included) plus some retrieved ads
          const blended = { ...r, candidates: BigInt64Array.from([...r.candidates, ...Array.from(rar.adIds).slice(0, 3)]), candidateQuota: rng.pick([0, 0, 3, 10]) };
          const bl = await e.retrieveAndRank(blended);
          const wantBl = refRetrieveAndRank(b, blended, state, s.retrieval, s.rank);
          same(`${label} blended`, bl, wantBl);
          expect(Array.from(bl.sources), `${label} blended sources`).to.deep.equal(wantBl.sources);
          expect(bl.sourceCounts, `${label} blended source counts`).to.deep.equal(wantBl.sourceCounts);
          callerWinners += wantBl.sourceCounts[1].winners;
          credited += wantBl.sourceCounts[1].earlierSource;
          overQuota += wantBl.sourceCounts[1].overQuota;
          winners += want.adIds.length;
          capped += want.counts.capped;
        }
        e.dispose();
        engine = undefined;
      }
      expect(winners, 'the runs select something').to.be.greaterThan(50);
      expect(capped, 'the cap bites somewhere').to.be.greaterThan(0);
      expect([callerWinners, credited, overQuota].every((n) => n > 0), `blending exercised: caller winners ${callerWinners}, credited to retrieval ${credited}, over quota ${overQuota}`).to.equal(true);
    });
  });
});
