/**
 * The batcher's defaults and its construction for a loaded engine (the server calls this once
 * the model is loaded, when the backend is known).
 */
import type { Engine } from '../engine/index.js';
import { Batcher } from './batcher.js';

export { Batcher, BATCH_OP, type BatchOp, type BatchCall, type BatcherOptions, type BatcherStats } from './batcher.js';

export interface BatchingOptions {
  /** candidates per batch; default by backend (DEFAULT_BATCH_MAX_CANDIDATES) */
  maxCandidates?: number;
  /** µs the oldest request waits for company; 0 = off; default by backend (DEFAULT_BATCH_MAX_DELAY_US) */
  maxDelayUs?: number;
  /** requests waiting at most (default 256) */
  maxQueue?: number;
  /** batches running at once; default by backend: one per CUDA stream (ADRANK_CUDA_STREAMS), 1 on the CPU */
  maxInflightBatches?: number;
  /** a free slot takes the head of the queue at once (default true); false: requests wait up to
   *  maxDelayUs for company even with a slot free */
  dispatchWhenIdle?: boolean;
}

/** GPU: 200 µs; CPU: off (docs/batching.md says why). */
export const DEFAULT_BATCH_MAX_DELAY_US = { cuda: 200, cpu: 0 } as const;
/** GPU: one wave of the ranking GEMM tiles; CPU: two full 256-row chunks on each of 2 threads. */
export const DEFAULT_BATCH_MAX_CANDIDATES = { cuda: 4096, cpu: 1024 } as const;
export const DEFAULT_BATCH_MAX_QUEUE = 256;

export function batcherFor(o: BatchingOptions, engine: Engine): Batcher {
  const backend = engine.backend === 'cuda' ? 'cuda' : 'cpu'; // an ads-only engine never batches; CPU defaults
  return new Batcher({
    maxCandidates: o.maxCandidates ?? DEFAULT_BATCH_MAX_CANDIDATES[backend],
    maxDelayUs: o.maxDelayUs ?? DEFAULT_BATCH_MAX_DELAY_US[backend],
    maxQueue: o.maxQueue ?? DEFAULT_BATCH_MAX_QUEUE,
    maxInflightBatches: o.maxInflightBatches ?? (backend === 'cuda' ? Math.max(1, engine.deviceStats().streams) : 1),
    dispatchWhenIdle: o.dispatchWhenIdle ?? true,
  });
}
