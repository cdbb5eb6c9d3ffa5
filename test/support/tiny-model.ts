/**
 * A tiny model for the addon-level tests (test/25, test/26): a fixed small config, a seeded random
 * bundle built from expectedTensors, and a request builder over it.
 */
import { nativeInit } from '../../src/engine/index.js';
import type { NativeModelInit, TensorArray } from '../../src/engine/binding.js';
import { expectedTensors, type ModelConfig } from '../../src/model/config.js';
import { packFeatureBundle, type EngineRequest } from '../../src/features/feature-bundle.js';
import type { LoadedBundle } from '../../src/model/bundle.js';

export const config: ModelConfig = {
  name: 'tiny',
  version: '1',
  tasks: ['click', 'save', 'hide'],
  surfaces: ['home', 'search'],
  targeting_dims: ['country'],
  user_dense: 3,
  ad_dense: 2,
  dense_clip: 5,
  user_sparse: [{ name: 'topics', cardinality: 11, dim: 4 }],
  ad_sparse: [{ name: 'category', cardinality: 7, dim: 3 }],
  user_embedding_dim: 5,
  ad_embedding_dim: 6,
  surface_dim: 2,
  sequence: { max_len: 6, item_buckets: 13, actions: 3, dim: 8, heads: 2, ffn_dim: 12, layers: 1 },
  masknet: { blocks: 2, projection_ratio: 0.5, output_dim: 8 },
  dcn: { layers: 2, rank: 0 },
  mlp: [8],
  retrieval: { dim: 4, hidden: [6] },
};
export const N = 40;
export const T = config.tasks.length;
export const adId = (i: number) => BigInt(1000 + 3 * i);
export const advertiserOf = (i: number) => BigInt(i % 7);

/** mulberry32: a small seeded RNG so the model is the same on every run. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function randomBundle(seed = 7, cfg: ModelConfig = config): LoadedBundle {
  const r = rng(seed);
  const tensors: Record<string, TensorArray> = {};
  const shapes: Record<string, number[]> = {};
  for (const spec of expectedTensors(cfg, N)) {
    const n = spec.shape.reduce((a, b) => a * b, 1);
    shapes[spec.name] = spec.shape;
    if (spec.name === 'ads.id') tensors[spec.name] = BigInt64Array.from({ length: n }, (_, i) => adId(i));
    else if (spec.name === 'ads.advertiser') tensors[spec.name] = BigInt64Array.from({ length: n }, (_, i) => advertiserOf(i));
    else if (spec.name === 'ads.sparse') tensors[spec.name] = BigInt64Array.from({ length: n }, () => BigInt(Math.floor(r() * 100) - 50));
    else if (spec.name === 'ads.targeting') tensors[spec.name] = new BigUint64Array(n).fill((1n << 64n) - 1n);
    else if (spec.name === 'ads.bid') tensors[spec.name] = Float32Array.from({ length: n }, () => 0.5 + r());
    else if (/\.std$/.test(spec.name)) tensors[spec.name] = Float32Array.from({ length: n }, () => 0.5 + r());
    else if (/norm\d?\.weight$/.test(spec.name)) tensors[spec.name] = Float32Array.from({ length: n }, () => 0.8 + 0.4 * r());
    else tensors[spec.name] = Float32Array.from({ length: n }, () => r() - 0.5);
  }
  const dtypes = Object.fromEntries(expectedTensors(cfg, N).map((s) => [s.name, s.dtypes[0]]));
  return { path: '(memory)', config: cfg, tensors, shapes, dtypes, numAds: N, sha256: '', fileSize: 0 };
}

export function init(b = randomBundle()): NativeModelInit {
  return nativeInit(b, 'cpu', 2);
}

export function request(over: Partial<EngineRequest> = {}): EngineRequest {
  return {
    requestId: 'req-1',
    surface: 1,
    k: 5,
    cap: 0,
    mode: 0,
    partitions: 1,
    price: false,
    reserve: 0,
    retrieveCount: 0,
    userDense: [0.3, -1.2, 2.0],
    userEmbedding: [0.1, 0.2, -0.3, 0.4, 0.5],
    targeting: [3],
    userSparse: [[4n, -9n, 27n]],
    seqItems: [5n, -2n, 99n, 7n],
    seqActions: [0, 2, 1, 1],
    candidates: BigInt64Array.from({ length: 20 }, (_, i) => adId(i)),
    excludedAdvertisers: [],
    excludedAds: [],
    ...over,
  };
}

export const pack = (over: Partial<EngineRequest> = {}) => packFeatureBundle(config, request(over));
