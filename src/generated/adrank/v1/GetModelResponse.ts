// Original file: proto/adrank/v1/adrank.proto

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
}
