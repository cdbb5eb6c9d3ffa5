// Original file: proto/adrank/v1/admin.proto


export interface UpdateAdStatesResponse {
  /**
   * updates whose target matched at least one ad of a loaded model version
   */
  'applied'?: (number);
  /**
   * updates whose target matched none (not stored)
   */
  'unknown'?: (number);
}

export interface UpdateAdStatesResponse__Output {
  /**
   * updates whose target matched at least one ad of a loaded model version
   */
  'applied': (number);
  /**
   * updates whose target matched none (not stored)
   */
  'unknown': (number);
}
