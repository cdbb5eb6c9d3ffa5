/**
 * The engine as the rest of TypeScript sees it: load a bundle, resolve the device, pack requests
 * into feature bundles and run them on the native engine. The only module besides binding.ts
 * that touches the addon.
 */
import { binding, type Capabilities, type NativeEngine, type NativeExplain, type NativeModelInit, type NativeResult } from './binding.js';
import { loadBundle, type LoadedBundle } from '../model/bundle.js';
import { modelDims, type ModelConfig } from '../model/config.js';
import { packFeatureBundle, type EngineRequest } from '../features/feature-bundle.js';

export type { NativeResult, NativeExplain, Capabilities } from './binding.js';
export type { EngineRequest } from '../features/feature-bundle.js';

export interface EngineOptions {
  /** 'auto' (CUDA when usable, else CPU), 'cpu', 'cuda' or 'cuda:N'. Default 'auto'. */
  device?: string;
  /** CPU threads, 0 = all hardware threads. */
  threads?: number;
  /** Precision of the CPU backend's MaskNet / DCNv2 / MLP GEMMs: 'auto' (bf16 where the CPU has
   *  native bf16 dot products, AVX512-BF16; else fp32), 'fp32' or 'bf16'. Default 'fp32' here;
   *  the CLI (`--precision`) defaults to 'auto'. See docs/cpu-bf16.md. */
  precision?: string;
}

/** Error from the engine, with a code the handlers map to a gRPC status. */
export class EngineError extends Error {
  constructor(
    message: string,
    readonly code: 'INVALID_REQUEST' | 'DEVICE' | 'DISPOSED' | 'BUNDLE' | 'INTERNAL',
  ) {
    super(message);
    this.name = 'EngineError';
  }
}

export function capabilities(): Capabilities {
  return binding().capabilities();
}

/** 'auto' → 'cuda:0' when a usable GPU is found, else 'cpu'; 'cuda' → 'cuda:0'. */
export function resolveDevice(device: string): { device: string; reason: string } {
  const caps = capabilities();
  if (device === 'auto') {
    if (caps.cuda.usable) return { device: 'cuda:0', reason: 'auto: CUDA device usable' };
    return { device: 'cpu', reason: `auto: no usable CUDA device (${caps.cuda.reason}), using the CPU backend` };
  }
  if (device === 'cpu') return { device, reason: 'requested' };
  const m = /^cuda(?::(\d+))?$/.exec(device);
  if (!m) throw new EngineError(`expected auto, cpu, cuda or cuda:N for device, got ${JSON.stringify(device)}`, 'INVALID_REQUEST');
  if (!caps.cuda.usable) throw new EngineError(`device ${device} requested but CUDA is not usable: ${caps.cuda.reason}`, 'DEVICE');
  return { device: `cuda:${m[1] ?? '0'}`, reason: 'requested' };
}

export type Precision = 'fp32' | 'bf16';

/**
 * The precision the engine runs at on `device` (already resolved: 'cpu' or 'cuda:N') and why.
 * CPU: 'auto' → bf16 where capabilities().cpu.bf16 (AVX512-BF16), else fp32; 'bf16' on a CPU
 * without it is a DEVICE error. CUDA: the GPU path computes in bf16, so 'auto' and 'bf16' give
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
  return { precision: cpu.bf16 ? 'bf16' : 'fp32', reason: `auto, ${cpu.bf16Reason}` };
}

export function nativeInit(b: LoadedBundle, device: string, threads: number, precision: Precision = 'fp32'): NativeModelInit {
  const c = b.config;
  const d = modelDims(c);
  return {
    device,
    threads,
    precision,
    tensors: b.tensors,
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

export class Engine {
  private constructor(
    private readonly native: NativeEngine,
    readonly bundle: LoadedBundle,
    /** why this device and precision were chosen, for logs and GetModel */
    readonly deviceReason: string,
    /** the precision of the candidate-side GEMMs ('bf16' on CUDA) */
    readonly precision: Precision,
  ) {}

  /** Loads and validates a bundle file and builds the engine on the chosen device. */
  static async load(path: string, options: EngineOptions = {}): Promise<Engine> {
    const bundle = await loadBundle(path);
    return Engine.fromBundle(bundle, options);
  }

  static fromBundle(bundle: LoadedBundle, options: EngineOptions = {}): Engine {
    const { device, reason } = resolveDevice(options.device ?? 'auto');
    const p = resolvePrecision(options.precision ?? 'fp32', device);
    const Native = binding().Engine;
    let native: NativeEngine;
    try {
      native = new Native(nativeInit(bundle, device, options.threads ?? 0, p.precision));
    } catch (e) {
      throw new EngineError(`cannot build the engine on ${device}: ${(e as Error).message}`, 'BUNDLE');
    }
    return new Engine(native, bundle, `${reason}; precision ${p.precision}: ${p.reason}`, p.precision);
  }

  get config(): ModelConfig {
    return this.bundle.config;
  }
  get backend(): 'cpu' | 'cuda' {
    return this.native.backend;
  }
  get description(): string {
    return this.native.description;
  }
  get numAds(): number {
    return this.native.numAds;
  }

  rank(r: EngineRequest): Promise<NativeResult> {
    return this.call(() => this.native.rank(packFeatureBundle(this.config, r)));
  }
  retrieve(r: EngineRequest): Promise<NativeResult> {
    return this.call(() => this.native.retrieve(packFeatureBundle(this.config, r)));
  }
  retrieveAndRank(r: EngineRequest): Promise<NativeResult> {
    return this.call(() => this.native.retrieveAndRank(packFeatureBundle(this.config, r)));
  }
  explain(r: EngineRequest): Promise<NativeExplain> {
    return this.call(() => this.native.explain(packFeatureBundle(this.config, r)));
  }

  setAdState(ids: BigInt64Array, active: Uint8Array, inBudget: Uint8Array, pacingRate: Float32Array): number {
    return this.native.setAdState(ids, active, inBudget, pacingRate);
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
      if (e instanceof EngineError) throw e;
      const msg = (e as Error).message ?? String(e);
      // The native side's messages: bad input is "expected <what> for <field>, got <value>" (the
      // one shape, STYLE.md); a disposed engine says so; CUDA errors carry the CUDA error name.
      const code = /^engine (disposed|busy)/.test(msg) ? 'DISPOSED' : /^expected /.test(msg) ? 'INVALID_REQUEST' : /cuda/i.test(msg) ? 'DEVICE' : 'INTERNAL';
      throw new EngineError(msg, code);
    }
  }
}
