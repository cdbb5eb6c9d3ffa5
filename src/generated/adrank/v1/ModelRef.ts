// Original file: proto/adrank/v1/adrank.proto


export interface ModelRef {
  'name'?: (string);
  /**
   * the version that answered, as `model_version` pins it
   */
  'version'?: (string);
}

export interface ModelRef__Output {
  'name': (string);
  /**
   * the version that answered, as `model_version` pins it
   */
  'version': (string);
}
