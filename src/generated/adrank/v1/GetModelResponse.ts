// Original file: proto/adrank/v1/adrank.proto

import type { ShardInfo as _adrank_v1_ShardInfo, ShardInfo__Output as _adrank_v1_ShardInfo__Output } from '../../adrank/v1/ShardInfo.js';
import type { Long } from '@grpc/proto-loader';

export interface GetModelResponse {
  'name'?: (string);
  /**
   * the default version, as `model_version` pins it
   */
  'version'?: (string);
  /**
   * "cuda" or "cpu".
   */
  'backend'?: (string);
  /**
   * e.g. "cuda:0 NVIDIA H100" or "cpu avx2 x2 threads", and why that device was chosen.
   */
  'device'?: (string);
  'deviceReason'?: (string);
  'numAds'?: (number | string | Long);
  /**
   * The bundle's adrank.config, as JSON (docs/design.md §3).
   */
  'configJson'?: (string);
  /**
   * Convenience copies from the config.
   */
  'tasks'?: (string)[];
  'surfaces'?: (string)[];
  'targetingDims'?: (string)[];
  'userSparseFields'?: (string)[];
  'userDense'?: (number);
  'userEmbeddingDim'?: (number);
  'sequenceMaxLen'?: (number);
  'sequenceActions'?: (number);
  /**
   * sha256 of the bundle file, hex.
   */
  'bundleSha256'?: (string);
  /**
   * Set when the bundle is one shard of a corpus (`adrank shard`): which shard of how many, and
   * the sha256 of the unsharded bundle. A router's GetModel leaves it unset and sums num_ads.
   */
  'shard'?: (_adrank_v1_ShardInfo | null);
  /**
   * Router only: the model version each shard serves, in shard order (they must agree).
   */
  'shardVersions'?: (string)[];
}

export interface GetModelResponse__Output {
  'name': (string);
  /**
   * the default version, as `model_version` pins it
   */
  'version': (string);
  /**
   * "cuda" or "cpu".
   */
  'backend': (string);
  /**
   * e.g. "cuda:0 NVIDIA H100" or "cpu avx2 x2 threads", and why that device was chosen.
   */
  'device': (string);
  'deviceReason': (string);
  'numAds': (string);
  /**
   * The bundle's adrank.config, as JSON (docs/design.md §3).
   */
  'configJson': (string);
  /**
   * Convenience copies from the config.
   */
  'tasks': (string)[];
  'surfaces': (string)[];
  'targetingDims': (string)[];
  'userSparseFields': (string)[];
  'userDense': (number);
  'userEmbeddingDim': (number);
  'sequenceMaxLen': (number);
  'sequenceActions': (number);
  /**
   * sha256 of the bundle file, hex.
   */
  'bundleSha256': (string);
  /**
   * Set when the bundle is one shard of a corpus (`adrank shard`): which shard of how many, and
   * the sha256 of the unsharded bundle. A router's GetModel leaves it unset and sums num_ads.
   */
  'shard': (_adrank_v1_ShardInfo__Output | null);
  /**
   * Router only: the model version each shard serves, in shard order (they must agree).
   */
  'shardVersions': (string)[];
}
