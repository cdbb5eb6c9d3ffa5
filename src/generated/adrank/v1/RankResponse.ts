// Original file: proto/adrank/v1/adrank.proto

import type { Winner as _adrank_v1_Winner, Winner__Output as _adrank_v1_Winner__Output } from '../../adrank/v1/Winner.js';
import type { ModelRef as _adrank_v1_ModelRef, ModelRef__Output as _adrank_v1_ModelRef__Output } from '../../adrank/v1/ModelRef.js';
import type { DropCounts as _adrank_v1_DropCounts, DropCounts__Output as _adrank_v1_DropCounts__Output } from '../../adrank/v1/DropCounts.js';
import type { ServerTimings as _adrank_v1_ServerTimings, ServerTimings__Output as _adrank_v1_ServerTimings__Output } from '../../adrank/v1/ServerTimings.js';
import type { FallbackReason as _adrank_v1_FallbackReason, FallbackReason__Output as _adrank_v1_FallbackReason__Output } from '../../adrank/v1/FallbackReason.js';

export interface RankResponse {
  'requestId'?: (string);
  'winners'?: (_adrank_v1_Winner)[];
  'model'?: (_adrank_v1_ModelRef | null);
  'counts'?: (_adrank_v1_DropCounts | null);
  'timings'?: (_adrank_v1_ServerTimings | null);
  /**
   * as RetrieveResponse
   */
  'partial'?: (boolean);
  /**
   * as RetrieveResponse
   */
  'missingShards'?: (number)[];
  /**
   * as RetrieveResponse
   */
  'fallback'?: (boolean);
  /**
   * as RetrieveResponse
   */
  'fallbackReason'?: (_adrank_v1_FallbackReason);
}

export interface RankResponse__Output {
  'requestId': (string);
  'winners': (_adrank_v1_Winner__Output)[];
  'model': (_adrank_v1_ModelRef__Output | null);
  'counts': (_adrank_v1_DropCounts__Output | null);
  'timings': (_adrank_v1_ServerTimings__Output | null);
  /**
   * as RetrieveResponse
   */
  'partial': (boolean);
  /**
   * as RetrieveResponse
   */
  'missingShards': (number)[];
  /**
   * as RetrieveResponse
   */
  'fallback': (boolean);
  /**
   * as RetrieveResponse
   */
  'fallbackReason': (_adrank_v1_FallbackReason__Output);
}
