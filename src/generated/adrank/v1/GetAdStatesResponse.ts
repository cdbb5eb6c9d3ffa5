// Original file: proto/adrank/v1/admin.proto

import type { AdState as _adrank_v1_AdState, AdState__Output as _adrank_v1_AdState__Output } from '../../adrank/v1/AdState.js';

export interface GetAdStatesResponse {
  /**
   * one per asked id, in request order
   */
  'states'?: (_adrank_v1_AdState)[];
  /**
   * the model version the states were read from (the default)
   */
  'modelVersion'?: (string);
}

export interface GetAdStatesResponse__Output {
  /**
   * one per asked id, in request order
   */
  'states': (_adrank_v1_AdState__Output)[];
  /**
   * the model version the states were read from (the default)
   */
  'modelVersion': (string);
}
