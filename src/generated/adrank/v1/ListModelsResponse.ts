// Original file: proto/adrank/v1/admin.proto

import type { ModelVersionStatus as _adrank_v1_ModelVersionStatus, ModelVersionStatus__Output as _adrank_v1_ModelVersionStatus__Output } from '../../adrank/v1/ModelVersionStatus.js';

export interface ListModelsResponse {
  'models'?: (_adrank_v1_ModelVersionStatus)[];
  'defaultVersion'?: (string);
  /**
   * the repository directory, empty when serving one --bundle
   */
  'repository'?: (string);
  /**
   * --shadow-version, empty when shadow traffic is off (the version may be missing or FAILED:
   * see `models`)
   */
  'shadowVersion'?: (string);
}

export interface ListModelsResponse__Output {
  'models': (_adrank_v1_ModelVersionStatus__Output)[];
  'defaultVersion': (string);
  /**
   * the repository directory, empty when serving one --bundle
   */
  'repository': (string);
  /**
   * --shadow-version, empty when shadow traffic is off (the version may be missing or FAILED:
   * see `models`)
   */
  'shadowVersion': (string);
}
