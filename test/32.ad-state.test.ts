/**
 * Live ad state on the CPU engine (docs/funnel.md "Live ad state"): the live bid override in
 * utility and GSP prices, worked out by hand on a crafted bundle (utility = bid, value = 1), and
 * batches applied atomically: requests running while batches land never see half of one.
 */
import { expect } from 'chai';
import { Engine, type NativeResult } from '../src/engine/index.js';
import type { LoadedBundle } from '../src/model/bundle.js';
import { addonBuilt, randomRequest, Rng, toLoaded } from './support/index.js';
import { makeDemoBundle, makeRandomConfig } from '../src/model/demo.js';
import { craftBundle, craftRequest, type CraftAd } from './support/craft.js';

const ad = (id: number, advertiser: number, bid: number, score = 0): CraftAd => ({ id: BigInt(id), advertiser: BigInt(advertiser), bid, score });
const ids = (r: NativeResult) => Array.from(r.adIds, Number);

/** setAdState for ids with default flags and the given bids (NaN = the bundle's bid) */
function setBids(e: Engine, list: [number, number][]): number {
  const n = list.length;
  return e.setAdState(BigInt64Array.from(list, ([id]) => BigInt(id)), new Uint8Array(n).fill(1), new Uint8Array(n).fill(1), new Float32Array(n).fill(1), Float32Array.from(list, ([, b]) => b));
}

describe('32 live ad state (CPU engine)', function () {
  this.timeout(60_000);
  let engine: Engine | undefined;
  before(function () {
    if (!addonBuilt()) this.skip();
  });
  afterEach(() => {
    engine?.dispose();
    engine = undefined;
  });
  const open = (b: LoadedBundle) => (engine = Engine.fromBundle(b, { device: 'cpu', threads: 2 }));

  describe('bid override', () => {
    const ads = [ad(1, 10, 8, 0.5), ad(2, 20, 7, 0.25), ad(3, 30, 6, 0.125), ad(4, 40, 5, 0.0625)];

    it('replaces the bundle bid in utility, order and GSP prices (Rank and RetrieveAndRank)', async () => {
      const b = craftBundle(ads);
      const e = open(b);
      const before = await e.rank(craftRequest(b, { k: 3, price: true, reserve: 0.5 }));
      expect(ids(before)).to.deep.equal([1, 2, 3]);
      expect(Array.from(before.prices)).to.deep.equal([7, 6, 5]);

      // ad 4 bids 9 now, ad 1 bids 6.5: order 4 (9), 2 (7), 1 (6.5), 3 (6)
      expect(setBids(e, [[4, 9], [1, 6.5]])).to.equal(0);
      const r = await e.rank(craftRequest(b, { k: 3, price: true, reserve: 0.5 }));
      expect(ids(r)).to.deep.equal([4, 2, 1]);
      expect(Array.from(r.scores)).to.deep.equal([9, 7, 6.5]);
      // winner i pays min(bid_i, max(reserve, utility_{i+1} / value_i)), value = 1
      expect(Array.from(r.prices)).to.deep.equal([7, 6.5, 6]);

      // RetrieveAndRank: retrieval by score keeps the top 3 retrieval scores (1, 2, 3), ranked
      // by the live bids: 2 (7), 1 (6.5), 3 (6); the last pays the reserve
      const rr = await e.retrieveAndRank(craftRequest(b, { k: 3, retrieveCount: 3, reserve: 0.5, candidates: new BigInt64Array(0) }));
      expect(ids(rr)).to.deep.equal([2, 1, 3]);
      expect(Array.from(rr.prices)).to.deep.equal([6.5, 6, 0.5]);
    });

    it('a bid of 0 sends the ad to the bottom; NaN goes back to the bundle bid', async () => {
      const b = craftBundle(ads);
      const e = open(b);
      setBids(e, [[1, 0]]);
      const r = await e.rank(craftRequest(b, { k: 4, price: true }));
      expect(ids(r)).to.deep.equal([2, 3, 4, 1]);
      expect(r.scores[3]).to.equal(0);
      expect(r.prices[3]).to.equal(0); // min(bid 0, reserve 0)
      setBids(e, [[1, NaN]]);
      expect(ids(await e.rank(craftRequest(b, { k: 4 })))).to.deep.equal([1, 2, 3, 4]);
    });

    it('refuses a negative or infinite bid and changes nothing', async () => {
      const b = craftBundle(ads);
      const e = open(b);
      expect(() => setBids(e, [[4, 9], [1, -1]])).to.throw(/expected a finite bid >= 0 .* for bid\[1\], got -1/);
      expect(() => setBids(e, [[4, Infinity]])).to.throw(/for bid\[0\], got inf/);
      // the valid first entry of the refused batch was not applied either
      expect(ids(await e.rank(craftRequest(b, { k: 4 })))).to.deep.equal([1, 2, 3, 4]);
    });
  });

  describe('atomic batches', () => {
    it('Retrieve running while batches toggle a quarter of the corpus never counts a partial batch', async () => {
      // rows spread over the whole table, so a scan in progress straddles any update that lands
      const config = makeRandomConfig(new Rng(32), { surfaces: 1 });
      const b = toLoaded(config, makeDemoBundle({ config, ads: 20_000, seed: 32 }).tensors);
      const e = open(b);
      const batch = (b.tensors['ads.id'] as BigInt64Array).filter((_, i) => i % 4 === 0);
      const n = batch.length;
      const set = (active: number) => e.setAdState(batch, new Uint8Array(n).fill(active), new Uint8Array(n).fill(1), new Float32Array(n).fill(1));
      const rng = new Rng(33);
      const seen = new Map<number, number>();
      let toggles = 0;
      const deadline = Date.now() + 20_000;
      for (let round = 0; round < 20 && Date.now() < deadline; round++) {
        let pending = 0;
        const runs = Array.from({ length: 8 }, () => {
          pending++;
          return e.retrieve({ ...randomRequest(rng, b, { candidates: 0, k: 5 }), excludedAds: new BigInt64Array(0), excludedAdvertisers: new BigInt64Array(0) }).finally(() => pending--);
        });
        // batches land all the time the scans run (each turn of the event loop)
        while (pending > 0) {
          set(toggles++ % 2);
          await new Promise((r) => setImmediate(r));
        }
        for (const r of await Promise.all(runs)) seen.set(r.counts.inactive, (seen.get(r.counts.inactive) ?? 0) + 1);
      }
      // every request saw all of a batch or none of it
      for (const c of seen.keys()) expect([0, n], `inactive count ${c} (seen: ${JSON.stringify([...seen])})`).to.include(c);
      expect(toggles, 'batches landed while requests ran').to.be.greaterThan(100);
    });

    it('copy-on-write: a batch copies only the chunks it writes, and two interleaved series of batches are each seen whole', async () => {
      const config = makeRandomConfig(new Rng(34), { surfaces: 1 });
      const b = toLoaded(config, makeDemoBundle({ config, ads: 20_000, seed: 34 }).tensors);
      const e = open(b);
      const all = b.tensors['ads.id'] as BigInt64Array;
      const { chunkRows, chunks } = e.adStateStats();
      expect(chunks).to.equal(Math.ceil(20_000 / chunkRows));
      const ones = (n: number) => new Uint8Array(n).fill(1);
      // one ad: one chunk; ads spread over the table: one chunk per distinct chunk they fall in
      e.setAdState(all.subarray(7, 8), ones(1), ones(1), new Float32Array(1).fill(0.5));
      expect(e.adStateStats().lastCopied).to.equal(1);
      const spread = all.filter((_, i) => i % 1000 === 3 || i % 1000 === 4);
      e.setAdState(spread, ones(spread.length), ones(spread.length), new Float32Array(spread.length).fill(1));
      expect(e.adStateStats().lastCopied).to.equal(new Set(Array.from(b.adIndex!.rows(spread), (r) => Math.floor(r / chunkRows))).size);
      expect(e.adStateStats().lastCopied).to.be.lessThan(chunks / 4);

      // series A toggles `active` on rows i % 4 == 0, series B `inBudget` on rows i % 4 == 1 (the
      // same chunks): every request sees each series' last batch whole, never a mix
      const a = all.filter((_, i) => i % 4 === 0);
      const bb = all.filter((_, i) => i % 4 === 1);
      const rng = new Rng(35);
      const seen: [number, number][] = [];
      let turns = 0;
      for (let round = 0; round < 10; round++) {
        let pending = 0;
        const runs = Array.from({ length: 6 }, () => {
          pending++;
          return e.retrieve({ ...randomRequest(rng, b, { candidates: 0, k: 5 }), excludedAds: new BigInt64Array(0), excludedAdvertisers: new BigInt64Array(0) }).finally(() => pending--);
        });
        while (pending > 0) {
          const on = turns++ % 2;
          if (turns % 3 === 0) e.setAdState(bb, ones(bb.length), new Uint8Array(bb.length).fill(on), new Float32Array(bb.length).fill(1));
          else e.setAdState(a, new Uint8Array(a.length).fill(on), ones(a.length), new Float32Array(a.length).fill(1));
          await new Promise((r) => setImmediate(r));
        }
        for (const r of await Promise.all(runs)) seen.push([r.counts.inactive, r.counts.outOfBudget]);
      }
      for (const [inactive, outOfBudget] of seen) {
        expect([0, a.length], `inactive ${inactive}`).to.include(inactive);
        expect([0, bb.length], `out of budget ${outOfBudget}`).to.include(outOfBudget);
      }
      expect(turns).to.be.greaterThan(50);
      // and the last batches are what a new request sees
      e.setAdState(a, new Uint8Array(a.length), ones(a.length), new Float32Array(a.length).fill(1));
      e.setAdState(bb, ones(bb.length), new Uint8Array(bb.length), new Float32Array(bb.length).fill(1));
      const last = await e.retrieve({ ...randomRequest(rng, b, { candidates: 0, k: 5 }), excludedAds: new BigInt64Array(0), excludedAdvertisers: new BigInt64Array(0) });
      expect([last.counts.inactive, last.counts.outOfBudget]).to.deep.equal([a.length, bb.length]);
    });
  });
});
