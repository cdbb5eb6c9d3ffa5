// Original file: proto/adrank/v1/explain.proto

/**
 * Where an ad left the funnel. Each ad gets the first reason that applies, in funnel order.
 */
export const Outcome = {
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
   * Eligible and not capped, but ordered after the last winner (or, in LOCAL mode, a partition
   * winner cut when the partitions were merged).
   */
  OUTRANKED: 'OUTRANKED',
} as const;

/**
 * Where an ad left the funnel. Each ad gets the first reason that applies, in funnel order.
 */
export type Outcome =
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
   * Eligible and not capped, but ordered after the last winner (or, in LOCAL mode, a partition
   * winner cut when the partitions were merged).
   */
  | 'OUTRANKED'
  | 12

/**
 * Where an ad left the funnel. Each ad gets the first reason that applies, in funnel order.
 */
export type Outcome__Output = typeof Outcome[keyof typeof Outcome]
