/**
 * The native addon's contract (src/engine/binding.ts): capabilities, model validation, request
 * validation, the async call lifecycle (in-flight guard, dispose), live ad state, result shapes.
 * Numeric parity with the float64 reference lives in test/30.engine.
 */
import { expect } from 'chai';
import v8 from 'node:v8';
import vm from 'node:vm';
import { binding, type NativeEngine, type NativeResult } from '../src/engine/binding.js';
import { modelDims } from '../src/model/config.js';
import { adId, advertiserOf, config, init, N, pack, randomBundle, T } from './support/tiny-model.js';

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected the promise to reject');
}

v8.setFlagsFromString('--expose-gc'); // for the queued-call test's collection

describe('25 addon', () => {
  const native = binding();
  let engine: NativeEngine;

  beforeEach(() => {
    engine = new native.Engine(init());
  });
  afterEach(() => {
    try {
      engine.dispose();
    } catch {
      /* already disposed or busy in a failed test */
    }
  });

  it('reports capabilities with the documented shape', () => {
    const caps = native.capabilities();
    expect(caps.cpu.compiled).to.equal(true);
    expect(caps.cpu.usable).to.equal(true);
    expect(['avx512', 'avx2', 'scalar']).to.include(caps.cpu.simd);
    expect(caps.cpu.threads).to.be.a('number').and.to.be.at.least(1);
    expect(Number.isInteger(caps.cpu.threads)).to.equal(true);
    expect(caps.cuda.compiled).to.be.a('boolean');
    expect(caps.cuda.devices).to.be.a('number');
    if (!caps.cuda.compiled) {
      expect(caps.cuda).to.deep.equal({ compiled: false, usable: false, devices: 0, reason: 'not compiled with CUDA', targets: '' });
    } else {
      expect(caps.cuda.usable).to.equal(caps.cuda.devices > 0);
      // what the build carries, e.g. "sm_80, sm_89, sm_90a, PTX compute_90"
      expect(caps.cuda.targets).to.match(/^(sm_\d+a?|PTX compute_\d+a?)(, (sm_\d+a?|PTX compute_\d+a?))*$/);
    }
    expect(engine.backend).to.equal('cpu');
    expect(engine.numAds).to.equal(N);
    expect(caps.cpu.bf16).to.be.a('boolean');
    expect(caps.cpu.bf16Reason).to.match(/AVX512-BF16/);
    // the native default precision is fp32 (the TS side resolves 'auto')
    expect(engine.description).to.match(/^cpu (avx512|avx2|scalar) fp32 x2 threads$/);
  });

  describe('model validation', () => {
    it('names a missing tensor', () => {
      const b = randomBundle();
      delete b.tensors['dcn.layers.1.bias'];
      expect(() => new native.Engine(init(b))).to.throw(/missing tensor dcn\.layers\.1\.bias/);
    });

    it('names a mis-sized tensor and its expected shape', () => {
      const b = randomBundle();
      b.tensors['masknet.blocks.1.proj.weight'] = new Float32Array(8 * 10);
      const d = modelDims(config);
      expect(() => new native.Engine(init(b))).to.throw(
        new RegExp(`masknet\\.blocks\\.1\\.proj\\.weight: expected shape \\[8, ${d.input}\\].*got 80 values`),
      );
    });

    it('names a tensor of the wrong dtype and repeated ad ids', () => {
      const b = randomBundle();
      b.tensors['ads.advertiser'] = new Float32Array(N);
      expect(() => new native.Engine(init(b))).to.throw(/ads\.advertiser: expected dtype I64, got F32/);
      const c = randomBundle();
      (c.tensors['ads.id'] as BigInt64Array)[5] = adId(2);
      expect(() => new native.Engine(init(c))).to.throw(/ads\.id: expected unique ad ids, got 1006/);
    });

    it('refuses a cuda device it cannot serve with a clear error', () => {
      const caps = native.capabilities();
      const i = { ...init(), device: 'cuda:0' };
      if (!caps.cuda.compiled) expect(() => new native.Engine(i)).to.throw(/cuda:0.*not compiled with CUDA/);
      expect(() => new native.Engine({ ...init(), device: 'gpu' })).to.throw(/expected cpu or cuda:N for device, got "gpu"/);
    });
  });

  describe('request validation', () => {
    const header = (u8: Uint8Array, word: number, v: number) => new DataView(u8.buffer, u8.byteOffset).setUint32(word * 4, v, true);

    it('rejects a bad magic', async () => {
      const u8 = pack();
      header(u8, 0, 0xdeadbeef);
      const e = await rejection(engine.rank(u8));
      expect(e.message).to.match(/^expected 0x51524441.* for feature bundle magic, got 0xdeadbeef$/);
    });

    it('rejects a buffer whose length differs from what the header implies', async () => {
      const good = pack();
      const longer = new Uint8Array(good.length + 8);
      longer.set(good);
      const e = await rejection(engine.rank(longer));
      expect(e.message).to.equal(`expected ${good.length} bytes (from the model dims and header counts) for feature bundle length, got ${good.length + 8}`);
      const e2 = await rejection(engine.rank(good.subarray(0, 40)));
      expect(e2.message).to.match(/for feature bundle length, got 40$/);
    });

    it('rejects a surface out of range and K above 10,000', async () => {
      const s = await rejection(engine.rank(pack({ surface: 2 })));
      expect(s.message).to.equal('expected a surface index below 2 for surface, got 2');
      const k = await rejection(engine.rank(pack({ k: 10001 })));
      expect(k.message).to.equal('expected at most 10000 for k, got 10001');
      const u8 = pack();
      header(u8, 5, 1);
      header(u8, 6, 0);
      const p = await rejection(engine.rank(u8));
      expect(p.message).to.equal('expected at least 1 in local mode for partitions, got 0');
    });

    it('rejects out-of-range actions, non-finite features and a non-Uint8Array', async () => {
      const a = await rejection(engine.rank(pack({ seqActions: [0, 3, 1, 1] })));
      expect(a.message).to.equal('expected an action below 3 for seqActions[1], got 3');
      const f = await rejection(engine.rank(pack({ userDense: [0, NaN, 1] })));
      expect(f.message).to.match(/^expected a finite number for userDense\[1\], got nan/);
      const t = await rejection(engine.rank(new Float32Array(32) as unknown as Uint8Array));
      expect(t.message).to.equal('expected a Uint8Array for request, got Float32Array(32)');
    });
  });

  describe('lifecycle', () => {
    it('refuses dispose while a call is in flight, then disposes, then rejects calls', async () => {
      const pending = engine.rank(pack());
      expect(engine.inflight()).to.equal(1);
      expect(() => engine.dispose()).to.throw('engine busy: 1 runs in flight');
      const r = await pending;
      expect(r.adIds.length).to.equal(5);
      expect(engine.inflight()).to.equal(0);
      engine.dispose();
      const e = await rejection(engine.rank(pack()));
      expect(e.message).to.equal('engine disposed');
      expect(() => engine.setAdState(new BigInt64Array(0), new Uint8Array(0), new Uint8Array(0), new Float32Array(0))).to.throw('engine disposed');
    });

    it('completes calls through one wake-up per batch of ready calls, not one per call', async () => {
      expect(engine.completions()).to.deep.equal({ wakeUps: 0, calls: 0 });
      const calls = Array.from({ length: 32 }, () => engine.rank(pack()));
      // the JS thread is busy while the engine's threads finish them all: one wake-up finds all 32 ready
      const until = Date.now() + 300;
      while (Date.now() < until) {
        /* busy */
      }
      const results = await Promise.all(calls);
      expect(results.every((r) => r.adIds.length > 0)).to.equal(true);
      const c = engine.completions();
      expect(c.calls).to.equal(32);
      expect(c.wakeUps, `${c.wakeUps} wake-ups for 32 calls`).to.be.at.most(2);
      expect(engine.inflight()).to.equal(0);
    });

    it('a queued call holds its request bytes: collected and their memory reused while it waits, the answers are unchanged', async () => {
      // Each call's bytes are referenced only by the call; a collection while the calls wait, and
      // fresh buffers of the same size filled with garbage, must not reach what the engine reads.
      const gc = vm.runInNewContext('gc') as () => void;
      const opts = (i: number) => ({ userDense: [0.3 + i / 7, -1.2, 2.0], candidates: BigInt64Array.from({ length: 30 }, (_, j) => adId((i + j) % N)), k: 5 });
      const n = 3000;
      const expected: NativeResult[] = [];
      for (let i = 0; i < n; i++) expected.push(await engine.rank(pack(opts(i))));
      const size = pack(opts(0)).byteLength;
      let bytes: Uint8Array[] | undefined = Array.from({ length: n }, (_, i) => pack(opts(i)));
      const calls = bytes.map((b) => engine.rank(b));
      bytes = undefined;
      const waiting = engine.inflight();
      const junk: Uint8Array[] = [];
      for (let round = 0; round < 3 && engine.inflight() > 0; round++) {
        gc();
        for (let i = 0; i < n; i++) junk.push(new Uint8Array(size).fill(0xa5));
      }
      const results = await Promise.all(calls);
      expect(waiting, 'calls still waiting when the collection ran').to.be.greaterThan(n / 2);
      results.forEach((r, i) => {
        expect(Array.from(r.adIds), `call ${i}`).to.deep.equal(Array.from(expected[i].adIds));
        expect(Array.from(r.scores), `call ${i}`).to.deep.equal(Array.from(expected[i].scores));
      });
    });

    it('counts a failed call out of flight as well', async () => {
      const pending = rejection(engine.rank(pack({ k: 20000 })));
      expect(engine.inflight()).to.equal(1);
      await pending;
      expect(engine.inflight()).to.equal(0);
    });
  });

  describe('results', () => {
    it('returns typed arrays of the right lengths, ordered by utility, with intake counts', async () => {
      const cands = BigInt64Array.from([adId(3), 77n, adId(9), adId(3), adId(12), adId(1), -5n, adId(9)]);
      const r: NativeResult = await engine.rank(pack({ candidates: cands, k: 3, price: true }));
      expect(r.adIds).to.be.instanceOf(BigInt64Array).with.lengthOf(3);
      expect(r.advertisers).to.be.instanceOf(BigInt64Array).with.lengthOf(3);
      expect(r.rows).to.be.instanceOf(Int32Array).with.lengthOf(3);
      expect(r.scores).to.be.instanceOf(Float32Array).with.lengthOf(3);
      expect(r.probs).to.be.instanceOf(Float32Array).with.lengthOf(3 * T);
      expect(r.prices).to.be.instanceOf(Float32Array).with.lengthOf(3);
      expect(r.counts).to.include({ received: 8, unknown: 2, duplicate: 2, eligible: 4, inactive: 0, capped: 0 });
      for (let i = 0; i < 3; i++) {
        expect(r.adIds[i]).to.equal(adId(r.rows[i]));
        expect(r.advertisers[i]).to.equal(advertiserOf(r.rows[i]));
        if (i > 0) expect(r.scores[i]).to.be.at.most(r.scores[i - 1]);
      }
      for (const k of ['queue', 'user', 'gather', 'masknet', 'dcn', 'mlp', 'select', 'total'] as const) expect(r.timings[k]).to.be.a('number').at.least(0);
      expect(r.timings.total).to.be.greaterThan(0);

      // The winners are the top 3 of the 4 known unique candidates by explain()'s utility.
      const ex = await engine.explain(pack({ candidates: cands }));
      expect(Array.from(ex.rows)).to.deep.equal([3, 9, 12, 1]);
      const byUtility = Array.from(ex.rows).map((row, i) => ({ row, u: ex.utility[i] })).sort((a, b) => b.u - a.u);
      expect(Array.from(r.rows)).to.deep.equal(byUtility.slice(0, 3).map((x) => x.row));
      byUtility.slice(0, 3).forEach((x, i) => expect(r.scores[i]).to.be.closeTo(x.u, 1e-5 * Math.abs(x.u) + 1e-7));
    });

    it('explain returns exactly the NativeExplain fields with consistent sizes and utility = bid · Σ w p', async () => {
      const b = randomBundle();
      engine.dispose();
      engine = new native.Engine(init(b));
      const cands = BigInt64Array.from([adId(0), adId(5), adId(39)]);
      const ex = await engine.explain(pack({ candidates: cands }));
      const d = modelDims(config);
      const m = 3;
      const sizes: Record<string, number> = {
        rows: m, user: d.user, sequence: 4 * config.sequence.dim, query: config.retrieval.dim, ad: m * d.ad, targetAttention: m * d.targetAttention,
        input: m * d.input, masknet: m * d.cross, cross: m * d.cross, hidden: m * d.last, logits: m * T, probs: m * T, utility: m, retrievalScores: m, drops: m,
      };
      expect(Object.keys(ex).sort()).to.deep.equal(Object.keys(sizes).sort());
      for (const [k, n] of Object.entries(sizes)) expect((ex as unknown as Record<string, ArrayLike<number>>)[k].length, k).to.equal(n);
      const bid = b.tensors['ads.bid'] as Float32Array;
      const w = (b.tensors['utility.task_weights'] as Float32Array).subarray(1 * T, 2 * T); // surface 1
      for (let i = 0; i < m; i++) {
        let v = 0;
        for (let t = 0; t < T; t++) v += w[t] * ex.probs[i * T + t];
        expect(ex.utility[i]).to.be.closeTo(bid[ex.rows[i]] * v, 1e-5);
        // x = [u ; a_c ; ta_c]
        expect(Array.from(ex.input.subarray(i * d.input, i * d.input + d.user))).to.deep.equal(Array.from(ex.user));
        expect(Array.from(ex.input.subarray(i * d.input + d.user, i * d.input + d.user + d.ad))).to.deep.equal(Array.from(ex.ad.subarray(i * d.ad, (i + 1) * d.ad)));
      }
      const q = ex.query;
      expect(Math.hypot(...q)).to.be.closeTo(1, 1e-5);
    });

    it('setAdState(inactive) removes the ad from the winners and counts it inactive', async () => {
      const before = await engine.rank(pack({ k: 3 }));
      const top = before.adIds[0];
      const unknown = engine.setAdState(BigInt64Array.from([top, 123456n]), Uint8Array.from([0, 1]), Uint8Array.from([1, 1]), Float32Array.from([1, 1]));
      expect(unknown).to.equal(1);
      const after = await engine.rank(pack({ k: 3 }));
      expect(Array.from(after.adIds)).to.not.include(top);
      expect(after.adIds[0]).to.equal(before.adIds[1]);
      expect(after.counts.inactive).to.equal(1);
      expect(after.counts.eligible).to.equal(before.counts.eligible - 1);
      // Back to active: the same winners as before.
      engine.setAdState(BigInt64Array.from([top]), Uint8Array.from([1]), Uint8Array.from([1]), Float32Array.from([1]));
      const again = await engine.rank(pack({ k: 3 }));
      expect(Array.from(again.adIds)).to.deep.equal(Array.from(before.adIds));
      expect(() => engine.setAdState(BigInt64Array.from([top]), Uint8Array.from([1]), Uint8Array.from([1]), Float32Array.from([1.5]))).to.throw(
        /expected a rate in \[0, 1\] for pacingRate\[0\], got 1\.5/,
      );
    });

    it('retrieve scores the corpus; retrieveAndRank ranks the retrieved ads and prices them', async () => {
      const r = await engine.retrieve(pack({ candidates: [], k: 6 }));
      expect(r.adIds).to.have.lengthOf(6);
      expect(r.probs).to.have.lengthOf(0);
      expect(r.prices).to.have.lengthOf(0);
      expect(r.counts.received).to.equal(N);
      expect(r.counts.eligible).to.equal(N);
      for (let i = 1; i < 6; i++) expect(r.scores[i]).to.be.at.most(r.scores[i - 1]);
      const all = BigInt64Array.from({ length: N }, (_, i) => adId(i));
      const ex = await engine.explain(pack({ candidates: all }));
      const best = Array.from(ex.retrievalScores).map((s, row) => ({ s, row })).sort((a, b) => b.s - a.s).slice(0, 6);
      expect(Array.from(r.rows)).to.deep.equal(best.map((x) => x.row));

      const rr = await engine.retrieveAndRank(pack({ candidates: [], k: 4, retrieveCount: 10 }));
      expect(rr.retrieved).to.equal(10);
      expect(rr.adIds).to.have.lengthOf(4);
      expect(rr.prices).to.have.lengthOf(4);
      const retrievedRows = new Set(best.map((x) => x.row).concat(Array.from(ex.retrievalScores).map((s, row) => ({ s, row })).sort((a, b) => b.s - a.s).slice(6, 10).map((x) => x.row)));
      const bid = (randomBundle().tensors['ads.bid'] as Float32Array);
      for (let i = 0; i < 4; i++) {
        expect(retrievedRows.has(rr.rows[i])).to.equal(true);
        expect(rr.prices[i]).to.be.at.most(bid[rr.rows[i]] + 1e-6);
        expect(rr.prices[i]).to.be.at.least(0);
      }
      const bad = await rejection(engine.retrieve(pack({ k: 3 })));
      expect(bad.message).to.equal('expected no candidate ids for retrieve for candidates, got 20');
    });
  });
});
