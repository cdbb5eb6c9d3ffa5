// Original file: proto/adrank/v1/adrank.proto

/**
 * Where a RetrieveAndRank candidate came from (docs/funnel.md "Blended retrieval sources").
 * Sources are ordered: an ad offered by both is credited to the first.
 */
export const CandidateSource = {
  /**
   * Rank, Retrieve, fallback answers
   */
  CANDIDATE_SOURCE_UNSPECIFIED: 'CANDIDATE_SOURCE_UNSPECIFIED',
  /**
   * the two-tower retrieval's top retrieve_count
   */
  RETRIEVAL: 'RETRIEVAL',
  /**
   * the request's candidate_ad_ids
   */
  CALLER: 'CALLER',
} as const;

/**
 * Where a RetrieveAndRank candidate came from (docs/funnel.md "Blended retrieval sources").
 * Sources are ordered: an ad offered by both is credited to the first.
 */
export type CandidateSource =
  /**
   * Rank, Retrieve, fallback answers
   */
  | 'CANDIDATE_SOURCE_UNSPECIFIED'
  | 0
  /**
   * the two-tower retrieval's top retrieve_count
   */
  | 'RETRIEVAL'
  | 1
  /**
   * the request's candidate_ad_ids
   */
  | 'CALLER'
  | 2

/**
 * Where a RetrieveAndRank candidate came from (docs/funnel.md "Blended retrieval sources").
 * Sources are ordered: an ad offered by both is credited to the first.
 */
export type CandidateSource__Output = typeof CandidateSource[keyof typeof CandidateSource]
