/**
 * CPU kernels (native/kernels/cpu) through `binding().kernels`, against float64 TypeScript
 * references: |got − ref| ≤ atol + rtol·|ref| with atol = rtol = 1e-4 (inputs U(−1, 1), weights
 * scaled by 1/√k so outputs are O(1)).
 *
 * ISA paths: gemm picks AVX-512 / AVX2 / scalar once per process, and ADRANK_CPU_ISA=avx2|scalar
 * (read at that moment) forces a lower one. So this suite runs its checks in-process on the
 * CPU's best path, then re-runs this same file in a child process per forced path
 * (ADRANK_KERNEL_TEST_CHILD=1 stops the recursion) and expects it to pass there too; one more child
 * with ADRANK_CPU_BF16=off (AVX512-BF16 hidden: on an AVX-512 machine, AVX-512 without BF16, where
 * bf16 weights are widened on AVX-512).
 *
 * bf16 (linear with precision 'bf16', on the bf16 kernel in use: avx512bf16 where the CPU has
 * AVX512-BF16, avx512 on other AVX-512 CPUs and in the ADRANK_CPU_BF16=off child, avx2 on AVX2
 * CPUs and in the ADRANK_CPU_ISA=avx2 child): against the float64 reference of the bf16-rounded
 * operands at the same 1e-4 (only the fp32 accumulation differs; avx512bf16 rounds A and W, the
 * widening avx512 and avx2 only W), and against the float64 reference of the fp32 operands within
 * 2^-7 · Σ|a·w| per element (widening, one rounding: 2^-8). In the scalar child the bf16 path must
 * be off and refuse to run.
 */
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';

import { binding, type NativeKernels } from '../src/engine/binding.js';
import { EngineError, resolvePrecision } from '../src/engine/index.js';
import { mochaChild } from './support/index.js';

const ATOL = 1e-4;
const RTOL = 1e-4;
const ISAS = ['scalar', 'avx2', 'avx512'] as const;
const isChild = process.env.ADRANK_KERNEL_TEST_CHILD === '1';

/** Deterministic U(−scale, scale) values (mulberry32), so a failure reproduces. */
function rng(seed: number): (scale?: number) => number {
  let s = seed >>> 0;
  return (scale = 1) => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    const u = ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    return (2 * u - 1) * scale;
  };
}

function randomArray(rand: (scale?: number) => number, n: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = rand(scale);
  return out;
}

/** act(A · Wᵀ + bias) in float64; A [m × k], W [n × k]; act 0 = none, 1 = ReLU. */
function linearRef(a: Float32Array, m: number, k: number, w: Float32Array, n: number, bias: Float32Array | null, act: number): Float64Array {
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let acc = bias ? bias[j] : 0;
      for (let p = 0; p < k; p++) acc += a[i * k + p] * w[j * k + p];
      out[i * n + j] = act === 1 ? Math.max(acc, 0) : acc;
    }
  return out;
}

/** x0 ⊙ (xl · Wᵀ + b) + xl in float64, all [m × n], W [n × n]. */
function crossRef(x0: Float32Array, xl: Float32Array, m: number, n: number, w: Float32Array, b: Float32Array): Float64Array {
  const lin = linearRef(xl, m, n, w, n, b, 0);
  for (let i = 0; i < m * n; i++) lin[i] = x0[i] * lin[i] + xl[i];
  return lin;
}

/** Row LayerNorm, eps 1e-5, biased variance, then γ ⊙ · + β, in float64. */
function layerNormRef(x: Float32Array, m: number, n: number, gamma: Float32Array, beta: Float32Array): Float64Array {
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    let mean = 0;
    for (let j = 0; j < n; j++) mean += x[i * n + j];
    mean /= n;
    let v = 0;
    for (let j = 0; j < n; j++) v += (x[i * n + j] - mean) ** 2;
    const inv = 1 / Math.sqrt(v / n + 1e-5);
    for (let j = 0; j < n; j++) out[i * n + j] = (x[i * n + j] - mean) * inv * gamma[j] + beta[j];
  }
  return out;
}

/** Asserts the element-wise tolerance and returns the max abs error. */
function expectClose(got: Float32Array, ref: Float64Array, what: string): number {
  expect(got, what).to.be.instanceOf(Float32Array);
  expect(got.length, `${what}: length`).to.equal(ref.length);
  let maxErr = 0;
  for (let i = 0; i < ref.length; i++) {
    const err = Math.abs(got[i] - ref[i]);
    if (!(err <= ATOL + RTOL * Math.abs(ref[i]))) {
      expect.fail(`${what}: element ${i} is ${got[i]}, expected ${ref[i]} (|err| ${err.toExponential(2)})`);
    }
    maxErr = Math.max(maxErr, err);
  }
  return maxErr;
}

/** x rounded to bf16 (round to nearest even), as a number. */
const bf16Word = new Float32Array(1);
const bf16Bits = new Uint32Array(bf16Word.buffer);
function bf16(x: number): number {
  bf16Word[0] = x;
  bf16Bits[0] = ((bf16Bits[0] + 0x7fff + ((bf16Bits[0] >>> 16) & 1)) >>> 16) << 16;
  return bf16Word[0];
}

/** Linear-layer shapes: the demo model's (n, k) and the edges (m = 1, m off the micro-tile,
 *  n and k off the vector width, k = 0, n = 1). */
const LINEAR_SHAPES: Array<[m: number, n: number, k: number]> = [
  [1, 2136, 164], // user-side row, MaskNet first layer
  [13, 356, 712], // MaskNet second layer, m off the 12/6/4-row tiles
  [7, 512, 356], // projection
  [3, 1536, 1536], // DCN width
  [37, 256, 1536], // MLP 1
  [64, 128, 256], // MLP 2
  [250, 4, 128], // heads: n below one vector
  [1, 1, 1],
  [5, 17, 33],
  [12, 31, 15],
  [25, 33, 257], // k crosses the 256 K block
  [241, 47, 9], // m crosses the 240-row block
  [6, 20, 0], // k = 0: result is act(bias)
];

function run(kernels: () => NativeKernels): void {
  describe('linear at precision bf16', () => {
    const caps = () => binding().capabilities().cpu;
    for (const [m, n, k] of LINEAR_SHAPES) {
      it(`m=${m} n=${n} k=${k}: the arithmetic of bf16 operands, within 2^-7·Σ|a·w| (widening kernels: 2^-8) of fp32`, function () {
        if (!caps().bf16) this.skip();
        const roundA = caps().bf16Kernel === 'avx512bf16';
        const bound = roundA ? 128 : 256;
        const rand = rng(m * 7919 + n * 31 + k + 5);
        const a = randomArray(rand, m * k);
        const w = randomArray(rand, n * k, 1 / Math.sqrt(Math.max(k, 1)));
        const bias = randomArray(rand, n, 0.5);
        const got = kernels().linear(a, m, k, w, n, bias, 1, 'bf16');
        expectClose(got, linearRef(roundA ? a.map(bf16) : a, m, k, w.map(bf16), n, bias, 1), `bf16 ${caps().bf16Kernel} linear ${m}x${n}x${k} vs rounded operands`);
        const exact = linearRef(a, m, k, w, n, bias, 1);
        let differs = false;
        for (let i = 0; i < m; i++)
          for (let j = 0; j < n; j++) {
            let sabs = 0;
            for (let p = 0; p < k; p++) sabs += Math.abs(a[i * k + p] * w[j * k + p]);
            const err = Math.abs(got[i * n + j] - exact[i * n + j]);
            if (!(err <= sabs / bound + 1e-5)) expect.fail(`bf16 linear ${m}x${n}x${k}: element ${i},${j} is ${got[i * n + j]}, fp32 reference ${exact[i * n + j]}, beyond ${sabs}/${bound}`);
            differs ||= err > 1e-6;
          }
        if (k >= 5) expect(differs, 'bf16 rounds (differs from the fp32 reference somewhere)').to.equal(true);
      });
    }

    it('runs the bf16 kernel of the ISA path (refused on scalar); auto follows bf16Auto; a bad precision names the field', () => {
      const a = new Float32Array([1, 2]);
      const w = new Float32Array([3, 4]);
      const forced = process.env.ADRANK_CPU_ISA;
      if (forced === 'avx2' && caps().simd === 'avx2') {
        // bf16 weights widened on AVX2, also on a CPU with AVX512-BF16
        expect(caps().bf16Kernel).to.equal('avx2');
        expect(caps().bf16Auto).to.equal(true);
        expect(caps().bf16Reason).to.match(/bf16 weights widened to fp32 on AVX2/);
      }
      if (process.env.ADRANK_CPU_BF16 === 'off') {
        // AVX512-BF16 hidden, as on a CPU without it
        expect(caps().bf16Kernel).to.not.equal('avx512bf16');
        if (caps().simd === 'avx512') {
          // AVX-512 without BF16: bf16 weights widened on AVX-512 (the fp32 path's FMA width), and auto takes them
          expect(caps().bf16Kernel).to.equal('avx512');
          expect(caps().bf16Auto).to.equal(true);
          expect(caps().bf16Reason).to.match(/ADRANK_CPU_BF16=off\): bf16 weights widened to fp32 on AVX-512$/);
          expect(resolvePrecision('auto', 'cpu').precision).to.equal('bf16');
        }
      }
      if (forced === 'scalar') {
        expect(caps().bf16).to.equal(false);
        expect(caps().bf16Kernel).to.equal('');
        expect(caps().bf16Reason).to.match(/the fp32 path in use is scalar, which has no bf16 kernel/);
      }
      expect(caps().bf16).to.equal(caps().bf16Kernel !== '');
      if (!caps().bf16) {
        expect(() => kernels().linear(a, 1, 2, w, 1, null, 0, 'bf16')).to.throw(/expected a CPU with a bf16 kernel/);
        expect(() => resolvePrecision('bf16', 'cpu')).to.throw(EngineError, `precision bf16 requested but ${caps().bf16Reason}`).with.property('code', 'DEVICE');
      } else {
        expect(Array.from(kernels().linear(a, 1, 2, w, 1, null, 0, 'bf16'))).to.deep.equal([11]);
        expect(resolvePrecision('bf16', 'cpu')).to.deep.equal({ precision: 'bf16', reason: `requested, ${caps().bf16Reason}` });
      }
      // the engine's precision: auto picks bf16 where bf16Auto says so, else fp32, and says why
      expect(resolvePrecision('auto', 'cpu')).to.deep.equal({ precision: caps().bf16Auto ? 'bf16' : 'fp32', reason: `auto, ${caps().bf16AutoReason}` });
      if (caps().bf16Auto) expect(caps().bf16).to.equal(true);
      expect(resolvePrecision('fp32', 'cpu')).to.deep.equal({ precision: 'fp32', reason: 'requested' });
      expect(() => resolvePrecision('auto', 'cuda:0')).to.not.throw();
      expect(() => resolvePrecision('fp32', 'cuda:0')).to.throw(EngineError, /expected auto or bf16 for precision on cuda:0/);
      expect(() => kernels().linear(a, 1, 2, w, 1, null, 0, 'fp16' as 'bf16')).to.throw(/expected 'fp32' or 'bf16' for precision/);
    });
  });

  describe('linear', () => {
    for (const [m, n, k] of LINEAR_SHAPES) {
      for (const act of [0, 1]) {
        it(`m=${m} n=${n} k=${k} ${act ? 'bias + ReLU' : 'bias'} matches the float64 reference`, () => {
          const rand = rng(m * 7919 + n * 31 + k + act);
          const a = randomArray(rand, m * k);
          const w = randomArray(rand, n * k, 1 / Math.sqrt(Math.max(k, 1)));
          const bias = randomArray(rand, n, 0.5);
          const ref = linearRef(a, m, k, w, n, bias, act);
          expectClose(kernels().linear(a, m, k, w, n, bias, act), ref, `linear ${m}x${n}x${k} act ${act}`);
        });
      }
    }

    it('without bias (null) adds nothing', () => {
      const rand = rng(11);
      const [m, n, k] = [9, 40, 70];
      const a = randomArray(rand, m * k);
      const w = randomArray(rand, n * k, 0.1);
      expectClose(kernels().linear(a, m, k, w, n, null, 0), linearRef(a, m, k, w, n, null, 0), 'linear no bias');
    });

    it('ReLU clamps negatives to exactly 0 and keeps positives', () => {
      const rand = rng(12);
      const [m, n, k] = [33, 50, 20];
      const a = randomArray(rand, m * k);
      const w = randomArray(rand, n * k, 0.3);
      const bias = randomArray(rand, n, 0.2);
      const plain = kernels().linear(a, m, k, w, n, bias, 0);
      const relu = kernels().linear(a, m, k, w, n, bias, 1);
      let negatives = 0;
      for (let i = 0; i < m * n; i++) {
        if (plain[i] < 0) {
          negatives++;
          expect(relu[i], `element ${i}`).to.equal(0);
        } else {
          expect(relu[i], `element ${i}`).to.equal(plain[i]);
        }
      }
      expect(negatives, 'the case has negatives to clamp').to.be.greaterThan(m * n / 4);
    });

    it('bias is per output column (A = 0 gives every row = bias)', () => {
      const [m, n, k] = [5, 19, 8];
      const bias = Float32Array.from({ length: n }, (_, j) => j - 7.5);
      const w = randomArray(rng(13), n * k);
      const out = kernels().linear(new Float32Array(m * k), m, k, w, n, bias, 0);
      for (let i = 0; i < m; i++) expect(Array.from(out.subarray(i * n, (i + 1) * n)), `row ${i}`).to.deep.equal(Array.from(bias));
    });

    it('computes A · Wᵀ with W as [out × in] (a known 2×3 case)', () => {
      // A = [[1, 2], [3, 4]], W = [[1, 0], [0, 1], [1, 1]] → [[1, 2, 3], [3, 4, 7]] + bias
      const out = kernels().linear(Float32Array.of(1, 2, 3, 4), 2, 2, Float32Array.of(1, 0, 0, 1, 1, 1), 3, Float32Array.of(10, 20, 30), 0);
      expect(Array.from(out)).to.deep.equal([11, 22, 33, 13, 24, 37]);
    });

    it('reads typed arrays that are views at a byte offset', () => {
      const rand = rng(14);
      const [m, n, k] = [4, 21, 18];
      const aBuf = randomArray(rand, m * k + 5);
      const wBuf = randomArray(rand, n * k + 3, 0.2);
      const bBuf = randomArray(rand, n + 1);
      const a = aBuf.subarray(5);
      const w = wBuf.subarray(3);
      const bias = bBuf.subarray(1);
      expectClose(kernels().linear(a, m, k, w, n, bias, 0), linearRef(a, m, k, w, n, bias, 0), 'linear on views');
    });

    it('a row gives bitwise the same result alone (m = 1) as inside a batch split over threads', () => {
      // Each output element is one fixed-order FMA chain over k, whatever the row tile, task split or
      // thread count, so batching candidates never changes a score.
      const rand = rng(15);
      const [m, n, k] = [300, 520, 300];
      const a = randomArray(rand, m * k);
      const w = randomArray(rand, n * k, 0.06);
      const bias = randomArray(rand, n);
      const batch = kernels().linear(a, m, k, w, n, bias, 1);
      expect(Array.from(kernels().linear(a, m, k, w, n, bias, 1)), 'repeatable').to.deep.equal(Array.from(batch));
      for (const i of [0, 1, 11, 12, 13, 239, 240, 299]) {
        const row = kernels().linear(a.slice(i * k, (i + 1) * k), 1, k, w, n, bias, 1);
        expect(Array.from(row), `row ${i}`).to.deep.equal(Array.from(batch.subarray(i * n, (i + 1) * n)));
      }
    });
  });

  describe('crossLayer', () => {
    for (const [m, n] of [[1, 1536], [13, 64], [100, 17], [3, 300]] as const) {
      it(`x0 ⊙ (xl·Wᵀ + b) + xl, m=${m} n=${n}`, () => {
        const rand = rng(m * 131 + n);
        const x0 = randomArray(rand, m * n);
        const xl = randomArray(rand, m * n);
        const w = randomArray(rand, n * n, 1 / Math.sqrt(n));
        const b = randomArray(rand, n, 0.5);
        expectClose(kernels().crossLayer(x0, xl, m, w, b), crossRef(x0, xl, m, n, w, b), `cross ${m}x${n}`);
      });
    }

    it('is not (x0 ⊙ xl)·Wᵀ nor missing the residual: W = 0 gives x0 ⊙ b + xl', () => {
      const rand = rng(21);
      const [m, n] = [3, 10];
      const x0 = randomArray(rand, m * n);
      const xl = randomArray(rand, m * n);
      const b = randomArray(rand, n);
      const out = kernels().crossLayer(x0, xl, m, new Float32Array(n * n), b);
      const ref = new Float64Array(m * n).map((_, i) => x0[i] * b[i % n] + xl[i]);
      expectClose(out, ref, 'cross with W = 0');
    });
  });

  describe('layerNorm', () => {
    for (const [m, n] of [[1, 1536], [7, 512], [33, 3], [2, 1]] as const) {
      it(`(x − mean)/√(var + 1e-5) · γ + β, m=${m} n=${n}`, () => {
        const rand = rng(m * 17 + n);
        const x = new Float32Array(m * n).map(() => rand(3) + 1.5); // nonzero mean
        const gamma = randomArray(rand, n);
        const beta = randomArray(rand, n);
        expectClose(kernels().layerNorm(x, m, n, gamma, beta), layerNormRef(x, m, n, gamma, beta), `layerNorm ${m}x${n}`);
      });
    }
  });
}

describe('20 kernels-cpu', () => {
  const kernels = (): NativeKernels => binding().kernels;

  /** Runs scripts/<name> with `command` (bash, python3); its exit status and stdout + stderr.
   *  Without this process's LD_PRELOAD: the scripts build and run their own binaries, which never
   *  load the addon, and the sanitizer runtimes scripts/asan-check.sh preloads into node would be
   *  preloaded into qemu-user too (the emulated check was then killed for memory). */
  const script = (command: string, name: string, args: string[] = [], env: Record<string, string> = {}) => {
    const { LD_PRELOAD: _preloaded, ...inherited } = process.env;
    const r = spawnSync(command, [fileURLToPath(new URL(`../scripts/${name}`, import.meta.url)), ...args], { encoding: 'utf8', env: { ...inherited, ...env } });
    return { status: r.status, out: `${r.stdout}${r.stderr}` };
  };

  // The standalone harness (native/kernels/cpu/harness/kernel_check.cc, built with g++ -O3): every
  // ISA path and bf16 kernel against a scalar reference at every m from 1 to 64 (and 96, 128, 129,
  // 160, around the stream order's bound) with odd n and k, bitwise equal across thread counts and
  // between the stream and the blocked order; the GEMM task split and the forward's row chunks (their
  // balance, which no answer shows); the pool's checks at both spin settings.
  it('the standalone kernel check passes (scripts/kernel-check.sh --quick)', function () {
    if (isChild) this.skip(); // once, in the parent: it covers every path itself
    this.timeout(600_000);
    const { status, out } = script('bash', 'kernel-check.sh', ['--quick']);
    expect(status, out).to.equal(0);
    expect(out).to.match(/task splits checked/);
    expect(out).to.match(/forward row chunks checked/);
    expect(out).to.match(/PASSED: 0 failure\(s\)/);
  });

  // What no test of the results can see: a micro-kernel whose accumulators spill to the stack
  // (GCC 12 once stored the AVX2 bf16 kernel's on every pair of k: 1.2–1.3× slower). The script
  // reads the compiled assembly of every micro-kernel's inner FMA loop (GCC only; it says so
  // otherwise).
  it('every GEMM micro-kernel keeps its inner loop off the stack (scripts/kernel-spills.py)', function () {
    if (isChild) this.skip();
    this.timeout(300_000);
    const { status, out } = script('python3', 'kernel-spills.py');
    if (/skipped/.test(out)) {
      console.log(`      (${out.trim()})`);
      this.skip();
    }
    expect(status, out).to.equal(0);
    expect(out).to.match(/kernel-spills: \d+ micro-kernel instances, 0 with stack accesses/);
  });

  // The same check on an AVX2-only CPU as its CPUID describes it (qemu-user's EPYC-Milan, a Zen 3;
  // KERNEL_CHECK_CPU in scripts/kernel-check.sh): the dispatch must take the avx2 paths and the avx2
  // bf16 kernel by itself, not by ADRANK_CPU_ISA, and must never reach an AVX-512 instruction
  // (qemu does not emulate AVX-512: it would stop the run with SIGILL). .ci/run installs qemu-user.
  it('the kernel check passes on an emulated AVX2-only CPU (qemu-user, -cpu EPYC-Milan)', function () {
    if (isChild) this.skip();
    if (spawnSync('qemu-x86_64', ['-version']).status !== 0) {
      console.log('      (skipped: no qemu-x86_64 here; Debian: apt-get install qemu-user)');
      this.skip();
    }
    this.timeout(900_000);
    const { status, out } = script('bash', 'kernel-check.sh', ['--quick'], { KERNEL_CHECK_CPU: 'EPYC-Milan', KERNEL_CHECK_DIR: `${tmpdir()}/adrank-kernel-check-emulated` });
    expect(status, out).to.equal(0);
    expect(out).to.match(/gemm_isa\(\) = avx2; available: avx2 scalar\n/);
    expect(out).to.match(/gemm bf16 in use: avx2 \(this CPU has no AVX512-BF16: bf16 weights widened to fp32 on AVX2\)/);
    expect(out).to.not.match(/avx512/);
    expect(out).to.match(/PASSED: 0 failure\(s\)/);
  });

  it('reports the SIMD path in use (honouring ADRANK_CPU_ISA in a child)', () => {
    const simd = binding().capabilities().cpu.simd;
    expect(ISAS).to.include(simd);
    const forced = process.env.ADRANK_CPU_ISA;
    const best = process.env.ADRANK_KERNEL_TEST_BEST as (typeof ISAS)[number] | undefined;
    if (isChild && forced && best) {
      // The forced path, or the best one when the CPU cannot run the forced one.
      const want = ISAS[Math.min(ISAS.indexOf(forced as (typeof ISAS)[number]), ISAS.indexOf(best))];
      expect(simd).to.equal(want);
    }
  });

  run(kernels);

  if (!isChild) {
    describe('the other ISA paths (child process each)', () => {
      const children: [string, Record<string, string>][] = [
        ['ADRANK_CPU_ISA=avx2', { ADRANK_CPU_ISA: 'avx2' }],
        ['ADRANK_CPU_ISA=scalar', { ADRANK_CPU_ISA: 'scalar' }],
        ['ADRANK_CPU_BF16=off (AVX-512 without BF16 on an AVX-512 machine)', { ADRANK_CPU_BF16: 'off' }],
      ];
      for (const [label, env] of children) {
        it(`passes every check above with ${label}`, function () {
          this.timeout(180_000);
          const r = mochaChild(fileURLToPath(import.meta.url), {
            ...env,
            ADRANK_KERNEL_TEST_CHILD: '1',
            ADRANK_KERNEL_TEST_BEST: binding().capabilities().cpu.simd,
          }, 60_000);
          expect(r.status, `child with ${label}:\n${r.stdout}\n${r.stderr}`).to.equal(0);
          expect(r.stdout).to.match(/\d+ passing/);
        });
      }
    });
  }
});
