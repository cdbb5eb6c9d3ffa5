// Original file: proto/adrank/v1/explain.proto

import type { CandidateSource as _adrank_v1_CandidateSource, CandidateSource__Output as _adrank_v1_CandidateSource__Output } from '../../adrank/v1/CandidateSource.js';
import type { Long } from '@grpc/proto-loader';

// Original file: proto/adrank/v1/explain.proto

/**
 * Where an ad left the funnel. Each ad gets the first reason that applies, in funnel order.
 */
export const _adrank_v1_AdExplanation_Outcome = {
  OUTCOME_UNSPECIFIED: 'OUTCOME_UNSPECIFIED',
  /**
   * Served: among the winners.
   */
  WON: 'WON',
  /**
   * Not in the model's ad table.
   */
  UNKNOWN: 'UNKNOWN',
  /**
   * Rank, explaining every candidate entry: a later entry of an id already listed (the first is kept).
   */
  DUPLICATE: 'DUPLICATE',
  /**
   * Its ad id is in exclusions.ad_ids.
   */
  EXCLUDED_AD: 'EXCLUDED_AD',
  /**
   * Its advertiser is in exclusions.advertiser_ids.
   */
  EXCLUDED_ADVERTISER: 'EXCLUDED_ADVERTISER',
  /**
   * Live ad state: inactive.
   */
  INACTIVE: 'INACTIVE',
  /**
   * Live ad state: out of budget.
   */
  OUT_OF_BUDGET: 'OUT_OF_BUDGET',
  /**
   * Failed the pacing test for this request id.
   */
  PACED: 'PACED',
  /**
   * The request's value of a targeting dimension is not allowed by the ad's mask.
   */
  TARGETING: 'TARGETING',
  /**
   * Eligible, but never ranked: RetrieveAndRank, below the top retrieve_count by retrieval
   * score; Rank, not among candidate_ad_ids.
   */
  NOT_RETRIEVED: 'NOT_RETRIEVED',
  /**
   * Passed over by the per-advertiser cap: its advertiser already had `cap` winners ahead of it
   * (in its partition in LOCAL mode).
   */
  CAPPED: 'CAPPED',
  /**
   * Eligible and not capped, but ordered after the last winner (in LOCAL mode: after its
   * partition's last winner, or a partition winner cut when the partitions were merged).
   */
  OUTRANKED: 'OUTRANKED',
  /**
   * RetrieveAndRank: an eligible caller candidate (candidate_ad_ids) past candidate_quota, so
   * not ranked.
   */
  OVER_QUOTA: 'OVER_QUOTA',
} as const;

/**
 * Where an ad left the funnel. Each ad gets the first reason that applies, in funnel order.
 */
export type _adrank_v1_AdExplanation_Outcome =
  | 'OUTCOME_UNSPECIFIED'
  | 0
  /**
   * Served: among the winners.
   */
  | 'WON'
  | 1
  /**
   * Not in the model's ad table.
   */
  | 'UNKNOWN'
  | 2
  /**
   * Rank, explaining every candidate entry: a later entry of an id already listed (the first is kept).
   */
  | 'DUPLICATE'
  | 3
  /**
   * Its ad id is in exclusions.ad_ids.
   */
  | 'EXCLUDED_AD'
  | 4
  /**
   * Its advertiser is in exclusions.advertiser_ids.
   */
  | 'EXCLUDED_ADVERTISER'
  | 5
  /**
   * Live ad state: inactive.
   */
  | 'INACTIVE'
  | 6
  /**
   * Live ad state: out of budget.
   */
  | 'OUT_OF_BUDGET'
  | 7
  /**
   * Failed the pacing test for this request id.
   */
  | 'PACED'
  | 8
  /**
   * The request's value of a targeting dimension is not allowed by the ad's mask.
   */
  | 'TARGETING'
  | 9
  /**
   * Eligible, but never ranked: RetrieveAndRank, below the top retrieve_count by retrieval
   * score; Rank, not among candidate_ad_ids.
   */
  | 'NOT_RETRIEVED'
  | 10
  /**
   * Passed over by the per-advertiser cap: its advertiser already had `cap` winners ahead of it
   * (in its partition in LOCAL mode).
   */
  | 'CAPPED'
  | 11
  /**
   * Eligible and not capped, but ordered after the last winner (in LOCAL mode: after its
   * partition's last winner, or a partition winner cut when the partitions were merged).
   */
  | 'OUTRANKED'
  | 12
  /**
   * RetrieveAndRank: an eligible caller candidate (candidate_ad_ids) past candidate_quota, so
   * not ranked.
   */
  | 'OVER_QUOTA'
  | 13

/**
 * Where an ad left the funnel. Each ad gets the first reason that applies, in funnel order.
 */
export type _adrank_v1_AdExplanation_Outcome__Output = typeof _adrank_v1_AdExplanation_Outcome[keyof typeof _adrank_v1_AdExplanation_Outcome]

export interface AdExplanation {
  'adId'?: (number | string | Long);
  'outcome'?: (_adrank_v1_AdExplanation_Outcome);
  /**
   * 1-based position in the full order of the selection stage (score descending, ties by ad id)
   * over the eligible candidates that reached it; 0 when the ad did not reach selection, or, for
   * Retrieve, when it lies beyond the first 10,000 of the order.
   */
  'position'?: (number);
  /**
   * The ad's score at the stage it reached: utility for Rank and RetrieveAndRank once ranked,
   * the retrieval score for Retrieve (and for NOT_RETRIEVED); unset when it got no score
   * (UNKNOWN, DUPLICATE, not in a Rank's candidates).
   */
  'score'?: (number | string);
  /**
   * Calibrated probabilities, config.tasks order, when the ad was ranked.
   */
  'taskProbabilities'?: (number | string)[];
  /**
   * The score it had to beat: the last winner's (for NOT_RETRIEVED, the last retrieved ad's
   * retrieval score); unset when there was no winner.
   */
  'thresholdScore'?: (number | string);
  /**
   * TARGETING: the first failing dimension, the request's value for it and the ad's mask.
   */
  'targetingDimension'?: (string);
  'targetingValue'?: (number);
  'targetingMask'?: (number | string | Long);
  /**
   * CAPPED: the ids of its advertiser's winners ahead of it.
   */
  'cappedBy'?: (number | string | Long)[];
  /**
   * WON: the GSP price (when the request priced) and the ad it was priced against (the next
   * winner or the runner-up; 0 when there was none and the price is the reserve).
   */
  'price'?: (number | string);
  'runnerUpAdId'?: (number | string | Long);
  /**
   * WON: 1-based slot among the winners.
   */
  'winnerPosition'?: (number);
  'advertiserId'?: (number | string | Long);
  /**
   * Retrieval score q . e_ad whenever the ad is known.
   */
  'retrievalScore'?: (number | string);
  /**
   * One readable sentence.
   */
  'detail'?: (string);
  /**
   * RetrieveAndRank: the source that offered the ad to ranking (docs/funnel.md "Blended retrieval
   * sources"): RETRIEVAL when it is among the retrieved top retrieve_count, else CALLER when it is
   * in candidate_ad_ids (whatever then dropped it), else CANDIDATE_SOURCE_UNSPECIFIED (neither
   * source offered it). Unspecified for Rank and Retrieve.
   */
  'source'?: (_adrank_v1_CandidateSource);
  '_score'?: "score";
  '_thresholdScore'?: "thresholdScore";
  '_price'?: "price";
  '_retrievalScore'?: "retrievalScore";
}

export interface AdExplanation__Output {
  'adId': (string);
  'outcome': (_adrank_v1_AdExplanation_Outcome__Output);
  /**
   * 1-based position in the full order of the selection stage (score descending, ties by ad id)
   * over the eligible candidates that reached it; 0 when the ad did not reach selection, or, for
   * Retrieve, when it lies beyond the first 10,000 of the order.
   */
  'position': (number);
  /**
   * The ad's score at the stage it reached: utility for Rank and RetrieveAndRank once ranked,
   * the retrieval score for Retrieve (and for NOT_RETRIEVED); unset when it got no score
   * (UNKNOWN, DUPLICATE, not in a Rank's candidates).
   */
  'score'?: (number);
  /**
   * Calibrated probabilities, config.tasks order, when the ad was ranked.
   */
  'taskProbabilities': (number)[];
  /**
   * The score it had to beat: the last winner's (for NOT_RETRIEVED, the last retrieved ad's
   * retrieval score); unset when there was no winner.
   */
  'thresholdScore'?: (number);
  /**
   * TARGETING: the first failing dimension, the request's value for it and the ad's mask.
   */
  'targetingDimension': (string);
  'targetingValue': (number);
  'targetingMask': (string);
  /**
   * CAPPED: the ids of its advertiser's winners ahead of it.
   */
  'cappedBy': (string)[];
  /**
   * WON: the GSP price (when the request priced) and the ad it was priced against (the next
   * winner or the runner-up; 0 when there was none and the price is the reserve).
   */
  'price'?: (number);
  'runnerUpAdId': (string);
  /**
   * WON: 1-based slot among the winners.
   */
  'winnerPosition': (number);
  'advertiserId': (string);
  /**
   * Retrieval score q . e_ad whenever the ad is known.
   */
  'retrievalScore'?: (number);
  /**
   * One readable sentence.
   */
  'detail': (string);
  /**
   * RetrieveAndRank: the source that offered the ad to ranking (docs/funnel.md "Blended retrieval
   * sources"): RETRIEVAL when it is among the retrieved top retrieve_count, else CALLER when it is
   * in candidate_ad_ids (whatever then dropped it), else CANDIDATE_SOURCE_UNSPECIFIED (neither
   * source offered it). Unspecified for Rank and Retrieve.
   */
  'source': (_adrank_v1_CandidateSource__Output);
  '_score'?: "score";
  '_thresholdScore'?: "thresholdScore";
  '_price'?: "price";
  '_retrievalScore'?: "retrievalScore";
}
