// Original file: proto/adrank/v1/admin.proto

import type { ModelVersionStatus as _adrank_v1_ModelVersionStatus, ModelVersionStatus__Output as _adrank_v1_ModelVersionStatus__Output } from '../../adrank/v1/ModelVersionStatus.js';

export interface ReloadModelsResponse {
  /**
   * the versions after the rescan, as ListModels
   */
  'models'?: (_adrank_v1_ModelVersionStatus)[];
  'defaultVersion'?: (string);
  /**
   * versions this rescan loaded, and versions it tried and failed to load
   */
  'loaded'?: (string)[];
  'failed'?: (string)[];
}

export interface ReloadModelsResponse__Output {
  /**
   * the versions after the rescan, as ListModels
   */
  'models': (_adrank_v1_ModelVersionStatus__Output)[];
  'defaultVersion': (string);
  /**
   * versions this rescan loaded, and versions it tried and failed to load
   */
  'loaded': (string)[];
  'failed': (string)[];
}
