// Original file: proto/adrank/v1/adrank.proto


/**
 * What the funnel dropped and why (docs/funnel.md). Each candidate is counted once, under the
 * first reason that drops it.
 */
export interface DropCounts {
  /**
   * candidate ids received (Rank) or ads scanned (Retrieve)
   */
  'received'?: (number);
  /**
   * not in the model's ad table
   */
  'unknown'?: (number);
  /**
   * repeated id in the same request (first kept)
   */
  'duplicate'?: (number);
  /**
   * live ad state: inactive
   */
  'inactive'?: (number);
  /**
   * live ad state: out of budget
   */
  'outOfBudget'?: (number);
  /**
   * failed the pacing test
   */
  'paced'?: (number);
  /**
   * targeting mismatch
   */
  'targeting'?: (number);
  /**
   * in exclusions.ad_ids
   */
  'excludedAd'?: (number);
  /**
   * advertiser in exclusions.advertiser_ids
   */
  'excludedAdvertiser'?: (number);
  /**
   * passed over by the per-advertiser cap
   */
  'capped'?: (number);
  /**
   * reached selection
   */
  'eligible'?: (number);
}

/**
 * What the funnel dropped and why (docs/funnel.md). Each candidate is counted once, under the
 * first reason that drops it.
 */
export interface DropCounts__Output {
  /**
   * candidate ids received (Rank) or ads scanned (Retrieve)
   */
  'received': (number);
  /**
   * not in the model's ad table
   */
  'unknown': (number);
  /**
   * repeated id in the same request (first kept)
   */
  'duplicate': (number);
  /**
   * live ad state: inactive
   */
  'inactive': (number);
  /**
   * live ad state: out of budget
   */
  'outOfBudget': (number);
  /**
   * failed the pacing test
   */
  'paced': (number);
  /**
   * targeting mismatch
   */
  'targeting': (number);
  /**
   * in exclusions.ad_ids
   */
  'excludedAd': (number);
  /**
   * advertiser in exclusions.advertiser_ids
   */
  'excludedAdvertiser': (number);
  /**
   * passed over by the per-advertiser cap
   */
  'capped': (number);
  /**
   * reached selection
   */
  'eligible': (number);
}
