// Original file: proto/adrank/v1/adrank.proto


// Original file: proto/adrank/v1/adrank.proto

export const _adrank_v1_RankingMode_Mode = {
  /**
   * Select over all candidates at once (the default).
   */
  GLOBAL: 'GLOBAL',
  /**
   * Legacy: split candidates by ad_id mod partitions, select ceil(K/partitions) in each
   * (cap applied inside each partition), merge and cut to K.
   */
  LOCAL: 'LOCAL',
} as const;

export type _adrank_v1_RankingMode_Mode =
  /**
   * Select over all candidates at once (the default).
   */
  | 'GLOBAL'
  | 0
  /**
   * Legacy: split candidates by ad_id mod partitions, select ceil(K/partitions) in each
   * (cap applied inside each partition), merge and cut to K.
   */
  | 'LOCAL'
  | 1

export type _adrank_v1_RankingMode_Mode__Output = typeof _adrank_v1_RankingMode_Mode[keyof typeof _adrank_v1_RankingMode_Mode]

/**
 * How the candidate set is ranked (docs/design.md §5, docs/funnel.md).
 */
export interface RankingMode {
  'mode'?: (_adrank_v1_RankingMode_Mode);
  /**
   * LOCAL only: number of partitions, 1..1024. Must be 0 (unset) for GLOBAL.
   */
  'partitions'?: (number);
}

/**
 * How the candidate set is ranked (docs/design.md §5, docs/funnel.md).
 */
export interface RankingMode__Output {
  'mode': (_adrank_v1_RankingMode_Mode__Output);
  /**
   * LOCAL only: number of partitions, 1..1024. Must be 0 (unset) for GLOBAL.
   */
  'partitions': (number);
}
