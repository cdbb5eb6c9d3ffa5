// Original file: proto/adrank/v1/adrank.proto

import type { Long } from '@grpc/proto-loader';

/**
 * Ads and advertisers the caller does not want in this response (counted as dropped).
 */
export interface Exclusions {
  'advertiserIds'?: (number | string | Long)[];
  'adIds'?: (number | string | Long)[];
}

/**
 * Ads and advertisers the caller does not want in this response (counted as dropped).
 */
export interface Exclusions__Output {
  'advertiserIds': (string)[];
  'adIds': (string)[];
}
