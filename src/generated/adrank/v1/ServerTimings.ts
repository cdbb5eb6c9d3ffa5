// Original file: proto/adrank/v1/adrank.proto


/**
 * Server-side time by stage, microseconds. Stages that did not run are 0.
 */
export interface ServerTimings {
  /**
   * Front end (TypeScript).
   */
  'decodeUs'?: (number | string);
  /**
   * field checks -> engine request
   */
  'validateUs'?: (number | string);
  /**
   * packing the feature bundle (inside the engine call)
   */
  'bundleUs'?: (number | string);
  /**
   * response object -> protobuf bytes (all but this message)
   */
  'encodeUs'?: (number | string);
  /**
   * Engine (native), as reported by the engine.
   */
  'queueUs'?: (number | string);
  'userUs'?: (number | string);
  'retrieveUs'?: (number | string);
  'gatherUs'?: (number | string);
  'masknetUs'?: (number | string);
  'dcnUs'?: (number | string);
  'mlpUs'?: (number | string);
  'selectUs'?: (number | string);
  'engineTotalUs'?: (number | string);
  /**
   * From the start of decoding to the end of encoding.
   */
  'totalUs'?: (number | string);
  /**
   * Micro-batching (docs/batching.md): the wait in the batcher's queue before the request's batch
   * was sent; not part of queue_us or engine_total_us. 0 when the request was not batched.
   */
  'batchWaitUs'?: (number | string);
}

/**
 * Server-side time by stage, microseconds. Stages that did not run are 0.
 */
export interface ServerTimings__Output {
  /**
   * Front end (TypeScript).
   */
  'decodeUs': (number);
  /**
   * field checks -> engine request
   */
  'validateUs': (number);
  /**
   * packing the feature bundle (inside the engine call)
   */
  'bundleUs': (number);
  /**
   * response object -> protobuf bytes (all but this message)
   */
  'encodeUs': (number);
  /**
   * Engine (native), as reported by the engine.
   */
  'queueUs': (number);
  'userUs': (number);
  'retrieveUs': (number);
  'gatherUs': (number);
  'masknetUs': (number);
  'dcnUs': (number);
  'mlpUs': (number);
  'selectUs': (number);
  'engineTotalUs': (number);
  /**
   * From the start of decoding to the end of encoding.
   */
  'totalUs': (number);
  /**
   * Micro-batching (docs/batching.md): the wait in the batcher's queue before the request's batch
   * was sent; not part of queue_us or engine_total_us. 0 when the request was not batched.
   */
  'batchWaitUs': (number);
}
