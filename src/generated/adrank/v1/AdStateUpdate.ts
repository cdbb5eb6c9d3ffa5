// Original file: proto/adrank/v1/admin.proto

import type { Long } from '@grpc/proto-loader';

/**
 * One change. Fields left unset keep their current value.
 */
export interface AdStateUpdate {
  'adId'?: (number | string | Long);
  /**
   * every ad of this advertiser, in every loaded model version (and in later ones)
   */
  'advertiserId'?: (number | string | Long);
  'active'?: (boolean);
  'inBudget'?: (boolean);
  /**
   * participation probability in [0, 1] (docs/funnel.md "pacing")
   */
  'pacingRate'?: (number | string);
  /**
   * live bid override in bid units, finite and >= 0; it replaces the bundle's bid in utility
   * and GSP prices
   */
  'bid'?: (number | string);
  'target'?: "adId"|"advertiserId";
  '_active'?: "active";
  '_inBudget'?: "inBudget";
  '_pacingRate'?: "pacingRate";
  '_bid'?: "bid";
}

/**
 * One change. Fields left unset keep their current value.
 */
export interface AdStateUpdate__Output {
  'adId'?: (string);
  /**
   * every ad of this advertiser, in every loaded model version (and in later ones)
   */
  'advertiserId'?: (string);
  'active'?: (boolean);
  'inBudget'?: (boolean);
  /**
   * participation probability in [0, 1] (docs/funnel.md "pacing")
   */
  'pacingRate'?: (number);
  /**
   * live bid override in bid units, finite and >= 0; it replaces the bundle's bid in utility
   * and GSP prices
   */
  'bid'?: (number);
  'target'?: "adId"|"advertiserId";
  '_active'?: "active";
  '_inBudget'?: "inBudget";
  '_pacingRate'?: "pacingRate";
  '_bid'?: "bid";
}
