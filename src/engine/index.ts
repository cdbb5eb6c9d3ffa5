/**
 * The engine as the rest of TypeScript sees it: load a bundle, resolve the device, pack requests
 * into feature bundles and run them on the native engine. The only module besides binding.ts
 * that touches the addon.
 */
import { binding, type Capabilities, type DeviceFault, type DeviceStats, type NativeBinding, type NativeEngine, type NativeExplain, type NativeModelInit, type NativeOp, type NativeResult, type NativeWireRequest, type NativeWireSchema, type TensorArray } from './binding.js';
import { adRows, loadBundle, type LoadedBundle } from '../model/bundle.js';
import { modelDims, type ModelConfig } from '../model/config.js';
import { packFeatureBundle, type EngineRequest } from '../features/feature-bundle.js';

export type { NativeResult, NativeExplain, Capabilities, NativeOp, NativeWireRequest } from './binding.js';
export type { EngineRequest } from '../features/feature-bundle.js';

export interface EngineOptions {
  /** 'auto' (CUDA when usable, else CPU), 'cpu', 'cuda' or 'cuda:N'. Default 'auto'. */
  device?: string;
  /** CPU threads, 0 = all hardware threads. */
  threads?: number;
  /** The addon to build the engine with (default: the one `binding()` loads). Tests pass the
   *  test-hooks build here; nothing else does. */
  binding?: NativeBinding;
  /** Precision of the CPU backend's MaskNet / DCNv2 / MLP GEMMs: 'auto' (bf16 where
   *  capabilities().cpu.bf16Auto: wherever there is a bf16 kernel; fp32 on the scalar path), 'fp32' or
   *  'bf16' (bf16 weights on any AVX2 CPU). Default 'fp32' here on
   *  the CPU and bf16 on CUDA (its only precision; 'fp32' is refused there); the CLI (`--precision`)
   *  defaults to 'auto'. See docs/cpu-bf16.md. */
  precision?: string;
  /** Only the ad tables: an engine for fallback answers and nothing else (`--fallback-only`, when
   *  no model version loads). No device is used; `backend` is 'none'. */
  adsOnly?: boolean;
  /** The CPU retrieval scan: 'fp32' (default) reads the fp32 table; 'bf16' keeps a bf16 copy of it
   *  (2 bytes per value more in memory), scans that, half the bytes, and rescores the near-top in
   *  fp32, so the answers are the fp32 scan's (docs/funnel.md "Retrieval scan"). */
  retrievalScan?: 'fp32' | 'bf16';
  /** How long the engine's CPU threads spin for the next parallel step of a request before they
   *  sleep, in µs (0 to 10,000; 0 never spins). Default 50 on the CPU backend (a request's layers
   *  come microseconds apart and a sleeping thread takes tens of µs to wake), 0 on CUDA (the
   *  threads only fan a batch out and wait for the GPU) (docs/operations.md "CPU threads"). */
  cpuSpinUs?: number;
  /** Resolve before the file's sha256 is known (it is hashed on a worker thread meanwhile):
   *  `engine.bundle.sha256` is '' until `engine.bundle.hashed` resolves. The server awaits it before
   *  a version serves, so the hash overlaps the engine's build, the fallback plan and the warm-up.
   *  Default false: the sha256 is known when load resolves. */
  hashLater?: boolean;
}

/** One surface's fallback, as estimated at load: value = Σ_t w_t p̄_t over a sample of ads. */
export interface FallbackEstimate {
  surface: string;
  /** ads listed by the bundle's `fallback.<surface>` (0 = ordered by bid alone) */
  listed: number;
  value: number;
  probs: number[];
  /** ads the estimate averaged over */
  sample: number;
}

/** What another JS thread of this process needs to serve an engine this thread loaded
 *  (Engine.share / Engine.attach): the key of the native engine and the bundle without its
 *  large tensors (the model stays in native memory, once). Structured-clonable. */
export interface SharedEngine {
  key: number;
  /** the bundle less the tensors in `mapped` */
  bundle: LoadedBundle;
  /** tensors that lie in the mapped bundle file: where (offset, bytes) and as what (the typed
   *  array's constructor name); the attaching thread views them in the engine's own mapping */
  mapped?: Record<string, { offset: number; bytes: number; type: string }>;
  deviceReason: string;
  precision: Precision;
  fallbackPlan: FallbackEstimate[] | undefined;
}

/** Tensors a thread that attaches to a shared engine can read: the ad tables the handlers read
 *  (ids, advertisers, targeting, bids) and anything small (means, task weights, lists). From a
 *  mapped bundle they are views of the same mapping (no copy); otherwise one copy in shared memory
 *  serves every thread. */
const ATTACHED_TENSORS = new Set(['ads.id', 'ads.advertiser', 'ads.targeting', 'ads.bid']);
const SMALL_TENSOR_BYTES = 1 << 20;

/** The shared bundle with its mapped tensors viewed in the shared engine's mapping, on this thread. */
function viewMapped(b: NativeBinding, native: NativeEngine, shared: SharedEngine): LoadedBundle {
  const entries = Object.entries(shared.mapped ?? {});
  if (entries.length === 0) return shared.bundle;
  const handle = native.mapping();
  if (!handle) throw new EngineError('the shared engine has no mapped bundle file to view its tables in', 'INTERNAL');
  const tensors = { ...shared.bundle.tensors };
  for (const [name, { offset, bytes, type }] of entries) {
    const Ctor = (globalThis as unknown as Record<string, new (buf: ArrayBuffer) => TensorArray>)[type];
    tensors[name] = new Ctor(b.mapView(handle, offset, bytes));
  }
  return { ...shared.bundle, tensors, mapping: { handle, size: shared.bundle.fileSize } };
}

/** A copy of `t` in a SharedArrayBuffer (postMessage then shares it instead of copying it). */
function inSharedMemory<T extends TensorArray>(t: T): T {
  const copy = new (t.constructor as new (b: SharedArrayBuffer) => T)(new SharedArrayBuffer(t.byteLength));
  (copy as unknown as { set(a: T): void }).set(t);
  return copy;
}

/** Ads scored (with a neutral request) to estimate each surface's mean probabilities. */
export const FALLBACK_SAMPLE = 512;

export type FallbackOp = 'rank' | 'retrieve' | 'retrieveAndRank';

/** Error from the engine, with a code the handlers map to a gRPC status. */
/** CUDA errors that poison the context: every later call on it fails the same way, so the engine
 *  must be replaced (docs/cuda.md "Errors"). The backend's watchdog ("CUDA stream hung", native
 *  engine/completion.h) counts too: the hung work still holds its stream and buffers. */
const STICKY_CUDA_ERROR = /cudaError(IllegalAddress|LaunchFailure|ECCUncorrectable|HardwareStackError|IllegalInstruction|MisalignedAddress|InvalidAddressSpace|InvalidPc|Assert|LaunchTimeout)\b|^CUDA stream hung\b/;

/** A deadline for the native call: finite ms since the epoch, else none. */
function finiteDeadline(d: number | undefined): number | undefined {
  return d !== undefined && Number.isFinite(d) && d > 0 ? d : undefined;
}

export class EngineError extends Error {
  constructor(
    message: string,
    readonly code: 'INVALID_REQUEST' | 'DEVICE' | 'DISPOSED' | 'BUNDLE' | 'DEADLINE' | 'INTERNAL',
  ) {
    super(message);
    this.name = 'EngineError';
  }
  /** A device error after which the engine's device context cannot be used again. */
  get sticky(): boolean {
    return this.code === 'DEVICE' && STICKY_CUDA_ERROR.test(this.message);
  }
}

export function capabilities(): Capabilities {
  return binding().capabilities();
}

/** Why CUDA cannot be used, in words a user acts on; the raw CUDA error is `detail`. */
export function cudaUnavailable(caps: Capabilities): string {
  if (!caps.cuda.compiled) return 'this build has no CUDA backend (nvcc was not found when it was built)';
  if (/InsufficientDriver|NoDevice|no CUDA-capable|driver/i.test(caps.cuda.reason)) return 'no NVIDIA GPU/driver found';
  return `no usable NVIDIA GPU (${caps.cuda.reason})`;
}

export interface DeviceChoice {
  device: string;
  /** why, for logs and GetModel.device_reason */
  reason: string;
  /** the raw CUDA status behind the choice, for debug logs ('' when none) */
  detail: string;
}

/** 'auto' → 'cuda:0' when a usable GPU is found, else 'cpu'; 'cuda' → 'cuda:0'. */
export function resolveDevice(device: string): DeviceChoice {
  const caps = capabilities();
  const detail = caps.cuda.reason;
  if (device === 'auto') {
    if (caps.cuda.usable) return { device: 'cuda:0', reason: `auto: a CUDA device this build has code for (${caps.cuda.targets})`, detail };
    return { device: 'cpu', reason: `auto: ${cudaUnavailable(caps)}; using the CPU backend`, detail };
  }
  if (device === 'cpu') return { device, reason: 'requested', detail };
  const m = /^cuda(?::(\d+))?$/.exec(device);
  if (!m) throw new EngineError(`expected auto, cpu, cuda or cuda:N for device, got ${JSON.stringify(device)}`, 'INVALID_REQUEST');
  if (!caps.cuda.usable)
    throw new EngineError(`device ${device} requested but ${cudaUnavailable(caps)}; use --device auto (CUDA when usable, else the CPU) or --device cpu`, 'DEVICE');
  return { device: `cuda:${m[1] ?? '0'}`, reason: 'requested', detail };
}

export type Precision = 'fp32' | 'bf16';

/**
 * The precision the engine runs at on `device` (already resolved: 'cpu' or 'cuda:N') and why.
 * CPU: 'auto' → bf16 where capabilities().cpu.bf16Auto (wherever there is a bf16 kernel),
 * else fp32; 'bf16' where there is no bf16 kernel (capabilities().cpu.bf16) is a DEVICE error. CUDA: the GPU path computes in bf16, so 'auto' and 'bf16' give
 * bf16 and 'fp32' is refused.
 */
export function resolvePrecision(precision: string, device: string): { precision: Precision; reason: string } {
  if (precision !== 'auto' && precision !== 'fp32' && precision !== 'bf16')
    throw new EngineError(`expected auto, fp32 or bf16 for precision, got ${JSON.stringify(precision)}`, 'INVALID_REQUEST');
  if (device !== 'cpu') {
    if (precision === 'fp32') throw new EngineError(`expected auto or bf16 for precision on ${device} (the CUDA backend computes in bf16), got "fp32"`, 'INVALID_REQUEST');
    return { precision: 'bf16', reason: `${precision === 'auto' ? 'auto' : 'requested'}, the CUDA backend computes in bf16` };
  }
  const cpu = capabilities().cpu;
  if (precision === 'fp32') return { precision, reason: 'requested' };
  if (precision === 'bf16') {
    if (!cpu.bf16) throw new EngineError(`precision bf16 requested but ${cpu.bf16Reason}`, 'DEVICE');
    return { precision, reason: `requested, ${cpu.bf16Reason}` };
  }
  return { precision: cpu.bf16Auto ? 'bf16' : 'fp32', reason: `auto, ${cpu.bf16AutoReason}` };
}

export function nativeInit(b: LoadedBundle, device: string, threads: number, precision: Precision = 'fp32'): NativeModelInit {
  const c = b.config;
  const d = modelDims(c);
  return {
    device,
    threads,
    precision,
    tensors: b.tensors,
    mapping: b.mapping?.handle,
    idIndex: b.adIndex?.handle,
    dims: {
      userDense: c.user_dense,
      adDense: c.ad_dense,
      denseClip: c.dense_clip,
      userSparseNames: c.user_sparse.map((f) => f.name),
      userSparseCardinality: c.user_sparse.map((f) => f.cardinality),
      userSparseDim: c.user_sparse.map((f) => f.dim),
      adSparseNames: c.ad_sparse.map((f) => f.name),
      adSparseCardinality: c.ad_sparse.map((f) => f.cardinality),
      adSparseDim: c.ad_sparse.map((f) => f.dim),
      userEmbeddingDim: c.user_embedding_dim,
      adEmbeddingDim: c.ad_embedding_dim,
      surfaceDim: c.surface_dim,
      surfaces: d.surfaces,
      tasks: d.tasks,
      targetingDims: c.targeting_dims.length,
      seqMaxLen: c.sequence.max_len,
      seqItemBuckets: c.sequence.item_buckets,
      seqActions: c.sequence.actions,
      seqDim: c.sequence.dim,
      seqHeads: c.sequence.heads,
      seqFfnDim: c.sequence.ffn_dim,
      seqLayers: c.sequence.layers,
      masknetBlocks: c.masknet.blocks,
      masknetHidden: d.maskHidden,
      masknetOutput: c.masknet.output_dim,
      dcnLayers: c.dcn.layers,
      dcnRank: c.dcn.rank,
      mlp: c.mlp,
      retrievalDim: c.retrieval.dim,
      retrievalHidden: c.retrieval.hidden,
      retrievalBf16: b.dtypes['ads.retrieval'] === 'BF16',
      numAds: b.numAds,
    },
  };
}

/** A request that says nothing about the user: z-scored dense features 0, no sparse ids, no
 *  sequence, untargeted, no cap; used to estimate a surface's mean probabilities. */
function neutralRequest(engine: Engine, surface: number, candidates: BigInt64Array): EngineRequest {
  const c = engine.config;
  return {
    requestId: 'adrank-fallback-estimate',
    surface,
    k: 1,
    cap: 0,
    mode: 0,
    partitions: 1,
    price: false,
    reserve: 0,
    retrieveCount: 0,
    userDense: engine.bundle.tensors['features.user_dense.mean'] as Float32Array,
    userEmbedding: new Float32Array(c.user_embedding_dim),
    targeting: c.targeting_dims.map(() => 64),
    userSparse: c.user_sparse.map(() => new BigInt64Array(0)),
    seqItems: new BigInt64Array(0),
    seqActions: new Uint32Array(0),
    candidates,
    excludedAdvertisers: new BigInt64Array(0),
    excludedAds: new BigInt64Array(0),
  };
}

export class Engine {
  private constructor(
    private readonly native: NativeEngine,
    /** the addon this engine lives in: its WireRequests are the ones it takes */
    private readonly addon: NativeBinding,
    readonly bundle: LoadedBundle,
    /** why this device and precision were chosen, for logs and GetModel */
    readonly deviceReason: string,
    /** the precision of the candidate-side GEMMs ('bf16' on CUDA) */
    readonly precision: Precision,
    /** the raw CUDA status behind the choice, for debug logs */
    readonly deviceDetail = '',
  ) {}

  /** Loads and validates a bundle file and builds the engine on the chosen device. */
  static async load(path: string, options: EngineOptions = {}): Promise<Engine> {
    const bundle = await loadBundle(path, { adsOnly: options.adsOnly, hash: 'background' });
    const engine = Engine.fromBundle(bundle, options);
    if (!options.hashLater) await bundle.hashed;
    return engine;
  }

  static fromBundle(bundle: LoadedBundle, options: EngineOptions = {}): Engine {
    if (options.adsOnly) {
      const Native = (options.binding ?? binding()).Engine;
      let native: NativeEngine;
      try {
        native = new Native({ ...nativeInit(bundle, 'cpu', 1), adsOnly: true });
      } catch (e) {
        throw new EngineError(`cannot read the ad tables: ${(e as Error).message}`, 'BUNDLE');
      }
      native.setWireSchema(wireSchema(bundle.config));
      return new Engine(native, options.binding ?? binding(), bundle, 'ad tables only: fallback answers (--fallback-only)', 'fp32');
    }
    const { device, reason, detail } = resolveDevice(options.device ?? 'auto');
    // library default: fp32 on the CPU (the exact path), bf16 on CUDA (its only precision)
    const p = resolvePrecision(options.precision ?? (device === 'cpu' ? 'fp32' : 'auto'), device);
    const Native = (options.binding ?? binding()).Engine;
    let native: NativeEngine;
    try {
      native = new Native({ ...nativeInit(bundle, device, options.threads ?? 0, p.precision), retrievalScan: options.retrievalScan ?? 'fp32', ...(options.cpuSpinUs === undefined ? {} : { cpuSpinUs: options.cpuSpinUs }) });
    } catch (e) {
      throw new EngineError(`cannot build the engine on ${device}: ${(e as Error).message}`, 'BUNDLE');
    }
    native.setWireSchema(wireSchema(bundle.config));
    return new Engine(native, options.binding ?? binding(), bundle, `${reason}; precision ${p.precision}: ${p.reason}`, p.precision, detail);
  }

  /** This engine for another JS thread of this process (worker_threads): see SharedEngine. */
  share(): SharedEngine {
    const b = this.bundle;
    const tensors: LoadedBundle['tensors'] = {};
    // in shared memory: every thread reads the one copy (a view of the mapped file cannot be sent;
    // the native engine the threads share reads the mapping itself)
    const mapped: NonNullable<SharedEngine['mapped']> = {};
    const handle = b.mapping?.handle;
    for (const [name, t] of Object.entries(b.tensors)) {
      if (!(ATTACHED_TENSORS.has(name) || t.byteLength <= SMALL_TENSOR_BYTES)) continue;
      const offset = handle && t.byteLength > SMALL_TENSOR_BYTES ? this.addon.mapOffset(handle, t) : -1;
      if (offset >= 0) mapped[name] = { offset, bytes: t.byteLength, type: t.constructor.name };
      else tensors[name] = inSharedMemory(t);
    }
    // the id index and the mapping are this thread's native handles: the other thread gets the
    // mapping from the shared engine, and builds its own index from the ids when it needs one (adRows)
    const bundle: LoadedBundle = { ...b, tensors, adIndex: undefined, mapping: undefined, hashed: undefined };
    return { key: this.native.share(), bundle, mapped, deviceReason: this.deviceReason, precision: this.precision, fallbackPlan: this.fallbackPlan };
  }

  /** The engine another thread shared (its native engine, not a copy). Throws when every thread
   *  that held it has let go. */
  static attach(shared: SharedEngine, options: Pick<EngineOptions, 'binding'> = {}): Engine {
    const b = options.binding ?? binding();
    let native: NativeEngine;
    try {
      native = new b.Engine({ shared: shared.key });
    } catch (e) {
      throw new EngineError((e as Error).message, 'DISPOSED');
    }
    native.setWireSchema(wireSchema(shared.bundle.config));  // the schema is per thread's wrapper
    const engine = new Engine(native, b, viewMapped(b, native, shared), shared.deviceReason, shared.precision);
    engine.fallbackPlan = shared.fallbackPlan;
    return engine;
  }

  get config(): ModelConfig {
    return this.bundle.config;
  }
  get backend(): 'cpu' | 'cuda' | 'none' {
    return this.native.backend;
  }
  /** An engine of the ad tables only: it gives fallback answers and runs no model. */
  get adsOnly(): boolean {
    return this.native.backend === 'none';
  }
  get description(): string {
    return this.native.description;
  }
  get numAds(): number {
    return this.native.numAds;
  }

  /** `deadline` (ms since the epoch, optional): dropped, unrun, if still queued past it. */
  rank(r: EngineRequest, deadline?: number): Promise<NativeResult> {
    return this.call(() => this.native.rank(packFeatureBundle(this.config, r), finiteDeadline(deadline)));
  }
  retrieve(r: EngineRequest, deadline?: number): Promise<NativeResult> {
    return this.call(() => this.native.retrieve(packFeatureBundle(this.config, r), finiteDeadline(deadline)));
  }
  retrieveAndRank(r: EngineRequest, deadline?: number): Promise<NativeResult> {
    return this.call(() => this.native.retrieveAndRank(packFeatureBundle(this.config, r), finiteDeadline(deadline)));
  }
  /** Parses an engine RPC's request bytes in native code (docs/wire.md). Throws "malformed
   *  request: ..." for bytes that are not a message of the op's request type. */
  parseWire(op: NativeOp, bytes: Uint8Array): NativeWireRequest {
    return new this.addon.WireRequest(op, bytes);
  }
  /** Whether `w` was parsed by this engine's addon (the only WireRequests it takes). */
  ownsWire(w: NativeWireRequest): boolean {
    return w instanceof this.addon.WireRequest;
  }
  /** Validates a parsed request against this model and writes its feature bundle; returns its size
   *  (src/handlers `size`). A refusal throws a WireRefusal naming the field. `version`: the label
   *  the response names. */
  prepare(w: NativeWireRequest, maxCandidates: number, version: string): number {
    try {
      return this.native.prepare(w, maxCandidates, version);
    } catch (e) {
      const field = (e as { field?: unknown }).field;
      if (typeof field === 'string') throw new WireRefusal((e as Error).message, field);
      throw toEngineError(e);
    }
  }
  /** What this engine's runs have cost, by op and size: the inline decision (runWireHere). */
  readonly runCost = new RunCost();
  private cpu?: boolean;
  /** Whether a run may be made on the calling JS thread (runWireHere): the CPU backend's runs. */
  get runsHere(): boolean {
    return (this.cpu ??= this.native.backend === 'cpu');
  }
  /** The run of a prepared request on this JS thread (the CPU backend only), for requests whose
   *  engine time is below a hand-off to a request thread and back (docs/wire.md "Inline runs"). */
  runWireHere(op: NativeOp, w: NativeWireRequest, deadline?: number): NativeResult {
    try {
      return this.native.runHere(op, w, finiteDeadline(deadline));
    } catch (e) {
      return rethrowEngineError(e);
    }
  }
  /** A prepared request through the engine; the result carries the response message. */
  runWire(op: NativeOp, w: NativeWireRequest, deadline?: number): Promise<NativeResult> {
    const d = finiteDeadline(deadline);
    // the native Promise itself, errors mapped on the way (one reaction, no async wrapper)
    return (op === 0 ? this.native.rank(w, d) : op === 1 ? this.native.retrieve(w, d) : this.native.retrieveAndRank(w, d)).then(undefined, rethrowEngineError);
  }
  /** The fallback answer to a prepared request, with its response (`reason`: the proto's FallbackReason). */
  fallbackWire(op: FallbackOp, w: NativeWireRequest, reason: number): NativeResult {
    if (!this.fallbackPlan) throw new EngineError('no fallback plan: prepareFallback() was not run', 'INTERNAL');
    const result = this.native.fallback(w, op, reason);
    return this.adsOnly ? { ...result, probs: new Float32Array(0), values: new Float32Array(0) } : result;
  }
  /** The answer, with its response, of a prepared request that needs no engine work. */
  emptyWire(w: NativeWireRequest): NativeResult {
    return this.native.empty(w);
  }
  /** The feature bundle of a validated request (what rank / retrieve / runBatch send). */
  pack(r: EngineRequest): Uint8Array {
    return packFeatureBundle(this.config, r);
  }
  /**
   * Several packed requests as one engine run (src/batcher/): each answer is what the request
   * would get alone. Per request: its result, or an EngineError when that request was refused; a
   * failure of the run itself rejects.
   */
  async runBatch(ops: Uint8Array, requests: (Uint8Array | NativeWireRequest)[]): Promise<(NativeResult | EngineError)[]> {
    const out = await this.call(() => this.native.runBatch(ops, requests));
    return out.map((r) => (r instanceof Error ? toEngineError(r) : r));
  }
  explain(r: EngineRequest): Promise<NativeExplain> {
    return this.call(() => this.native.explain(packFeatureBundle(this.config, r)));
  }

  /** Set by prepareFallback(); undefined until then (fallback() refuses). */
  fallbackPlan: FallbackEstimate[] | undefined;

  /**
   * Builds each surface's fallback plan (docs/funnel.md "Fallback"): the bundle's
   * `fallback.<surface>` ids first, then every other ad by bid; the surface's mean probabilities
   * p̄ over an evenly spaced sample of up to FALLBACK_SAMPLE ads, scored with a neutral request
   * (mean user features, no sparse ids, no sequence), and value = Σ_t w_t p̄_t with the surface's
   * default task weights. Run once at load, before serving.
   */
  async prepareFallback(): Promise<FallbackEstimate[]> {
    const c = this.config;
    const ids = this.bundle.tensors['ads.id'] as BigInt64Array;
    const n = ids.length;
    const step = Math.max(1, Math.floor(n / FALLBACK_SAMPLE));
    const sample = BigInt64Array.from({ length: Math.min(n, FALLBACK_SAMPLE) }, (_, i) => ids[i * step]);
    const weights = this.bundle.tensors['utility.task_weights'] as Float32Array;
    const T = c.tasks.length;
    const plan: FallbackEstimate[] = [];
    for (let s = 0; s < c.surfaces.length; s++) {
      // ads-only: no model to estimate with; value 1 (score = bid), no probabilities are answered
      const ex = this.adsOnly ? undefined : await this.explain(neutralRequest(this, s, sample));
      const probs = new Float32Array(T);
      const rows = ex?.rows.length ?? 0;
      for (let i = 0; i < rows; i++) for (let t = 0; t < T; t++) probs[t] += ex!.probs[i * T + t] / rows;
      let value = ex ? 0 : 1;
      for (let t = 0; ex && t < T; t++) value += weights[s * T + t] * probs[t];
      const list = this.bundle.tensors[`fallback.${c.surfaces[s]}`] as BigInt64Array | undefined;
      const listed = list ? adRows(this.bundle).rows(list) : new Int32Array(0);
      this.native.setFallback(s, listed, value, probs);
      plan.push({ surface: c.surfaces[s], listed: listed.length, value, probs: Array.from(probs), sample: rows });
    }
    this.fallbackPlan = plan;
    return plan;
  }

  /** The fallback answer (synchronous; host memory only, so it also works when the device failed).
   *  An ads-only engine has no model to give probabilities: its winners carry the bid as their
   *  score and no task probabilities or value (docs/funnel.md "Fallback"). */
  fallback(op: FallbackOp, r: EngineRequest): NativeResult {
    if (!this.fallbackPlan) throw new EngineError('no fallback plan: prepareFallback() was not run', 'INTERNAL');
    const result = this.native.fallback(packFeatureBundle(this.config, r), op);
    return this.adsOnly ? { ...result, probs: new Float32Array(0), values: new Float32Array(0) } : result;
  }

  /** Test builds only: the next n model runs fail as a device error (throws on a release addon). */
  injectDeviceErrors(n: number, kind: DeviceFault = 'illegal-address'): void {
    if (!this.native.injectDeviceErrors) throw new Error('this addon has no test hooks (build it with npm run build:test-hooks)');
    this.native.injectDeviceErrors(n, kind);
  }

  /** Test builds only: a fault inside the backend (NativeEngine.injectBackendFault). */
  injectBackendFault(kind: 'capture' | 'hang', n: number): void {
    if (!this.native.injectBackendFault) throw new Error('this addon has no test hooks (build it with npm run build:test-hooks)');
    this.native.injectBackendFault(kind, n);
  }

  /** The backend's counters: CUDA graphs, failed captures, eager-only keys, streams lost to the watchdog. */
  deviceStats(): DeviceStats {
    return this.native.deviceStats();
  }

  /** See NativeEngine.adStateStats. */
  adStateStats(): { chunkRows: number; chunks: number; lastCopied: number } {
    return this.native.adStateStats();
  }

  /** See NativeEngine.setAdState: one atomic batch; bid NaN = the bundle's bid. */
  setAdState(ids: BigInt64Array, active: Uint8Array, inBudget: Uint8Array, pacingRate: Float32Array, bid?: Float32Array): number {
    return bid ? this.native.setAdState(ids, active, inBudget, pacingRate, bid) : this.native.setAdState(ids, active, inBudget, pacingRate);
  }

  inflight(): number {
    return this.native.inflight();
  }

  dispose(): void {
    this.native.dispose();
  }

  private async call<T>(run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (e) {
      throw toEngineError(e);
    }
  }
}

/** A request the native validation refused (Engine.prepare): `field` as src/handlers/validate.ts names it. */
export class WireRefusal extends Error {
  constructor(
    message: string,
    readonly field: string,
  ) {
    super(message);
    this.name = 'WireRefusal';
  }
}

/** What the native validation of a request needs of the model's config. */
export function wireSchema(c: ModelConfig): NativeWireSchema {
  return {
    surfaces: c.surfaces,
    tasks: c.tasks,
    userSparse: c.user_sparse.map((f) => f.name),
    userDense: c.user_dense,
    userEmbeddingDim: c.user_embedding_dim,
    targetingDims: c.targeting_dims.length,
    seqMaxLen: c.sequence.max_len,
    seqActions: c.sequence.actions,
    reservePrice: c.reserve_price ?? 0,
    modelName: c.name,
  };
}

/**
 * The engine time of recent runs by op and size (log2 buckets of candidates), a moving average per
 * bucket: how long a run of this size takes here, so that one cheaper than a thread hand-off can
 * run where it is (docs/wire.md "Inline runs"). A bucket with no run yet knows nothing.
 */
export class RunCost {
  private readonly us = new Float64Array(3 * 32);

  private static slot(op: NativeOp, size: number): number {
    return op * 32 + Math.min(31, 32 - Math.clz32(size));
  }
  /** The average engine µs of a run of this op and size; undefined before the first. */
  estimate(op: NativeOp, size: number): number | undefined {
    const v = this.us[RunCost.slot(op, size)];
    return v > 0 ? v : undefined;
  }
  record(op: NativeOp, size: number, engineUs: number): void {
    if (!(engineUs > 0)) return;
    const i = RunCost.slot(op, size);
    const v = this.us[i];
    this.us[i] = v > 0 ? v + (engineUs - v) / 8 : engineUs;
  }
}

function rethrowEngineError(e: unknown): never {
  throw toEngineError(e);
}

/** A native error as an EngineError with the code the handlers map to a status. */
function toEngineError(e: unknown): EngineError {
  if (e instanceof EngineError) return e;
  const msg = (e as Error).message ?? String(e);
  // The native side's messages: bad input is "expected <what> for <field>, got <value>" (the
  // one shape, STYLE.md); a disposed engine says so; CUDA errors carry the CUDA error name.
  const code = /^engine (disposed|busy)/.test(msg)
    ? 'DISPOSED'
    : /^expected /.test(msg)
      ? 'INVALID_REQUEST'
      : /^deadline exceeded/.test(msg)
        ? 'DEADLINE'
        : /cuda/i.test(msg)
          ? 'DEVICE'
          : 'INTERNAL';
  return new EngineError(msg, code);
}
