// Original file: proto/adrank/v1/admin.proto

import type { Long } from '@grpc/proto-loader';

export interface AdState {
  'adId'?: (number | string | Long);
  /**
   * false: the ad is not in the default model version (the other fields are then defaults)
   */
  'known'?: (boolean);
  'advertiserId'?: (number | string | Long);
  'active'?: (boolean);
  'inBudget'?: (boolean);
  'pacingRate'?: (number | string);
  /**
   * the bid in the bundle
   */
  'bundleBid'?: (number | string);
  /**
   * the live override, when one is set (by ad or by advertiser)
   */
  'bidOverride'?: (number | string);
  /**
   * the bid that utility and prices use: the override, else the bundle's bid
   */
  'effectiveBid'?: (number | string);
  '_bidOverride'?: "bidOverride";
}

export interface AdState__Output {
  'adId': (string);
  /**
   * false: the ad is not in the default model version (the other fields are then defaults)
   */
  'known': (boolean);
  'advertiserId': (string);
  'active': (boolean);
  'inBudget': (boolean);
  'pacingRate': (number);
  /**
   * the bid in the bundle
   */
  'bundleBid': (number);
  /**
   * the live override, when one is set (by ad or by advertiser)
   */
  'bidOverride'?: (number);
  /**
   * the bid that utility and prices use: the override, else the bundle's bid
   */
  'effectiveBid': (number);
  '_bidOverride'?: "bidOverride";
}
