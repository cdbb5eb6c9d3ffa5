// Original file: proto/adrank/v1/adrank.proto

import type { UserFeatures as _adrank_v1_UserFeatures, UserFeatures__Output as _adrank_v1_UserFeatures__Output } from '../../adrank/v1/UserFeatures.js';
import type { Exclusions as _adrank_v1_Exclusions, Exclusions__Output as _adrank_v1_Exclusions__Output } from '../../adrank/v1/Exclusions.js';
import type { RankingMode as _adrank_v1_RankingMode, RankingMode__Output as _adrank_v1_RankingMode__Output } from '../../adrank/v1/RankingMode.js';

export interface RetrieveAndRankRequest {
  /**
   * as RetrieveRequest
   */
  'requestId'?: (string);
  /**
   * as RetrieveRequest
   */
  'surface'?: (string);
  /**
   * as RetrieveRequest
   */
  'user'?: (_adrank_v1_UserFeatures | null);
  /**
   * as RetrieveRequest
   */
  'targeting'?: (number)[];
  /**
   * as RetrieveRequest
   */
  'exclusions'?: (_adrank_v1_Exclusions | null);
  /**
   * winners wanted, 1..10,000, and <= retrieve_count
   */
  'k'?: (number);
  /**
   * applied at the final selection; 0 = no cap
   */
  'perAdvertiserCap'?: (number);
  /**
   * as RetrieveRequest
   */
  'taskWeights'?: ({[key: string]: number | string});
  /**
   * mode of the final selection
   */
  'ranking'?: (_adrank_v1_RankingMode | null);
  /**
   * as RankRequest; winners are always priced
   */
  'reserve'?: (number | string);
  /**
   * as RetrieveRequest
   */
  'modelVersion'?: (string);
  /**
   * R: eligible ads retrieved (by score, no cap) and passed to ranking, K..10,000.
   * 0 = default max(K, min(10 * K, 10,000)).
   */
  'retrieveCount'?: (number);
  /**
   * as RetrieveRequest
   */
  'allowFallback'?: (boolean);
  '_reserve'?: "reserve";
  '_allowFallback'?: "allowFallback";
}

export interface RetrieveAndRankRequest__Output {
  /**
   * as RetrieveRequest
   */
  'requestId': (string);
  /**
   * as RetrieveRequest
   */
  'surface': (string);
  /**
   * as RetrieveRequest
   */
  'user': (_adrank_v1_UserFeatures__Output | null);
  /**
   * as RetrieveRequest
   */
  'targeting': (number)[];
  /**
   * as RetrieveRequest
   */
  'exclusions': (_adrank_v1_Exclusions__Output | null);
  /**
   * winners wanted, 1..10,000, and <= retrieve_count
   */
  'k': (number);
  /**
   * applied at the final selection; 0 = no cap
   */
  'perAdvertiserCap': (number);
  /**
   * as RetrieveRequest
   */
  'taskWeights': ({[key: string]: number});
  /**
   * mode of the final selection
   */
  'ranking': (_adrank_v1_RankingMode__Output | null);
  /**
   * as RankRequest; winners are always priced
   */
  'reserve'?: (number);
  /**
   * as RetrieveRequest
   */
  'modelVersion': (string);
  /**
   * R: eligible ads retrieved (by score, no cap) and passed to ranking, K..10,000.
   * 0 = default max(K, min(10 * K, 10,000)).
   */
  'retrieveCount': (number);
  /**
   * as RetrieveRequest
   */
  'allowFallback'?: (boolean);
  '_reserve'?: "reserve";
  '_allowFallback'?: "allowFallback";
}
