/**
 * The CUDA backend against the CPU backend (the reference it must agree with), docs/design.md §4–§6:
 * bf16 operands with fp32 accumulation on the GPU, fp32 on the CPU. Tolerances of the CUDA issue:
 * calibrated probabilities within 2e-2 absolute, utility order agreeing, top-K overlap ≥ 0.98,
 * eligibility counts and the per-advertiser cap exact.
 *
 * Skipped, saying why, where no usable CUDA device is found (CI has none); scripts/gpu-check.sh
 * runs it on a GPU machine.
 */
import { expect } from 'chai';
import { capabilities, Engine } from '../src/engine/index.js';
import type { NativeResult } from '../src/engine/binding.js';
import type { LoadedBundle } from '../src/model/bundle.js';
import { makeRandomConfig } from '../src/model/demo.js';
import type { EngineRequest } from '../src/features/feature-bundle.js';
import { addonBuilt, demoLoaded, randomRequest, Rng } from './support/index.js';

const PROB_ATOL = 2e-2;
const MIN_OVERLAP = 0.98;

function cudaReason(): string | undefined {
  if (!addonBuilt()) return 'the addon is not built';
  const c = capabilities().cuda;
  if (!c.compiled) return 'the addon was built without CUDA';
  if (!c.usable) return `no usable CUDA device (${c.reason})`;
  return undefined;
}

function byId(r: NativeResult, tasks: number): Map<bigint, { utility: number; probs: number[]; advertiser: bigint }> {
  const m = new Map<bigint, { utility: number; probs: number[]; advertiser: bigint }>();
  r.adIds.forEach((id, i) => m.set(id, { utility: r.scores[i], probs: Array.from(r.probs.subarray(i * tasks, (i + 1) * tasks)), advertiser: r.advertisers[i] }));
  return m;
}

function overlap(a: BigInt64Array, b: BigInt64Array): number {
  if (a.length === 0 && b.length === 0) return 1;
  const s = new Set(a);
  let n = 0;
  for (const x of b) if (s.has(x)) n++;
  return n / Math.max(a.length, b.length);
}

/** Every eligibility count must match exactly: the funnel is integer logic on both backends. */
function expectSameCounts(gpu: NativeResult, cpu: NativeResult): void {
  for (const k of ['received', 'unknown', 'duplicate', 'inactive', 'outOfBudget', 'paced', 'targeting', 'excludedAd', 'excludedAdvertiser', 'eligible'] as const)
    expect(gpu.counts[k], `counts.${k}`).to.equal(cpu.counts[k]);
}

function compareRank(b: LoadedBundle, gpu: NativeResult, cpu: NativeResult, req: EngineRequest): number {
  const T = b.config.tasks.length;
  expectSameCounts(gpu, cpu);
  expect(gpu.adIds.length, 'winners').to.equal(cpu.adIds.length);
  if (req.cap > 0) {
    const per = new Map<bigint, number>();
    for (const a of gpu.advertisers) per.set(a, (per.get(a) ?? 0) + 1);
    for (const [a, n] of per) expect(n, `winners of advertiser ${a}`).to.be.at.most(req.cap);
  }
  // Probabilities of the ads both backends selected.
  const c = byId(cpu, T);
  for (const [id, g] of byId(gpu, T)) {
    const w = c.get(id);
    if (!w) continue;
    g.probs.forEach((p, t) => expect(Math.abs(p - w.probs[t]), `ad ${id} task ${t}: gpu ${p} cpu ${w.probs[t]}`).to.be.at.most(PROB_ATOL));
  }
  return overlap(gpu.adIds, cpu.adIds);
}

describe('21 CUDA backend vs CPU backend', function () {
  const reason = cudaReason();
  before(function () {
    if (reason) {
      console.log(`      [21.kernels-gpu] skipped: ${reason}`);
      this.skip();
    }
  });

  const cases: { name: string; make: () => LoadedBundle }[] = [
    { name: 'demo config, 4,000 ads', make: () => demoLoaded({ ads: 4000, seed: 21 }) },
    ...[1, 2, 3, 4].map((s) => ({ name: `random config ${s}`, make: () => demoLoaded({ config: makeRandomConfig(new Rng(100 + s)), ads: 1500, seed: 100 + s }) })),
  ];

  for (const c of cases) {
    it(`${c.name}: Rank, Retrieve and RetrieveAndRank agree within bf16 tolerances`, async function () {
      const b = c.make();
      const gpu = Engine.fromBundle(b, { device: 'cuda:0' });
      const cpu = Engine.fromBundle(b, { device: 'cpu' });
      try {
        expect(gpu.backend).to.equal('cuda');
        const rng = new Rng(7);
        const overlaps: number[] = [];
        for (let i = 0; i < 8; i++) {
          const req = randomRequest(rng, b, { candidates: 600, k: 100, cap: i % 3, unknown: 0.02, duplicate: 0.02, taskWeights: i % 2 === 1 });
          req.price = true;
          const [g, p] = await Promise.all([gpu.rank(req), cpu.rank(req)]);
          overlaps.push(compareRank(b, g, p, req));

          // Utility order: over all eligible candidates (K = all, no cap), pairs the CPU separates
          // by more than 5% must come out in the same order on the GPU.
          const all = { ...req, k: Math.min(10000, req.candidates.length), cap: 0 };
          const [ga, pa] = await Promise.all([gpu.rank(all), cpu.rank(all)]);
          expectSameCounts(ga, pa);
          const gu = byId(ga, b.config.tasks.length);
          const ids = Array.from(pa.adIds);
          for (let x = 0; x + 1 < ids.length; x++) {
            const hi = pa.scores[x];
            const y = ids.findIndex((_, j) => j > x && pa.scores[j] < hi * 0.95);
            if (y < 0) continue;
            expect(gu.get(ids[x])!.utility, `utility order of ads ${ids[x]} and ${ids[y]}`).to.be.greaterThan(gu.get(ids[y])!.utility);
          }

          const rq = { ...req, candidates: new BigInt64Array(0), k: 50 };
          const [gr, pr] = await Promise.all([gpu.retrieve(rq), cpu.retrieve(rq)]);
          expectSameCounts(gr, pr);
          overlaps.push(overlap(gr.adIds, pr.adIds));

          const rr = { ...rq, k: 20, retrieveCount: 200 };
          const [grr, prr] = await Promise.all([gpu.retrieveAndRank(rr), cpu.retrieveAndRank(rr)]);
          expect(grr.adIds.length).to.equal(prr.adIds.length);
          overlaps.push(overlap(grr.adIds, prr.adIds));
        }
        const mean = overlaps.reduce((s, x) => s + x, 0) / overlaps.length;
        expect(mean, 'mean top-K overlap').to.be.at.least(MIN_OVERLAP);
      } finally {
        gpu.dispose();
        cpu.dispose();
      }
    });
  }

  /**
   * The funnel paths the review named as risks, each against the CPU backend on the same bundle
   * and the same live ad state: local mode, more than one 16,384-row chunk, the fallback selection
   * round (cap 1 with one advertiser owning most ads), exclusions, device-side ad state, and 16
   * requests in flight at once. Eligibility counts are exact; `capped` and prices are exact in
   * count and within bf16 tolerance in value where both backends chose the same winners.
   */
  describe('funnel paths', function () {
    let b: LoadedBundle;
    let gpu: Engine;
    let cpu: Engine;
    before(function () {
      if (reason) this.skip();
      b = demoLoaded({ ads: 30000, seed: 2121 });
      // one advertiser owns 70% of the ads: cap 1 must walk past most of the ranking (fallback round)
      const adv = b.tensors['ads.advertiser'] as BigInt64Array;
      const rng = new Rng(5);
      for (let i = 0; i < adv.length; i++) if (rng.uniform() < 0.7) adv[i] = 777n;
      gpu = Engine.fromBundle(b, { device: 'cuda:0' });
      cpu = Engine.fromBundle(b, { device: 'cpu' });
    });
    after(function () {
      gpu?.dispose();
      cpu?.dispose();
    });

    function compareExact(g: NativeResult, p: NativeResult, what: string): void {
      expectSameCounts(g, p);
      const same = g.adIds.length === p.adIds.length && g.adIds.every((id, i) => id === p.adIds[i]);
      expect(overlap(g.adIds, p.adIds), `${what}: top-K overlap`).to.be.at.least(0.9);
      if (same) {
        expect(g.counts.capped, `${what}: counts.capped`).to.equal(p.counts.capped);
        expect(g.prices.length, `${what}: prices`).to.equal(p.prices.length);
        g.prices.forEach((x, i) => expect(Math.abs(x - p.prices[i]), `${what}: price ${i}: gpu ${x} cpu ${p.prices[i]}`).to.be.at.most(2e-2 * Math.max(1, Math.abs(p.prices[i]))));
      }
    }

    it('local mode, 20,000 candidates (two chunks), cap 1 with a dominant advertiser', async function () {
      const rng = new Rng(11);
      for (const mode of [0, 1]) {
        const req = randomRequest(rng, b, { candidates: 20000, k: 100, cap: 1, unknown: 0.01, duplicate: 0.05 });
        req.mode = mode;
        req.partitions = mode ? 4 : 1;
        const [g, p] = await Promise.all([gpu.rank(req), cpu.rank(req)]);
        expect(p.counts.capped, 'the case must exercise the cap').to.be.greaterThan(0);
        compareExact(g, p, `mode ${mode}`);
      }
    });

    it('exclusions and live ad state on the device agree with the CPU backend', async function () {
      const rng = new Rng(12);
      const ids = b.tensors['ads.id'] as BigInt64Array;
      const n = 3000;
      const pick = BigInt64Array.from({ length: n }, (_, i) => ids[(i * 7) % ids.length]);
      const active = Uint8Array.from({ length: n }, () => (rng.uniform() < 0.8 ? 1 : 0));
      const inBudget = Uint8Array.from({ length: n }, () => (rng.uniform() < 0.8 ? 1 : 0));
      const pacing = Float32Array.from({ length: n }, () => (rng.uniform() < 0.5 ? 1 : rng.uniform()));
      const bid = Float32Array.from({ length: n }, () => (rng.uniform() < 0.5 ? NaN : 0.1 + 3 * rng.uniform()));
      gpu.setAdState(pick, active, inBudget, pacing, bid);
      cpu.setAdState(pick, active, inBudget, pacing, bid);
      const adv = b.tensors['ads.advertiser'] as BigInt64Array;
      for (let i = 0; i < 4; i++) {
        const req = randomRequest(rng, b, { candidates: 8000, k: 50, cap: 2 });
        req.excludedAds = BigInt64Array.from({ length: 200 }, () => ids[rng.int(0, ids.length - 1)]);
        req.excludedAdvertisers = BigInt64Array.from({ length: 20 }, () => adv[rng.int(0, adv.length - 1)]);
        const [g, p] = await Promise.all([gpu.rank(req), cpu.rank(req)]);
        for (const k of ['inactive', 'outOfBudget', 'paced', 'excludedAd', 'excludedAdvertiser'] as const)
          expect(p.counts[k], `the case must exercise counts.${k}`).to.be.greaterThan(0);
        compareExact(g, p, `request ${i}`);
        const rr = { ...req, candidates: new BigInt64Array(0), k: 20, retrieveCount: 500 };
        const [grr, prr] = await Promise.all([gpu.retrieveAndRank(rr), cpu.retrieveAndRank(rr)]);
        expectSameCounts(grr, prr);
      }
    });

    it('16 concurrent requests each agree with the CPU backend', async function () {
      const rng = new Rng(13);
      const reqs = Array.from({ length: 16 }, (_, i) => randomRequest(rng, b, { candidates: 500 + 400 * i, k: 100, cap: i % 3 }));
      const gs = await Promise.all(reqs.map((r) => gpu.rank(r)));
      for (let i = 0; i < reqs.length; i++) compareExact(gs[i], await cpu.rank(reqs[i]), `concurrent ${i}`);
    });
  });

  /**
   * Each switched path (docs/cuda.md "Settings") against the old path on the same GPU, same bundle,
   * same requests: the selection is exact and the forward is the same kernels, so the answers must be
   * identical (ids, scores, prices, probabilities, every count), on the eager run, the capture and the
   * replays. ADRANK_CUDA_TILE and ADRANK_CUDA_PDL are left out here (process-wide, read once;
   * gpu-check runs the harness's GEMM cases again with PDL on, compares the before/after bench's
   * answers with every switch on, and with GPU_CHECK_MOCHA_NEW=1 runs this whole file again so). With ADRANK_CUDA_GRAPH_IO the request's GPU time
   * (timings.device) covers every stage mark.
   */
  describe('switched paths give the old path\'s answers', function () {
    const SWITCHES = ['ADRANK_CUDA_GRAPH_IO', 'ADRANK_CUDA_SKIP_IDLE_ROUND', 'ADRANK_CUDA_EPILOGUE', 'ADRANK_CUDA_RETRIEVE_ONEPASS', 'ADRANK_CUDA_RETRIEVE_FP8',
      'ADRANK_CUDA_LINEAR_T'];
    let b: LoadedBundle;
    let old: Engine;
    before(function () {
      if (reason) this.skip();
      b = demoLoaded({ ads: 30000, seed: 2122 });
      const adv = b.tensors['ads.advertiser'] as BigInt64Array;
      const rng = new Rng(6);
      for (let i = 0; i < adv.length; i++) if (rng.uniform() < 0.6) adv[i] = 555n;  // cap 1 walks far
      const saved = SWITCHES.map((k) => process.env[k]);
      for (const k of SWITCHES) delete process.env[k];
      try {
        old = Engine.fromBundle(b, { device: 'cuda:0' });
      } finally {
        SWITCHES.forEach((k, i) => (saved[i] === undefined ? delete process.env[k] : (process.env[k] = saved[i])));
      }
    });
    after(() => old?.dispose());

    function expectIdentical(g: NativeResult, o: NativeResult, what: string): void {
      expect(Array.from(g.adIds), `${what}: ids`).to.deep.equal(Array.from(o.adIds));
      expect(Array.from(g.scores), `${what}: scores`).to.deep.equal(Array.from(o.scores));
      expect(Array.from(g.prices), `${what}: prices`).to.deep.equal(Array.from(o.prices));
      expect(Array.from(g.probs), `${what}: probabilities`).to.deep.equal(Array.from(o.probs));
      expect(g.counts, `${what}: counts`).to.deep.equal(o.counts);
    }

    for (const on of [...SWITCHES.map((s) => [s]), SWITCHES]) {
      it(`${on.join(' + ')}: Rank (100 to 20,000 candidates, cap 0/1/2, priced, local), Retrieve, RetrieveAndRank`, async function () {
        const saved = on.map((k) => process.env[k]);
        on.forEach((k) => (process.env[k] = '1'));
        let eng: Engine;
        try {
          eng = Engine.fromBundle(b, { device: 'cuda:0' });
        } finally {
          on.forEach((k, i) => (saved[i] === undefined ? delete process.env[k] : (process.env[k] = saved[i])));
        }
        try {
          const rng = new Rng(31);
          const reqs: EngineRequest[] = [];
          for (const [n, cap] of [[100, 0], [1000, 0], [1000, 1], [5000, 2], [16000, 1], [20000, 0]]) {
            const r = randomRequest(rng, b, { candidates: n, k: 100, cap, unknown: 0.01, duplicate: 0.02 });
            r.price = n !== 100;
            reqs.push(r);
          }
          const local = randomRequest(rng, b, { candidates: 3000, k: 60, cap: 1 });
          local.mode = 1;
          local.partitions = 4;
          reqs.push(local);
          for (const [i, r] of reqs.entries())
            for (let rep = 0; rep < 3; rep++) {  // eager, capture, replay
              const [g, o] = [await eng.rank(r), await old.rank(r)];
              expectIdentical(g, o, `rank ${i} (${r.candidates.length} candidates, cap ${r.cap}) run ${rep}`);
              if (on.includes('ADRANK_CUDA_GRAPH_IO')) {
                const t = g.timings;
                const stages = t.user + t.retrieve + t.gather + t.masknet + t.dcn + t.mlp + t.select;
                expect(t.device ?? 0, 'timings.device').to.be.greaterThan(0);
                expect(t.device!, 'the request\'s GPU time covers its stages').to.be.at.least(stages * 0.95 - 2);
              }
            }
          const rq = { ...reqs[1], candidates: new BigInt64Array(0), k: 200, cap: 1 };
          const rr = { ...rq, k: 20, cap: 2, retrieveCount: 2000 };
          // uncapped: the one-pass and fp8 retrievals' cases (L = 1 and 2,047: the smallest and the largest they take)
          const uncapped = [1, 200, 2047].map((k) => ({ ...rq, k, cap: 0 }));
          const rr1 = { ...rq, k: 20, cap: 0, retrieveCount: 500 };
          for (let rep = 0; rep < 3; rep++) {
            expectIdentical(await eng.retrieve(rq), await old.retrieve(rq), `retrieve run ${rep}`);
            for (const u of uncapped) expectIdentical(await eng.retrieve(u), await old.retrieve(u), `retrieve k ${u.k} uncapped run ${rep}`);
            expectIdentical(await eng.retrieveAndRank(rr), await old.retrieveAndRank(rr), `retrieveAndRank run ${rep}`);
            expectIdentical(await eng.retrieveAndRank(rr1), await old.retrieveAndRank(rr1), `retrieveAndRank R 500 run ${rep}`);
          }
        } finally {
          eng.dispose();
        }
      });
    }
  });
});
