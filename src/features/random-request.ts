/**
 * Random valid requests for a loaded bundle: used by the tests, `scripts/rank-demo.ts` and the
 * benchmarks. Deterministic for a seeded Rng.
 */
import type { LoadedBundle } from '../model/bundle.js';
import type { Rng } from '../model/random.js';
import type { EngineRequest } from './feature-bundle.js';

export interface RequestOptions {
  candidates?: number;
  /** engagement sequence length, at most max_len (default random 0..max_len) */
  seqLen?: number;
  /** ids per user sparse field (default random 0..4) */
  sparseLen?: number;
  k?: number;
  cap?: number;
  taskWeights?: boolean;
  /** fraction of candidates that are unknown ids / duplicates */
  unknown?: number;
  duplicate?: number;
}

/** A random valid request for bundle `b` (targeting values include unknown ones ≥ 64). */
export function randomRequest(rng: Rng, b: LoadedBundle, o: RequestOptions = {}): EngineRequest {
  const c = b.config;
  const ids = b.tensors['ads.id'] as BigInt64Array;
  const n = o.candidates ?? rng.int(1, Math.min(40, b.numAds));
  const candidates: bigint[] = [];
  for (let i = 0; i < n; i++) {
    const x = rng.uniform();
    if (o.unknown && x < o.unknown) candidates.push(-1000n - BigInt(rng.int(0, 1e6)));
    else if (o.duplicate && candidates.length && x < (o.unknown ?? 0) + o.duplicate) candidates.push(rng.pick(candidates));
    else candidates.push(ids[rng.int(0, b.numAds - 1)]);
  }
  const seqLen = o.seqLen ?? rng.int(0, c.sequence.max_len);
  const seqItems = Array.from({ length: Math.min(seqLen, c.sequence.max_len) }, () => BigInt(rng.int(0, 5 * c.sequence.item_buckets)));
  return {
    requestId: `req-${rng.u32()}`,
    surface: rng.int(0, c.surfaces.length - 1),
    k: o.k ?? rng.int(1, 10),
    cap: o.cap ?? rng.int(0, 3),
    mode: 0,
    partitions: 1,
    taskWeights: o.taskWeights ? Float32Array.from(c.tasks, () => 0.1 + 2 * rng.uniform()) : undefined,
    price: true,
    reserve: 0,
    retrieveCount: 0,
    userDense: rng.normals(c.user_dense, 2),
    userEmbedding: rng.normals(c.user_embedding_dim),
    targeting: Uint32Array.from(c.targeting_dims, () => (rng.uniform() < 0.1 ? 64 + rng.int(0, 100) : rng.int(0, 9))),
    userSparse: c.user_sparse.map((f) => BigInt64Array.from({ length: o.sparseLen ?? rng.int(0, 4) }, () => BigInt(rng.int(-2 * f.cardinality, 5 * f.cardinality)))),
    seqItems: BigInt64Array.from(seqItems),
    seqActions: Uint32Array.from(seqItems, () => rng.int(0, c.sequence.actions - 1)),
    candidates: BigInt64Array.from(candidates),
    excludedAdvertisers: new BigInt64Array(0),
    excludedAds: new BigInt64Array(0),
  };
}
