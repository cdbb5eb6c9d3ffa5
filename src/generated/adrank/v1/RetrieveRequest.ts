// Original file: proto/adrank/v1/adrank.proto

import type { UserFeatures as _adrank_v1_UserFeatures, UserFeatures__Output as _adrank_v1_UserFeatures__Output } from '../../adrank/v1/UserFeatures.js';
import type { Exclusions as _adrank_v1_Exclusions, Exclusions__Output as _adrank_v1_Exclusions__Output } from '../../adrank/v1/Exclusions.js';
import type { RankingMode as _adrank_v1_RankingMode, RankingMode__Output as _adrank_v1_RankingMode__Output } from '../../adrank/v1/RankingMode.js';

export interface RetrieveRequest {
  /**
   * Caller's request id, 1..256 bytes of UTF-8. Echoed back; also the key of the
   * deterministic pacing hash (docs/funnel.md), so the same id gives the same pacing result.
   */
  'requestId'?: (string);
  /**
   * Surface name, one of config.surfaces (selects calibration and default task weights).
   */
  'surface'?: (string);
  /**
   * Required.
   */
  'user'?: (_adrank_v1_UserFeatures | null);
  /**
   * Targeting context: one value index per targeting dimension, in config.targeting_dims
   * order; exactly that many values. Index v < 64 selects bit v of the ad's allowed-value mask
   * for that dimension; any v >= 64 means "unknown value" and matches only untargeted ads.
   */
  'targeting'?: (number)[];
  /**
   * Optional.
   */
  'exclusions'?: (_adrank_v1_Exclusions | null);
  /**
   * Winners wanted, 1..10,000.
   */
  'k'?: (number);
  /**
   * At most this many winners per advertiser; 0 = no cap. Negative is refused.
   */
  'perAdvertiserCap'?: (number);
  /**
   * Optional override of the surface's default utility weights, by task name (config.tasks).
   * When given, it replaces the whole vector: tasks not named get weight 0. Weights must be
   * finite and >= 0, and not all 0. Unused by Retrieve except for validation.
   */
  'taskWeights'?: ({[key: string]: number | string});
  /**
   * Unused by Retrieve (retrieval has no modes); must be unset or GLOBAL.
   */
  'ranking'?: (_adrank_v1_RankingMode | null);
  /**
   * Unused by Retrieve.
   */
  'reserve'?: (number | string);
  /**
   * Model version pin: when non-empty, the request runs on that loaded version (its repository
   * directory name, or config.version when serving one bundle) and fails with NOT_FOUND when it
   * is not loaded. Empty = the default version (the highest loaded).
   */
  'modelVersion'?: (string);
  /**
   * Whether the server may answer from the fallback (docs/funnel.md "Fallback") when the model path
   * cannot: an engine or device error, or a deadline shorter than the model's recent p99 for a
   * request of this size. Unset = true. When false those cases fail as they would without fallback.
   */
  'allowFallback'?: (boolean);
  '_reserve'?: "reserve";
  '_allowFallback'?: "allowFallback";
}

export interface RetrieveRequest__Output {
  /**
   * Caller's request id, 1..256 bytes of UTF-8. Echoed back; also the key of the
   * deterministic pacing hash (docs/funnel.md), so the same id gives the same pacing result.
   */
  'requestId': (string);
  /**
   * Surface name, one of config.surfaces (selects calibration and default task weights).
   */
  'surface': (string);
  /**
   * Required.
   */
  'user': (_adrank_v1_UserFeatures__Output | null);
  /**
   * Targeting context: one value index per targeting dimension, in config.targeting_dims
   * order; exactly that many values. Index v < 64 selects bit v of the ad's allowed-value mask
   * for that dimension; any v >= 64 means "unknown value" and matches only untargeted ads.
   */
  'targeting': (number)[];
  /**
   * Optional.
   */
  'exclusions': (_adrank_v1_Exclusions__Output | null);
  /**
   * Winners wanted, 1..10,000.
   */
  'k': (number);
  /**
   * At most this many winners per advertiser; 0 = no cap. Negative is refused.
   */
  'perAdvertiserCap': (number);
  /**
   * Optional override of the surface's default utility weights, by task name (config.tasks).
   * When given, it replaces the whole vector: tasks not named get weight 0. Weights must be
   * finite and >= 0, and not all 0. Unused by Retrieve except for validation.
   */
  'taskWeights': ({[key: string]: number});
  /**
   * Unused by Retrieve (retrieval has no modes); must be unset or GLOBAL.
   */
  'ranking': (_adrank_v1_RankingMode__Output | null);
  /**
   * Unused by Retrieve.
   */
  'reserve'?: (number);
  /**
   * Model version pin: when non-empty, the request runs on that loaded version (its repository
   * directory name, or config.version when serving one bundle) and fails with NOT_FOUND when it
   * is not loaded. Empty = the default version (the highest loaded).
   */
  'modelVersion': (string);
  /**
   * Whether the server may answer from the fallback (docs/funnel.md "Fallback") when the model path
   * cannot: an engine or device error, or a deadline shorter than the model's recent p99 for a
   * request of this size. Unset = true. When false those cases fail as they would without fallback.
   */
  'allowFallback'?: (boolean);
  '_reserve'?: "reserve";
  '_allowFallback'?: "allowFallback";
}
