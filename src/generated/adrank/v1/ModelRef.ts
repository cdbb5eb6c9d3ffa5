// Original file: proto/adrank/v1/adrank.proto


export interface ModelRef {
  'name'?: (string);
  'version'?: (string);
}

export interface ModelRef__Output {
  'name': (string);
  'version': (string);
}
