/**
 * The one module that loads the native addon (build/Release/adrank.node) and declares what it
 * exports. Everything else in TypeScript imports the addon through here (src/engine/index.ts).
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export type TensorArray = Float32Array | BigInt64Array | BigUint64Array | Uint16Array;

/** Flattened model description handed to the native engine (validated in TS first). */
export interface NativeModelInit {
  /** 'cpu' or 'cuda:N' (the TS side resolves 'auto'). */
  device: string;
  /** CPU worker threads; 0 = one per hardware thread. */
  threads: number;
  /** Candidate-side GEMMs of the CPU backend: 'fp32' (default) or 'bf16' (bf16 weights; needs a
   *  bf16 kernel, capabilities().cpu.bf16; the TS side resolves 'auto'). The CUDA backend computes
   *  in bf16 whatever this says. */
  precision?: 'fp32' | 'bf16';
  /** The config JSON's numbers, flattened (see src/engine/index.ts `nativeInit`). */
  dims: NativeDims;
  /** Tensors by bundle name; F32 as Float32Array, I64 as BigInt64Array, U64 as BigUint64Array,
   *  BF16 as Uint16Array (raw bf16 bits). Native code copies what it keeps, except the ad tables
   *  of a mapped bundle (`mapping`), which it reads in place. */
  tensors: Record<string, TensorArray>;
  /** The mapped bundle file the tensors view (mapFile().handle): the engine reads the ad tables in
   *  place from it and keeps it mapped; absent, it copies them. */
  mapping?: MappedFileHandle;
  /** The id → row index of ads.id (buildIdIndex().handle), shared instead of built again. */
  idIndex?: IdIndexHandle;
  /** The CPU retrieval scan over the fp32 table (default) or a bf16 copy with exact fp32 rescoring. */
  retrievalScan?: 'fp32' | 'bf16';
  /** How long the CPU threads spin for the next parallel step before sleeping, in µs (0 to
   *  10,000; 0 never spins). Default: 50 on the CPU backend, 0 on CUDA. */
  cpuSpinUs?: number;
  /** Only the ad tables (ads.id, ads.advertiser, ads.bid, ads.targeting): an engine that gives
   *  fallback answers and nothing else (--fallback-only; backend 'none'). */
  adsOnly?: boolean;
}

export interface NativeDims {
  userDense: number;
  adDense: number;
  denseClip: number;
  userSparseNames: string[];
  userSparseCardinality: number[];
  userSparseDim: number[];
  adSparseNames: string[];
  adSparseCardinality: number[];
  adSparseDim: number[];
  userEmbeddingDim: number;
  adEmbeddingDim: number;
  surfaceDim: number;
  surfaces: number;
  tasks: number;
  targetingDims: number;
  seqMaxLen: number;
  seqItemBuckets: number;
  seqActions: number;
  seqDim: number;
  seqHeads: number;
  seqFfnDim: number;
  seqLayers: number;
  masknetBlocks: number;
  masknetHidden: number;
  masknetOutput: number;
  dcnLayers: number;
  /** 0 = full rank */
  dcnRank: number;
  mlp: number[];
  retrievalDim: number;
  retrievalHidden: number[];
  /** true when `ads.retrieval` is BF16 */
  retrievalBf16: boolean;
  numAds: number;
}

/** Counts of what the funnel dropped and why (docs/design.md §2, §5). */
export interface NativeCounts {
  /** candidate ids received (Rank) or ads scanned (Retrieve) */
  received: number;
  unknown: number;
  duplicate: number;
  inactive: number;
  outOfBudget: number;
  paced: number;
  targeting: number;
  excludedAd: number;
  excludedAdvertiser: number;
  /** eligible ads passed over because their advertiser already had `cap` winners */
  capped: number;
  /** candidates that reached selection */
  eligible: number;
}

/** One source's part of a RetrieveAndRank (docs/funnel.md "Blended retrieval sources"); the
 *  proto's SourceCounts. `source`: 1 retrieval, 2 the caller's candidate_ad_ids. */
export interface NativeSourceCounts extends Omit<NativeCounts, 'capped'> {
  source: number;
  /** known ids already passed to ranking by an earlier source (credited there) */
  earlierSource: number;
  /** eligible caller candidates past candidate_quota */
  overQuota: number;
  ranked: number;
  winners: number;
}

/** Server-side engine time by stage, microseconds. Stages not run are 0. */
export interface NativeTimings {
  queue: number;
  user: number;
  retrieve: number;
  gather: number;
  masknet: number;
  dcn: number;
  mlp: number;
  select: number;
  total: number;
  /** CUDA backend: the request's GPU time from its start to its end event (absent or 0 on the CPU) */
  device?: number;
}

export interface NativeResult {
  /** winners in final order */
  adIds: BigInt64Array;
  advertisers: BigInt64Array;
  /** row of each winner in the bundle's ad tables */
  rows: Int32Array;
  /** utility (Rank, RetrieveAndRank) or retrieval score (Retrieve) */
  scores: Float32Array;
  /** calibrated per-task probabilities, [winners × T] row-major; empty for Retrieve */
  probs: Float32Array;
  /** GSP price per winner when pricing was requested, else empty */
  prices: Float32Array;
  /** Rank, RetrieveAndRank: Σ_t w_t p_t per winner (utility = bid × value); empty for Retrieve */
  values: Float32Array;
  /** RetrieveAndRank: how many ads the retrieval stage passed to ranking */
  retrieved: number;
  /** RetrieveAndRank from the model: per winner its source (1 retrieval, 2 caller); else empty */
  sources: Uint8Array;
  /** RetrieveAndRank from the model: [retrieval, caller]; else empty */
  sourceCounts: NativeSourceCounts[];
  counts: NativeCounts;
  timings: NativeTimings;
  /** A run of a WireRequest: the whole response message (timings last, total_us still 0: see
   *  src/wire/codec.ts patchTimings) for grpc-js to send as is */
  response?: Buffer;
  /** A micro-batched request: µs it waited in the batcher's queue (src/batcher/), apart from `timings.queue` */
  batchWaitUs?: number;
}

/** The op numbers of runBatch and WireRequest: 0 rank, 1 retrieve, 2 retrieveAndRank. */
export type NativeOp = 0 | 1 | 2;

/** An engine RPC's request bytes parsed in native code (docs/wire.md). `new WireRequest(op, bytes)`
 *  throws "malformed request: ..." for bytes that are not a message of the op's request type. */
export interface NativeWireRequest {
  /** UTF-8 decoded as a JS string decodes it (invalid sequences become U+FFFD) */
  readonly requestId: string;
  readonly modelVersion: string;
  readonly allowFallback: boolean | undefined;
  /** the surface index, once prepared */
  readonly surface: number | undefined;
  /** µs the parse took */
  readonly decodeUs: number;
  /** the parsed fields (tests) */
  toObject(): Record<string, unknown>;
  /** a copy of the feature bundle prepare() wrote (tests); undefined before */
  bundle(): Uint8Array | undefined;
  /** Frees the parsed message and the bundle now (V8 does not see that memory); the request keeps
   *  its id, version and fallback flag and can no longer be prepared, run or read. Idempotent. */
  release(): void;
}

/** What NativeEngine.prepare validates a WireRequest against: the model's config. */
export interface NativeWireSchema {
  surfaces: string[];
  tasks: string[];
  userSparse: string[];
  userDense: number;
  userEmbeddingDim: number;
  targetingDims: number;
  seqMaxLen: number;
  seqActions: number;
  reservePrice: number;
  modelName: string;
}

/** Intermediate values of the forward for each known, unique candidate (tests and debugging).
 *  Eligibility is not applied. Matrices are row-major [candidates × width]. */
export interface NativeExplain {
  rows: Int32Array;
  user: Float32Array; // [du]
  sequence: Float32Array; // H, [n × d_s] (after sequence.norm)
  query: Float32Array; // retrieval query q = L2n(user_tower(u)), [D_r]
  ad: Float32Array; // a_c
  targetAttention: Float32Array; // ta_c
  input: Float32Array; // x = [u ; a_c ; ta_c]
  masknet: Float32Array; // x0, [× D]
  cross: Float32Array; // x_L
  hidden: Float32Array; // last MLP output
  logits: Float32Array; // [× T]
  probs: Float32Array; // [× T]
  utility: Float32Array; // [×]
  retrievalScores: Float32Array; // q · ads.retrieval[c], [×]
  /** per row, the first eligibility reason that drops it under the live ad state (docs/funnel.md
   *  order): 0 eligible, 1 excluded ad, 2 excluded advertiser, 3 inactive, 4 out of budget,
   *  5 targeting, 6 paced */
  drops: Uint8Array;
}

export interface NativeEngine {
  readonly backend: 'cpu' | 'cuda' | 'none';
  /** e.g. "cpu avx512 bf16 x2 threads" or "cuda:0 NVIDIA H100" */
  readonly description: string;
  readonly numAds: number;
  /** `deadline`: ms since the epoch; a request still waiting for an engine thread past it is
   *  dropped ("deadline exceeded: ..."). Absent or 0 = none. */
  rank(request: Uint8Array | NativeWireRequest, deadline?: number): Promise<NativeResult>;
  retrieve(request: Uint8Array | NativeWireRequest, deadline?: number): Promise<NativeResult>;
  retrieveAndRank(request: Uint8Array | NativeWireRequest, deadline?: number): Promise<NativeResult>;
  /** The run on the calling JS thread (op 0 rank, 1 retrieve, 2 retrieveAndRank), its result
   *  returned, its error thrown; the CPU backend only. */
  runHere(op: 0 | 1 | 2, request: NativeWireRequest, deadline?: number): NativeResult;
  /** A mapFile() handle, for this thread, on the bundle file the engine reads in place
   *  (undefined when its tables were copied into memory). */
  mapping(): MappedFileHandle | undefined;
  explain(request: Uint8Array): Promise<NativeExplain>;
  /** One micro-batch (src/batcher/): ops[i] 0 = rank, 1 = retrieve, 2 = retrieveAndRank for
   *  requests[i]; per request its result, or an Error when that request alone was refused. */
  runBatch(ops: Uint8Array, requests: (Uint8Array | NativeWireRequest)[]): Promise<(NativeResult | Error)[]>;
  /** Live ad state (docs/funnel.md): the whole state of each listed ad, applied as one batch that
   *  no request sees half of. `bid` is the live bid override per ad, NaN (or no array) = the
   *  bundle's bid. Returns how many ids were unknown (and ignored). */
  setAdState(ids: BigInt64Array, active: Uint8Array, inBudget: Uint8Array, pacingRate: Float32Array, bid?: Float32Array): number;
  /** The live state's copy-on-write layout: `chunks` chunks of `chunkRows` rows; `lastCopied` the
   *  chunks the last applied batch copied (a batch costs O(changed), not O(N)). */
  adStateStats(): { chunkRows: number; chunks: number; lastCopied: number };
  /** One surface's fallback plan: `rows` first, in order, then every other ad by bid; `value` the
   *  surface's estimated Σ_t w_t p̄_t and `probs` its mean probabilities [T]. */
  setFallback(surface: number, rows: Int32Array, value: number, probs: Float32Array): void;
  /** The fallback answer to a feature bundle (synchronous, host memory only). */
  fallback(request: Uint8Array, op: 'rank' | 'retrieve' | 'retrieveAndRank'): NativeResult;
  /** The fallback answer to a prepared WireRequest with its response (`reason`: FallbackReason 1..3). */
  fallback(request: NativeWireRequest, op: 'rank' | 'retrieve' | 'retrieveAndRank', reason: number): NativeResult;
  /** Sets what prepare() validates against. */
  setWireSchema(schema: NativeWireSchema): void;
  /** Validates a WireRequest against the model (the checks of src/handlers/validate.ts, in its
   *  order) and writes its feature bundle; returns its size (the batcher's). A refusal throws an
   *  Error with `field`. `version`: the version label the response names. */
  prepare(request: NativeWireRequest, maxCandidates: number, version: string): number;
  /** The answer of a prepared request that needs no engine work (Rank without candidates). */
  empty(request: NativeWireRequest): NativeResult;
  /** Test builds only (ADRANK_TEST_HOOKS): the next n model runs fail as a device error, an
   *  illegal address or ('hung') the CUDA watchdog's verdict. */
  injectDeviceErrors?(n: number, kind?: DeviceFault): void;
  /** Test builds only: a fault inside the backend. CUDA: 'capture' (the next n graph captures
   *  fail part way), 'hang' (the next request's work runs n ms longer on the device). */
  injectBackendFault?(kind: 'capture' | 'hang', n: number): void;
  /** The backend's own counters (all zero on the CPU backend). */
  deviceStats(): DeviceStats;
  /** Runs in flight. */
  inflight(): number;
  /** How many times the JS thread was woken for finished calls, and how many calls those wake-ups
   *  completed (one wake-up completes every call that is ready). */
  completions(): { wakeUps: number; calls: number };
  /** Frees the engine; throws if runs are in flight. */
  dispose(): void;
  /** The key under which the other JS threads of this process attach to this same native engine
   *  (`new Engine({ shared: key })`): one copy of the model, one CUDA context. The engine is freed
   *  when the last thread's wrapper lets go. */
  share(): number;
}

export interface Capabilities {
  cpu: {
    compiled: true;
    usable: true;
    simd: 'avx512' | 'avx2' | 'scalar';
    threads: number;
    /** a bf16 GEMM kernel runs here (bf16Kernel is not '') */
    bf16: boolean;
    /** why `bf16` and `bf16Kernel` are what they are, e.g. "this CPU has AVX512-BF16 (vdpbf16ps)" */
    bf16Reason: string;
    /** the bf16 kernel precision bf16 runs: 'avx512bf16' (vdpbf16ps: bf16 A and W, fp32
     *  accumulation; where the CPU has AVX512-BF16 and the avx512 path is in use), 'avx512' (bf16
     *  weights widened to fp32, fp32 AVX-512 FMAs; AVX-512 without AVX512-BF16), 'avx2' (the same
     *  on AVX2; any other AVX2 + FMA CPU, or ADRANK_CPU_ISA=avx2), or '' (none: the scalar path) */
    bf16Kernel: 'avx512bf16' | 'avx512' | 'avx2' | '';
    /** whether precision 'auto' picks bf16 on this CPU (docs/cpu-bf16.md "Choosing it") */
    bf16Auto: boolean;
    /** why `bf16Auto` is what it is */
    bf16AutoReason: string;
  };
  /** targets: the GPU code the build carries, e.g. "sm_80, sm_89, sm_90a, PTX compute_90" */
  cuda: { compiled: boolean; usable: boolean; devices: number; reason: string; targets: string };
}

/** CPU kernels exposed for the kernel tests (test/20.kernels-cpu). */
export interface NativeKernels {
  /** C[m,n] = act(A[m,k] · W[n,k]ᵀ + bias[n]); act 0 = none, 1 = ReLU. precision 'bf16' runs the
   *  bf16 kernel in use (capabilities().cpu.bf16Kernel: avx512bf16 rounds A and W to bf16,
   *  the widening avx512 and avx2 only W; fp32 accumulation; throws where there is none). */
  linear(a: Float32Array, m: number, k: number, w: Float32Array, n: number, bias: Float32Array | null, act: number, precision?: 'fp32' | 'bf16'): Float32Array;
  /** x_{l+1} = x0 ⊙ (xl · Wᵀ + b) + xl, all [m × n], W [n × n]. */
  crossLayer(x0: Float32Array, xl: Float32Array, m: number, w: Float32Array, bias: Float32Array): Float32Array;
  /** Row LayerNorm (eps 1e-5) with affine, [m × n]. */
  layerNorm(x: Float32Array, m: number, n: number, gamma: Float32Array, beta: Float32Array): Float32Array;
}

/** Opaque native handles (type-tagged: anything else is refused). */
export type MappedFileHandle = { readonly __mapped: unique symbol };
export type IdIndexHandle = { readonly __idIndex: unique symbol };

export interface MappedFile {
  size: number;
  handle: MappedFileHandle;
}

export interface NativeBinding {
  Engine: new (init: NativeModelInit | { shared: number }) => NativeEngine;
  /** Engines shared (NativeEngine.share) that some JS thread still holds. */
  sharedEngines(): number;
  /** WireRequests made and released (release()) in this process so far */
  wireRequests(): { made: number; released: number };
  WireRequest: new (op: NativeOp, bytes: Uint8Array) => NativeWireRequest;
  /** Maps a file read-only (native engine/mapped_file.h); throws naming the path. */
  mapFile(path: string): MappedFile;
  /** An ArrayBuffer over `length` bytes of the mapping from `offset` (at most 2^32 - 1 bytes: a
   *  Node-API external buffer is a Buffer). Read-only pages: never write to it (the process faults). */
  mapView(handle: MappedFileHandle, offset: number, length: number): ArrayBuffer;
  /** '' while the mapped file is unchanged, else how it changed (truncated, written in place). */
  mappedFileChanged(handle: MappedFileHandle): string;
  /** "dev:ino:size:mtime_ns" of the mapped file (src/model/hash-worker.ts computes the same). */
  mappedFileId(handle: MappedFileHandle): string;
  /** The offset in the mapping of a typed array's first byte; -1 when it does not lie in it. */
  mapOffset(handle: MappedFileHandle, view: ArrayBufferView): number;
  /** The id → row index of unique ids, built in parallel; or the first duplicate found. */
  buildIdIndex(ids: BigInt64Array): { handle: IdIndexHandle } | { duplicate: bigint; rows: [number, number] };
  /** Rows of `ids` (-1 where absent). */
  idIndexRows(handle: IdIndexHandle, ids: BigInt64Array): Int32Array;
  /** The rows of each distinct key: `handle` indexes the keys (group g, in first-seen order), whose
   *  rows are rows[starts[g] .. starts[g + 1]], ascending. */
  buildGroupIndex(keys: BigInt64Array): { handle: IdIndexHandle; starts: Int32Array; rows: Int32Array };
  /** The first index of a NaN or ±Inf (bf16 bits in a Uint16Array), or -1; scanned in parallel. */
  firstNonFinite(values: Float32Array | Uint16Array): number;
  capabilities(): Capabilities;
  kernels: NativeKernels;
  /** Ends the process now with `code`, without waiting for queued native runs (process.exit
   *  would: libuv joins its thread pool at exit). */
  exitNow(code: number): never;
  /** Test builds only (ADRANK_TEST_HOOKS): the CUDA backend's completion wait (native
   *  engine/completion.h) against a thread that signals after `signalAfterMs` (< 0: never), with a
   *  watchdog of `limitMs` (0: none) and a poll that fails after `pollFaultAfterMs` (< 0: never). */
  completionWait?(signalAfterMs: number, limitMs: number, pollFaultAfterMs: number): CompletionOutcome;
}

/** A device fault a test-hooks build injects: an illegal address, or a stream the watchdog gave up on. */
export type DeviceFault = 'illegal-address' | 'hung';

export interface DeviceStats {
  /** CUDA graphs held (captured and instantiated) */
  graphs: number;
  /** graph captures or instantiations that failed; that key then runs eagerly */
  captureFailures: number;
  /** keys that run eagerly for good after a failed capture */
  eagerOnlyKeys: number;
  /** streams abandoned by the watchdog (ADRANK_CUDA_WATCHDOG_MS): their work never finished */
  lostStreams: number;
  /** streams requests run on (ADRANK_CUDA_STREAMS, default 4); 0 on the CPU backend */
  streams: number;
}

export interface CompletionOutcome {
  outcome: 'finished' | 'hung' | 'error';
  waitedMs: number;
  error: string;
  /** the shared state was freed once the waiter and the signaller both let go of it */
  released: boolean;
}

function findAddon(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  // src/engine (tsx) or dist/src/engine (compiled): walk up to the package root.
  for (let dir = here, i = 0; i < 5; i++, dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) {
      const override = process.env.ADRANK_ADDON;
      return override ? resolve(override) : join(dir, 'build', 'Release', 'adrank.node');
    }
  }
  throw new Error('adrank: cannot find the package root to load build/Release/adrank.node');
}

let cached: NativeBinding | undefined;

/** Loads an addon from an explicit path (the test-hooks build in test/64); `binding()` is the one
 *  everything else uses. */
export function loadBinding(path: string): NativeBinding {
  if (!existsSync(path)) throw new Error(`adrank: no addon at ${path}`);
  return createRequire(import.meta.url)(resolve(path)) as NativeBinding;
}

/** Loads the addon once. Throws a clear error when it has not been built. */
export function binding(): NativeBinding {
  if (cached) return cached;
  const path = findAddon();
  if (!existsSync(path)) throw new Error(`adrank: native addon not built (${path} missing); run \`npm install\` or \`npm run build:native\``);
  const require = createRequire(import.meta.url);
  cached = require(path) as NativeBinding;
  return cached;
}
