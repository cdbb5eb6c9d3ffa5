// Original file: proto/adrank/v1/adrank.proto

/**
 * Why an answer came from the fallback instead of the model (docs/funnel.md "Fallback").
 */
export const FallbackReason = {
  /**
   * not a fallback answer
   */
  FALLBACK_REASON_UNSPECIFIED: 'FALLBACK_REASON_UNSPECIFIED',
  /**
   * the engine or the device failed on this request
   */
  ENGINE_ERROR: 'ENGINE_ERROR',
  /**
   * the remaining deadline was below the model's recent p99
   */
  DEADLINE: 'DEADLINE',
  /**
   * no model version loads; the server runs with --fallback-only
   */
  NO_MODEL: 'NO_MODEL',
} as const;

/**
 * Why an answer came from the fallback instead of the model (docs/funnel.md "Fallback").
 */
export type FallbackReason =
  /**
   * not a fallback answer
   */
  | 'FALLBACK_REASON_UNSPECIFIED'
  | 0
  /**
   * the engine or the device failed on this request
   */
  | 'ENGINE_ERROR'
  | 1
  /**
   * the remaining deadline was below the model's recent p99
   */
  | 'DEADLINE'
  | 2
  /**
   * no model version loads; the server runs with --fallback-only
   */
  | 'NO_MODEL'
  | 3

/**
 * Why an answer came from the fallback instead of the model (docs/funnel.md "Fallback").
 */
export type FallbackReason__Output = typeof FallbackReason[keyof typeof FallbackReason]
