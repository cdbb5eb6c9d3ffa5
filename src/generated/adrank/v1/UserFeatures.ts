// Original file: proto/adrank/v1/adrank.proto

import type { IdList as _adrank_v1_IdList, IdList__Output as _adrank_v1_IdList__Output } from '../../adrank/v1/IdList.js';
import type { EngagementSequence as _adrank_v1_EngagementSequence, EngagementSequence__Output as _adrank_v1_EngagementSequence__Output } from '../../adrank/v1/EngagementSequence.js';

/**
 * What is known about the user making the page view. Computed once per request and
 * broadcast to every candidate (docs/design.md §1 "request-level broadcasting").
 */
export interface UserFeatures {
  /**
   * Raw dense user features, exactly `user_dense` values (GetModel config) in config order.
   * Every value must be finite. The engine z-normalises and clips them.
   */
  'dense'?: (number | string)[];
  /**
   * Sparse id lists by field name (a name of config.user_sparse). A field left out is an
   * empty list (its embedding is zeros). Unknown names are refused. Ids are hashed into the
   * field's table (id mod cardinality), so any int64 is valid.
   */
  'sparse'?: ({[key: string]: _adrank_v1_IdList});
  /**
   * Precomputed user embedding, exactly `user_embedding_dim` finite values (L2-normalised by
   * the engine; all zeros is allowed and stays zeros).
   */
  'embedding'?: (number | string)[];
  /**
   * Recent engagement sequence, most recent first. Longer than config.sequence.max_len is
   * accepted and cut to the max_len most recent engagements.
   */
  'sequence'?: (_adrank_v1_EngagementSequence | null);
}

/**
 * What is known about the user making the page view. Computed once per request and
 * broadcast to every candidate (docs/design.md §1 "request-level broadcasting").
 */
export interface UserFeatures__Output {
  /**
   * Raw dense user features, exactly `user_dense` values (GetModel config) in config order.
   * Every value must be finite. The engine z-normalises and clips them.
   */
  'dense': (number)[];
  /**
   * Sparse id lists by field name (a name of config.user_sparse). A field left out is an
   * empty list (its embedding is zeros). Unknown names are refused. Ids are hashed into the
   * field's table (id mod cardinality), so any int64 is valid.
   */
  'sparse': ({[key: string]: _adrank_v1_IdList__Output});
  /**
   * Precomputed user embedding, exactly `user_embedding_dim` finite values (L2-normalised by
   * the engine; all zeros is allowed and stays zeros).
   */
  'embedding': (number)[];
  /**
   * Recent engagement sequence, most recent first. Longer than config.sequence.max_len is
   * accepted and cut to the max_len most recent engagements.
   */
  'sequence': (_adrank_v1_EngagementSequence__Output | null);
}
