/**
 * Faults of the CUDA backend itself, injected through a test-hooks build of the addon with CUDA
 * (build-cuda-test/, made by scripts/gpu-kit.sh; docs/cuda.md "Errors"):
 * - a graph capture that fails part way marks that request shape eager-only, and the answers stay
 *   exactly those of the eager run;
 * - a request whose device work outlasts the watchdog (ADRANK_CUDA_WATCHDOG_MS) fails as a sticky
 *   "CUDA stream hung" error after the limit, its stream is abandoned, the other streams keep
 *   serving, the late completion does no harm, and disposing the engine does not wait for the work.
 *
 * Skipped, saying why, without that addon or a usable GPU (CI has neither); scripts/gpu-check.sh
 * runs it on a GPU machine.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'chai';
import { Engine, EngineError } from '../src/engine/index.js';
import { loadBinding } from '../src/engine/binding.js';
import type { NativeBinding, NativeResult } from '../src/engine/binding.js';
import { makeRandomConfig } from '../src/model/demo.js';
import { demoLoaded, randomRequest, Rng } from './support/index.js';

const hooksAddon = process.env.ADRANK_CUDA_HOOKS_ADDON ?? join(process.cwd(), 'build-cuda-test', 'Release', 'adrank.node');

function why(): string | undefined {
  if (!existsSync(hooksAddon)) return `no CUDA test-hooks addon at ${hooksAddon} (scripts/gpu-kit.sh builds it)`;
  const c = loadBinding(hooksAddon).capabilities().cuda;
  if (!c.compiled) return 'the test-hooks addon was built without CUDA';
  if (!c.usable) return `no usable CUDA device (${c.reason})`;
  return undefined;
}

/** The same answer: winners and counts exactly; scores and prices to 1e-6 (eager and graph runs
 *  launch the same kernels; the eligible rows' order may differ, each row's arithmetic does not). */
function same(a: NativeResult, b: NativeResult): void {
  expect(Array.from(b.adIds)).to.deep.equal(Array.from(a.adIds));
  expect(b.counts).to.deep.equal(a.counts);
  b.scores.forEach((v, i) => expect(v, `score ${i}`).to.be.closeTo(a.scores[i], 1e-6));
  expect(b.prices.length).to.equal(a.prices.length);
  b.prices.forEach((v, i) => expect(v, `price ${i}`).to.be.closeTo(a.prices[i], 1e-6));
}

/** An engine on cuda:0 built with `env` set for its construction (the backend reads it then). */
function cudaEngine(hooks: NativeBinding, env: Record<string, string>): Engine {
  const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  Object.assign(process.env, env);
  try {
    const config = makeRandomConfig(new Rng(5));
    return Engine.fromBundle(demoLoaded({ ads: 3000, seed: 5, config }), { device: 'cuda:0', binding: hooks });
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

describe('22 CUDA backend faults (test-hooks build with CUDA)', function () {
  this.timeout(120_000);
  let hooks: NativeBinding;
  before(function () {
    const reason = why();
    if (reason) {
      console.log(`      [22.cuda-faults] skipped: ${reason}`);
      this.skip();
    }
    hooks = loadBinding(hooksAddon);
  });

  it('a failed graph capture: that shape runs eagerly from then on, with the same answers', async () => {
    const engine = cudaEngine(hooks, { ADRANK_CUDA_STREAMS: '1', ADRANK_CUDA_GRAPHS: '1' });
    try {
      const rng = new Rng(9);
      const reqA = randomRequest(rng, engine.bundle, { candidates: 600, k: 20, cap: 2 });
      const reqB = { ...reqA, k: 7 }; // another shape (the round-0 size differs)
      const first = await engine.rank(reqA); // eager (warm-up of the shape)
      expect(engine.deviceStats()).to.deep.equal({ graphs: 0, captureFailures: 0, eagerOnlyKeys: 0, lostStreams: 0, streams: 1 });

      engine.injectBackendFault('capture', 1);
      same(first, await engine.rank(reqA)); // the capture fails part way; the request runs eagerly
      expect(engine.deviceStats()).to.include({ graphs: 0, captureFailures: 1, eagerOnlyKeys: 1 });
      same(first, await engine.rank(reqA)); // eager for good: no second capture is tried
      expect(engine.deviceStats()).to.include({ graphs: 0, captureFailures: 1, eagerOnlyKeys: 1 });

      // the stream is out of capture mode: another shape captures and replays as usual
      const b1 = await engine.rank(reqB);
      same(b1, await engine.rank(reqB));
      same(b1, await engine.rank(reqB));
      expect(engine.deviceStats()).to.include({ graphs: 1, captureFailures: 1, eagerOnlyKeys: 1 });
    } finally {
      engine.dispose();
    }
  });

  it('the watchdog: work past the limit fails as a sticky "CUDA stream hung", the stream is abandoned, the rest serve', async () => {
    const limitMs = 400;
    const spinMs = 2500;
    const engine = cudaEngine(hooks, { ADRANK_CUDA_STREAMS: '2', ADRANK_CUDA_WATCHDOG_MS: String(limitMs) });
    try {
      const rng = new Rng(10);
      const req = randomRequest(rng, engine.bundle, { candidates: 500, k: 10 });
      const before = await engine.rank(req);

      engine.injectBackendFault('hang', spinMs);
      const t0 = Date.now();
      const err = await engine.rank(req).then(
        () => undefined,
        (e: unknown) => e,
      );
      const waited = Date.now() - t0;
      expect(err, 'the hung request fails').to.be.instanceOf(EngineError);
      expect((err as EngineError).message).to.match(/^CUDA stream hung: cuda:0 did not finish a request within 400 ms/);
      expect((err as EngineError).sticky, 'a hung device is failed over like a poisoned context').to.equal(true);
      expect(waited).to.be.at.least(limitMs - 10).and.below(spinMs - 500);
      expect(engine.deviceStats().lostStreams).to.equal(1);

      // the other stream serves meanwhile (the hung kernel holds one SM), with the same answer
      same(before, await engine.rank(req));
      // the late completion fires on live state; the engine is unharmed
      await new Promise((r) => setTimeout(r, spinMs));
      same(before, await engine.rank(req));
      expect(engine.deviceStats().lostStreams).to.equal(1);
    } finally {
      const t = Date.now();
      engine.dispose(); // frees nothing on the device (a hung stream's buffers may still be in use)
      expect(Date.now() - t, 'dispose does not wait for the device').to.be.below(1000);
    }
  });

  it('with every stream lost, requests fail at once instead of waiting for a stream forever', async () => {
    const engine = cudaEngine(hooks, { ADRANK_CUDA_STREAMS: '1', ADRANK_CUDA_WATCHDOG_MS: '200' });
    try {
      const rng = new Rng(11);
      const req = randomRequest(rng, engine.bundle, { candidates: 300, k: 5 });
      await engine.rank(req);
      engine.injectBackendFault('hang', 1500);
      await engine.rank(req).then(
        () => expect.fail('the hung request succeeded'),
        (e: EngineError) => expect(e.message).to.match(/^CUDA stream hung: cuda:0 did not finish/),
      );
      const t0 = Date.now();
      await engine.rank(req).then(
        () => expect.fail('a request ran with no stream left'),
        (e: EngineError) => {
          expect(e.message).to.match(/^CUDA stream hung: every stream of cuda:0 holds work that never finished/);
          expect(e.sticky).to.equal(true);
        },
      );
      expect(Date.now() - t0).to.be.below(150);
      await new Promise((r) => setTimeout(r, 1500)); // let the spin end before the next test uses the GPU
    } finally {
      engine.dispose();
    }
  });
});
