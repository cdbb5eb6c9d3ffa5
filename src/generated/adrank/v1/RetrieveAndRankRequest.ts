// Original file: proto/adrank/v1/adrank.proto

import type { UserFeatures as _adrank_v1_UserFeatures, UserFeatures__Output as _adrank_v1_UserFeatures__Output } from '../../adrank/v1/UserFeatures.js';
import type { Exclusions as _adrank_v1_Exclusions, Exclusions__Output as _adrank_v1_Exclusions__Output } from '../../adrank/v1/Exclusions.js';
import type { RankingMode as _adrank_v1_RankingMode, RankingMode__Output as _adrank_v1_RankingMode__Output } from '../../adrank/v1/RankingMode.js';
import type { Long } from '@grpc/proto-loader';

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
   * The caller's own candidates (ids from the ad server's other generators), the second source
   * blended with retrieval (docs/funnel.md "Blended retrieval sources"): at most 100,000 (server
   * flag --max-candidates, as Rank). An id retrieval already passed to ranking counts once,
   * credited to retrieval; the rest go through Rank's intake and eligibility (unknown ids and
   * repeats are skipped and counted). Empty = retrieval alone.
   */
  'candidateAdIds'?: (number | string | Long)[];
  /**
   * R: eligible ads retrieved (by score, no cap) and passed to ranking, K..10,000; with
   * candidate_ad_ids non-empty, 1..10,000 (the caller's candidates may fill K).
   * 0 = default max(K, min(10 * K, 10,000)).
   */
  'retrieveCount'?: (number);
  /**
   * At most this many of the caller's candidates are ranked: the first ones in request order
   * that pass intake, the retrieval dedupe and eligibility. 0 = all of them.
   */
  'candidateQuota'?: (number);
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
   * The caller's own candidates (ids from the ad server's other generators), the second source
   * blended with retrieval (docs/funnel.md "Blended retrieval sources"): at most 100,000 (server
   * flag --max-candidates, as Rank). An id retrieval already passed to ranking counts once,
   * credited to retrieval; the rest go through Rank's intake and eligibility (unknown ids and
   * repeats are skipped and counted). Empty = retrieval alone.
   */
  'candidateAdIds': (string)[];
  /**
   * R: eligible ads retrieved (by score, no cap) and passed to ranking, K..10,000; with
   * candidate_ad_ids non-empty, 1..10,000 (the caller's candidates may fill K).
   * 0 = default max(K, min(10 * K, 10,000)).
   */
  'retrieveCount': (number);
  /**
   * At most this many of the caller's candidates are ranked: the first ones in request order
   * that pass intake, the retrieval dedupe and eligibility. 0 = all of them.
   */
  'candidateQuota': (number);
  /**
   * as RetrieveRequest
   */
  'allowFallback'?: (boolean);
  '_reserve'?: "reserve";
  '_allowFallback'?: "allowFallback";
}
