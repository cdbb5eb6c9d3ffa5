// Original file: proto/adrank/v1/explain.proto

import type { RankResponse as _adrank_v1_RankResponse, RankResponse__Output as _adrank_v1_RankResponse__Output } from '../../adrank/v1/RankResponse.js';
import type { RetrieveResponse as _adrank_v1_RetrieveResponse, RetrieveResponse__Output as _adrank_v1_RetrieveResponse__Output } from '../../adrank/v1/RetrieveResponse.js';
import type { RetrieveAndRankResponse as _adrank_v1_RetrieveAndRankResponse, RetrieveAndRankResponse__Output as _adrank_v1_RetrieveAndRankResponse__Output } from '../../adrank/v1/RetrieveAndRankResponse.js';
import type { AdExplanation as _adrank_v1_AdExplanation, AdExplanation__Output as _adrank_v1_AdExplanation__Output } from '../../adrank/v1/AdExplanation.js';

export interface ExplainResponse {
  'rank'?: (_adrank_v1_RankResponse | null);
  'retrieve'?: (_adrank_v1_RetrieveResponse | null);
  'retrieveAndRank'?: (_adrank_v1_RetrieveAndRankResponse | null);
  'explanations'?: (_adrank_v1_AdExplanation)[];
  /**
   * The normal response of the request, as the AdRanker RPC returns it (run on the same model
   * and live ad state, just before the explanation is computed).
   */
  'response'?: "rank"|"retrieve"|"retrieveAndRank";
}

export interface ExplainResponse__Output {
  'rank'?: (_adrank_v1_RankResponse__Output | null);
  'retrieve'?: (_adrank_v1_RetrieveResponse__Output | null);
  'retrieveAndRank'?: (_adrank_v1_RetrieveAndRankResponse__Output | null);
  'explanations': (_adrank_v1_AdExplanation__Output)[];
  /**
   * The normal response of the request, as the AdRanker RPC returns it (run on the same model
   * and live ad state, just before the explanation is computed).
   */
  'response'?: "rank"|"retrieve"|"retrieveAndRank";
}
