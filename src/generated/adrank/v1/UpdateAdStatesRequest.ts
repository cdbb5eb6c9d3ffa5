// Original file: proto/adrank/v1/admin.proto

import type { AdStateUpdate as _adrank_v1_AdStateUpdate, AdStateUpdate__Output as _adrank_v1_AdStateUpdate__Output } from '../../adrank/v1/AdStateUpdate.js';

export interface UpdateAdStatesRequest {
  'updates'?: (_adrank_v1_AdStateUpdate)[];
}

export interface UpdateAdStatesRequest__Output {
  'updates': (_adrank_v1_AdStateUpdate__Output)[];
}
