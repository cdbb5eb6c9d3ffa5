/**
 * CPU ranking benchmark. Targets (docs/design.md, docs/cpu-bf16.md), throughput against ONNX
 * Runtime (onnxruntime-node, same model, 2 threads, same run) at `--precision auto`: AVX2 + FMA
 * ≥ 1.5× at Rank(10), ≥ 1.2× at 100, ≥ 1.0× at 1,000; AVX512-BF16 ≥ 1.5×, 1.5×, 1.8×; fp32 (the
 * bit-exact mode) ≥ 1.0× at Rank(10) on both.
 *
 * One bundle (the demo config, 20,000 ads, seed 1, or --bundle), exported to ONNX with
 * scripts/export_onnx.py. For each Rank size C (--candidates, default 10,100,1000,10000), one request
 * of C untargeted, known, distinct candidates (so every candidate is eligible and all runners do
 * the same work), timed in interleaved rounds, in the same process, one after the other:
 *
 *   adrank fp32  engine.rank() on the CPU backend at precision fp32 (--threads, default 2): request
 *                side, gather, MaskNet + DCNv2 + MLP + heads, top-K selection and GSP prices, all
 *                inside the engine
 *   adrank bf16  the same engine at precision bf16 (the bf16 kernel of this CPU: AVX512-BF16, or bf16
 *                weights widened on AVX2; skipped, saying why, where there is none)
 *   adrank auto  precision auto: the runner above whose precision auto resolves to on this CPU (not
 *                timed twice; the report says which)
 *   ... inline   the same engines through the served path's engine call (src/handlers/engine-rpc.ts
 *                executeWire): the request's RankRequest bytes parsed and validated natively, then
 *                run on this JS thread with the pool's other threads (Engine.runWireHere, as the
 *                server runs a request while its thread has nothing else to do: docs/wire.md "Idle
 *                inline runs"), the request released; `fp32Inline`, `bf16Inline`, `autoInline` in
 *                the JSON. ONNX Runtime's session.run runs the same way (onnxruntime-node calls
 *                the session on the JS thread in a setImmediate, its intra-op pool helping), so
 *                this pair compares like with like; engine.rank() hands the request to the
 *                engine's request thread and the answer back (a wake-up each way). Checked equal to
 *                engine.rank()'s answer (ids, probabilities, prices, bit for bit) before timing.
 *   ONNX         onnxruntime-node InferenceSession.run (intraOpNumThreads = --threads) plus the
 *                per-request work ONNX needs around it: id → row lookup, gathering the candidates'
 *                ad-side features into input tensors, and a top-K of the utilities. The request-side
 *                vectors (user vector, encoded sequence) are computed once, by the engine, outside
 *                the timed loop: not in the graph, so ONNX gets them for free. Timed twice: with its
 *                intra-op threads' idle spinning off, interleaved with adrank (its default
 *                spinning kept running through the adrank runs timed after it and took their
 *                cores), and in its default configuration in a phase of its own at the end; the
 *                ratios use the faster of the two at each size (`onnxConfig` says which).
 *   PyTorch      (C = 1,000 only) the reference module (scripts/reference) in eval/no_grad with
 *                torch.set_num_threads(--threads), same candidates, same request-side vectors,
 *                gather + score_candidates timed in a python subprocess (skip with --no-torch).
 *
 * Before timing, ONNX Runtime's and PyTorch's probabilities are checked against the fp32 engine's
 * within 1e-3, and the bf16 engine's within the bf16 tolerance 2e-2 (test/support/bf16.ts); the
 * benchmark refuses to report numbers when they differ.
 *
 * --json prints one JSON object on stdout instead of the tables (progress goes to stderr): the CPU
 * model and ISA flags, what each runner ran, per candidate count the median (and p90) ms and
 * requests/s of each runner (`fp32`, `bf16`, `auto`, `onnx`), the throughput ratios against ONNX
 * Runtime, and the |Δp| checks. ADRANK_CPU_ISA=avx2 forces the AVX2 paths (fp32 and bf16 weights)
 * on an AVX-512 machine: a proxy for an AVX2-only CPU, not a measurement of one.
 *
 * onnxruntime-node is not a dependency of adrank; install it next to the checkout first:
 *   npm install --no-save --ignore-scripts onnxruntime-node   (its install script only fetches a CUDA provider from the network)
 *   npm run bench:cpu [-- --bundle FILE] [--onnx FILE] [--candidates 10,100,1000,10000] [--runs 30]
 *                     [--warmup 5] [--threads 2] [--cpu-spin-us 50] [--concurrency 4] [--no-torch] [--torch-budget 60] [--keep] [--json]
 * --runs is per runner and size; sizes of 10,000 use a third of it (at least 5).
 * Environment: ADRANK_PYTHON (a python with torch; default /usr/bin/python3, then python3).
 * Debian's python3-torch links the reference (netlib) BLAS, ~5 GFLOP/s: PyTorch then takes ~10 s a
 * request and its loop stops after --torch-budget seconds. For a fair PyTorch figure, point the
 * subprocess at OpenBLAS, e.g. `apt-get download libopenblas0-pthread`, `dpkg-deb -x` it to DIR and
 * run with LD_LIBRARY_PATH=DIR/usr/lib/x86_64-linux-gnu/openblas-pthread (the table says which).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { capabilities, Engine, type EngineRequest, type NativeExplain, type NativeResult } from '../src/engine/index.js';
import { randomRequest } from '../src/features/random-request.js';
import { adRows, type LoadedBundle } from '../src/model/bundle.js';
import { writeDemoBundle } from '../src/model/demo.js';
import { Rng } from '../src/model/random.js';
import type { ModelConfig } from '../src/model/config.js';
import { loadProto } from '../src/wire/proto.js';

const TOLERANCE = 1e-3; // |Δp| allowed between runners, absolute
const BF16_TOLERANCE = 2e-2; // |Δp| allowed between the bf16 and the fp32 engine (test/support/bf16.ts)
const K = 10;

const args = process.argv.slice(2);
const flag = (name: string, dflt: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const opt = {
  json: args.includes('--json'),
  bundle: flag('bundle', ''),
  onnx: flag('onnx', ''),
  candidates: flag('candidates', '10,100,1000,10000').split(',').map(Number),
  runs: Number(flag('runs', '30')),
  warmup: Number(flag('warmup', '5')),
  threads: Number(flag('threads', '2')),
  /** the engines' --cpu-spin-us (default: the engine's own, 50) */
  cpuSpinUs: args.includes('--cpu-spin-us') ? Number(flag('cpu-spin-us', '50')) : undefined,
  concurrency: Number(flag('concurrency', '4')),
  seed: Number(flag('seed', '1')),
  torch: !args.includes('--no-torch'),
  /** seconds for PyTorch's timing loop: Debian's torch uses the reference BLAS (~10 s a request) */
  torchBudget: Number(flag('torch-budget', '60')),
};

/** progress and tables; with --json stdout carries only the JSON object */
const log = opt.json ? (...xs: unknown[]) => console.error(...xs) : (...xs: unknown[]) => console.log(...xs);

// ---- onnxruntime-node, loaded dynamically (not a project dependency)

/** The part of onnxruntime-node's API used here (declared locally: the package is optional). */
interface OrtTensor {
  readonly data: Float32Array | BigInt64Array;
}
interface OrtSession {
  run(feeds: Record<string, OrtTensor>): Promise<Record<string, OrtTensor>>;
}
interface Ort {
  InferenceSession: { create(path: string, options: Record<string, unknown>): Promise<OrtSession> };
  Tensor: new (type: 'float32' | 'int64', data: Float32Array | BigInt64Array, dims: number[]) => OrtTensor;
  env: { versions: { node?: string; common: string } };
}
const ORT_MODULE = 'onnxruntime-node'; // a variable, so no type checker or bundler resolves it

async function loadOrt(): Promise<Ort> {
  try {
    const m = (await import(ORT_MODULE)) as Ort & { default?: Ort };
    return m.InferenceSession ? m : m.default!;
  } catch (e) {
    console.error(
      `bench:cpu needs onnxruntime-node, which is not a dependency of adrank (${(e as Error).message.split('\n')[0]}).\n` +
        'Install it without touching package.json / package-lock.json:\n' +
        '  npm install --no-save --ignore-scripts onnxruntime-node\n' +
        '(its postinstall only fetches CUDA binaries, which this benchmark does not use; add\n' +
        ' --onnxruntime-node-install-cuda=skip if that download fails.)',
    );
    process.exit(2);
  }
}
const ort = await loadOrt();

// ---- statistics

interface Stats {
  median: number;
  p90: number;
  runs: number;
  /** requests/s, sequential */
  rps1: number;
  /** requests/s with `concurrency` in flight */
  rpsN?: number;
}

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  const i = (s.length - 1) * q;
  const lo = Math.floor(i);
  return s[lo] + (s[Math.ceil(i)] - s[lo]) * (i - lo);
}

function stats(ms: number[]): Stats {
  return { median: quantile(ms, 0.5), p90: quantile(ms, 0.9), runs: ms.length, rps1: 1000 / (ms.reduce((a, b) => a + b, 0) / ms.length) };
}

/** Latencies (ms) of `n` sequential calls. */
async function timeSequential(fn: () => Promise<unknown>, n: number): Promise<number[]> {
  const t: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await fn();
    t.push(performance.now() - t0);
  }
  return t;
}

/** Requests/s for `n` calls with `inFlight` overlapping promises. */
async function throughput(fn: () => Promise<unknown>, n: number, inFlight: number): Promise<number> {
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next++ < n) await fn();
    }),
  );
  return (n * 1000) / (performance.now() - t0);
}

// ---- setup: bundle, ONNX export, engine, request

function python(): string {
  const env = process.env.ADRANK_PYTHON;
  if (env) return env;
  return existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
}

function run(cmd: string, argv: string[], input?: string): string {
  const r = spawnSync(cmd, argv, { encoding: 'utf8', input, maxBuffer: 1 << 28 });
  if (r.status !== 0) throw new Error(`${cmd} ${argv.join(' ')} failed (${r.status}): ${r.stderr || r.error?.message}`);
  return r.stdout;
}

/** scratch files (demo bundle, ONNX export, PyTorch input); removed at exit unless --keep */
const work = mkdtempSync(join(tmpdir(), 'adrank-bench-cpu-'));
if (!args.includes('--keep')) process.on('exit', () => rmSync(work, { recursive: true, force: true }));
const py = python();
let bundlePath = opt.bundle;
if (!bundlePath) {
  bundlePath = join(work, 'demo.safetensors');
  await writeDemoBundle({ ads: 20_000, seed: opt.seed, out: bundlePath });
  log(`demo bundle (20,000 ads, seed ${opt.seed}): ${bundlePath}`);
}
let onnxPath = opt.onnx;
if (!onnxPath) {
  onnxPath = join(work, 'rank.onnx');
  const t0 = performance.now();
  const report = JSON.parse(run(py, ['scripts/export_onnx.py', '--bundle', bundlePath, '--out', onnxPath]));
  log(`ONNX export: ${onnxPath}, ${report.bytes} bytes, opset ${report.opset}, torch ${report.torch}, checker ${report.onnx_checker} (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
}

const engine = await Engine.load(bundlePath, { device: 'cpu', threads: opt.threads, precision: 'fp32', cpuSpinUs: opt.cpuSpinUs });
const bf16Cpu = capabilities().cpu;
const engineBf16 = bf16Cpu.bf16 ? await Engine.load(bundlePath, { device: 'cpu', threads: opt.threads, precision: 'bf16', cpuSpinUs: opt.cpuSpinUs }) : undefined;
// precision auto resolves per CPU to one of the two engines above; its reason is the auto engine's
const engineAuto = await Engine.load(bundlePath, { device: 'cpu', threads: opt.threads, precision: 'auto' });
const autoAs = engineAuto.precision;
const autoReason = engineAuto.deviceReason;
engineAuto.dispose();
const b = engine.bundle;
const c = engine.config;
const T = c.tasks.length;
log(`adrank: ${engine.description}, ${engine.numAds} ads`);
log(engineBf16 ? `adrank: ${engineBf16.description} (${engineBf16.deviceReason})` : `adrank bf16: not run, ${bf16Cpu.bf16Reason}`);
log(`adrank auto: precision ${autoAs} (${autoReason})`);

/** The RankRequest bytes of an EngineRequest (what a client would send for it). */
const rankType = loadProto().root.lookupType('adrank.v1.RankRequest');
function rankBytes(config: ModelConfig, r: EngineRequest): Uint8Array {
  const ids = (a: BigInt64Array | bigint[]) => Array.from(a, (x) => x.toString());
  const msg: Record<string, unknown> = {
    requestId: r.requestId,
    surface: config.surfaces[r.surface],
    user: {
      dense: Array.from(r.userDense),
      embedding: Array.from(r.userEmbedding),
      sparse: Object.fromEntries(config.user_sparse.map((f, i) => [f.name, { ids: ids(r.userSparse[i]) }])),
      sequence: { itemIds: ids(r.seqItems), actions: Array.from(r.seqActions) },
    },
    targeting: Array.from(r.targeting),
    exclusions: { advertiserIds: ids(r.excludedAdvertisers), adIds: ids(r.excludedAds) },
    k: r.k,
    perAdvertiserCap: r.cap,
    ranking: r.mode === 0 ? { mode: 0 } : { mode: r.mode, partitions: r.partitions },
    price: r.price,
    reserve: r.reserve,
    candidateAdIds: ids(r.candidates),
  };
  if (r.taskWeights) msg.taskWeights = Object.fromEntries(config.tasks.map((t, i) => [t, r.taskWeights![i]]));
  return rankType.encode(rankType.fromObject(msg)).finish();
}

/** One Rank through the served path's engine call, run on this thread (see the header). */
function inlineRank(e: Engine, bytes: Uint8Array): NativeResult {
  const w = e.parseWire(0, bytes);
  try {
    e.prepare(w, 100_000, 'bench');
    return e.runWireHere(0, w);
  } finally {
    w.release();
  }
}

/** C distinct candidates among the untargeted ads (every targeting dim all ones): all eligible. */
function untargetedCandidates(bundle: LoadedBundle, n: number, rng: Rng): BigInt64Array {
  const nt = bundle.config.targeting_dims.length;
  const targeting = bundle.tensors['ads.targeting'] as BigUint64Array;
  const ids = bundle.tensors['ads.id'] as BigInt64Array;
  const rows: number[] = [];
  for (let r = 0; r < bundle.numAds; r++) if (targeting.subarray(r * nt, (r + 1) * nt).every((m) => m === 0xffffffffffffffffn)) rows.push(r);
  if (rows.length < n) throw new Error(`the bundle has ${rows.length} untargeted ads, fewer than --candidates ${n}`);
  for (let i = rows.length - 1; i > 0; i--) {
    const j = rng.int(0, i);
    [rows[i], rows[j]] = [rows[j], rows[i]];
  }
  return BigInt64Array.from(rows.slice(0, n), (r) => ids[r]);
}

const rng = new Rng(7);
const maxC = Math.max(...opt.candidates);
const pool = untargetedCandidates(b, maxC, rng);
const base: EngineRequest = {
  ...randomRequest(rng, b, { candidates: 1, k: K, cap: 0, seqLen: 16, sparseLen: 3 }),
  targeting: Uint32Array.from(c.targeting_dims, () => 0),
  surface: 0,
};
const requestOf = (n: number): EngineRequest => ({ ...base, candidates: pool.subarray(0, n) });
const ex = await engine.explain({ ...base, candidates: pool.subarray(0, 1) }); // request-side vectors for ONNX
const request = base;

// ---- ONNX Runtime: session, per-request input preparation, check

// Two sessions of the same model. ONNX Runtime's intra-op threads spin while idle by default, and
// in this process they kept spinning through the adrank runs timed after them, taking the cores
// (adrank fp32 Rank(10) 3.61 ms with it, 1.91 ms without, same machine, minutes apart): so the
// interleaved rounds use a session with spinning off, and the default (spinning) session is timed
// in a phase of its own after every other measurement, where it slows nothing. The ratios use
// whichever of the two ONNX Runtime configurations is faster at each size.
const ortOptions = {
  intraOpNumThreads: opt.threads,
  interOpNumThreads: 1,
  executionMode: 'sequential' as const,
  graphOptimizationLevel: 'all' as const,
};
const session = await ort.InferenceSession.create(onnxPath, { ...ortOptions, extra: { session: { intra_op: { allow_spinning: '0' } } } });
const sessionSpin = await ort.InferenceSession.create(onnxPath, ortOptions);
const ds = c.sequence.dim;
const seqRows = ex.sequence.length / ds;
const surfaceRow = (name: string) => (b.tensors[name] as Float32Array).slice(request.surface * T, (request.surface + 1) * T);
/** Request-side inputs: computed once by the engine (not part of the ONNX graph). */
const requestFeeds = {
  user: new ort.Tensor('float32', ex.user, [ex.user.length]),
  sequence: new ort.Tensor('float32', ex.sequence, [seqRows, ds]),
  sequence_valid: new ort.Tensor('float32', new Float32Array(seqRows).fill(1), [seqRows]),
  cal_scale: new ort.Tensor('float32', surfaceRow('calibration.scale'), [T]),
  cal_bias: new ort.Tensor('float32', surfaceRow('calibration.bias'), [T]),
  task_weights: new ort.Tensor('float32', surfaceRow('utility.task_weights'), [T]),
};
const rowOf = adRows(b);
const adTables = {
  dense: b.tensors['ads.dense'] as Float32Array,
  sparse: b.tensors['ads.sparse'] as BigInt64Array,
  embedding: b.tensors['ads.embedding'] as Float32Array,
  bid: b.tensors['ads.bid'] as Float32Array,
};

/** Candidate ids → rows → the ad-side input tensors (what adrank does inside the engine). */
function gatherAdFeeds(candidates: BigInt64Array) {
  const n = candidates.length;
  const nd = c.ad_dense;
  const nf = c.ad_sparse.length;
  const de = c.ad_embedding_dim;
  const dense = new Float32Array(n * nd);
  const sparse = new BigInt64Array(n * nf);
  const embedding = new Float32Array(n * de);
  const bid = new Float32Array(n);
  const rows = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const r = rowOf.get(candidates[i])!;
    rows[i] = r;
    dense.set(adTables.dense.subarray(r * nd, (r + 1) * nd), i * nd);
    sparse.set(adTables.sparse.subarray(r * nf, (r + 1) * nf), i * nf);
    embedding.set(adTables.embedding.subarray(r * de, (r + 1) * de), i * de);
    bid[i] = adTables.bid[r];
  }
  return {
    rows,
    feeds: {
      ad_dense: new ort.Tensor('float32', dense, [n, nd]),
      ad_sparse: new ort.Tensor('int64', sparse, [n, nf]),
      ad_embedding: new ort.Tensor('float32', embedding, [n, de]),
      bid: new ort.Tensor('float32', bid, [n]),
    },
  };
}

/** One ONNX Runtime request: gather, run, top-K candidates by utility. */
async function ortRank(candidates: BigInt64Array, on: typeof session = session) {
  const { rows, feeds } = gatherAdFeeds(candidates);
  const out = await on.run({ ...requestFeeds, ...feeds });
  const utility = out.utility.data as Float32Array;
  const top = Array.from(utility.keys())
    .sort((x, y) => utility[y] - utility[x])
    .slice(0, K);
  return { rows, probs: out.probs.data as Float32Array, utility, top };
}

/** Largest |Δp| between `probs` (one row per rows[i]) and the engine's, by ad-table row. */
function worstDiff(rows: Int32Array, probs: Float32Array, refRows: Int32Array, refProbs: Float32Array): number {
  const at = new Map(Array.from(rows, (r, i) => [r, i] as [number, number]));
  let worst = 0;
  for (let j = 0; j < refRows.length; j++) {
    const i = at.get(refRows[j]);
    if (i === undefined) return Infinity;
    for (let t = 0; t < T; t++) worst = Math.max(worst, Math.abs(probs[i * T + t] - refProbs[j * T + t]));
  }
  return worst;
}

function refuse(what: string, diff: number): never {
  console.error(`REFUSED: ${what} differs from adrank's engine by ${diff} in probability (tolerance ${TOLERANCE}); no timings reported.`);
  process.exit(1);
}

// ---- PyTorch (subprocess): check and timing loop

const TORCH_SCRIPT = String.raw`
import json, sys, time, torch
sys.path.insert(0, ".")
from scripts.reference.bundle import import_bundle
a = json.load(open(sys.argv[1]))
torch.set_num_threads(a["threads"])
model, _, ads = import_bundle(a["bundle"])
model.eval()
rows = torch.tensor(a["rows"], dtype=torch.int64)
user = torch.tensor(a["user"]); seq = torch.tensor(a["sequence"]).reshape(-1, a["ds"])
valid = torch.ones(seq.shape[0])
s = a["surface"]
scale, bias, w = model.calibration.scale[s], model.calibration.bias[s], model.utility.task_weights[s]
def step():
    o = model.score_candidates(user, seq, valid, ads.dense[rows].float(), ads.sparse[rows],
                               ads.embedding[rows].float(), ads.bid[rows].float(), scale, bias, w)
    torch.topk(o["utility"], a["k"])
    return o
times, start = [], time.perf_counter()
budget = lambda share: time.perf_counter() - start > share * a["budget_s"]
with torch.no_grad():
    probs = step()["probs"]
    for i in range(a["warmup"]):
        if budget(0.2): break
        step()
    for i in range(a["runs"]):
        if len(times) >= 3 and budget(1.0): break
        t0 = time.perf_counter(); step(); times.append((time.perf_counter() - t0) * 1e3)
libs = sorted({"/".join(l.split()[-1].split("/")[-2:]) for l in open("/proc/self/maps") if "/libblas" in l})
print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                  "blas": ",".join(libs) or "?",
                  "times": times, "probs": probs.reshape(-1).tolist()}))
`;

interface TorchOut {
  torch: string;
  threads: number;
  blas: string;
  times: number[];
  probs: number[];
}
function runTorch(rows: Int32Array): TorchOut {
  const input = join(work, 'torch-input.json');
  writeFileSync(
    input,
    JSON.stringify({
      bundle: bundlePath,
      threads: opt.threads,
      rows: Array.from(rows),
      user: Array.from(ex.user),
      sequence: Array.from(ex.sequence),
      ds,
      surface: request.surface,
      k: K,
      warmup: opt.warmup,
      runs: opt.runs,
      budget_s: opt.torchBudget,
    }),
  );
  writeFileSync(join(work, 'torch-bench.py'), TORCH_SCRIPT);
  return JSON.parse(run(py, [join(work, 'torch-bench.py'), input])) as TorchOut;
}

// ---- per size: checks, then adrank fp32, adrank bf16 and ONNX Runtime in interleaved rounds

const f = (x: number | undefined, digits = 2) => (x === undefined || !Number.isFinite(x) ? '—' : x.toFixed(digits));
interface SizeResult {
  n: number;
  fp32: Stats;
  bf16?: Stats;
  /** the same engines through the served path's engine call on this thread */
  fp32Inline: Stats;
  bf16Inline?: Stats;
  /** the faster ONNX Runtime configuration (below) */
  onnx: Stats;
  onnxConfig?: 'spinning off' | 'spinning (default)';
  /** interleaved with adrank, intra-op spinning off */
  onnxNoSpin?: Stats;
  /** ONNX Runtime's default (idle threads spin), timed alone after everything else */
  onnxSpin?: Stats;
  torch?: Stats;
  engineMs: { fp32: number; bf16?: number };
  onnxDp: number;
  sameTop: boolean;
  bf16Dp?: number;
  bf16Winners?: number;
}
/** Timed runs and warm-up per runner at C candidates: a third of --runs (at least 5) and at most 2
 *  warm-up calls at 10,000 and more. */
const repsFor = (n: number) =>
  n >= 10_000 ? { runs: Math.max(5, Math.round(opt.runs / 3)), warmup: Math.min(opt.warmup, 2) } : { runs: opt.runs, warmup: opt.warmup };
const results: SizeResult[] = [];
let torchVersion = 'not run';
const load0 = loadavg()[0];

for (const n of opt.candidates) {
  const req = requestOf(n);
  const cands = req.candidates as BigInt64Array;
  // Checks: ONNX vs the fp32 engine (all candidates up to 1,000; the winners beyond), bf16 vs fp32.
  const full = n <= 1000;
  const ref: NativeExplain | NativeResult = full ? await engine.explain(req) : await engine.rank(req);
  const ranked = await engine.rank(req);
  if (ranked.counts.eligible !== n) throw new Error(`expected ${n} eligible candidates, got ${ranked.counts.eligible}`);
  const check = await ortRank(cands);
  const ortDiff = worstDiff(check.rows, check.probs, ref.rows, ref.probs);
  const sameTop = check.top.every((i, j) => check.rows[i] === ranked.rows[j]);
  log(`Rank(${n}): ONNX Runtime vs adrank fp32: max |Δp| ${ortDiff.toExponential(2)} over ${ref.rows.length}×${T}${full ? '' : ' (the winners)'}; same top ${K} in the same order: ${sameTop}`);
  if (!(ortDiff <= TOLERANCE)) refuse('ONNX Runtime', ortDiff);
  let bf16Dp: number | undefined;
  let bf16Winners: number | undefined;
  if (engineBf16) {
    const got: NativeExplain | NativeResult = full ? await engineBf16.explain(req) : await engineBf16.rank(req);
    bf16Dp = full ? worstDiff(got.rows, got.probs, ref.rows, ref.probs) : 0;
    const rb = await engineBf16.rank(req);
    const top = new Set(ranked.rows);
    bf16Winners = Array.from(rb.rows).filter((r) => top.has(r)).length;
    log(`Rank(${n}): adrank bf16 vs fp32: max |Δp| ${full ? bf16Dp.toExponential(2) : '(not checked above 1,000)'}; ${bf16Winners} of the ${K} fp32 winners`);
    if (!(bf16Dp <= BF16_TOLERANCE)) {
      console.error(`REFUSED: adrank bf16 differs from fp32 by ${bf16Dp} in probability (tolerance ${BF16_TOLERANCE}); no timings reported.`);
      process.exit(1);
    }
  }

  const fp32Call = () => engine.rank(req);
  const bf16Call = () => engineBf16!.rank(req);
  const ortCall = () => ortRank(cands);
  const bytes = rankBytes(c, req);
  const fp32Inline = async () => inlineRank(engine, bytes);
  const bf16Inline = async () => inlineRank(engineBf16!, bytes);
  // the served path's call must give engine.rank()'s answer, bit for bit
  for (const [name, e] of [['fp32', engine], ['bf16', engineBf16]] as const) {
    if (!e) continue;
    const a = await e.rank(req);
    const i = inlineRank(e, bytes);
    const same = (x: ArrayLike<number | bigint>, y: ArrayLike<number | bigint>) => x.length === y.length && Array.from(x).every((v, j) => Object.is(v, y[j]));
    if (!(same(a.adIds, i.adIds) && same(a.probs, i.probs) && same(a.prices, i.prices) && same(a.scores, i.scores)))
      throw new Error(`Rank(${n}): adrank ${name} answers differently through the served path's call than through engine.rank()`);
  }
  const { runs, warmup } = repsFor(n);
  for (let i = 0; i < warmup; i++) {
    await fp32Call();
    await fp32Inline();
    if (engineBf16) await bf16Call();
    if (engineBf16) await bf16Inline();
    await ortCall();
  }
  const rounds = 3;
  const perRound = Math.ceil(runs / rounds);
  const lat = { fp32: [] as number[], bf16: [] as number[], fp32Inline: [] as number[], bf16Inline: [] as number[], ort: [] as number[] };
  const engineUs = { fp32: [] as number[], bf16: [] as number[] };
  for (let r = 0; r < rounds; r++) {
    lat.fp32.push(...(await timeSequential(async () => engineUs.fp32.push((await fp32Call()).timings.total), perRound)));
    lat.fp32Inline.push(...(await timeSequential(fp32Inline, perRound)));
    if (engineBf16) lat.bf16.push(...(await timeSequential(async () => engineUs.bf16.push((await bf16Call()).timings.total), perRound)));
    if (engineBf16) lat.bf16Inline.push(...(await timeSequential(bf16Inline, perRound)));
    lat.ort.push(...(await timeSequential(ortCall, perRound)));
  }
  const res: SizeResult = {
    n,
    fp32: stats(lat.fp32),
    bf16: engineBf16 ? stats(lat.bf16) : undefined,
    fp32Inline: stats(lat.fp32Inline),
    bf16Inline: engineBf16 ? stats(lat.bf16Inline) : undefined,
    onnx: stats(lat.ort),
    engineMs: { fp32: quantile(engineUs.fp32, 0.5) / 1000, bf16: engineBf16 ? quantile(engineUs.bf16, 0.5) / 1000 : undefined },
    onnxDp: ortDiff,
    sameTop,
    bf16Dp,
    bf16Winners,
  };
  res.fp32.rpsN = await throughput(fp32Call, runs, opt.concurrency);
  if (res.bf16) res.bf16.rpsN = await throughput(bf16Call, runs, opt.concurrency);
  res.onnx.rpsN = await throughput(ortCall, runs, opt.concurrency);

  if (opt.torch && n === 1000) {
    const t = runTorch(check.rows);
    const d = worstDiff(check.rows, Float32Array.from(t.probs), ref.rows, ref.probs);
    log(`check PyTorch ${t.torch} vs adrank: max |Δp| ${d.toExponential(2)}`);
    if (!(d <= TOLERANCE)) refuse('PyTorch', d);
    res.torch = stats(t.times);
    torchVersion = `${t.torch} (${t.threads} threads, BLAS ${t.blas})`;
    if (t.times.length < opt.runs) log(`PyTorch: only ${t.times.length} timed runs fit in --torch-budget ${opt.torchBudget} s`);
  }
  results.push(res);
  log(`Rank(${n}): fp32 ${f(res.fp32.median)} ms (inline ${f(res.fp32Inline.median)}), bf16 ${f(res.bf16?.median)} ms (inline ${f(res.bf16Inline?.median)}), ONNX ${f(res.onnx.median)} ms (medians)`);
}
engine.dispose();
engineBf16?.dispose();

// ONNX Runtime's default configuration (intra-op threads spin while idle), alone: nothing is timed
// after it. Its answers must be the interleaved session's.
for (const r of results) {
  const cands = requestOf(r.n).candidates as BigInt64Array;
  const quiet = await ortRank(cands);
  const spun = await ortRank(cands, sessionSpin);
  if (!quiet.probs.every((p, i) => p === spun.probs[i])) throw new Error(`Rank(${r.n}): the two ONNX Runtime sessions disagree`);
  const call = () => ortRank(cands, sessionSpin);
  const { runs, warmup } = repsFor(r.n);
  for (let i = 0; i < warmup; i++) await call();
  r.onnxSpin = stats(await timeSequential(call, runs));
  r.onnxSpin.rpsN = await throughput(call, runs, opt.concurrency);
  r.onnxNoSpin = r.onnx;
  const spinWins = r.onnxSpin.rps1 > r.onnx.rps1;
  r.onnx = spinWins ? r.onnxSpin : r.onnxNoSpin;
  r.onnxConfig = spinWins ? 'spinning (default)' : 'spinning off';
  log(
    `Rank(${r.n}): ONNX Runtime spinning off ${f(r.onnxNoSpin.median)} ms median, ${f(r.onnxNoSpin.rps1)} req/s; default (spinning, timed alone) ${f(r.onnxSpin.median)} ms, ${f(r.onnxSpin.rps1)} req/s: the ratios use the higher req/s (mean latency), ${r.onnxConfig}`,
  );
}

// ---- report

/** The auto runner: the stats of the runner auto resolved to. */
const autoOf = (r: SizeResult): Stats | undefined => (autoAs === 'bf16' ? r.bf16 : r.fp32);
const autoInlineOf = (r: SizeResult): Stats | undefined => (autoAs === 'bf16' ? r.bf16Inline : r.fp32Inline);

/** The CPU's model name and the ISA flags that choose the kernels (/proc/cpuinfo on Linux). */
function cpuInfo(): { model: string; flags: string[] } {
  const want = ['avx2', 'fma', 'f16c', 'avx512f', 'avx512bw', 'avx512vl', 'avx512dq', 'avx512_bf16', 'avx512_vnni', 'avx512_fp16', 'amx_bf16', 'amx_tile'];
  let flags: string[] = [];
  try {
    const line = readFileSync('/proc/cpuinfo', 'utf8').split('\n').find((l) => l.startsWith('flags'));
    const have = new Set((line?.split(':')[1] ?? '').trim().split(/\s+/));
    flags = want.filter((f) => have.has(f));
  } catch {
    // not Linux: the model name alone
  }
  return { model: cpus()[0]?.model ?? '?', flags };
}

if (opt.json) {
  const caps = capabilities().cpu;
  const num = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? null : +x.toPrecision(5));
  const runner = (s: Stats | undefined) => (s ? { median: num(s.median), p90: num(s.p90), runs: s.runs, rps: num(s.rps1), rpsConcurrent: num(s.rpsN) } : null);
  const ratio = (a: Stats | undefined, o: Stats) => (a ? num(a.rps1 / o.rps1) : null);
  const report = {
    cpu: { ...cpuInfo(), hardwareThreads: cpus().length, simd: caps.simd, bf16Kernel: caps.bf16Kernel, forcedIsa: process.env.ADRANK_CPU_ISA ?? null },
    node: process.version,
    onnxruntime: ort.env.versions.node ?? ort.env.versions.common,
    threads: opt.threads,
    cpuSpinUs: opt.cpuSpinUs ?? 50,
    concurrency: opt.concurrency,
    warmup: opt.warmup,
    runs: opt.runs,
    loadAverage: { start: num(load0), end: num(loadavg()[0]) },
    runners: {
      fp32: engine.description,
      bf16: engineBf16 ? engineBf16.description : `not run: ${bf16Cpu.bf16Reason}`,
      inline: "the fp32 / bf16 / auto engine through the served path's engine call: RankRequest bytes parsed and validated natively, run on the JS thread with the pool (Engine.runWireHere)",
      auto: { precision: autoAs, reason: autoReason },
      onnx: `onnxruntime-node ${ort.env.versions.node ?? ort.env.versions.common}, intra-op ${opt.threads}, + gather and top-${K} in JS; the faster of spinning off (interleaved) and its default spinning (timed alone), per size`,
    },
    sizes: results.map((r) => ({
      candidates: r.n,
      medianMs: {
        fp32: num(r.fp32.median),
        bf16: num(r.bf16?.median),
        auto: num(autoOf(r)?.median),
        fp32Inline: num(r.fp32Inline.median),
        bf16Inline: num(r.bf16Inline?.median),
        autoInline: num(autoInlineOf(r)?.median),
        onnx: num(r.onnx.median),
      },
      runners: {
        fp32: runner(r.fp32),
        bf16: runner(r.bf16),
        auto: runner(autoOf(r)),
        fp32Inline: runner(r.fp32Inline),
        bf16Inline: runner(r.bf16Inline),
        autoInline: runner(autoInlineOf(r)),
        onnx: runner(r.onnx),
        onnxSpinningOff: runner(r.onnxNoSpin),
        onnxSpinning: runner(r.onnxSpin),
        torch: runner(r.torch),
      },
      onnxConfig: r.onnxConfig ?? null,
      throughputVsOnnx: {
        fp32: ratio(r.fp32, r.onnx),
        bf16: ratio(r.bf16, r.onnx),
        auto: ratio(autoOf(r), r.onnx),
        fp32Inline: ratio(r.fp32Inline, r.onnx),
        bf16Inline: ratio(r.bf16Inline, r.onnx),
        autoInline: ratio(autoInlineOf(r), r.onnx),
      },
      engineMs: { fp32: num(r.engineMs.fp32), bf16: num(r.engineMs.bf16) },
      checks: {
        onnxVsFp32MaxDp: num(r.onnxDp),
        onnxTolerance: TOLERANCE,
        onnxSameTop: r.sameTop,
        bf16VsFp32MaxDp: r.n <= 1000 ? num(r.bf16Dp) : null,
        bf16Tolerance: BF16_TOLERANCE,
        bf16Fp32WinnersKept: r.bf16Winners ?? null,
      },
    })),
  };
  console.log(JSON.stringify(report, null, 2));
  process.exit(0);
}

const line = (name: string, s: Stats | undefined) =>
  `| ${name} | ${f(s?.median)} | ${f(s?.p90)} | ${s?.runs ?? '—'} | ${f(s?.rps1)} | ${f(s?.rpsN)} |`;
const ratio = (a: number | undefined, b: number | undefined) => (a === undefined || b === undefined ? '—' : `${f(a / b)}×`);
const out: string[] = [];
out.push(`
machine: ${cpus()[0]?.model ?? '?'} (${cpus().length} hardware threads; ${cpuInfo().flags.join(' ')}${process.env.ADRANK_CPU_ISA ? `; ADRANK_CPU_ISA=${process.env.ADRANK_CPU_ISA}` : ''}); node ${process.version}; onnxruntime-node ${ort.env.versions.node}; torch ${torchVersion}
adrank bf16: ${engineBf16 ? `${engineBf16.description}, kernel ${capabilities().cpu.bf16Kernel}` : `not run, ${bf16Cpu.bf16Reason}`}; precision auto = ${autoAs} (${autoReason})
load average (1 min) at start ${f(load0)}, at end ${f(loadavg()[0])}
Rank of C candidates (all eligible), top ${K}, ${opt.threads} threads, ${opt.warmup} warm-up + ${opt.runs} timed runs per runner (a third at C = 10,000), fp32 / bf16 / ONNX interleaved in 3 rounds

Summary (same run; throughput = requests/s; latency = median ms of sequential requests):

| C | adrank fp32 ms | adrank bf16 ms | ONNX ms | auto (${autoAs}) / ONNX throughput (conc. 1) | (conc. ${opt.concurrency}) | fp32 / ONNX (conc. 1) | inline: auto / ONNX | inline: fp32 / ONNX | bf16 latency gain over fp32 | bf16 max |Δp| vs fp32 |
| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |`);
for (const r of results)
  out.push(
    `| ${r.n.toLocaleString('en-US')} | ${f(r.fp32.median)} | ${f(r.bf16?.median)} | ${f(r.onnx.median)} | ${ratio(autoOf(r)?.rps1, r.onnx.rps1)} | ${ratio(autoOf(r)?.rpsN, r.onnx.rpsN)} | ${ratio(r.fp32.rps1, r.onnx.rps1)} | ${ratio(autoInlineOf(r)?.rps1, r.onnx.rps1)} | ${ratio(r.fp32Inline.rps1, r.onnx.rps1)} | ${ratio(r.fp32.median, r.bf16?.median)} | ${r.bf16Dp === undefined ? '—' : r.n <= 1000 ? r.bf16Dp.toExponential(1) : 'n/c'} |`,
  );
for (const r of results) {
  out.push(`
Rank(${r.n.toLocaleString('en-US')}): engine time (timings.total) median fp32 ${f(r.engineMs.fp32)} ms, bf16 ${f(r.engineMs.bf16)} ms

| runner | median ms | p90 ms | runs | req/s (conc. 1) | req/s (conc. ${opt.concurrency}) |
| --- | ---: | ---: | ---: | ---: | ---: |
${line(`adrank engine.rank (cpu fp32, ${opt.threads} threads)`, r.fp32)}
${line(`adrank engine.rank (cpu bf16, ${opt.threads} threads)`, r.bf16)}
${line(`adrank served-path call on this thread (cpu fp32)`, r.fp32Inline)}
${line(`adrank served-path call on this thread (cpu bf16)`, r.bf16Inline)}
${line(`onnxruntime-node ${ort.env.versions.node} (intra-op ${opt.threads}) + gather`, r.onnx)}${r.n === 1000 ? `\n${line(r.torch ? `PyTorch ${torchVersion} eager, no_grad` : 'PyTorch (not run: --no-torch)', r.torch)}` : ''}`);
}
console.log(out.join('\n'));
