// Original file: proto/adrank/v1/adrank.proto

import type { UserFeatures as _adrank_v1_UserFeatures, UserFeatures__Output as _adrank_v1_UserFeatures__Output } from '../../adrank/v1/UserFeatures.js';
import type { Exclusions as _adrank_v1_Exclusions, Exclusions__Output as _adrank_v1_Exclusions__Output } from '../../adrank/v1/Exclusions.js';
import type { RankingMode as _adrank_v1_RankingMode, RankingMode__Output as _adrank_v1_RankingMode__Output } from '../../adrank/v1/RankingMode.js';
import type { Long } from '@grpc/proto-loader';

export interface RankRequest {
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
   * winners wanted, 1..10,000
   */
  'k'?: (number);
  /**
   * 0 = no cap
   */
  'perAdvertiserCap'?: (number);
  /**
   * as RetrieveRequest
   */
  'taskWeights'?: ({[key: string]: number | string});
  /**
   * default GLOBAL
   */
  'ranking'?: (_adrank_v1_RankingMode | null);
  /**
   * Auction reserve price in bid units, finite and >= 0; unset = the bundle's reserve_price.
   * Used when `price` is set.
   */
  'reserve'?: (number | string);
  /**
   * as RetrieveRequest
   */
  'modelVersion'?: (string);
  /**
   * Candidate ad ids to rank, at most 100,000 (server flag --max-candidates). Ids not in the
   * model are skipped and counted (counts.unknown); repeats count once (counts.duplicate).
   * An empty list is valid and returns no winners.
   */
  'candidateAdIds'?: (number | string | Long)[];
  /**
   * Compute GSP prices for the winners (docs/funnel.md "Auction").
   */
  'price'?: (boolean);
  /**
   * as RetrieveRequest
   */
  'allowFallback'?: (boolean);
  '_reserve'?: "reserve";
  '_allowFallback'?: "allowFallback";
}

export interface RankRequest__Output {
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
   * winners wanted, 1..10,000
   */
  'k': (number);
  /**
   * 0 = no cap
   */
  'perAdvertiserCap': (number);
  /**
   * as RetrieveRequest
   */
  'taskWeights': ({[key: string]: number});
  /**
   * default GLOBAL
   */
  'ranking': (_adrank_v1_RankingMode__Output | null);
  /**
   * Auction reserve price in bid units, finite and >= 0; unset = the bundle's reserve_price.
   * Used when `price` is set.
   */
  'reserve'?: (number);
  /**
   * as RetrieveRequest
   */
  'modelVersion': (string);
  /**
   * Candidate ad ids to rank, at most 100,000 (server flag --max-candidates). Ids not in the
   * model are skipped and counted (counts.unknown); repeats count once (counts.duplicate).
   * An empty list is valid and returns no winners.
   */
  'candidateAdIds': (string)[];
  /**
   * Compute GSP prices for the winners (docs/funnel.md "Auction").
   */
  'price': (boolean);
  /**
   * as RetrieveRequest
   */
  'allowFallback'?: (boolean);
  '_reserve'?: "reserve";
  '_allowFallback'?: "allowFallback";
}
