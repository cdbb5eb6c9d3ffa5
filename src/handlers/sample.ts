/**
 * Sample requests built from a model's description (GetModel): the server's warm-up and
 * `adrank client` send these. Values are deterministic for a seed.
 */
import type { ModelConfig } from '../model/config.js';
import type { GetModelResponse__Output } from '../generated/adrank/v1/GetModelResponse.js';
import type { UserFeatures } from '../generated/adrank/v1/UserFeatures.js';
import type { RankRequest } from '../generated/adrank/v1/RankRequest.js';
import type { RetrieveRequest } from '../generated/adrank/v1/RetrieveRequest.js';
import type { RetrieveAndRankRequest } from '../generated/adrank/v1/RetrieveAndRankRequest.js';

export type ModelShape = Pick<
  GetModelResponse__Output,
  'surfaces' | 'targetingDims' | 'userSparseFields' | 'userDense' | 'userEmbeddingDim' | 'sequenceMaxLen' | 'sequenceActions'
>;

/** The shape fields of GetModel for a config (what sample requests are built from). */
export function modelShape(c: ModelConfig): ModelShape {
  return {
    surfaces: c.surfaces,
    targetingDims: c.targeting_dims,
    userSparseFields: c.user_sparse.map((f) => f.name),
    userDense: c.user_dense,
    userEmbeddingDim: c.user_embedding_dim,
    sequenceMaxLen: c.sequence.max_len,
    sequenceActions: c.sequence.actions,
  };
}

/** xorshift32 in [0, 1) */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 0x9e3779b9;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

export function sampleUser(m: ModelShape, seed = 1): UserFeatures {
  const r = rng(seed);
  const normal = () => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
  const n = Math.min(m.sequenceMaxLen, 8);
  return {
    dense: Array.from({ length: m.userDense }, normal),
    embedding: Array.from({ length: m.userEmbeddingDim }, normal),
    sparse: Object.fromEntries(m.userSparseFields.map((f) => [f, { ids: Array.from({ length: 3 }, () => String(Math.floor(r() * 1e6))) }])),
    sequence: {
      itemIds: Array.from({ length: n }, () => String(Math.floor(r() * 1e9))),
      actions: Array.from({ length: n }, () => Math.floor(r() * m.sequenceActions)),
    },
  };
}

/** Fields shared by the three engine RPCs' sample requests. */
function common(m: ModelShape, requestId: string, k: number, seed: number) {
  return {
    requestId,
    surface: m.surfaces[0],
    user: sampleUser(m, seed),
    // 0 = the first value of every targeting dimension
    targeting: m.targetingDims.map(() => 0),
    k,
    perAdvertiserCap: 2,
  };
}

export function sampleRetrieve(m: ModelShape, k = 10, seed = 1): RetrieveRequest {
  return common(m, `sample-retrieve-${seed}`, k, seed);
}

export function sampleRank(m: ModelShape, candidateAdIds: string[], k = 10, seed = 1): RankRequest {
  return { ...common(m, `sample-rank-${seed}`, k, seed), candidateAdIds, price: true };
}

export function sampleRetrieveAndRank(m: ModelShape, k = 10, seed = 1): RetrieveAndRankRequest {
  // R must be at least K (validate.ts); up to 10 K, capped at 1000 for K <= 1000
  return { ...common(m, `sample-retrieve-and-rank-${seed}`, k, seed), retrieveCount: Math.max(k, Math.min(10 * k, 1000)) };
}
