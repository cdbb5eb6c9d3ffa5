/**
 * Synthetic bundles: the demo model of docs/design.md §4 (Pinterest's published shape) with a random ad
 * corpus, and small random configs for tests. Deterministic for a seed: same seed, same bytes.
 *
 * Initialisation is chosen so that the served model behaves like a trained one numerically:
 * Kaiming-scaled linear layers before ReLUs, LayerNorm gains ≈ 1, small DCN weights (the cross
 * layers stay close to the identity), zero-mean head rows (so the logits vary with the input
 * rather than carry one large common offset), and per-task calibration biases that put the
 * probabilities in a realistic range with a real spread across users and ads.
 */
import { expectedTensors, modelDims, type ModelConfig, type TensorSpec } from './config.js';
import { bundleMetadata } from './bundle.js';
import { Rng } from './random.js';
import { writeSafetensorsStream, type StreamEntry, type Tensor } from './safetensors.js';
import type { TensorArray } from '../engine/binding.js';

/** The reference demo config of docs/design.md §4. */
export function makeDemoConfig(): ModelConfig {
  return {
    name: 'adrank-demo',
    version: '1',
    tasks: ['click', 'long_click', 'save', 'conversion'],
    surfaces: ['home_feed', 'search', 'related'],
    targeting_dims: ['country', 'device', 'age_band'],
    user_dense: 16,
    ad_dense: 12,
    dense_clip: 5,
    user_sparse: [
      { name: 'interests', cardinality: 10000, dim: 16 },
      { name: 'topics', cardinality: 2000, dim: 16 },
      { name: 'locale', cardinality: 200, dim: 8 },
    ],
    ad_sparse: [
      { name: 'category', cardinality: 1000, dim: 16 },
      { name: 'creative_type', cardinality: 16, dim: 8 },
    ],
    user_embedding_dim: 64,
    ad_embedding_dim: 64,
    surface_dim: 8,
    sequence: { max_len: 32, item_buckets: 50000, actions: 4, dim: 64, heads: 4, ffn_dim: 128, layers: 1 },
    masknet: { blocks: 3, projection_ratio: 2.0, output_dim: 512 },
    dcn: { layers: 4, rank: 0 },
    mlp: [256, 128],
    retrieval: { dim: 64, hidden: [128] },
  };
}

export interface RandomConfigOptions {
  /** DCN rank: 0 = full rank; default random (full or low rank) */
  dcnRank?: number;
  /** transformer layers in the sequence encoder; default random 0..2 */
  seqLayers?: number;
  masknetBlocks?: number;
  surfaces?: number;
  tasks?: number;
}

/** A small random config (every optional part exercised somewhere) for tests. */
export function makeRandomConfig(rng: Rng, opts: RandomConfigOptions = {}): ModelConfig {
  const n = (lo: number, hi: number) => rng.int(lo, hi);
  const sparse = (prefix: string, count: number) => Array.from({ length: count }, (_, i) => ({ name: `${prefix}${i}`, cardinality: n(3, 40), dim: n(2, 6) }));
  const heads = n(1, 2);
  const tasks = opts.tasks ?? n(1, 4);
  const surfaces = opts.surfaces ?? n(1, 3);
  return {
    name: 'adrank-random',
    version: String(n(1, 99)),
    tasks: Array.from({ length: tasks }, (_, i) => `task${i}`),
    surfaces: Array.from({ length: surfaces }, (_, i) => `surface${i}`),
    targeting_dims: Array.from({ length: n(0, 3) }, (_, i) => `dim${i}`),
    user_dense: n(0, 5),
    ad_dense: n(0, 4),
    dense_clip: rng.pick([1, 2, 5]),
    user_sparse: sparse('u', n(0, 2)),
    ad_sparse: sparse('a', n(0, 2)),
    user_embedding_dim: n(2, 6),
    ad_embedding_dim: n(2, 6),
    surface_dim: n(1, 4),
    sequence: { max_len: n(2, 6), item_buckets: n(3, 30), actions: n(1, 4), dim: heads * n(2, 4), heads, ffn_dim: n(3, 12), layers: opts.seqLayers ?? n(0, 2) },
    masknet: { blocks: opts.masknetBlocks ?? n(1, 3), projection_ratio: rng.pick([0.5, 1, 1.5, 2]), output_dim: n(3, 10) },
    dcn: { layers: n(1, 3), rank: opts.dcnRank ?? (rng.uniform() < 0.5 ? 0 : n(1, 4)) },
    mlp: Array.from({ length: n(0, 2) }, () => n(3, 12)),
    retrieval: { dim: n(2, 6), hidden: Array.from({ length: n(0, 1) }, () => n(3, 10)) },
  };
}

export interface DemoBundleOptions {
  /** N, the ad count (default 100,000) */
  ads?: number;
  seed?: number;
  /** default makeDemoConfig() */
  config?: ModelConfig;
  /** dtype of ads.retrieval (default F32) */
  retrievalDtype?: 'F32' | 'BF16';
}

export interface DemoBundle {
  config: ModelConfig;
  tensors: Map<string, Tensor>;
  metadata: Record<string, string>;
}

const ALL_ONES = (1n << 64n) - 1n;

/** float → bf16 bits, round to nearest even (inputs are finite). */
export function toBf16(src: Float32Array): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) {
    const b = bits[i];
    out[i] = ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
  }
  return out;
}

/** Builds the tensors of a synthetic bundle for `config` (weights and an ad corpus). */
export function makeDemoBundle(opts: DemoBundleOptions = {}): DemoBundle {
  const config = opts.config ?? makeDemoConfig();
  const numAds = opts.ads ?? 100_000;
  const rng = new Rng(opts.seed ?? 1);
  const dims = modelDims(config);
  const tensors = new Map<string, Tensor>();
  const f32 = (spec: TensorSpec, data: Float32Array) => tensors.set(spec.name, { dtype: 'F32', shape: spec.shape, data });

  const specs = expectedTensors(config, numAds);
  const adSpecs = specs.filter((s) => s.name.startsWith('ads.'));
  for (const spec of specs) {
    if (spec.name.startsWith('ads.')) continue;
    f32(spec, initWeight(config, spec, rng, dims.cross));
  }

  // ---- the ad corpus: every table in blocks of rows, as writeDemoBundle streams it
  const corpus = new AdCorpus(config, numAds, opts.seed ?? 1, tensors.get('features.ad_dense.mean')!.data as Float32Array, tensors.get('features.ad_dense.std')!.data as Float32Array);
  const byName: Record<string, Tensor> = {};
  for (const spec of adSpecs) byName[spec.name] = corpus.whole(spec.name, opts.retrievalDtype ?? 'F32');
  for (const spec of adSpecs) tensors.set(spec.name, byName[spec.name]);
  return { config, tensors, metadata: bundleMetadata(config) };
}

/** One weight tensor's initial values, by its role (see the file comment). */
function initWeight(c: ModelConfig, spec: TensorSpec, rng: Rng, cross: number): Float32Array {
  const name = spec.name;
  const size = spec.shape.reduce((a, b) => a * b, 1);
  const fanIn = spec.shape.length === 2 ? spec.shape[1] : 1;
  const tail = name.slice(name.lastIndexOf('.') + 1);
  const isNorm = /(^|\.)(norm\d?|input_norm)\.(weight|bias)$/.test(name);
  if (isNorm) return tail === 'weight' ? rng.normals(size, 0.1, 1) : rng.normals(size, 0.1);
  if (name.endsWith('.mean')) return rng.normals(size);
  if (name.endsWith('.std')) return Float32Array.from({ length: size }, () => 0.5 + 1.5 * rng.uniform());
  if (name.startsWith('features.') || name === 'sequence.item' || name === 'sequence.action' || name === 'sequence.position')
    return rng.normals(size, name.startsWith('sequence.') ? 0.5 : 1);
  if (name.startsWith('dcn.')) {
    if (tail === 'bias') return rng.normals(size, 0.02);
    // W (or U·V) maps x_l to about 0.3 × its scale: the cross layers stay near the identity.
    if (tail === 'weight') return rng.normals(size, 0.3 / Math.sqrt(cross));
    if (tail === 'u') return rng.normals(size, 0.3 / Math.sqrt(c.dcn.rank));
    return rng.normals(size, 1 / Math.sqrt(cross)); // v
  }
  if (name.startsWith('masknet.blocks.')) {
    if (name.endsWith('mask.2.bias')) return rng.normals(size, 0.1, 1); // masks ≈ 1 ± the learned part
    if (name.endsWith('mask.2.weight')) return rng.normals(size, 0.5 / Math.sqrt(fanIn));
    if (tail === 'bias') return rng.normals(size, 0.05);
    return rng.normals(size, Math.sqrt((name.endsWith('mask.0.weight') ? 2 : 1) / fanIn));
  }
  if (name === 'target_attention.query.weight') return rng.normals(size, 1);
  if (name === 'heads.weight') {
    // zero-mean rows: the heads read the variation of h, not its common ReLU offset
    const w = rng.normals(size, 3 / Math.sqrt(fanIn));
    for (let t = 0; t < spec.shape[0]; t++) {
      const row = w.subarray(t * fanIn, (t + 1) * fanIn);
      const m = row.reduce((a, b) => a + b, 0) / fanIn;
      for (let j = 0; j < fanIn; j++) row[j] -= m;
    }
    return w;
  }
  if (name === 'heads.bias') return new Float32Array(size);
  if (name === 'calibration.scale') return Float32Array.from({ length: size }, () => 0.8 + 0.4 * rng.uniform());
  if (name === 'calibration.bias') {
    // rarer tasks sit lower: click ≈ -0.5, then −1 per task, ± surface jitter
    const t = spec.shape[1];
    return Float32Array.from({ length: size }, (_, i) => -0.5 - (i % t) + 0.3 * rng.gaussian());
  }
  if (name === 'utility.task_weights') {
    const t = spec.shape[1];
    return Float32Array.from({ length: size }, (_, i) => (1 + (i % t)) * (0.5 + rng.uniform()));
  }
  if (tail === 'bias' || name.endsWith('_bias')) return rng.normals(size, 0.05);
  // remaining linear weights: Kaiming before a ReLU, Xavier-like otherwise
  const beforeRelu = /^mlp\./.test(name) || name.endsWith('linear1.weight') || (name.startsWith('user_tower.') && !name.startsWith(`user_tower.${c.retrieval.hidden.length}.`));
  return rng.normals(size, Math.sqrt((beforeRelu ? 2 : 1) / fanIn));
}

/** Rows per generated block: every ad table is produced block by block, each block from its own
 *  random stream (seed, table, block), so a table can be written without holding all of it. */
export const DEMO_BLOCK_ROWS = 65_536;

const AD_TABLES = ['ads.id', 'ads.advertiser', 'ads.bid', 'ads.dense', 'ads.sparse', 'ads.embedding', 'ads.retrieval', 'ads.targeting'];

/**
 * The synthetic ad corpus: ids large and sparse (an odd multiplier modulo 2^43, so unique without a
 * set), ~N/20 advertisers with skewed sizes, lognormal bids, ~20% of targeting masks restricted to
 * 1–3 of the values 0–7, L2-normalised Gaussian retrieval vectors.
 */
class AdCorpus {
  private readonly dims: { [name: string]: number };
  private readonly advertisers: number;

  constructor(
    private readonly c: ModelConfig,
    readonly n: number,
    private readonly seed: number,
    private readonly mean: Float32Array,
    private readonly std: Float32Array,
  ) {
    this.dims = {
      'ads.id': 1,
      'ads.advertiser': 1,
      'ads.bid': 1,
      'ads.dense': c.ad_dense,
      'ads.sparse': c.ad_sparse.length,
      'ads.embedding': c.ad_embedding_dim,
      'ads.retrieval': c.retrieval.dim,
      'ads.targeting': c.targeting_dims.length,
    };
    this.advertisers = Math.max(1, Math.round(n / 20));
  }

  /** The values of one table for rows [r0, r1) (r0 a multiple of DEMO_BLOCK_ROWS). */
  block(name: string, r0: number, r1: number, dtype: 'F32' | 'BF16' = 'F32'): TensorArray {
    const w = this.dims[name];
    const rows = r1 - r0;
    const rng = new Rng(this.seed * 1_000_003 + AD_TABLES.indexOf(name) * 65_537 + r0 / DEMO_BLOCK_ROWS);
    switch (name) {
      case 'ads.id': {
        // (i·A + B) mod 2^43 + 1 with A odd is a bijection of i < 2^43: unique, sparse, every residue
        const out = new BigInt64Array(rows);
        const A = 0x1b873593n;
        const B = BigInt.asUintN(43, BigInt(new Rng(this.seed).u32()) * 2654435761n);
        const M = (1n << 43n) - 1n;
        for (let i = 0; i < rows; i++) out[i] = ((BigInt(r0 + i) * A + B) & M) + 1n;
        return out;
      }
      case 'ads.advertiser': {
        const out = new BigInt64Array(rows);
        for (let i = 0; i < rows; i++) {
          const a = Math.floor(this.advertisers * rng.uniform() ** 2);
          out[i] = BigInt(100_000 + a * 7 + (mix32(this.seed, a) % 7));
        }
        return out;
      }
      case 'ads.bid': {
        const out = new Float32Array(rows);
        fillNormals(rng, out);
        for (let i = 0; i < rows; i++) out[i] = Math.exp(0.5 * out[i]) * 0.5;
        return out;
      }
      case 'ads.dense': {
        const out = new Float32Array(rows * w);
        fillNormals(rng, out);
        for (let i = 0; i < out.length; i++) out[i] = this.mean[i % w] + this.std[i % w] * out[i];
        return out;
      }
      case 'ads.sparse': {
        const out = new BigInt64Array(rows * w);
        for (let i = 0; i < out.length; i++) out[i] = BigInt(Math.floor(rng.uniform() * 3 * this.c.ad_sparse[i % w].cardinality));
        return out;
      }
      case 'ads.embedding': {
        const out = new Float32Array(rows * w);
        fillNormals(rng, out);
        return out;
      }
      case 'ads.retrieval': {
        const out = new Float32Array(rows * w);
        fillNormals(rng, out);
        for (let i = 0; i < rows; i++) {
          let ss = 0;
          for (let j = 0; j < w; j++) ss += out[i * w + j] * out[i * w + j];
          const inv = 1 / Math.max(Math.sqrt(ss), 1e-12);
          for (let j = 0; j < w; j++) out[i * w + j] *= inv;
        }
        return dtype === 'BF16' ? toBf16(out) : out;
      }
      case 'ads.targeting': {
        const out = new BigUint64Array(rows * w);
        for (let i = 0; i < out.length; i++) {
          if (rng.uniform() < 0.8) out[i] = ALL_ONES;
          else {
            let m = 0n;
            const values = rng.int(1, 3);
            for (let v = 0; v < values; v++) m |= 1n << BigInt(rng.int(0, 7));
            out[i] = m;
          }
        }
        return out;
      }
    }
    throw new Error(`not an ad table: ${name}`);
  }

  /** A whole table as one tensor (in-memory bundles). */
  whole(name: string, dtype: 'F32' | 'BF16'): Tensor {
    const w = this.dims[name];
    const shape = name === 'ads.id' || name === 'ads.advertiser' || name === 'ads.bid' ? [this.n] : [this.n, w];
    const parts: TensorArray[] = [];
    for (let r0 = 0; r0 < this.n; r0 += DEMO_BLOCK_ROWS) parts.push(this.block(name, r0, Math.min(this.n, r0 + DEMO_BLOCK_ROWS), dtype));
    const type = name === 'ads.retrieval' ? dtype : name === 'ads.targeting' ? 'U64' : name === 'ads.id' || name === 'ads.advertiser' || name === 'ads.sparse' ? 'I64' : 'F32';
    const Ctor = (parts[0]?.constructor ?? { F32: Float32Array, BF16: Uint16Array, I64: BigInt64Array, U64: BigUint64Array }[type]) as new (n: number) => TensorArray;
    const data = new Ctor(this.n * (shape.length === 2 ? w : 1));
    let off = 0;
    for (const p of parts) {
      (data as unknown as { set(a: ArrayLike<unknown>, o: number): void }).set(p as unknown as ArrayLike<unknown>, off);
      off += p.length;
    }
    return { dtype: type as Tensor['dtype'], shape, data };
  }
}

/** A 32-bit hash of (seed, i). */
function mix32(seed: number, i: number): number {
  let z = (Math.imul(seed, 0x9e3779b9) ^ Math.imul(i, 0x85ebca6b)) >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x7feb352d) >>> 0;
  z = Math.imul(z ^ (z >>> 15), 0x846ca68b) >>> 0;
  return (z ^ (z >>> 16)) >>> 0;
}

/** Standard normals into `out` (Marsaglia's polar method on 32-bit uniforms: no trigonometry, about
 *  twice as fast as Box–Muller here; the corpus needs volume, not 53 bits). */
function fillNormals(rng: Rng, out: Float32Array): void {
  const n = out.length;
  for (let i = 0; i < n; ) {
    let x: number, y: number, s: number;
    do {
      x = (rng.u32() | 0) * 4.656612873077393e-10; // [-1, 1)
      y = (rng.u32() | 0) * 4.656612873077393e-10;
      s = x * x + y * y;
    } while (s >= 1 || s === 0);
    const m = Math.sqrt((-2 * Math.log(s)) / s);
    out[i++] = x * m;
    if (i < n) out[i++] = y * m;
  }
}

/** Writes a demo bundle file (`adrank demo-bundle --ads N --seed S --out FILE`): the weights, then
 *  the ad tables block by block, so memory stays at the weights plus one block whatever N is.
 *  `onProgress(done, total)` is called with bytes written. */
export async function writeDemoBundle(opts: {
  ads: number;
  seed: number;
  out: string;
  retrievalDtype?: 'F32' | 'BF16';
  config?: ModelConfig;
  onProgress?: (done: number, total: number) => void;
}): Promise<{ sha256: string; size: number; config: ModelConfig }> {
  const config = opts.config ?? makeDemoConfig();
  const numAds = opts.ads;
  const rng = new Rng(opts.seed);
  const dims = modelDims(config);
  const specs = expectedTensors(config, numAds);
  const weights = new Map<string, Tensor>();
  for (const spec of specs) if (!spec.name.startsWith('ads.')) weights.set(spec.name, { dtype: 'F32', shape: spec.shape, data: initWeight(config, spec, rng, dims.cross) });
  const corpus = new AdCorpus(config, numAds, opts.seed, weights.get('features.ad_dense.mean')!.data as Float32Array, weights.get('features.ad_dense.std')!.data as Float32Array);
  const entries: StreamEntry[] = [];
  for (const spec of specs) {
    const w = weights.get(spec.name);
    if (w) {
      entries.push({ name: spec.name, dtype: 'F32', shape: spec.shape, chunks: function* () { yield w.data; } });
      continue;
    }
    const dtype = spec.name === 'ads.retrieval' ? (opts.retrievalDtype ?? 'F32') : spec.dtypes[0];
    entries.push({
      name: spec.name,
      dtype,
      shape: spec.shape,
      chunks: function* () {
        for (let r0 = 0; r0 < numAds; r0 += DEMO_BLOCK_ROWS) yield corpus.block(spec.name, r0, Math.min(numAds, r0 + DEMO_BLOCK_ROWS), opts.retrievalDtype ?? 'F32');
      },
    });
  }
  const r = await writeSafetensorsStream(opts.out, entries, bundleMetadata(config), opts.onProgress);
  return { ...r, config };
}
