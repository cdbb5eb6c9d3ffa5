// Original file: proto/adrank/v1/adrank.proto

import type { CandidateSource as _adrank_v1_CandidateSource, CandidateSource__Output as _adrank_v1_CandidateSource__Output } from '../../adrank/v1/CandidateSource.js';
import type { Long } from '@grpc/proto-loader';

export interface Winner {
  'adId'?: (number | string | Long);
  'advertiserId'?: (number | string | Long);
  /**
   * Rank, RetrieveAndRank: utility = bid x sum_t w_t p_t. Retrieve: retrieval score q . e_ad.
   */
  'score'?: (number | string);
  /**
   * Calibrated probability per task, config.tasks order (empty for Retrieve).
   */
  'taskProbabilities'?: (number | string)[];
  /**
   * GSP price in bid units (RetrieveAndRank, and Rank with price = true); unset otherwise.
   */
  'price'?: (number | string);
  /**
   * Rank, RetrieveAndRank: the value per unit of bid, sum_t w_t p_t (score = bid x value), the
   * divisor of the GSP price (docs/funnel.md "Auction"). Unset for Retrieve.
   */
  'value'?: (number | string);
  /**
   * RetrieveAndRank: the source that passed the ad to ranking (RETRIEVAL or CALLER).
   * CANDIDATE_SOURCE_UNSPECIFIED for Rank, Retrieve and fallback answers.
   */
  'source'?: (_adrank_v1_CandidateSource);
  '_price'?: "price";
  '_value'?: "value";
}

export interface Winner__Output {
  'adId': (string);
  'advertiserId': (string);
  /**
   * Rank, RetrieveAndRank: utility = bid x sum_t w_t p_t. Retrieve: retrieval score q . e_ad.
   */
  'score': (number);
  /**
   * Calibrated probability per task, config.tasks order (empty for Retrieve).
   */
  'taskProbabilities': (number)[];
  /**
   * GSP price in bid units (RetrieveAndRank, and Rank with price = true); unset otherwise.
   */
  'price'?: (number);
  /**
   * Rank, RetrieveAndRank: the value per unit of bid, sum_t w_t p_t (score = bid x value), the
   * divisor of the GSP price (docs/funnel.md "Auction"). Unset for Retrieve.
   */
  'value'?: (number);
  /**
   * RetrieveAndRank: the source that passed the ad to ranking (RETRIEVAL or CALLER).
   * CANDIDATE_SOURCE_UNSPECIFIED for Rank, Retrieve and fallback answers.
   */
  'source': (_adrank_v1_CandidateSource__Output);
  '_price'?: "price";
  '_value'?: "value";
}
