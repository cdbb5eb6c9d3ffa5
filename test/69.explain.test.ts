/**
 * AdRankerAdmin.Explain over gRPC: hand-built cases of every outcome on a crafted bundle
 * (utility = bid, retrieval score = ads.retrieval[c, 0]; test/support/craft.ts), then randomised
 * requests on a small random model where every explanation must agree with what Rank, Retrieve
 * and RetrieveAndRank served (winners in order, prices, and the drop counts outcome by outcome).
 * Runs on the CPU, and on the GPU as well when one is usable.
 */
import { expect } from 'chai';
import { capabilities, Engine } from '../src/engine/index.js';
import type { LoadedBundle } from '../src/model/bundle.js';
import { AdrankServer } from '../src/server/server.js';
import { silentLogger } from '../src/log.js';
import { connectAdmin } from '../src/admin/service.js';
import { call, connect } from '../src/cli/client.js';
import { runExplain } from '../src/cli/explain.js';
import type { ExplainResponse__Output } from '../src/generated/adrank/v1/ExplainResponse.js';
import type { AdExplanation__Output } from '../src/generated/adrank/v1/AdExplanation.js';
import type { RankResponse__Output } from '../src/generated/adrank/v1/RankResponse.js';
import type { ModelConfig } from '../src/model/config.js';
import { addonBuilt, demoLoaded, Rng } from './support/index.js';
import { craftBundle, type CraftAd } from './support/craft.js';
import { smallConfig } from './50.server.helpers.js';

const ad = (id: number, advertiser: number, bid: number, extra: Partial<CraftAd> = {}): CraftAd => ({ id: BigInt(id), advertiser: BigInt(advertiser), bid, ...extra });

/** A valid proto request for config `c` (fields of every engine RPC). */
function protoRequest(c: ModelConfig, over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    requestId: 'r1',
    surface: c.surfaces[0],
    user: {
      dense: new Array(c.user_dense).fill(0.5),
      embedding: new Array(c.user_embedding_dim).fill(1),
      sparse: Object.fromEntries(c.user_sparse.map((f) => [f.name, { ids: ['1', '2'] }])),
      sequence: { itemIds: ['3', '4'], actions: [0, 0] },
    },
    targeting: c.targeting_dims.map(() => 0),
    k: 10,
    perAdvertiserCap: 0,
    ...over,
  };
}

type Explained = ExplainResponse__Output;
const byId = (r: Explained) => new Map(r.explanations.map((e) => [e.adId, e]));
const outcomes = (r: Explained) => Object.fromEntries(r.explanations.map((e) => [e.adId, e.outcome]));

const devices = (): string[] => (addonBuilt() && capabilities().cuda.usable ? ['cpu', 'cuda'] : ['cpu']);

for (const device of devices()) {
  describe(`60 Explain (${device})`, function () {
    let server: AdrankServer | undefined;
    let engine: Engine | undefined;
    let admin: ReturnType<typeof connectAdmin> | undefined;
    let client: ReturnType<typeof connect> | undefined;
    const warnings: string[] = [];
    before(function () {
      if (!addonBuilt()) this.skip();
    });
    afterEach(async () => {
      admin?.close();
      client?.close();
      await server?.shutdown('test');
      server = engine = admin = client = undefined;
    });
    async function open(b: LoadedBundle): Promise<void> {
      engine = Engine.fromBundle(b, { device });
      server = await AdrankServer.start({ host: 'localhost', port: 0, engine, warmup: false, auth: { adminInsecure: true }, log: { ...silentLogger, warn: (event) => warnings.push(event) } });
      await server.ready;
      admin = connectAdmin(`localhost:${server.port}`);
      client = connect(`localhost:${server.port}`);
    }
    const explain = (req: object) => call<object, Explained>(admin as never, 'Explain', req);
    const rpc = <T = RankResponse__Output>(method: string, req: object) => call<object, T>(client!, method, req);

    // Every outcome: advertiser 10 owns ads 1 and 2 (cap 1), 6..11 are dropped one reason each,
    // 12 is known but not a candidate, 999 is unknown.
    const ads = [
      ad(1, 10, 8, { score: 0.75 }),
      ad(2, 10, 7, { score: 0.625 }),
      ad(3, 20, 6, { score: 0.5 }),
      ad(4, 30, 5, { score: 0.375 }),
      ad(5, 40, 4, { score: 0.25 }),
      ad(6, 50, 9, { score: 0.875 }),
      ad(7, 60, 9, { score: 0.875 }),
      ad(8, 70, 9, { score: 0.875 }),
      ad(9, 80, 9, { score: 0.875 }),
      ad(10, 90, 9, { score: 0.875, targeting: [0b10n, (1n << 64n) - 1n] }),
      ad(11, 100, 9, { score: 0.875 }),
      ad(12, 110, 1, { score: 0.125 }),
    ];
    async function openCrafted(): Promise<ModelConfig> {
      const b = craftBundle(ads);
      await open(b);
      // 8 inactive, 9 out of budget, 11 never paced in
      engine!.setAdState(BigInt64Array.of(8n, 9n, 11n), Uint8Array.of(0, 1, 1), Uint8Array.of(1, 0, 1), Float32Array.of(1, 1, 0));
      return b.config;
    }
    const exclusions = { adIds: ['6'], advertiserIds: ['60'] };

    it('Rank: every outcome on a hand-built case, and the same answer as Rank itself', async () => {
      const c = await openCrafted();
      const rank = protoRequest(c, { candidateAdIds: ['1', '2', '3', '4', '5', '6', '7', '8', '9', '10', '11', '1', '999'], k: 3, perAdvertiserCap: 1, price: true, exclusions });
      const r = await explain({ rank, adIds: [] });
      const served = await rpc('Rank', rank);
      expect(r.response).to.equal('rank');
      expect(r.rank!.winners.map((w) => w.adId)).to.deep.equal(['1', '3', '4']);
      expect(r.rank!.winners).to.deep.equal(served.winners);
      expect(r.rank!.counts).to.deep.equal(served.counts);
      // one explanation per candidate entry, in request order
      expect(r.explanations.map((e) => [e.adId, e.outcome])).to.deep.equal([
        ['1', 'WON'], ['2', 'CAPPED'], ['3', 'WON'], ['4', 'WON'], ['5', 'OUTRANKED'], ['6', 'EXCLUDED_AD'], ['7', 'EXCLUDED_ADVERTISER'],
        ['8', 'INACTIVE'], ['9', 'OUT_OF_BUDGET'], ['10', 'TARGETING'], ['11', 'PACED'], ['1', 'DUPLICATE'], ['999', 'UNKNOWN'],
      ]);
      const e = r.explanations;
      // WON: slot, price (GSP with value 1: the next utility) and the ad priced against
      expect([e[0].winnerPosition, e[0].price, e[0].runnerUpAdId, e[0].position, e[0].score]).to.deep.equal([1, 6, '3', 1, 8]);
      expect([e[3].winnerPosition, e[3].price, e[3].runnerUpAdId]).to.deep.equal([3, 4, '5']); // the runner-up is ad 5
      expect(e[0].taskProbabilities).to.deep.equal([0.5, 0.5]);
      // CAPPED: by its advertiser's winner ahead of it
      expect([e[1].cappedBy, e[1].position, e[1].score, e[1].thresholdScore]).to.deep.equal([['1'], 2, 7, 5]);
      expect([e[4].position, e[4].score, e[4].thresholdScore]).to.deep.equal([5, 4, 5]);
      // TARGETING: dimension t0, the request's value 0, the ad's mask 0b10
      expect([e[9].targetingDimension, e[9].targetingValue, e[9].targetingMask]).to.deep.equal(['t0', 0, '2']);
      expect(e[9].detail).to.match(/t0 = 0: bit 0 .* 0x2 is clear/);
      // dropped before selection: no position
      expect(e.slice(5, 11).every((x) => x.position === 0)).to.equal(true);
      // outcome histogram = the RPC's own counts
      const n = (o: string) => e.filter((x) => x.outcome === o).length;
      const k = served.counts!;
      expect([n('UNKNOWN'), n('DUPLICATE'), n('EXCLUDED_AD'), n('EXCLUDED_ADVERTISER'), n('INACTIVE'), n('OUT_OF_BUDGET'), n('TARGETING'), n('PACED'), n('CAPPED')]).to.deep.equal([
        k.unknown, k.duplicate, k.excludedAd, k.excludedAdvertiser, k.inactive, k.outOfBudget, k.targeting, k.paced, k.capped,
      ]);
      // asked ids: a known ad that is not a candidate was never retrieved into this Rank
      const asked = await explain({ rank, adIds: ['12', '2', '999'] });
      expect(outcomes(asked)).to.deep.equal({ '12': 'NOT_RETRIEVED', '2': 'CAPPED', '999': 'UNKNOWN' });
    });

    it('Retrieve: outcomes by retrieval score with the cap, agreeing with Retrieve', async () => {
      const c = await openCrafted();
      const retrieve = protoRequest(c, { k: 2, perAdvertiserCap: 1, exclusions });
      const r = await explain({ retrieve, adIds: ['1', '2', '3', '4', '12', '6', '10', '999'] });
      const served = await rpc('Retrieve', retrieve);
      expect(r.retrieve!.winners).to.deep.equal(served.winners);
      expect(served.winners.map((w) => w.adId)).to.deep.equal(['1', '3']);
      expect(outcomes(r)).to.deep.equal({ '1': 'WON', '2': 'CAPPED', '3': 'WON', '4': 'OUTRANKED', '12': 'OUTRANKED', '6': 'EXCLUDED_AD', '10': 'TARGETING', '999': 'UNKNOWN' });
      const m = byId(r);
      // eligible corpus order by retrieval score: 1, 2, 3, 4, 5, 12
      expect(['1', '2', '3', '4', '12'].map((id) => m.get(id)!.position)).to.deep.equal([1, 2, 3, 4, 6]);
      expect([m.get('4')!.score, m.get('4')!.thresholdScore, m.get('4')!.taskProbabilities]).to.deep.equal([0.375, 0.5, []]);
      expect(m.get('2')!.cappedBy).to.deep.equal(['1']);
    });

    it('RetrieveAndRank: NOT_RETRIEVED below the top R, then ranking outcomes, agreeing with RetrieveAndRank', async () => {
      const c = await openCrafted();
      const rar = protoRequest(c, { k: 2, perAdvertiserCap: 1, retrieveCount: 4, exclusions });
      const r = await explain({ retrieveAndRank: rar, adIds: ['1', '2', '3', '4', '5', '12', '8', '11'] });
      const served = await rpc<RankResponse__Output & { retrieved: number }>('RetrieveAndRank', rar);
      expect(r.retrieveAndRank!.winners).to.deep.equal(served.winners);
      expect(r.retrieveAndRank!.retrieved).to.equal(4);
      expect(outcomes(r)).to.deep.equal({ '1': 'WON', '2': 'CAPPED', '3': 'WON', '4': 'OUTRANKED', '5': 'NOT_RETRIEVED', '12': 'NOT_RETRIEVED', '8': 'INACTIVE', '11': 'PACED' });
      const m = byId(r);
      // prices: 1 pays 3's utility (6), 3 pays the runner-up 4's (5)
      expect([m.get('1')!.price, m.get('1')!.runnerUpAdId, m.get('3')!.price, m.get('3')!.runnerUpAdId]).to.deep.equal([6, '3', 5, '4']);
      // NOT_RETRIEVED: its retrieval score against the last retrieved ad's (ad 4: 0.375)
      expect([m.get('5')!.score, m.get('5')!.thresholdScore, m.get('5')!.position]).to.deep.equal([0.25, 0.375, 0]);
      expect(m.get('4')!.position).to.equal(4);
    });

    it('RetrieveAndRank blended with caller candidates: each ad names its source; OVER_QUOTA past candidate_quota', async () => {
      const c = await openCrafted();
      // R = 2 retrieves {1, 2}; the caller offers 5 (ranked), 2 (credited to retrieval), 12 (past the
      // quota of 1), 8 (inactive) and 999 (unknown). Ranked {1, 2, 5}: 1 wins, 2 is capped by 1, 5 wins.
      const rar = protoRequest(c, { k: 3, perAdvertiserCap: 1, retrieveCount: 2, candidateAdIds: ['5', '2', '12', '8', '999'], candidateQuota: 1, exclusions });
      const r = await explain({ retrieveAndRank: rar, adIds: ['1', '2', '5', '12', '8', '3'] });
      const served = await rpc<RankResponse__Output & { retrieved: number; sourceCounts: unknown[] }>('RetrieveAndRank', rar);
      expect(r.retrieveAndRank!.winners).to.deep.equal(served.winners);
      expect(served.winners.map((w) => [w.adId, (w as { source?: string }).source])).to.deep.equal([['1', 'RETRIEVAL'], ['5', 'CALLER']]);
      expect(r.retrieveAndRank!.sourceCounts).to.deep.equal(served.sourceCounts);
      expect(outcomes(r)).to.deep.equal({ '1': 'WON', '2': 'CAPPED', '5': 'WON', '12': 'OVER_QUOTA', '8': 'INACTIVE', '3': 'NOT_RETRIEVED' });
      expect(r.explanations.map((e) => [e.adId, e.source])).to.deep.equal([
        ['1', 'RETRIEVAL'], ['2', 'RETRIEVAL'], ['5', 'CALLER'], ['12', 'CALLER'], ['8', 'CALLER'], ['3', 'CANDIDATE_SOURCE_UNSPECIFIED'],
      ]);
      // positions over the ranked union {1, 2, 5}
      const m = byId(r);
      expect(['1', '2', '5'].map((id) => m.get(id)!.position)).to.deep.equal([1, 2, 3]);
    });

    it('LOCAL(P): a partition winner cut at the merge is OUTRANKED; the cap applies per partition', async () => {
      const b = craftBundle([ad(2, 7, 9), ad(4, 2, 8), ad(6, 3, 7), ad(1, 7, 3), ad(3, 5, 2)]);
      await open(b);
      const rank = protoRequest(b.config, { candidateAdIds: ['2', '4', '6', '1', '3'], k: 3, perAdvertiserCap: 1, ranking: { mode: 'LOCAL', partitions: 2 } });
      const served = await rpc('Rank', rank);
      const r = await explain({ rank, adIds: [] });
      // K' = 2 per partition: {2, 4} and {1, 3} (advertiser 7 wins in both: per-partition cap),
      // merged [2, 4, 1, 3] cut to 3
      expect(served.winners.map((w) => w.adId)).to.deep.equal(['2', '4', '1']);
      expect(outcomes(r)).to.deep.equal({ '2': 'WON', '4': 'WON', '6': 'OUTRANKED', '1': 'WON', '3': 'OUTRANKED' });
      expect(byId(r).get('3')!.detail).to.match(/won its partition .* cut/);
      expect(byId(r).get('6')!.detail).to.match(/below the last winner/);
    });

    it('adrank explain prints the served answer and one table row per explained ad', async () => {
      await openCrafted();
      const lines: string[] = [];
      await runExplain({ address: `localhost:${server!.port}`, rpc: 'rank', k: 2 }, (s) => lines.push(s));
      const text = lines.join('\n');
      expect(text).to.match(/ad_id\s+advertiser\s+outcome\s+position\s+score\s+threshold\s+price\s+detail/);
      // the sample Rank: the 6 best eligible ads by retrieval score (6 and 7 lead, bid 9), the first
      // one again, and an unknown id
      expect(text).to.match(/^\s*6\s+50\s+WON\s+1\s+9\.00000\s+9\.00000\s+9\.0000\s+won slot 1 of 2/m);
      expect(text).to.match(/^\s*4\s+30\s+OUTRANKED\s+6\s+5\.00000\s/m);
      expect(text).to.match(/^\s*-1\s+-\s+UNKNOWN\s/m);
      expect(text).to.match(/DUPLICATE 1/);
      expect(lines.at(-1)).to.match(/WON 2/);
    });

    it('bad input: a clear INVALID_ARGUMENT naming the field, and the server keeps serving', async () => {
      const c = await openCrafted();
      const err = (p: Promise<unknown>) => p.then(() => expect.fail('expected an error'), (e: { code: number; details: string }) => e);
      const none = await err(explain({ adIds: ['1'] }));
      expect(none.code).to.equal(3);
      expect(none.details).to.match(/^expected one of rank, retrieve, retrieve_and_rank for request/);
      const noIds = await err(explain({ retrieve: protoRequest(c), adIds: [] }));
      expect(noIds.details).to.match(/^expected at least one ad id for Retrieve and RetrieveAndRank for ad_ids, got 0/);
      const badK = await err(explain({ rank: protoRequest(c, { k: 0, candidateAdIds: ['1'] }) }));
      expect(badK.details).to.match(/^expected an integer in 1\.\.10000 for k, got 0/);
      const ok = await explain({ rank: protoRequest(c, { candidateAdIds: ['1'], k: 1 }) });
      expect(ok.explanations.map((e) => e.outcome)).to.deep.equal(['WON']);
    });

    it('randomised: explanations agree with Rank, Retrieve and RetrieveAndRank (winners, prices, counts)', async function () {
      this.timeout(120_000);
      const b = demoLoaded({ ads: 400, seed: 3, config: smallConfig() });
      await open(b);
      const c = b.config;
      const rng = new Rng(11);
      const allIds = Array.from(b.tensors['ads.id'] as BigInt64Array, String);
      const advertisers = Array.from(b.tensors['ads.advertiser'] as BigInt64Array, String);
      // live state: some inactive, out of budget, paced
      const some = BigInt64Array.from(allIds.filter(() => rng.uniform() < 0.3), BigInt);
      engine!.setAdState(some, Uint8Array.from(some, () => (rng.uniform() < 0.3 ? 0 : 1)), Uint8Array.from(some, () => (rng.uniform() < 0.3 ? 0 : 1)), Float32Array.from(some, () => rng.uniform()));
      for (let trial = 0; trial < 12; trial++) {
        const local = trial % 3 === 1;
        const cands = Array.from({ length: rng.int(20, 200) }, () => (rng.uniform() < 0.05 ? String(-rng.int(1, 1e6)) : rng.pick(allIds)));
        const base = protoRequest(c, {
          requestId: `req-${trial}`,
          surface: c.surfaces[trial % c.surfaces.length],
          k: rng.int(1, 12),
          perAdvertiserCap: rng.int(0, 2),
          targeting: c.targeting_dims.map(() => rng.int(0, 5)),
          exclusions: { adIds: [rng.pick(allIds)], advertiserIds: [rng.pick(advertisers)] },
          ranking: local ? { mode: 'LOCAL', partitions: rng.int(2, 4) } : undefined,
        });
        const rank = { ...base, candidateAdIds: cands, price: true };
        const servedRank = await rpc('Rank', rank);
        const er = await explain({ rank, adIds: [] });
        expect(er.rank!.winners, `trial ${trial} Rank winners`).to.deep.equal(servedRank.winners);
        checkAgainst(er.explanations.filter((e) => e.outcome !== 'DUPLICATE' && e.outcome !== 'UNKNOWN'), servedRank, `trial ${trial} Rank`, local);
        const k = servedRank.counts!;
        const n = (o: string) => er.explanations.filter((x) => x.outcome === o).length;
        expect([n('UNKNOWN'), n('DUPLICATE'), n('EXCLUDED_AD'), n('EXCLUDED_ADVERTISER'), n('INACTIVE'), n('OUT_OF_BUDGET'), n('TARGETING'), n('PACED'), n('CAPPED')], `trial ${trial} counts`).to.deep.equal([
          k.unknown, k.duplicate, k.excludedAd, k.excludedAdvertiser, k.inactive, k.outOfBudget, k.targeting, k.paced, k.capped,
        ]);

        const asked = [...new Set([...Array.from({ length: 40 }, () => rng.pick(allIds)), '-5'])];
        const retrieve = { ...base, ranking: undefined };
        const servedRetrieve = await rpc('Retrieve', retrieve);
        const et = await explain({ retrieve, adIds: [...asked, ...servedRetrieve.winners.map((w) => w.adId)] });
        expect(et.retrieve!.winners).to.deep.equal(servedRetrieve.winners);
        checkAgainst(et.explanations, servedRetrieve, `trial ${trial} Retrieve`);

        const rar = { ...base, retrieveCount: rng.int(base.k as number, 60) };
        const servedRar = await rpc('RetrieveAndRank', rar);
        const ea = await explain({ retrieveAndRank: rar, adIds: [...asked, ...servedRar.winners.map((w) => w.adId)] });
        expect(ea.retrieveAndRank!.winners).to.deep.equal(servedRar.winners);
        checkAgainst(ea.explanations, servedRar, `trial ${trial} RetrieveAndRank`, local);
      }
      // the replayed selection walk reproduced the engine's winners every time
      expect(warnings.filter((w) => w === 'explain_disagrees')).to.deep.equal([]);
    });
  });
}

/** WON exactly for the served winners, with their slot, score and price; in GLOBAL mode every
 *  OUTRANKED ad scores no better than the last winner. */
function checkAgainst(explanations: AdExplanation__Output[], served: RankResponse__Output, label: string, local = false): void {
  const slot = new Map(served.winners.map((w, i) => [w.adId, i]));
  for (const e of explanations) {
    const i = slot.get(e.adId);
    if (i === undefined) {
      expect(e.outcome, `${label}: ad ${e.adId}`).to.not.equal('WON');
      continue;
    }
    expect(e.outcome, `${label}: ad ${e.adId}`).to.equal('WON');
    expect(e.winnerPosition).to.equal(i + 1);
    expect(e.score).to.equal(served.winners[i].score);
    if (served.winners[i].price !== undefined && served.winners[i].price !== null) expect(e.price).to.equal(served.winners[i].price);
  }
  const last = served.winners.at(-1)?.score;
  if (local) return;
  for (const e of explanations.filter((x) => x.outcome === 'OUTRANKED')) if (last !== undefined) expect(e.score!, `${label}: outranked ${e.adId}`).to.be.at.most(last);
}
