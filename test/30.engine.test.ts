/**
 * The engine (CPU backend) against the float64 reference (test/reference), layer by layer.
 *
 * Tolerance: |engine − reference| ≤ rtol·|ref| + atol with rtol = 1e-4 and, per field,
 * atol = 1e-4 · rms(reference field). The engine computes in fp32: a value that is the sum of
 * many terms of a vector's typical size and happens to land near 0 carries an absolute error of
 * the order of eps32 · √n · (that typical size), not of itself, so a purely relative test would
 * fail on exactly-correct arithmetic. Scaling atol with the field's rms keeps the test at
 * "1e-4 of the layer's scale" for every element (a wrong index, weight or formula moves values
 * by O(rms)); a floor of 1e-7 covers all-zero fields (empty sequence, zero target attention).
 */
import { expect } from 'chai';
import { Engine, EngineError } from '../src/engine/index.js';
import type { NativeExplain, NativeResult } from '../src/engine/binding.js';
import { adRows, type LoadedBundle } from '../src/model/bundle.js';
import { makeDemoBundle, makeDemoConfig, makeRandomConfig, type RandomConfigOptions } from '../src/model/demo.js';
import type { EngineRequest } from '../src/features/feature-bundle.js';
import { candidate, RefModel, userSide } from './reference/model.js';
import { addonBuilt, expectClose, randomRequest, Rng, toLoaded, type RequestOptions } from './support/index.js';

const RTOL = 1e-4;

function close(field: string, got: ArrayLike<number>, want: ArrayLike<number>): void {
  let ss = 0;
  for (let i = 0; i < want.length; i++) ss += want[i] * want[i];
  const rms = want.length ? Math.sqrt(ss / want.length) : 0;
  expectClose(field, got, want, RTOL, Math.max(1e-4 * rms, 1e-7));
}

/** Known unique candidate rows in order of first appearance (docs/funnel.md intake). */
function knownRows(b: LoadedBundle, r: EngineRequest): number[] {
  const seen = new Set<number>();
  const out: number[] = [];
  for (const id of r.candidates) {
    const row = adRows(b).get(BigInt(id));
    if (row !== undefined && !seen.has(row)) {
      seen.add(row);
      out.push(row);
    }
  }
  return out;
}

/** Checks every explain() field against the float64 reference. */
async function checkForward(engine: Engine, m: RefModel, r: EngineRequest, label: string): Promise<NativeExplain> {
  const ex = await engine.explain(r);
  const b = m.bundle;
  const rows = knownRows(b, r);
  expect(Array.from(ex.rows), `${label}: rows`).to.deep.equal(rows);
  const us = userSide(m, r);
  close(`${label}: user`, ex.user, us.u);
  const H = new Float64Array(us.H.length * m.c.sequence.dim);
  us.H.forEach((h, j) => H.set(h, j * m.c.sequence.dim));
  close(`${label}: sequence`, ex.sequence, H);
  close(`${label}: query`, ex.query, us.query);
  const cands = rows.map((row) => candidate(m, us, r, row));
  const field = (f: (c: (typeof cands)[number]) => ArrayLike<number> | number) => {
    const parts = cands.map((c) => {
      const v = f(c);
      return typeof v === 'number' ? [v] : Array.from(v);
    });
    return Float64Array.from(parts.flat());
  };
  close(`${label}: ad`, ex.ad, field((c) => c.ad));
  close(`${label}: targetAttention`, ex.targetAttention, field((c) => c.targetAttention));
  close(`${label}: input`, ex.input, field((c) => c.input));
  close(`${label}: masknet`, ex.masknet, field((c) => c.masknet));
  close(`${label}: cross`, ex.cross, field((c) => c.cross));
  close(`${label}: hidden`, ex.hidden, field((c) => c.hidden));
  close(`${label}: logits`, ex.logits, field((c) => c.logits));
  close(`${label}: probs`, ex.probs, field((c) => c.probs));
  close(`${label}: utility`, ex.utility, field((c) => c.utility));
  close(`${label}: retrievalScores`, ex.retrievalScores, field((c) => c.retrievalScore));
  return ex;
}

/** Requests that cover the edge cases: empty sequence, empty sparse lists, full/over-long
 *  sequences, task-weight overrides, every surface, unknown and duplicate candidates. */
function requestsFor(b: LoadedBundle, rng: Rng, candidates: number): [string, EngineRequest][] {
  const c = b.config;
  const opts: [string, RequestOptions][] = [
    ['empty sequence, empty sparse lists', { seqLen: 0, sparseLen: 0, candidates }],
    ['full sequence (max_len), overridden task weights', { seqLen: c.sequence.max_len, taskWeights: true, candidates }],
    ['one-item sequence, unknown + duplicate ids', { seqLen: 1, candidates, unknown: 0.2, duplicate: 0.2 }],
  ];
  const out = opts.map(([label, o]) => [label, randomRequest(rng, b, o)] as [string, EngineRequest]);
  for (let s = 0; s < c.surfaces.length; s++) {
    const r = randomRequest(rng, b, { candidates });
    r.surface = s;
    out.push([`surface ${c.surfaces[s]}`, r]);
  }
  return out;
}

describe('30 engine (CPU) vs the float64 reference', function () {
  let engine: Engine | undefined;
  before(function () {
    if (!addonBuilt()) this.skip();
  });
  afterEach(() => {
    engine?.dispose();
    engine = undefined;
  });

  it('demo config: every layer of the forward, on every kind of request', async () => {
    const config = makeDemoConfig();
    const b = toLoaded(config, makeDemoBundle({ config, ads: 64, seed: 30 }).tensors);
    engine = Engine.fromBundle(b, { device: 'cpu' });
    expect(engine.backend).to.equal('cpu');
    const m = new RefModel(b);
    for (const [label, r] of requestsFor(b, new Rng(31), 6)) await checkForward(engine, m, r, `demo, ${label}`);
  });

  const randomCases: [string, RandomConfigOptions, 'F32' | 'BF16'][] = [
    ['full-rank DCN, no sequence layers', { dcnRank: 0, seqLayers: 0 }, 'F32'],
    ['low-rank DCN (r=1), one sequence layer', { dcnRank: 1, seqLayers: 1 }, 'F32'],
    ['low-rank DCN (r=3), two sequence layers, 3 surfaces', { dcnRank: 3, seqLayers: 2, surfaces: 3 }, 'F32'],
    ['one MaskNet block, 4 tasks, BF16 retrieval table', { masknetBlocks: 1, tasks: 4, seqLayers: 1 }, 'BF16'],
    ['three MaskNet blocks, full rank, two sequence layers', { masknetBlocks: 3, dcnRank: 0, seqLayers: 2, surfaces: 2 }, 'F32'],
    ['random everything', {}, 'F32'],
  ];
  randomCases.forEach(([label, opts, retrievalDtype], i) => {
    it(`random config ${i}: ${label}`, async () => {
      const rng = new Rng(300 + i);
      const config = makeRandomConfig(rng, opts);
      const b = toLoaded(config, makeDemoBundle({ config, ads: 50, seed: 300 + i, retrievalDtype }).tensors);
      engine = Engine.fromBundle(b, { device: 'cpu' });
      const m = new RefModel(b);
      for (const [l, r] of requestsFor(b, rng, 12)) await checkForward(engine, m, r, `${label}, ${l}`);
    });
  });

  it('64 overlapping rank() calls give the serial results', async () => {
    const rng = new Rng(64);
    const config = makeRandomConfig(rng, { seqLayers: 1, dcnRank: 2 });
    const b = toLoaded(config, makeDemoBundle({ config, ads: 200, seed: 64 }).tensors);
    engine = Engine.fromBundle(b, { device: 'cpu', threads: 2 });
    const requests = Array.from({ length: 64 }, () => randomRequest(rng, b, { candidates: rng.int(1, 100), k: rng.int(1, 20) }));
    const serial: NativeResult[] = [];
    for (const r of requests) serial.push(await engine.rank(r));
    const parallel = await Promise.all(requests.map((r) => engine!.rank(r)));
    parallel.forEach((p, i) => {
      const s = serial[i];
      expect(Array.from(p.adIds), `request ${i} ids`).to.deep.equal(Array.from(s.adIds));
      expect(Array.from(p.scores), `request ${i} scores`).to.deep.equal(Array.from(s.scores));
      expect(Array.from(p.probs), `request ${i} probs`).to.deep.equal(Array.from(s.probs));
      expect(Array.from(p.prices), `request ${i} prices`).to.deep.equal(Array.from(s.prices));
      expect(p.counts, `request ${i} counts`).to.deep.equal(s.counts);
    });
    expect(engine.inflight()).to.equal(0);
  });

  it('cpuSpinUs 0, 50 and 5,000 (threads sleep, or spin, between the steps of a request): the same answers, overlapping calls too; out of range is refused', async () => {
    const config = makeDemoConfig();
    const b = toLoaded(config, makeDemoBundle({ config, ads: 300, seed: 66 }).tensors);
    const rng = new Rng(66);
    // 100 to 300 candidates: the demo's 1536-wide cross layers are split over both threads
    const requests = Array.from({ length: 24 }, () => randomRequest(rng, b, { candidates: rng.int(100, 300), k: rng.int(1, 20) }));
    const answers: NativeResult[][] = [];
    for (const cpuSpinUs of [0, 50, 5000]) {
      engine = Engine.fromBundle(b, { device: 'cpu', threads: 2, cpuSpinUs });
      const serial: NativeResult[] = [];
      for (const r of requests.slice(0, 8)) serial.push(await engine.rank(r));
      const overlapping = await Promise.all(requests.map((r) => engine!.rank(r)));
      overlapping.slice(0, 8).forEach((p, i) => expect(Array.from(p.probs), `spin ${cpuSpinUs}: request ${i}`).to.deep.equal(Array.from(serial[i].probs)));
      answers.push(overlapping);
      engine.dispose();
      engine = undefined;
    }
    for (let i = 0; i < requests.length; i++)
      for (const other of [1, 2]) {
        expect(Array.from(answers[other][i].adIds), `request ${i} ids`).to.deep.equal(Array.from(answers[0][i].adIds));
        expect(Array.from(answers[other][i].probs), `request ${i} probs`).to.deep.equal(Array.from(answers[0][i].probs));
      }
    for (const bad of [-1, 10001, 1.5])
      expect(() => Engine.fromBundle(b, { device: 'cpu', cpuSpinUs: bad }), `cpuSpinUs ${bad}`).to.throw(/cpuSpinUs/);
  });

  it('a call still queued past its deadline is dropped unrun (DEADLINE); a later deadline runs', async () => {
    const rng = new Rng(65);
    const config = makeRandomConfig(rng, { seqLayers: 1 });
    const b = toLoaded(config, makeDemoBundle({ config, ads: 200, seed: 65 }).tensors);
    engine = Engine.fromBundle(b, { device: 'cpu', threads: 1 });
    const r = randomRequest(rng, b, { candidates: 50, k: 5 });
    const past = await engine.rank(r, Date.now() - 1).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(past).to.be.instanceOf(EngineError);
    expect((past as EngineError).code).to.equal('DEADLINE');
    expect((past as Error).message).to.match(/^deadline exceeded: .* dropped before it ran/);
    for (const op of ['retrieve', 'retrieveAndRank'] as const) {
      const e = await engine[op]({ ...r, candidates: new BigInt64Array(0), retrieveCount: op === 'retrieve' ? 0 : 20 }, Date.now() - 1).catch((x: EngineError) => x);
      expect((e as EngineError).code, op).to.equal('DEADLINE');
    }
    const ok = await engine.rank(r, Date.now() + 60_000);
    expect(Array.from(ok.adIds)).to.deep.equal(Array.from((await engine.rank(r)).adIds));
    expect(engine.inflight()).to.equal(0);
  });
});
