// Original file: proto/adrank/v1/admin.proto

export const ModelVersionState = {
  MODEL_VERSION_STATE_UNSPECIFIED: 'MODEL_VERSION_STATE_UNSPECIFIED',
  LOADING: 'LOADING',
  READY: 'READY',
  FAILED: 'FAILED',
  UNLOADING: 'UNLOADING',
} as const;

export type ModelVersionState =
  | 'MODEL_VERSION_STATE_UNSPECIFIED'
  | 0
  | 'LOADING'
  | 1
  | 'READY'
  | 2
  | 'FAILED'
  | 3
  | 'UNLOADING'
  | 4

export type ModelVersionState__Output = typeof ModelVersionState[keyof typeof ModelVersionState]
