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
  '_price'?: "price";
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
  '_price'?: "price";
}
