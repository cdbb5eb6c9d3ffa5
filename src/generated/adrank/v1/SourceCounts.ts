// Original file: proto/adrank/v1/adrank.proto

import type { CandidateSource as _adrank_v1_CandidateSource, CandidateSource__Output as _adrank_v1_CandidateSource__Output } from '../../adrank/v1/CandidateSource.js';

/**
 * One source's part of a RetrieveAndRank (docs/funnel.md "Blended retrieval sources"). Each
 * entry the source received is counted once: received = unknown + duplicate + earlier_source +
 * the six eligibility drops + eligible, and eligible = ranked + over_quota for CALLER
 * (eligible >= ranked for RETRIEVAL: the eligible ads below the top retrieve_count are not ranked).
 * The per-advertiser cap applies to the union; it is counted once, in the response's counts.capped.
 */
export interface SourceCounts {
  'source'?: (_adrank_v1_CandidateSource);
  /**
   * RETRIEVAL: ads scanned; CALLER: candidate_ad_ids entries
   */
  'received'?: (number);
  /**
   * CALLER: not in the model's ad table
   */
  'unknown'?: (number);
  /**
   * CALLER: repeated in candidate_ad_ids (first kept)
   */
  'duplicate'?: (number);
  /**
   * CALLER: already passed to ranking by retrieval (credited there)
   */
  'earlierSource'?: (number);
  /**
   * in exclusions.ad_ids
   */
  'excludedAd'?: (number);
  /**
   * advertiser in exclusions.advertiser_ids
   */
  'excludedAdvertiser'?: (number);
  /**
   * live ad state: inactive
   */
  'inactive'?: (number);
  /**
   * live ad state: out of budget
   */
  'outOfBudget'?: (number);
  /**
   * targeting mismatch
   */
  'targeting'?: (number);
  /**
   * failed the pacing test
   */
  'paced'?: (number);
  /**
   * passed eligibility
   */
  'eligible'?: (number);
  /**
   * CALLER: eligible, past candidate_quota
   */
  'overQuota'?: (number);
  /**
   * passed to ranking (RETRIEVAL: = retrieved)
   */
  'ranked'?: (number);
  /**
   * among the winners
   */
  'winners'?: (number);
}

/**
 * One source's part of a RetrieveAndRank (docs/funnel.md "Blended retrieval sources"). Each
 * entry the source received is counted once: received = unknown + duplicate + earlier_source +
 * the six eligibility drops + eligible, and eligible = ranked + over_quota for CALLER
 * (eligible >= ranked for RETRIEVAL: the eligible ads below the top retrieve_count are not ranked).
 * The per-advertiser cap applies to the union; it is counted once, in the response's counts.capped.
 */
export interface SourceCounts__Output {
  'source': (_adrank_v1_CandidateSource__Output);
  /**
   * RETRIEVAL: ads scanned; CALLER: candidate_ad_ids entries
   */
  'received': (number);
  /**
   * CALLER: not in the model's ad table
   */
  'unknown': (number);
  /**
   * CALLER: repeated in candidate_ad_ids (first kept)
   */
  'duplicate': (number);
  /**
   * CALLER: already passed to ranking by retrieval (credited there)
   */
  'earlierSource': (number);
  /**
   * in exclusions.ad_ids
   */
  'excludedAd': (number);
  /**
   * advertiser in exclusions.advertiser_ids
   */
  'excludedAdvertiser': (number);
  /**
   * live ad state: inactive
   */
  'inactive': (number);
  /**
   * live ad state: out of budget
   */
  'outOfBudget': (number);
  /**
   * targeting mismatch
   */
  'targeting': (number);
  /**
   * failed the pacing test
   */
  'paced': (number);
  /**
   * passed eligibility
   */
  'eligible': (number);
  /**
   * CALLER: eligible, past candidate_quota
   */
  'overQuota': (number);
  /**
   * passed to ranking (RETRIEVAL: = retrieved)
   */
  'ranked': (number);
  /**
   * among the winners
   */
  'winners': (number);
}
