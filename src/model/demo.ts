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
import { writeSafetensors, type Tensor } from './safetensors.js';

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

  // ---- the ad corpus
  const ids = new BigInt64Array(numAds);
  const seen = new Set<bigint>();
  for (let i = 0; i < numAds; i++) {
    let id: bigint;
    do id = BigInt(rng.int(1, 2 ** 40)) * 8n + BigInt(rng.int(0, 7)); // large, sparse, all residues
    while (seen.has(id));
    seen.add(id);
    ids[i] = id;
  }
  // ~N/20 advertisers with skewed sizes (a few large ones, a long tail)
  const numAdvertisers = Math.max(1, Math.round(numAds / 20));
  const advertiserIds = Array.from({ length: numAdvertisers }, (_, a) => BigInt(100_000 + a * 7 + rng.int(0, 6)));
  const advertiser = new BigInt64Array(numAds);
  for (let i = 0; i < numAds; i++) advertiser[i] = advertiserIds[Math.floor(numAdvertisers * rng.uniform() ** 2)];
  const bid = new Float32Array(numAds);
  for (let i = 0; i < numAds; i++) bid[i] = Math.exp(0.5 * rng.gaussian()) * 0.5;
  const mean = tensors.get('features.ad_dense.mean')!.data as Float32Array;
  const std = tensors.get('features.ad_dense.std')!.data as Float32Array;
  const dense = new Float32Array(numAds * config.ad_dense);
  for (let i = 0; i < dense.length; i++) {
    const j = i % config.ad_dense;
    dense[i] = mean[j] + std[j] * rng.gaussian();
  }
  const sparse = new BigInt64Array(numAds * config.ad_sparse.length);
  for (let i = 0; i < sparse.length; i++) sparse[i] = BigInt(rng.int(0, 3 * config.ad_sparse[i % config.ad_sparse.length].cardinality));
  const embedding = rng.normals(numAds * config.ad_embedding_dim);
  const dr = config.retrieval.dim;
  const retrieval = rng.normals(numAds * dr);
  for (let i = 0; i < numAds; i++) {
    const row = retrieval.subarray(i * dr, (i + 1) * dr);
    const norm = Math.hypot(...row);
    for (let j = 0; j < dr; j++) row[j] /= Math.max(norm, 1e-12);
  }
  const nt = config.targeting_dims.length;
  const targeting = new BigUint64Array(numAds * nt);
  for (let i = 0; i < targeting.length; i++) {
    if (rng.uniform() < 0.8) targeting[i] = ALL_ONES;
    else {
      let m = 0n;
      const values = rng.int(1, 3);
      for (let v = 0; v < values; v++) m |= 1n << BigInt(rng.int(0, 7));
      targeting[i] = m;
    }
  }
  const byName: Record<string, Tensor> = {
    'ads.id': { dtype: 'I64', shape: [numAds], data: ids },
    'ads.advertiser': { dtype: 'I64', shape: [numAds], data: advertiser },
    'ads.bid': { dtype: 'F32', shape: [numAds], data: bid },
    'ads.dense': { dtype: 'F32', shape: [numAds, config.ad_dense], data: dense },
    'ads.sparse': { dtype: 'I64', shape: [numAds, config.ad_sparse.length], data: sparse },
    'ads.embedding': { dtype: 'F32', shape: [numAds, config.ad_embedding_dim], data: embedding },
    'ads.retrieval':
      opts.retrievalDtype === 'BF16' ? { dtype: 'BF16', shape: [numAds, dr], data: toBf16(retrieval) } : { dtype: 'F32', shape: [numAds, dr], data: retrieval },
    'ads.targeting': { dtype: 'U64', shape: [numAds, nt], data: targeting },
  };
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

/** Writes a demo bundle file (`adrank demo-bundle --ads N --seed S --out FILE`). */
export async function writeDemoBundle(opts: { ads: number; seed: number; out: string; retrievalDtype?: 'F32' | 'BF16'; config?: ModelConfig }): Promise<{ sha256: string; size: number; config: ModelConfig }> {
  const b = makeDemoBundle(opts);
  const r = await writeSafetensors(opts.out, b.tensors, b.metadata);
  return { ...r, config: b.config };
}
