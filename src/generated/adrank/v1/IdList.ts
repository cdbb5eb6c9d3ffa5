// Original file: proto/adrank/v1/adrank.proto

import type { Long } from '@grpc/proto-loader';

/**
 * A list of int64 ids (packed).
 */
export interface IdList {
  'ids'?: (number | string | Long)[];
}

/**
 * A list of int64 ids (packed).
 */
export interface IdList__Output {
  'ids': (string)[];
}
