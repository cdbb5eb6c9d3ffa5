// Original file: proto/adrank/v1/admin.proto

import type { Long } from '@grpc/proto-loader';

export interface GetAdStatesRequest {
  'adIds'?: (number | string | Long)[];
}

export interface GetAdStatesRequest__Output {
  'adIds': (string)[];
}
