/**
 * The CPU backend at precision bf16 against the float64 reference (test/reference), on the demo
 * config and the random configs of test 30. The tolerance is the CUDA path's (test/40, docs/cuda.md,
 * docs/cpu-bf16.md), so a bundle behaves the same on both:
 *  - every calibrated probability within 2e-2 absolute of the reference (max |Δp|);
 *  - the value Σ_t w_t p_t within 2e-2 · Σ_t |w_t|;
 *  - winners of rank(): the reference's, except swaps of ads whose reference utilities are within
 *    2e-2 · Σ|w| · bid (test/support/bf16.ts); counts other than `capped` exact (eligibility does
 *    not depend on the scores).
 * And that bf16 really ran: the description says bf16 and the probabilities differ from the fp32
 * engine's. The observed max |Δp| and overlap are printed (docs/cpu-bf16.md quotes them).
 *
 * Also: a small request, whose GEMMs run in stream order split over the pool, gives bitwise what a
 * 1-thread engine and a large request (blocked order, chunks over the threads) give, fp32 and bf16.
 *
 * The suite runs on the bf16 kernel in use (AVX512-BF16 where the CPU has it), then again in child
 * processes (ADRANK_BF16_TEST_CHILD names the kernel the child must run, and stops the recursion):
 * with ADRANK_CPU_ISA=avx2 the AVX2 kernel (bf16 weights widened to fp32), on any AVX2 machine; with
 * ADRANK_CPU_BF16=off on an AVX-512 machine the AVX-512 one (the same, 16 lanes): the same tolerance
 * on CPUs without AVX512-BF16. Skips (saying why) where there is no bf16 kernel.
 */
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { capabilities, Engine, EngineError, type NativeResult } from '../src/engine/index.js';
import type { LoadedBundle } from '../src/model/bundle.js';
import { makeDemoBundle, makeDemoConfig, makeRandomConfig, type RandomConfigOptions } from '../src/model/demo.js';
import type { EngineRequest } from '../src/features/feature-bundle.js';
import { RefModel } from './reference/model.js';
import { defaultAdState, modelScorers, refRank } from './reference/funnel.js';
import { addonBuilt, mochaChild, randomRequest, Rng, toLoaded } from './support/index.js';
import { BF16_PROB_ATOL, bf16WinnersAgree } from './support/bf16.js';

/** In a child: the widening kernel it must run ('avx2' or 'avx512'); '' in the parent. */
const childKernel = process.env.ADRANK_BF16_TEST_CHILD ?? '';
const isChild = childKernel !== '';
/** The children: the environment that selects each widening kernel, and where it can run. */
const CHILDREN = [
  { kernel: 'avx2', env: { ADRANK_CPU_ISA: 'avx2' }, what: 'ADRANK_CPU_ISA=avx2 (the AVX2 bf16 kernel)', needs: ['avx2', 'avx512'] },
  { kernel: 'avx512', env: { ADRANK_CPU_BF16: 'off' }, what: 'ADRANK_CPU_BF16=off (bf16 weights widened on AVX-512)', needs: ['avx512'] },
] as const;


interface Observed {
  maxDp: number;
  maxDvalue: number;
  overlap: number;
  winners: number;
  fp32VsBf16: number;
}

/** Runs `requests` on a bf16 and an fp32 engine and the float64 reference; asserts the tolerance. */
async function compare(label: string, b: LoadedBundle, requests: EngineRequest[]): Promise<Observed> {
  const bf16 = Engine.fromBundle(b, { device: 'cpu', threads: 2, precision: 'bf16' });
  const fp32 = Engine.fromBundle(b, { device: 'cpu', threads: 2, precision: 'fp32' });
  try {
    const cpu = capabilities().cpu;
    expect(bf16.precision).to.equal('bf16');
    expect(bf16.description).to.equal(`cpu ${cpu.simd} bf16 x2 threads`);
    expect(bf16.deviceReason).to.match(/; precision bf16: requested, /);
    expect(bf16.deviceReason.endsWith(cpu.bf16Reason)).to.equal(true);
    if (isChild) expect(cpu.bf16Kernel, `the ${childKernel} child runs the ${childKernel} bf16 kernel`).to.equal(childKernel);
    expect(fp32.description).to.match(/ fp32 x2 threads$/);
    const m = new RefModel(b);
    const T = b.config.tasks.length;
    const state = defaultAdState(b.numAds);
    const o: Observed = { maxDp: 0, maxDvalue: 0, overlap: 0, winners: 0, fp32VsBf16: 0 };
    for (const [i, r] of requests.entries()) {
      const sc = modelScorers(m, r);
      const x = await bf16.explain(r);
      const y = await fp32.explain(r);
      const w = Array.from(r.taskWeights ?? (b.tensors['utility.task_weights'] as Float32Array).subarray(r.surface * T, (r.surface + 1) * T));
      const sumW = w.reduce((s, v) => s + Math.abs(v), 0);
      const bid = b.tensors['ads.bid'] as Float32Array;
      x.rows.forEach((row, c) => {
        const want = sc.rank(row);
        for (let t = 0; t < T; t++) {
          const dp = Math.abs(x.probs[c * T + t] - want.probs[t]);
          if (!(dp <= BF16_PROB_ATOL)) expect.fail(`${label} request ${i} row ${row} task ${t}: p ${x.probs[c * T + t]}, want ${want.probs[t]} (|Δp| ≤ ${BF16_PROB_ATOL})`);
          o.maxDp = Math.max(o.maxDp, dp);
          o.fp32VsBf16 = Math.max(o.fp32VsBf16, Math.abs(x.probs[c * T + t] - y.probs[c * T + t]));
        }
        const dv = Math.abs(x.utility[c] / bid[row] - want.value);
        if (!(dv <= BF16_PROB_ATOL * sumW)) expect.fail(`${label} request ${i} row ${row}: value ${x.utility[c] / bid[row]}, want ${want.value} (≤ ${BF16_PROB_ATOL}·Σ|w|)`);
        o.maxDvalue = Math.max(o.maxDvalue, dv / sumW);
      });
      const got = await bf16.rank(r);
      const ref = refRank(b, r, state, sc.rank);
      const g = { ...got.counts } as Record<string, number>;
      const want = { ...ref.counts } as Record<string, number>;
      delete g.capped;
      delete want.capped;
      expect(g, `${label} request ${i} counts`).to.deep.equal(want);
      const a = bf16WinnersAgree(`${label} request ${i} rank`, got.rows, ref.rows, (row) => sc.rank(row).utility, (row) => BF16_PROB_ATOL * sumW * bid[row]);
      o.overlap += a.overlap;
      o.winners += a.total;
    }
    // bf16 really ran: it rounds, so it cannot equal fp32 everywhere.
    expect(o.fp32VsBf16, `${label}: bf16 probabilities differ from fp32 somewhere`).to.be.greaterThan(1e-6);
    console.log(
      `      [32.bf16${isChild ? ` ${childKernel}` : ''}] ${label}: max |Δp| ${o.maxDp.toExponential(2)}, max |Δvalue|/Σ|w| ${o.maxDvalue.toExponential(2)}, ` +
        `top-K overlap ${o.overlap}/${o.winners}, max |p_bf16 − p_fp32| ${o.fp32VsBf16.toExponential(2)}`,
    );
    return o;
  } finally {
    bf16.dispose();
    fp32.dispose();
  }
}

describe('33 engine (CPU) at precision bf16 vs the float64 reference', function () {
  this.timeout(120_000);
  before(function () {
    if (!addonBuilt()) this.skip();
    const cpu = capabilities().cpu;
    if (!cpu.bf16) {
      console.log(`      [32.bf16] skipped: no bf16 kernel: ${cpu.bf16Reason}`);
      this.skip();
    }
  });

  it('demo config: probabilities, values, winners and counts', async () => {
    const config = makeDemoConfig();
    const b = toLoaded(config, makeDemoBundle({ config, ads: 300, seed: 32 }).tensors);
    const rng = new Rng(32);
    const requests = Array.from({ length: 4 }, (_, i) => randomRequest(rng, b, { candidates: 40, k: 10, seqLen: i * 4, taskWeights: i === 3 }));
    await compare('demo', b, requests);
  });

  const randomCases: [string, RandomConfigOptions][] = [
    ['full-rank DCN, no sequence layers', { dcnRank: 0, seqLayers: 0 }],
    ['low-rank DCN (r=1), one sequence layer', { dcnRank: 1, seqLayers: 1 }],
    ['low-rank DCN (r=3), two sequence layers, 3 surfaces', { dcnRank: 3, seqLayers: 2, surfaces: 3 }],
    ['one MaskNet block, 4 tasks', { masknetBlocks: 1, tasks: 4, seqLayers: 1 }],
    ['three MaskNet blocks, full rank, two sequence layers', { masknetBlocks: 3, dcnRank: 0, seqLayers: 2, surfaces: 2 }],
    ['random everything', {}],
  ];
  randomCases.forEach(([label, opts], i) => {
    it(`random config ${i}: ${label}`, async () => {
      const rng = new Rng(320 + i);
      const config = makeRandomConfig(rng, opts);
      const b = toLoaded(config, makeDemoBundle({ config, ads: 400, seed: 320 + i }).tensors);
      const requests = Array.from({ length: 8 }, () => randomRequest(rng, b, { candidates: 120, k: 20, unknown: 0.05, duplicate: 0.05 }));
      await compare(`random ${i}`, b, requests);
    });
  });

  it('a bf16 engine is deterministic: 32 overlapping rank() calls give the serial results bitwise', async () => {
    const rng = new Rng(33);
    const config = makeRandomConfig(rng, { seqLayers: 1, dcnRank: 0 });
    const b = toLoaded(config, makeDemoBundle({ config, ads: 300, seed: 33 }).tensors);
    const engine = Engine.fromBundle(b, { device: 'cpu', threads: 2, precision: 'bf16' });
    try {
      const requests = Array.from({ length: 32 }, () => randomRequest(rng, b, { candidates: rng.int(1, 300), k: rng.int(1, 20) }));
      const serial: NativeResult[] = [];
      for (const r of requests) serial.push(await engine.rank(r));
      const parallel = await Promise.all(requests.map((r) => engine.rank(r)));
      parallel.forEach((p, i) => {
        expect(Array.from(p.adIds), `request ${i} ids`).to.deep.equal(Array.from(serial[i].adIds));
        expect(Array.from(p.probs), `request ${i} probs`).to.deep.equal(Array.from(serial[i].probs));
        expect(Array.from(p.prices), `request ${i} prices`).to.deep.equal(Array.from(serial[i].prices));
      });
    } finally {
      engine.dispose();
    }
  });

  it('a small request (its GEMMs split over the pool, stream order) gives the bits of a 1-thread engine and of the same ads in a large request, fp32 and bf16', async () => {
    const config = makeDemoConfig();
    const b = toLoaded(config, makeDemoBundle({ config, ads: 400, seed: 35 }).tensors);
    const rng = new Rng(35);
    const big = randomRequest(rng, b, { candidates: 300, k: 10, seqLen: 8 });
    for (const precision of ['fp32', 'bf16'] as const) {
      const two = Engine.fromBundle(b, { device: 'cpu', threads: 2, precision });
      const one = Engine.fromBundle(b, { device: 'cpu', threads: 1, precision });
      try {
        const all = await two.explain(big);
        const T = b.config.tasks.length;
        const at = new Map(Array.from(all.rows, (row, i) => [row, i] as [number, number]));
        for (const n of [1, 7, 10, 16]) {
          const small = { ...big, candidates: (big.candidates as BigInt64Array).subarray(0, n) };
          const x = await two.explain(small);
          const y = await one.explain(small);
          expect(Array.from(x.probs), `${precision} Rank(${n}): 2 threads = 1 thread, bitwise`).to.deep.equal(Array.from(y.probs));
          expect(Array.from(x.cross), `${precision} Rank(${n}): cross layers, 2 threads = 1 thread`).to.deep.equal(Array.from(y.cross));
          x.rows.forEach((row, c) => {
            const i = at.get(row)!;
            expect(Array.from(x.probs.subarray(c * T, (c + 1) * T)), `${precision} Rank(${n}) row ${row} = its row in Rank(300)`).to.deep.equal(
              Array.from(all.probs.subarray(i * T, (i + 1) * T)),
            );
          });
        }
      } finally {
        two.dispose();
        one.dispose();
      }
    }
  });

  it("precision 'auto' follows capabilities().cpu.bf16Auto and says why; a bad precision is refused naming the field", () => {
    const config = makeRandomConfig(new Rng(34), {});
    const b = toLoaded(config, makeDemoBundle({ config, ads: 20, seed: 34 }).tensors);
    const e = Engine.fromBundle(b, { device: 'cpu', precision: 'auto' });
    const cpu = capabilities().cpu;
    try {
      // wherever there is a bf16 kernel, bf16 at every size (AVX512-BF16, or W widened at the fp32 path's FMA rate)
      expect(cpu.bf16Auto).to.equal(cpu.bf16Kernel !== '');
      const want = cpu.bf16Auto ? 'bf16' : 'fp32';
      expect(e.precision).to.equal(want);
      expect(e.deviceReason.endsWith(`; precision ${want}: auto, ${cpu.bf16AutoReason}`), e.deviceReason).to.equal(true);
      if (cpu.bf16Kernel === 'avx512bf16') expect(e.deviceReason).to.match(/auto, this CPU has AVX512-BF16 \(vdpbf16ps\)$/);
      if (isChild) expect(e.deviceReason).to.match(childKernel === 'avx2' ? /auto, .*bf16 weights widened to fp32 on AVX2 / : /auto, .*bf16 weights widened to fp32 on AVX-512 /);
      expect(e.description).to.equal(`cpu ${cpu.simd} ${want} x${e.description.match(/x(\d+) threads$/)![1]} threads`);
    } finally {
      e.dispose();
    }
    expect(() => Engine.fromBundle(b, { device: 'cpu', precision: 'fp16' }))
      .to.throw(EngineError, 'expected auto, fp32 or bf16 for precision, got "fp16"')
      .with.property('code', 'INVALID_REQUEST');
  });

  if (!isChild) {
    for (const child of CHILDREN) {
      it(`passes every check above with ${child.what}, in a child process`, function () {
        const simd = capabilities().cpu.simd;
        if (!(child.needs as readonly string[]).includes(simd)) {
          console.log(`      (skipped: the ${child.kernel} kernel needs the ${child.needs.join(' or ')} path; this CPU's is ${simd})`);
          this.skip();
        }
        this.timeout(600_000);
        const r = mochaChild(fileURLToPath(import.meta.url), { ...child.env, ADRANK_BF16_TEST_CHILD: child.kernel }, 300_000, 'spec');
        const observed = r.stdout.split('\n').filter((l) => l.includes(`[32.bf16 ${child.kernel}]`));
        for (const l of observed) console.log(l);
        expect(r.status, `child with ${child.what}:\n${r.stdout}\n${r.stderr}`).to.equal(0);
        expect(r.stdout).to.match(/\d+ passing/);
        expect(r.stdout).to.not.match(/pending/);
        expect(observed.length, 'the child compared every config').to.equal(7);
      });
    }
  }
});
