/**
 * Parity with the PyTorch reference (scripts/reference): for the demo config and small random
 * configs, `python3 -m scripts.reference.cli make-case` writes a bundle from a freshly initialised
 * torch module plus random requests and the reference's float64 outputs. Then:
 *  - the bundle's tensors are exactly expectedTensors(config, N) and loadBundle accepts it;
 *  - the TypeScript float64 reference (test/reference) computes the same function (1e-9);
 *  - the engine (device from ADRANK_PARITY_DEVICE, default cpu) matches: explain() per
 *    candidate, rank(), retrieve(), retrieveAndRank() — ids, counts, scores, prices.
 *
 * Tolerances. cpu (fp32): |got − want| ≤ atol + rtol·|want| with rtol 1e-4 and atol 1e-6 for
 * probabilities/utilities/prices (atol covers probabilities near 0, where fp32 sigmoid has an
 * absolute error ~1e-7), atol 1e-5 for retrieval scores and intermediate vectors (entries near
 * 0); winner ids identical except where the two ads' scores are tied within that tolerance.
 * bf16 (cuda, and cpu at precision bf16; test/support/bf16.ts, docs/cpu-bf16.md): probabilities
 * within 2e-2 absolute, value Σ w p within 2e-2·Σ|w|, Rank / RetrieveAndRank winners the
 * reference's except swaps of ads whose reference utilities are within 2e-2·Σ|w|·bid, Retrieve
 * top-K overlap ≥ 0.98 over all requests of a config, counts other than `capped` exact. On cpu the engine part runs at both precisions, fp32 and (where the CPU has
 * AVX512-BF16) bf16; on cuda at bf16.
 *
 * Skips (with a console line saying why) when no python with torch is found (CI installs
 * python3-torch), and the engine part when the addon is not built or the device is not usable.
 * Environment: ADRANK_PYTHON, ADRANK_PARITY_DEVICE (cpu | cuda | cuda:N), ADRANK_PARITY_PRECISION
 * (fp32 | bf16: only that one on cpu), ADRANK_PARITY_RANDOM
 * (random configs, default 6), ADRANK_PARITY_CASES_DIR (pre-generated cases, no python needed).
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { loadBundle, type LoadedBundle } from '../src/model/bundle.js';
import { expectedTensors, type ModelConfig } from '../src/model/config.js';
import { capabilities, Engine, type NativeExplain, type NativeResult } from '../src/engine/index.js';
import type { EngineRequest, RankingMode } from '../src/features/feature-bundle.js';
import { RefModel } from './reference/model.js';
import { applyAdState, defaultAdState, modelScorers, refRank, refRetrieve, refRetrieveAndRank, type AdState, type RankScore, type RankScorer, type RefResult } from './reference/funnel.js';
import { addonBuilt } from './support/index.js';
import { BF16_PROB_ATOL, bf16WinnersAgree } from './support/bf16.js';
import { findTorchPython, runPythonModule } from './support/python.js';

const DEVICE = process.env.ADRANK_PARITY_DEVICE ?? 'cpu';
const CUDA = DEVICE.startsWith('cuda');
type Precision = 'fp32' | 'bf16';
const PRECISIONS: Precision[] = CUDA ? ['bf16'] : process.env.ADRANK_PARITY_PRECISION ? [process.env.ADRANK_PARITY_PRECISION as Precision] : ['fp32', 'bf16'];
/** Optional: a directory of pre-generated `<kind>-<seed>/{bundle.safetensors,cases.json}` (made
 *  with make-case elsewhere), for machines without torch, e.g. a GPU box. */
const CASES_DIR = process.env.ADRANK_PARITY_CASES_DIR;
const RANDOM_SEEDS = Number(process.env.ADRANK_PARITY_RANDOM ?? 6);
/** demo config once; random configs with seeds 1..N (the seed picks sequence layers 0/1/2,
 *  full/low-rank DCN, F32/BF16 ads.retrieval, sparse field counts: see cases.py) */
const SUITES = [{ kind: 'demo', seed: 7 }, ...Array.from({ length: RANDOM_SEEDS }, (_, i) => ({ kind: 'random', seed: i + 1 }))];

interface Tol {
  rtol: number;
  atol: number;
}
const CPU_TOL = { prob: { rtol: 1e-4, atol: 1e-6 }, score: { rtol: 1e-4, atol: 1e-5 }, vec: { rtol: 1e-4, atol: 1e-5 } };
const REF_TOL: Tol = { rtol: 1e-9, atol: 1e-10 };
const BF16_MIN_OVERLAP = 0.98;

// ---- the JSON written by scripts/reference/cases.py ------------------------------------------

type RequestJson = Omit<EngineRequest, 'taskWeights' | 'userSparse' | 'seqItems' | 'candidates' | 'excludedAdvertisers' | 'excludedAds'> & {
  taskWeights: number[] | null;
  userSparse: string[][];
  seqItems: string[];
  candidates: string[];
  excludedAdvertisers: string[];
  excludedAds: string[];
};
interface WinnersJson {
  adIds: string[];
  advertisers: string[];
  rows: number[];
  scores: number[];
  probs: number[][];
  prices: number[];
  counts: Record<string, number>;
  retrieved: number;
}
interface CaseJson {
  name: string;
  request: RequestJson;
  explain: { rows: number[]; bid: number[]; weights: number[]; probs: number[]; logits: number[]; utility: number[]; value: number[]; retrievalScores: number[]; user: number[]; sequence: number[]; query: number[] };
  rank: WinnersJson;
  retrieve: WinnersJson;
  retrieveAndRank: WinnersJson & { scored: { rows: number[]; utility: number[]; value: number[]; probs: number[] } };
  /** RetrieveAndRank with the caller's candidates blended in (docs/funnel.md "Blended retrieval
   *  sources"): the request is `request` with these candidates, quota and retrieve count */
  retrieveAndRankBlended: CaseJson['retrieveAndRank'] & {
    candidates: string[];
    candidateQuota: number;
    retrieveCount: number;
    sources: number[];
    sourceCounts: Record<string, number>[];
  };
}
interface CasesJson {
  seed: number;
  kind: string;
  config: ModelConfig;
  numAds: number;
  adState: { ids: string[]; active: number[]; inBudget: number[]; pacingRate: number[] };
  cases: CaseJson[];
}

const big = (xs: string[]) => BigInt64Array.from(xs, (x) => BigInt(x));

/**
 * cases.json request → EngineRequest. The engine takes what the front end hands it: a sequence
 * already cut to max_len (most recent first, so the first max_len) and, for Retrieve and
 * RetrieveAndRank, no candidate ids. `python` keeps the request as the reference saw it.
 */
/** The blended RetrieveAndRank request of a case, as `toEngineRequest` shapes it. */
function blendedRequest(c: CaseJson, maxLen = Infinity): EngineRequest {
  const bl = c.retrieveAndRankBlended;
  return { ...toEngineRequest(c.request, 'python', maxLen), candidates: big(bl.candidates), candidateQuota: bl.candidateQuota, retrieveCount: bl.retrieveCount };
}

function toEngineRequest(j: RequestJson, op: 'python' | 'rank' | 'explain' | 'retrieve' | 'retrieveAndRank', maxLen = Infinity): EngineRequest {
  const n = Math.min(j.seqItems.length, maxLen);
  return {
    ...j,
    mode: j.mode as RankingMode,
    taskWeights: j.taskWeights ? Float32Array.from(j.taskWeights) : undefined,
    userDense: Float32Array.from(j.userDense),
    userEmbedding: Float32Array.from(j.userEmbedding),
    targeting: Uint32Array.from(j.targeting),
    userSparse: j.userSparse.map(big),
    seqItems: big(j.seqItems.slice(0, n)),
    seqActions: Uint32Array.from(j.seqActions.slice(0, n)),
    candidates: op === 'retrieve' || op === 'retrieveAndRank' ? new BigInt64Array(0) : big(j.candidates),
    excludedAdvertisers: big(j.excludedAdvertisers),
    excludedAds: big(j.excludedAds),
  };
}

// ---- comparisons ------------------------------------------------------------------------------

/** |got − want| ≤ atol_i + rtol·|want| elementwise (atol may be per element); names the worst. */
function close(field: string, got: ArrayLike<number>, want: ArrayLike<number>, rtol: number, atol: number | ((i: number) => number)): void {
  expect(got.length, `${field}: length`).to.equal(want.length);
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < want.length; i++) {
    const a = typeof atol === 'number' ? atol : atol(i);
    const excess = Math.abs(got[i] - want[i]) - (a + rtol * Math.abs(want[i]));
    if (!(excess <= worstExcess)) {
      worst = i;
      worstExcess = Number.isNaN(excess) ? Infinity : excess;
    }
  }
  if (worst >= 0) expect.fail(`${field}[${worst}]: got ${got[worst]}, want ${want[worst]} (rtol ${rtol}, atol ${typeof atol === 'number' ? atol : atol(worst)})`);
}

const near = (a: number, b: number, t: Tol) => Math.abs(a - b) <= t.atol + t.rtol * Math.abs(b);

/** Winner ids equal position by position, except where the two ads' scores tie within `t`.
 *  Returns the tied positions (prices there depend on which of the tied ads came first). */
function sameWinners(field: string, gotIds: ArrayLike<bigint>, gotScores: ArrayLike<number>, want: WinnersJson, t: Tol): Set<number> {
  expect(gotIds.length, `${field}: winner count`).to.equal(want.adIds.length);
  const ties = new Set<number>();
  for (let i = 0; i < want.adIds.length; i++) {
    if (gotIds[i] === BigInt(want.adIds[i])) continue;
    if (!near(gotScores[i], want.scores[i], t))
      expect.fail(`${field}: winner ${i} is ${gotIds[i]} (score ${gotScores[i]}), want ${want.adIds[i]} (score ${want.scores[i]}), not a tie`);
    ties.add(i);
  }
  return ties;
}

function pricesClose(field: string, got: ArrayLike<number>, want: number[], ties: Set<number>, t: Tol): void {
  expect(got.length, `${field}: price count`).to.equal(want.length);
  for (let i = 0; i < want.length; i++) {
    if (ties.has(i) || ties.has(i + 1)) continue;
    if (!near(got[i], want[i], t)) expect.fail(`${field}[${i}]: got ${got[i]}, want ${want[i]} (rtol ${t.rtol}, atol ${t.atol})`);
  }
}

/** Exact counts; in bf16 `capped` may differ (it depends on near-tied bf16 orders). */
function countsEqual(field: string, got: object, want: Record<string, number>, bf16: boolean): void {
  const g = { ...(got as Record<string, number>) };
  const w = { ...want };
  if (bf16) {
    delete g.capped;
    delete w.capped;
  }
  for (const k of Object.keys(w)) expect(g[k], `${field}.${k}`).to.equal(w[k]);
}

// ---- the suite --------------------------------------------------------------------------------

describe('40 parity: PyTorch reference vs bundle contract, TS reference and engine', function () {
  this.timeout(600_000);
  const py = findTorchPython();

  before(function () {
    if (CASES_DIR) console.log(`      [40.parity] using pre-generated cases from ${CASES_DIR}`);
    else if (!py.ok) {
      console.log(`      [40.parity] skipped: ${py.reason}`);
      this.skip();
    } else console.log(`      [40.parity] PyTorch reference: ${py.python} (torch ${py.torch}); engine device ${DEVICE}`);
  });

  /** null when the engine can run here, else why not */
  function engineUnavailable(precision: Precision): string | null {
    if (!addonBuilt()) return 'native addon not built (build/Release/adrank.node)';
    const caps = capabilities();
    if (CUDA) {
      if (!caps.cuda.usable) return `ADRANK_PARITY_DEVICE=${DEVICE} but CUDA is not usable: ${caps.cuda.reason}`;
    } else if (precision === 'bf16' && !caps.cpu.bf16) return `precision bf16: ${caps.cpu.bf16Reason}`;
    return null;
  }

  for (const suite of SUITES) {
    describe(`${suite.kind} config, seed ${suite.seed}`, function () {
      let dir = '';
      let doc: CasesJson;
      let bundlePath = '';
      let bundle: LoadedBundle | undefined;

      before(function () {
        if (CASES_DIR) {
          const pre = join(CASES_DIR, `${suite.kind}-${suite.seed}`);
          if (!existsSync(join(pre, 'cases.json'))) this.skip();
          bundlePath = join(pre, 'bundle.safetensors');
          doc = JSON.parse(readFileSync(join(pre, 'cases.json'), 'utf8')) as CasesJson;
          return;
        }
        if (!py.ok) this.skip();
        dir = mkdtempSync(join(tmpdir(), 'adrank-parity-'));
        runPythonModule(py.python, 'scripts.reference.cli', ['make-case', '--seed', String(suite.seed), '--config', suite.kind, '--out', dir]);
        bundlePath = join(dir, 'bundle.safetensors');
        doc = JSON.parse(readFileSync(join(dir, 'cases.json'), 'utf8')) as CasesJson;
      });

      after(() => {
        if (dir) rmSync(dir, { recursive: true, force: true });
      });

      it('writes exactly the tensors of expectedTensors(config, N), sorted and contiguous', function () {
        const buf = readFileSync(bundlePath);
        const n = Number(buf.readBigUInt64LE(0));
        expect(n % 8, 'header length is a multiple of 8').to.equal(0);
        const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, any>;
        const meta = header.__metadata__ as Record<string, string>;
        delete header.__metadata__;
        expect(meta['adrank.format']).to.equal('1');
        const config = JSON.parse(meta['adrank.config']) as ModelConfig;
        expect(config).to.deep.equal(doc.config);
        const specs = expectedTensors(config, doc.numAds);
        expect(Object.keys(header).sort()).to.deep.equal(specs.map((s) => s.name).sort());
        for (const s of specs) {
          expect(header[s.name].shape, `${s.name} shape`).to.deep.equal(s.shape);
          expect(s.dtypes, `${s.name} dtype ${header[s.name].dtype}`).to.include(header[s.name].dtype);
        }
        const names = Object.keys(header).sort();
        let pos = 0;
        for (const name of names) {
          expect(header[name].data_offsets[0], `${name} begins where the previous tensor ended`).to.equal(pos);
          pos = header[name].data_offsets[1];
        }
        expect(8 + n + pos).to.equal(buf.length);
      });

      it('is accepted by loadBundle with the same config', async function () {
        bundle = await loadBundle(bundlePath);
        expect(bundle.numAds).to.equal(doc.numAds);
        expect(bundle.config).to.deep.equal(doc.config);
      });

      it('computes the same function as the TypeScript float64 reference (test/reference)', async function () {
        const b = bundle ?? (await loadBundle(bundlePath));
        const m = new RefModel(b);
        const T = doc.config.tasks.length;
        // The TS reference is plain loops: on the demo config check a sample of candidates.
        const sample = doc.kind === 'demo' ? 12 : Infinity;
        for (const c of doc.cases) {
          const r = toEngineRequest(c.request, 'python');
          const sc = modelScorers(m, r);
          const e = c.explain;
          close(`${c.name} user`, sc.us.u, e.user, REF_TOL.rtol, REF_TOL.atol);
          close(`${c.name} sequence`, sc.us.H.flatMap((h) => Array.from(h)), e.sequence, REF_TOL.rtol, REF_TOL.atol);
          close(`${c.name} query`, sc.us.query, e.query, REF_TOL.rtol, REF_TOL.atol);
          const n = Math.min(sample, e.rows.length);
          const rows = e.rows.slice(0, n);
          close(`${c.name} probs`, rows.flatMap((row) => Array.from(sc.rank(row).probs)), e.probs.slice(0, n * T), REF_TOL.rtol, REF_TOL.atol);
          close(`${c.name} utility`, rows.map((row) => sc.rank(row).utility), e.utility.slice(0, n), REF_TOL.rtol, REF_TOL.atol);
          close(`${c.name} retrievalScores`, rows.map((row) => sc.retrieval(row)), e.retrievalScores.slice(0, n), REF_TOL.rtol, REF_TOL.atol);
        }
      });

      it('runs the same funnel as the TypeScript reference (on the PyTorch scores)', async function () {
        const b = bundle ?? (await loadBundle(bundlePath));
        const m = new RefModel(b);
        const state = adStateOf(b, doc);
        for (const c of doc.cases) {
          const r = toEngineRequest(c.request, 'python');
          const rank = pythonScorer(doc, c);
          const retrieval = modelScorers(m, r).retrieval;
          const results: [string, RefResult, WinnersJson][] = [
            ['rank', refRank(b, r, state, rank), c.rank],
            ['retrieve', refRetrieve(b, r, state, retrieval), c.retrieve],
            ['retrieveAndRank', refRetrieveAndRank(b, { ...r, candidates: new BigInt64Array(0) }, state, retrieval, rank), c.retrieveAndRank],
          ];
          for (const [op, g, want] of results) {
            const f = `${c.name} ${op}`;
            expect(g.adIds.map(String), `${f} winners`).to.deep.equal(want.adIds);
            close(`${f} scores`, g.scores, want.scores, REF_TOL.rtol, REF_TOL.atol);
            close(`${f} prices`, g.prices, want.prices, REF_TOL.rtol, REF_TOL.atol);
            expect(g.counts, `${f} counts`).to.deep.equal(want.counts);
            expect(g.retrieved, `${f} retrieved`).to.equal(want.retrieved);
          }
          const bl = c.retrieveAndRankBlended;
          const g = refRetrieveAndRank(b, blendedRequest(c), state, retrieval, rank);
          const f = `${c.name} retrieveAndRank blended`;
          expect(g.adIds.map(String), `${f} winners`).to.deep.equal(bl.adIds);
          close(`${f} prices`, g.prices, bl.prices, REF_TOL.rtol, REF_TOL.atol);
          expect(g.counts, `${f} counts`).to.deep.equal(bl.counts);
          expect(g.sources, `${f} sources`).to.deep.equal(bl.sources);
          expect(g.sourceCounts, `${f} source counts`).to.deep.equal(bl.sourceCounts);
        }
        // the cases exercise the caller source: winners from it, ids credited to retrieval, the quota
        const callers = doc.cases.map((c) => c.retrieveAndRankBlended.sourceCounts[1]);
        expect(callers.some((x) => x.winners > 0), 'some caller candidate wins').to.equal(true);
        expect(callers.some((x) => x.earlierSource > 0), 'some caller id is credited to retrieval').to.equal(true);
      });

      for (const precision of PRECISIONS)
      describe(`engine on ${DEVICE} (${precision})`, function () {
        let engine: Engine | undefined;
        const BF16 = precision === 'bf16';

        before(async function () {
          const why = engineUnavailable(precision);
          if (why) {
            console.log(`      [40.parity] engine part skipped: ${why}`);
            this.skip();
          }
          engine = await Engine.load(bundlePath, { device: DEVICE, precision });
          const s = doc.adState;
          const unknown = engine.setAdState(big(s.ids), Uint8Array.from(s.active), Uint8Array.from(s.inBudget), Float32Array.from(s.pacingRate));
          expect(unknown, 'setAdState unknown ids').to.equal(0);
        });

        after(() => engine?.dispose());

        it('explain(): per-candidate probabilities, utilities, retrieval scores and request-side vectors', async function () {
          let maxDp = 0;
          for (const c of doc.cases) {
            const x: NativeExplain = await engine!.explain(toEngineRequest(c.request, 'explain', doc.config.sequence.max_len));
            const e = c.explain;
            expect(Array.from(x.rows), `${c.name} rows`).to.deep.equal(e.rows);
            if (BF16) {
              maxDp = x.probs.reduce((m, p, i) => Math.max(m, Math.abs(p - e.probs[i])), maxDp);
              close(`${c.name} probs`, x.probs, e.probs, 0, BF16_PROB_ATOL);
              const sumW = e.weights.reduce((s, v) => s + Math.abs(v), 0);
              close(`${c.name} value`, Array.from(x.utility, (u, i) => u / e.bid[i]), e.utility.map((u, i) => u / e.bid[i]), 0, BF16_PROB_ATOL * sumW);
              close(`${c.name} retrievalScores`, x.retrievalScores, e.retrievalScores, 0, BF16_PROB_ATOL);
            } else {
              close(`${c.name} user`, x.user, e.user, CPU_TOL.vec.rtol, CPU_TOL.vec.atol);
              close(`${c.name} sequence`, x.sequence, e.sequence, CPU_TOL.vec.rtol, CPU_TOL.vec.atol);
              close(`${c.name} query`, x.query, e.query, CPU_TOL.vec.rtol, CPU_TOL.vec.atol);
              close(`${c.name} probs`, x.probs, e.probs, CPU_TOL.prob.rtol, CPU_TOL.prob.atol);
              close(`${c.name} utility`, x.utility, e.utility, CPU_TOL.prob.rtol, CPU_TOL.prob.atol);
              close(`${c.name} retrievalScores`, x.retrievalScores, e.retrievalScores, CPU_TOL.score.rtol, CPU_TOL.score.atol);
            }
          }
          if (BF16) console.log(`      [40.parity] ${suite.kind} ${suite.seed} ${precision}: max |Δp| ${maxDp.toExponential(2)} over ${doc.cases.length} requests`);
        });

        it('retrieveAndRank() blended with caller candidates: winners, their sources, per-source counts, prices', async function () {
          for (const c of doc.cases) {
            const want = c.retrieveAndRankBlended;
            const got: NativeResult = await engine!.retrieveAndRank(blendedRequest(c, doc.config.sequence.max_len));
            const f = `${c.name} retrieveAndRank blended`;
            countsEqual(`${f} counts`, got.counts, want.counts, BF16);
            expect(got.retrieved, `${f} retrieved`).to.equal(want.retrieved);
            expect(got.sourceCounts.map((x) => x.source), `${f} sources listed`).to.deep.equal([1, 2]);
            // bf16 retrieval may swap ads at the top-R boundary, which moves caller ids between
            // "credited to retrieval" and "ranked"; the retrieval-only bf16 checks above bound that
            // boundary. Here bf16 checks the scan's counts only; fp32 checks everything exactly.
            if (BF16) continue;
            for (const [i, x] of got.sourceCounts.entries()) countsEqual(`${f} sourceCounts[${i}]`, x, want.sourceCounts[i], false);
            const ties = sameWinners(f, got.adIds, got.scores, want, CPU_TOL.prob);
            close(`${f} scores`, got.scores, want.scores, CPU_TOL.prob.rtol, CPU_TOL.prob.atol);
            expect(Array.from(got.sources).filter((_, i) => !ties.has(i)), `${f} winner sources`).to.deep.equal(want.sources.filter((_, i) => !ties.has(i)));
            pricesClose(`${f} prices`, got.prices, want.prices, ties, CPU_TOL.prob);
          }
        });

        for (const op of ['rank', 'retrieve', 'retrieveAndRank'] as const) {
          it(`${op}(): winners, counts, scores${op === 'retrieve' ? '' : ', probabilities and GSP prices'}`, async function () {
            let overlap = 0;
            let total = 0;
            for (const c of doc.cases) {
              const got: NativeResult = await engine![op](toEngineRequest(c.request, op, doc.config.sequence.max_len));
              const want = c[op];
              const f = `${c.name} ${op}`;
              countsEqual(`${f} counts`, got.counts, want.counts, BF16);
              if (op === 'retrieveAndRank') expect(got.retrieved, `${f} retrieved`).to.equal(want.retrieved);
              if (BF16 && op === 'retrieve') {
                const ids = new Set(Array.from(got.adIds, String));
                overlap += want.adIds.filter((id) => ids.has(id)).length;
                total += want.adIds.length;
                continue;
              }
              if (BF16) {
                const py = pythonScorer(doc, c);
                const bid = engine!.bundle.tensors['ads.bid'] as Float32Array;
                const sumW = c.explain.weights.reduce((s, v) => s + Math.abs(v), 0);
                let gotRows = Array.from(got.rows);
                let wantRows = want.rows;
                let utility = (row: number) => py(row).utility;
                if (op === 'retrieveAndRank') {
                  const kept = retrievalBoundary(f, engine!.bundle, doc, c, got.rows, want.rows);
                  gotRows = kept.got;
                  wantRows = kept.want;
                  utility = kept.utility;
                }
                const a = bf16WinnersAgree(f, gotRows, wantRows, utility, (row) => BF16_PROB_ATOL * sumW * bid[row]);
                overlap += a.overlap;
                total += a.total;
                continue;
              }
              const t = op === 'retrieve' ? CPU_TOL.score : CPU_TOL.prob;
              const ties = sameWinners(f, got.adIds, got.scores, want, t);
              close(`${f} scores`, got.scores, want.scores, t.rtol, t.atol);
              expect(Array.from(got.advertisers, String).filter((_, i) => !ties.has(i)), `${f} advertisers`).to.deep.equal(want.advertisers.filter((_, i) => !ties.has(i)));
              if (op !== 'retrieve') {
                const probs = want.probs.filter((_, i) => !ties.has(i)).flat();
                const T = doc.config.tasks.length;
                close(`${f} probs`, Array.from(got.probs).filter((_, j) => !ties.has(Math.floor(j / T))), probs, CPU_TOL.prob.rtol, CPU_TOL.prob.atol);
              }
              pricesClose(`${f} prices`, got.prices, want.prices, ties, CPU_TOL.prob);
            }
            if (BF16 && total > 0) console.log(`      [40.parity] ${suite.kind} ${suite.seed} ${precision} ${op}: top-K overlap ${overlap}/${total}`);
            if (BF16 && op === 'retrieve' && total > 0) expect(overlap / total, `${op} top-K overlap over ${doc.cases.length} requests`).to.be.at.least(BF16_MIN_OVERLAP);
          });
        }
      });
    });
  }
});

/** The live ad state of cases.json applied to a default state (for the TS reference). */
function adStateOf(b: LoadedBundle, doc: CasesJson): AdState {
  const s = defaultAdState(b.numAds);
  const a = doc.adState;
  applyAdState(b, s, big(a.ids), a.active, a.inBudget, Float32Array.from(a.pacingRate));
  return s;
}

/**
 * RetrieveAndRank in bf16: the retrieval stage's top R can differ from the reference's at its
 * boundary, because the device scores bf16 embeddings. An engine winner the reference did not
 * retrieve is accepted when its float64 retrieval score is within the bf16 rounding bound of the
 * reference's R-th score (2^-8 · Σ|q_i e_i| for each of the two ads: bf16 keeps 8 significant
 * bits); it and the reference winners it displaced (the lowest in utility among those missing) are
 * then left out of the winner comparison. Utilities of rows PyTorch did not score come from the
 * float64 TypeScript reference.
 */
function retrievalBoundary(
  f: string,
  b: LoadedBundle,
  doc: CasesJson,
  c: CaseJson,
  gotRows: ArrayLike<number>,
  wantRows: number[],
): { got: number[]; want: number[]; utility: (row: number) => number } {
  const sc = modelScorers(new RefModel(b), toEngineRequest(c.request, 'python'));
  const py = pythonScorer(doc, c);
  const utility = (row: number) => {
    try {
      return py(row).utility;
    } catch {
      return sc.rank(row).utility;
    }
  };
  const dr = b.config.retrieval.dim;
  const emb = b.tensors['ads.retrieval'] as Float32Array;
  const bound = (row: number) => {
    let s = 0;
    for (let k = 0; k < dr; k++) s += Math.abs(sc.us.query[k] * emb[row * dr + k]);
    return s / 256;
  };
  const retrieved = new Set(c.retrieveAndRank.scored.rows);
  let last = -1;
  for (const row of retrieved) if (last < 0 || sc.retrieval(row) < sc.retrieval(last)) last = row;
  const boundary = Array.from(gotRows).filter((row) => !retrieved.has(row));
  for (const row of boundary) {
    const gap = sc.retrieval(last) - sc.retrieval(row);
    const tol = bound(row) + bound(last);
    if (!(gap <= tol))
      expect.fail(`${f}: winner row ${row} was not retrieved by the reference: retrieval score ${sc.retrieval(row)} is ${gap} below the R-th (${sc.retrieval(last)}, row ${last}), beyond the bf16 bound ${tol}`);
  }
  const got = new Set(Array.from(gotRows));
  const displaced = new Set(
    wantRows
      .filter((row) => !got.has(row))
      .sort((x, y) => utility(x) - utility(y))
      .slice(0, boundary.length),
  );
  const drop = new Set(boundary);
  return { got: Array.from(gotRows).filter((row) => !drop.has(row)), want: wantRows.filter((row) => !displaced.has(row)), utility };
}

/** Rank scores as PyTorch computed them (explain rows and the retrieved rows of
 *  RetrieveAndRank), so the funnel comparison does not depend on the TS model's speed. */
function pythonScorer(doc: CasesJson, c: CaseJson): RankScorer {
  const T = doc.config.tasks.length;
  const byRow = new Map<number, RankScore>();
  const add = (rows: number[], utility: number[], value: number[], probs: number[]) =>
    rows.forEach((row, i) => byRow.set(row, { utility: utility[i], value: value[i], probs: probs.slice(i * T, (i + 1) * T) }));
  add(c.explain.rows, c.explain.utility, c.explain.value, c.explain.probs);
  const s = c.retrieveAndRank.scored;
  add(s.rows, s.utility, s.value, s.probs);
  const bl = c.retrieveAndRankBlended?.scored;
  if (bl) add(bl.rows, bl.utility, bl.value, bl.probs);
  return (row) => {
    const v = byRow.get(row);
    if (!v) throw new Error(`${c.name}: no PyTorch score for row ${row}`);
    return v;
  };
}
