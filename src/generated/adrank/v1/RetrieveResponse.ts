// Original file: proto/adrank/v1/adrank.proto

import type { Winner as _adrank_v1_Winner, Winner__Output as _adrank_v1_Winner__Output } from '../../adrank/v1/Winner.js';
import type { ModelRef as _adrank_v1_ModelRef, ModelRef__Output as _adrank_v1_ModelRef__Output } from '../../adrank/v1/ModelRef.js';
import type { DropCounts as _adrank_v1_DropCounts, DropCounts__Output as _adrank_v1_DropCounts__Output } from '../../adrank/v1/DropCounts.js';
import type { ServerTimings as _adrank_v1_ServerTimings, ServerTimings__Output as _adrank_v1_ServerTimings__Output } from '../../adrank/v1/ServerTimings.js';
import type { FallbackReason as _adrank_v1_FallbackReason, FallbackReason__Output as _adrank_v1_FallbackReason__Output } from '../../adrank/v1/FallbackReason.js';

export interface RetrieveResponse {
  'requestId'?: (string);
  /**
   * final order, best first
   */
  'winners'?: (_adrank_v1_Winner)[];
  'model'?: (_adrank_v1_ModelRef | null);
  'counts'?: (_adrank_v1_DropCounts | null);
  'timings'?: (_adrank_v1_ServerTimings | null);
  /**
   * Router only (docs/deploy.md): true when some shard did not answer in time or failed, so the
   * answer was merged from the other shards and may differ from the full corpus's; never set by
   * a single server.
   */
  'partial'?: (boolean);
  /**
   * The indices of the shards that did not answer (shard-<i>.safetensors), ascending.
   */
  'missingShards'?: (number)[];
  /**
   * True when the winners come from the surface's fallback list, not from the model: scores are
   * bid × the surface's mean value, probabilities the surface's means, prices second bids.
   */
  'fallback'?: (boolean);
  'fallbackReason'?: (_adrank_v1_FallbackReason);
}

export interface RetrieveResponse__Output {
  'requestId': (string);
  /**
   * final order, best first
   */
  'winners': (_adrank_v1_Winner__Output)[];
  'model': (_adrank_v1_ModelRef__Output | null);
  'counts': (_adrank_v1_DropCounts__Output | null);
  'timings': (_adrank_v1_ServerTimings__Output | null);
  /**
   * Router only (docs/deploy.md): true when some shard did not answer in time or failed, so the
   * answer was merged from the other shards and may differ from the full corpus's; never set by
   * a single server.
   */
  'partial': (boolean);
  /**
   * The indices of the shards that did not answer (shard-<i>.safetensors), ascending.
   */
  'missingShards': (number)[];
  /**
   * True when the winners come from the surface's fallback list, not from the model: scores are
   * bid × the surface's mean value, probabilities the surface's means, prices second bids.
   */
  'fallback': (boolean);
  'fallbackReason': (_adrank_v1_FallbackReason__Output);
}
