// Original file: proto/adrank/v1/admin.proto

import type { ModelVersionState as _adrank_v1_ModelVersionState, ModelVersionState__Output as _adrank_v1_ModelVersionState__Output } from '../../adrank/v1/ModelVersionState.js';
import type { Long } from '@grpc/proto-loader';

export interface ModelVersionStatus {
  /**
   * the repository directory name (or the bundle's config.version with --bundle); what
   * `model_version` pins
   */
  'version'?: (string);
  'state'?: (_adrank_v1_ModelVersionState);
  /**
   * FAILED: the loader's message
   */
  'reason'?: (string);
  'isDefault'?: (boolean);
  /**
   * when the load finished (READY or FAILED), ms since the Unix epoch; 0 while loading
   */
  'loadTimeUnixMs'?: (number | string | Long);
  /**
   * load + validate + warm-up time
   */
  'loadMs'?: (number);
  /**
   * sha256 of model.safetensors (empty when it could not be read)
   */
  'sha256'?: (string);
  /**
   * the bundle's config.name and config.version
   */
  'modelName'?: (string);
  'configVersion'?: (string);
  'path'?: (string);
  'numAds'?: (number | string | Long);
  /**
   * the version named by --shadow-version: it gets a sampled copy of the traffic after the
   * answers and is never made the default while another version is READY
   */
  'isShadow'?: (boolean);
}

export interface ModelVersionStatus__Output {
  /**
   * the repository directory name (or the bundle's config.version with --bundle); what
   * `model_version` pins
   */
  'version': (string);
  'state': (_adrank_v1_ModelVersionState__Output);
  /**
   * FAILED: the loader's message
   */
  'reason': (string);
  'isDefault': (boolean);
  /**
   * when the load finished (READY or FAILED), ms since the Unix epoch; 0 while loading
   */
  'loadTimeUnixMs': (string);
  /**
   * load + validate + warm-up time
   */
  'loadMs': (number);
  /**
   * sha256 of model.safetensors (empty when it could not be read)
   */
  'sha256': (string);
  /**
   * the bundle's config.name and config.version
   */
  'modelName': (string);
  'configVersion': (string);
  'path': (string);
  'numAds': (string);
  /**
   * the version named by --shadow-version: it gets a sampled copy of the traffic after the
   * answers and is never made the default while another version is READY
   */
  'isShadow': (boolean);
}
