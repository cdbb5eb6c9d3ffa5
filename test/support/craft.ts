/**
 * Hand-crafted bundles whose scores a test can work out by hand:
 * - heads and calibration are zeroed, so every probability is sigmoid(0) = 0.5 exactly, and the
 *   surface task weights are [2, 0], so value = Σ w p = 1 and utility = bid exactly;
 * - the user tower's last layer is zero with bias e_0, so the retrieval query is q = e_0 and an
 *   ad's retrieval score is exactly `ads.retrieval[c, 0]`.
 * Bids and scores should be exactly representable in float32 (small binary fractions).
 */
import type { LoadedBundle } from '../../src/model/bundle.js';
import type { ModelConfig } from '../../src/model/config.js';
import { makeDemoBundle, makeRandomConfig } from '../../src/model/demo.js';
import type { Tensor } from '../../src/model/safetensors.js';
import type { EngineRequest } from '../../src/features/feature-bundle.js';
import { Rng, toLoaded } from './index.js';

export const ALL = (1n << 64n) - 1n;

export interface CraftAd {
  id: bigint;
  advertiser: bigint;
  bid: number;
  /** retrieval score (default 0) */
  score?: number;
  /** one mask per targeting dimension (default all ones) */
  targeting?: bigint[];
}

export function craftBundle(ads: CraftAd[], targetingDims = 2): LoadedBundle {
  const config: ModelConfig = { ...makeRandomConfig(new Rng(77), { tasks: 2, surfaces: 2, seqLayers: 1 }), targeting_dims: Array.from({ length: targetingDims }, (_, i) => `t${i}`) };
  const n = ads.length;
  const { tensors } = makeDemoBundle({ config, ads: n, seed: 77 });
  const set = (name: string, data: Tensor['data']) => tensors.set(name, { ...tensors.get(name)!, data });
  const zero = (name: string) => set(name, new Float32Array(tensors.get(name)!.data.length));
  zero('heads.weight');
  zero('heads.bias');
  zero('calibration.scale');
  zero('calibration.bias');
  set('utility.task_weights', Float32Array.from({ length: 4 }, (_, i) => (i % 2 === 0 ? 2 : 0)));
  const last = config.retrieval.hidden.length;
  zero(`user_tower.${last}.weight`);
  set(`user_tower.${last}.bias`, Float32Array.from({ length: config.retrieval.dim }, (_, i) => (i === 0 ? 1 : 0)));
  const dr = config.retrieval.dim;
  set('ads.id', BigInt64Array.from(ads, (a) => a.id));
  set('ads.advertiser', BigInt64Array.from(ads, (a) => a.advertiser));
  set('ads.bid', Float32Array.from(ads, (a) => a.bid));
  set('ads.retrieval', Float32Array.from({ length: n * dr }, (_, i) => (i % dr === 0 ? (ads[i / dr].score ?? 0) : 0)));
  set('ads.targeting', BigUint64Array.from(ads.flatMap((a) => a.targeting ?? Array.from({ length: targetingDims }, () => ALL))));
  return toLoaded(config, tensors);
}

/** A request for a crafted bundle; override what the case is about. */
export function craftRequest(b: LoadedBundle, o: Partial<EngineRequest> = {}): EngineRequest {
  const c = b.config;
  return {
    requestId: 'r1',
    surface: 0,
    k: 10,
    cap: 0,
    mode: 0,
    partitions: 1,
    price: false,
    reserve: 0,
    retrieveCount: 0,
    userDense: new Float32Array(c.user_dense).fill(0.5),
    userEmbedding: new Float32Array(c.user_embedding_dim).fill(1),
    targeting: new Uint32Array(c.targeting_dims.length),
    userSparse: c.user_sparse.map(() => BigInt64Array.of(1n, 2n)),
    seqItems: BigInt64Array.of(3n, 4n),
    seqActions: Uint32Array.of(0, 0),
    candidates: b.tensors['ads.id'] as BigInt64Array,
    excludedAdvertisers: new BigInt64Array(0),
    excludedAds: new BigInt64Array(0),
    ...o,
  };
}
