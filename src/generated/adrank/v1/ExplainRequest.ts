// Original file: proto/adrank/v1/explain.proto

import type { RankRequest as _adrank_v1_RankRequest, RankRequest__Output as _adrank_v1_RankRequest__Output } from '../../adrank/v1/RankRequest.js';
import type { RetrieveRequest as _adrank_v1_RetrieveRequest, RetrieveRequest__Output as _adrank_v1_RetrieveRequest__Output } from '../../adrank/v1/RetrieveRequest.js';
import type { RetrieveAndRankRequest as _adrank_v1_RetrieveAndRankRequest, RetrieveAndRankRequest__Output as _adrank_v1_RetrieveAndRankRequest__Output } from '../../adrank/v1/RetrieveAndRankRequest.js';
import type { Long } from '@grpc/proto-loader';

export interface ExplainRequest {
  'rank'?: (_adrank_v1_RankRequest | null);
  'retrieve'?: (_adrank_v1_RetrieveRequest | null);
  'retrieveAndRank'?: (_adrank_v1_RetrieveAndRankRequest | null);
  /**
   * The ads to explain, at most 10,000. Rank: empty = every entry of candidate_ad_ids in request
   * order (a repeated id is then explained once per entry: the later ones as DUPLICATE).
   * Retrieve and RetrieveAndRank: at least one id.
   */
  'adIds'?: (number | string | Long)[];
  /**
   * The request to explain, exactly as it would be sent to AdRanker (validated the same way).
   */
  'request'?: "rank"|"retrieve"|"retrieveAndRank";
}

export interface ExplainRequest__Output {
  'rank'?: (_adrank_v1_RankRequest__Output | null);
  'retrieve'?: (_adrank_v1_RetrieveRequest__Output | null);
  'retrieveAndRank'?: (_adrank_v1_RetrieveAndRankRequest__Output | null);
  /**
   * The ads to explain, at most 10,000. Rank: empty = every entry of candidate_ad_ids in request
   * order (a repeated id is then explained once per entry: the later ones as DUPLICATE).
   * Retrieve and RetrieveAndRank: at least one id.
   */
  'adIds': (string)[];
  /**
   * The request to explain, exactly as it would be sent to AdRanker (validated the same way).
   */
  'request'?: "rank"|"retrieve"|"retrieveAndRank";
}
