/**
 * The native engine against hostile input: feature bundles and model tensors crafted to break the
 * engine's size arithmetic or its funnel limits. Every case must end in a clear error or a correct
 * result, never a crash.
 */
import { expect } from 'chai';
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { binding, type NativeModelInit, type TensorArray } from '../src/engine/binding.js';
import { nativeInit } from '../src/engine/index.js';
import { expectedTensors, type ModelConfig } from '../src/model/config.js';
import { packFeatureBundle, type EngineRequest } from '../src/features/feature-bundle.js';
import type { LoadedBundle } from '../src/model/bundle.js';

const config: ModelConfig = {
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
const N = 40;
const adId = (i: number) => BigInt(1000 + 3 * i);

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

function randomBundle(seed = 7, cfg: ModelConfig = config): LoadedBundle {
  const r = rng(seed);
  const tensors: Record<string, TensorArray> = {};
  const shapes: Record<string, number[]> = {};
  for (const spec of expectedTensors(cfg, N)) {
    const n = spec.shape.reduce((a, b) => a * b, 1);
    shapes[spec.name] = spec.shape;
    if (spec.name === 'ads.id') tensors[spec.name] = BigInt64Array.from({ length: n }, (_, i) => adId(i));
    else if (spec.name === 'ads.advertiser') tensors[spec.name] = BigInt64Array.from({ length: n }, (_, i) => BigInt(i % 7));
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

function request(over: Partial<EngineRequest> = {}): EngineRequest {
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
const pack = (over: Partial<EngineRequest> = {}) => packFeatureBundle(config, request(over));
const header = (u8: Uint8Array, word: number, v: number) => new DataView(u8.buffer, u8.byteOffset).setUint32(word * 4, v, true);

describe('26 engine against hostile input', () => {
  const native = binding();

  describe('model dims whose tensor sizes overflow 64 bits', () => {
    // cardinality · dim = 2^52 · 4096 = 2^64 ≡ 0: an empty table must not pass for [2^52, 4096].
    it('refuses a user sparse table whose element count wraps around', () => {
      // A consistent model with a [1, 4096] table, then the cardinality claimed to be 2^52.
      const wide: ModelConfig = { ...config, user_sparse: [{ name: 'topics', cardinality: 1, dim: 4096 }] };
      const b = randomBundle(7, wide);
      const ok: NativeModelInit = nativeInit(b, 'cpu', 1);
      new native.Engine(ok).dispose();
      const init: NativeModelInit = nativeInit(b, 'cpu', 1);
      init.dims.userSparseCardinality = [2 ** 52];
      init.tensors = { ...b.tensors, 'features.user_sparse.topics': new Float32Array(0) };
      expect(() => new native.Engine(init)).to.throw(/features\.user_sparse\.topics/);
    });

    it('refuses sequence.item when item_buckets · d_s wraps around', () => {
      const b = randomBundle();
      const init: NativeModelInit = nativeInit(b, 'cpu', 1);
      init.dims.seqItemBuckets = 2 ** 61; // · d_s = 8 → 2^64 ≡ 0
      init.tensors['sequence.item'] = new Float32Array(0);
      expect(() => new native.Engine(init)).to.throw(/sequence\.item|seqItemBuckets/);
    });

    it('refuses a non-integer or out-of-range seqItemBuckets', () => {
      const init: NativeModelInit = nativeInit(randomBundle(), 'cpu', 1);
      init.dims.seqItemBuckets = 13.5;
      expect(() => new native.Engine(init)).to.throw(/seqItemBuckets/);
      init.dims.seqItemBuckets = 1e300;
      expect(() => new native.Engine(init)).to.throw(/seqItemBuckets/);
    });
  });

  describe('feature bundles', () => {
    it('local mode with 2^32 - 1 partitions keeps ⌈K/P⌉ = 1 per partition (no 32-bit wrap)', async () => {
      const engine = new native.Engine(nativeInit(randomBundle(), 'cpu', 2));
      try {
        const global = await engine.rank(pack({ k: 5 }));
        const u8 = pack({ k: 5, mode: 1, partitions: 1 });
        header(u8, 6, 0xffffffff);
        const local = await engine.rank(u8);
        // Every candidate id is below P, so each sits alone in its partition: local = global.
        expect(Array.from(local.adIds)).to.deep.equal(Array.from(global.adIds));
        const u8b = pack({ k: 5, mode: 1, partitions: 1 });
        header(u8b, 6, 0x80000000);
        expect(Array.from((await engine.rank(u8b)).adIds)).to.deep.equal(Array.from(global.adIds));
      } finally {
        engine.dispose();
      }
    });
  });
  describe('environment teardown', () => {
    // A worker thread terminated with runs in flight tears its env down while napi calls fail;
    // that must never abort the process (DESIGN §9: native exceptions never abort).
    it('survives worker.terminate() with rank calls in flight', async function () {
      this.timeout(120000);
      const addon = process.env.ADRANK_ADDON ?? fileURLToPath(new URL('../build/Release/adrank.node', import.meta.url));
      const src = `
        const { workerData, parentPort } = require('node:worker_threads');
        const native = require(workerData.addon);
        const e = new native.Engine(workerData.init);
        for (let i = 0; i < 30; i++) e.rank(workerData.big).catch(() => {});
        parentPort.postMessage('go');
        for (let i = 0; i < 3000; i++) e.rank(workerData.small).catch(() => {});
      `;
      const init = nativeInit(randomBundle(), 'cpu', 2);
      const big = pack({ candidates: BigInt64Array.from({ length: 20000 }, (_, i) => adId(i % N)) });
      const small = pack();
      for (let round = 0; round < 4; round++) {
        const w = new Worker(src, { eval: true, workerData: { addon, init, big, small } });
        await new Promise<void>((res, rej) => {
          w.once('message', () => res());
          w.once('error', rej);
        });
        await new Promise((r) => setTimeout(r, 4 * round));
        await w.terminate();
      }
    });
  });
});
