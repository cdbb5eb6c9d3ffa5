// Original file: proto/adrank/v1/explain.proto

import type { Outcome as _adrank_v1_Outcome, Outcome__Output as _adrank_v1_Outcome__Output } from '../../adrank/v1/Outcome.js';
import type { Long } from '@grpc/proto-loader';

export interface AdExplanation {
  'adId'?: (number | string | Long);
  'outcome'?: (_adrank_v1_Outcome);
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
  '_score'?: "score";
  '_thresholdScore'?: "thresholdScore";
  '_price'?: "price";
  '_retrievalScore'?: "retrievalScore";
}

export interface AdExplanation__Output {
  'adId': (string);
  'outcome': (_adrank_v1_Outcome__Output);
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
  '_score'?: "score";
  '_thresholdScore'?: "thresholdScore";
  '_price'?: "price";
  '_retrievalScore'?: "retrievalScore";
}
