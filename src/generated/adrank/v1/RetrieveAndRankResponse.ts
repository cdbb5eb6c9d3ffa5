// Original file: proto/adrank/v1/adrank.proto

import type { Winner as _adrank_v1_Winner, Winner__Output as _adrank_v1_Winner__Output } from '../../adrank/v1/Winner.js';
import type { ModelRef as _adrank_v1_ModelRef, ModelRef__Output as _adrank_v1_ModelRef__Output } from '../../adrank/v1/ModelRef.js';
import type { DropCounts as _adrank_v1_DropCounts, DropCounts__Output as _adrank_v1_DropCounts__Output } from '../../adrank/v1/DropCounts.js';
import type { ServerTimings as _adrank_v1_ServerTimings, ServerTimings__Output as _adrank_v1_ServerTimings__Output } from '../../adrank/v1/ServerTimings.js';
import type { SourceCounts as _adrank_v1_SourceCounts, SourceCounts__Output as _adrank_v1_SourceCounts__Output } from '../../adrank/v1/SourceCounts.js';
import type { FallbackReason as _adrank_v1_FallbackReason, FallbackReason__Output as _adrank_v1_FallbackReason__Output } from '../../adrank/v1/FallbackReason.js';

export interface RetrieveAndRankResponse {
  'requestId'?: (string);
  'winners'?: (_adrank_v1_Winner)[];
  'model'?: (_adrank_v1_ModelRef | null);
  'counts'?: (_adrank_v1_DropCounts | null);
  'timings'?: (_adrank_v1_ServerTimings | null);
  /**
   * Ads the retrieval stage passed to ranking (<= retrieve_count).
   */
  'retrieved'?: (number);
  /**
   * as RetrieveResponse
   */
  'partial'?: (boolean);
  /**
   * as RetrieveResponse
   */
  'missingShards'?: (number)[];
  /**
   * One entry per source, in source order: RETRIEVAL, then CALLER (zeros when candidate_ad_ids is
   * empty). `counts` stays the retrieval source's (ads scanned, their drops, eligible) with capped
   * over the ranked union. Empty for a fallback answer.
   */
  'sourceCounts'?: (_adrank_v1_SourceCounts)[];
  /**
   * as RetrieveResponse
   */
  'fallback'?: (boolean);
  /**
   * as RetrieveResponse
   */
  'fallbackReason'?: (_adrank_v1_FallbackReason);
}

export interface RetrieveAndRankResponse__Output {
  'requestId': (string);
  'winners': (_adrank_v1_Winner__Output)[];
  'model': (_adrank_v1_ModelRef__Output | null);
  'counts': (_adrank_v1_DropCounts__Output | null);
  'timings': (_adrank_v1_ServerTimings__Output | null);
  /**
   * Ads the retrieval stage passed to ranking (<= retrieve_count).
   */
  'retrieved': (number);
  /**
   * as RetrieveResponse
   */
  'partial': (boolean);
  /**
   * as RetrieveResponse
   */
  'missingShards': (number)[];
  /**
   * One entry per source, in source order: RETRIEVAL, then CALLER (zeros when candidate_ad_ids is
   * empty). `counts` stays the retrieval source's (ads scanned, their drops, eligible) with capped
   * over the ranked union. Empty for a fallback answer.
   */
  'sourceCounts': (_adrank_v1_SourceCounts__Output)[];
  /**
   * as RetrieveResponse
   */
  'fallback': (boolean);
  /**
   * as RetrieveResponse
   */
  'fallbackReason': (_adrank_v1_FallbackReason__Output);
}
