/**
 * The CPU retrieval scan (docs/funnel.md "Retrieval scan"): chunks keep only the candidates their
 * own walk can still reach, and the optional bf16 copy rescores the near-top in fp32. Over several
 * scan chunks (16,384 ads each) the answers, capped counts included, equal the greedy walk over the
 * full eligible list, and the bf16 scan's equal the fp32 scan's, also where many ads' retrieval
 * vectors differ by less than bf16 can tell apart.
 */
import { expect } from 'chai';
import { Engine, type NativeResult } from '../src/engine/index.js';
import type { EngineRequest } from '../src/features/feature-bundle.js';
import { makeDemoBundle, makeRandomConfig } from '../src/model/demo.js';
import { walk, type Scored } from './reference/funnel.js';
import { addonBuilt, randomRequest, Rng, toLoaded } from './support/index.js';

const N = 40_000; // three scan chunks

describe('13 retrieval scan (CPU)', function () {
  this.timeout(120_000);
  let fp32: Engine | undefined;
  let bf16: Engine | undefined;
  before(function () {
    if (!addonBuilt()) this.skip();
  });
  after(() => {
    fp32?.dispose();
    bf16?.dispose();
  });

  it('equals the walk over every eligible ad, and the bf16 scan equals the fp32 scan, near-ties included', async () => {
    const config = makeRandomConfig(new Rng(13), { surfaces: 1 });
    config.retrieval.dim = 8;
    config.targeting_dims = [];
    const demo = makeDemoBundle({ config, ads: N, seed: 13 });
    // every ad is one of four directions perturbed by a relative 4e-3 (about bf16's resolution): the
    // bf16 scores of a group straddle rounding steps, so their order differs from the fp32 one
    const r = demo.tensors.get('ads.retrieval')!.data as Float32Array;
    const rng = new Rng(14);
    for (let i = 4; i < N; i++) for (let j = 0; j < 8; j++) r[i * 8 + j] = r[(i % 4) * 8 + j] * (1 + 4e-3 * rng.gaussian());
    const b = toLoaded(config, demo.tensors);
    // Two threads each, and two engines compared bit for bit: this also holds the engine to giving
    // a request the same bits on every call (it did not while the compiler chose FMA or mul + add
    // by code path: CMakeLists.txt, -ffp-contract=off).
    fp32 = Engine.fromBundle(b, { device: 'cpu', threads: 2, retrievalScan: 'fp32' });
    bf16 = Engine.fromBundle(b, { device: 'cpu', threads: 2, retrievalScan: 'bf16' });
    // 8,000 ads stay active, spread over every chunk, so one Retrieve(K = 10,000) lists them all
    const ids = b.tensors['ads.id'] as BigInt64Array;
    const off = ids.filter((_, i) => i % 5 !== 0);
    const z = () => new Uint8Array(off.length);
    for (const e of [fp32, bf16]) e.setAdState(off, z(), z().fill(1), new Float32Array(off.length).fill(1));

    const scored = (res: NativeResult): Scored[] => Array.from(res.adIds, (id, i) => ({ row: res.rows[i], id, advertiser: res.advertisers[i], score: res.scores[i] }));
    const shape = (res: NativeResult) => ({ ids: Array.from(res.adIds), scores: Array.from(res.scores), capped: res.counts.capped, eligible: res.counts.eligible, inactive: res.counts.inactive });
    let nearTies = 0;
    for (let q = 0; q < 6; q++) {
      const base: EngineRequest = { ...randomRequest(rng, b, { candidates: 0 }), excludedAds: new BigInt64Array(0), excludedAdvertisers: new BigInt64Array(0) };
      const all = await fp32.retrieve({ ...base, k: 10_000, cap: 0 });
      expect(all.adIds.length, 'every eligible ad listed').to.equal(all.counts.eligible);
      expect(all.counts.inactive).to.equal(off.length);
      const full = scored(all);
      for (let i = 1; i < full.length; i++) if (full[i].score !== full[i - 1].score && full[i - 1].score - full[i].score < 2 ** -9) nearTies++;
      for (const [k, cap] of [
        [1, 0],
        [10, 0],
        [100, 1],
        [300, 2],
        [1000, 3],
      ]) {
        const want = walk(full, k, cap);
        const got = await fp32.retrieve({ ...base, k, cap });
        expect(Array.from(got.adIds), `fp32 k=${k} cap=${cap}`).to.deep.equal(want.taken.map((s) => s.id));
        expect(got.counts.capped, `fp32 capped k=${k} cap=${cap}`).to.equal(want.capped);
        expect(shape(await bf16.retrieve({ ...base, k, cap })), `bf16 k=${k} cap=${cap}`).to.deep.equal(shape(got));
      }
      const rr = { ...base, k: 20, cap: 1, retrieveCount: 200 };
      expect(shape(await bf16.retrieveAndRank(rr)), 'retrieveAndRank').to.deep.equal(shape(await fp32.retrieveAndRank(rr)));
    }
    // neighbours closer than bf16 resolves, with distinct fp32 scores: the case the rescoring is for
    expect(nearTies, 'distinct scores within 2^-9').to.be.greaterThan(1000);
  });
});
