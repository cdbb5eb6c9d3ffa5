// Original file: proto/adrank/v1/adrank.proto

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
  '_price'?: "price";
  '_value'?: "value";
}
