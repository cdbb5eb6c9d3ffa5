/**
 * What is recorded when an engine RPC (Retrieve, Rank, RetrieveAndRank) finishes: its funnel
 * counts, served probabilities and stage times (metrics), and, for a sample of calls, one
 * `access` log line with the request id, status, candidates, winners, total and engine µs, and
 * the caller's W3C `traceparent` when sent.
 */
import { status } from '@grpc/grpc-js';
import type { EngineCallObserver } from '../handlers/context.js';
import { traceparent } from '../handlers/engine-rpc.js';
import { DECODE_START, type DecodeStamp } from '../wire/codec.js';
import type { Logger } from '../log.js';
import type { Metrics } from './index.js';

export interface AccessLogOptions {
  /** fraction of engine calls logged, 0..1 (--access-log-sample) */
  sample: number;
  log: Logger;
}

export function checkSample(sample: number): number {
  if (!(sample >= 0 && sample <= 1)) throw new Error(`expected a fraction in 0..1 for access log sample, got ${sample}`);
  return sample;
}

/** undefined when there is nothing to record (no metrics, no access log): the handler then skips the call. */
export function engineCallObserver(metrics: Metrics | undefined, access: AccessLogOptions | undefined, random: () => number = Math.random): EngineCallObserver | undefined {
  const sample = checkSample(access?.sample ?? 0);
  if (!metrics && sample === 0) return undefined;
  return (rpc, code, call, state) => {
    const d = state.done;
    if (metrics && d && code === status.OK) metrics.engineResult(rpc, d.result, d.timings, d.config, d.surface);
    if (sample === 0 || (sample < 1 && random() >= sample)) return;
    // a call served from its wire bytes has its id and start in its state (src/handlers/engine-rpc.ts)
    const request = call.request as ({ requestId?: string } & DecodeStamp) | undefined;
    const started = state.started ?? request?.[DECODE_START];
    access!.log.info('access', {
      requestId: state.requestId ?? request?.requestId,
      rpc,
      code: status[code],
      candidates: d?.result.counts.received ?? 0,
      winners: d?.result.adIds.length ?? 0,
      totalUs: Math.round(d ? Number(d.timings.totalUs ?? 0) : (started !== undefined ? (performance.now() - started) * 1000 : 0)),
      engineUs: Math.round(d?.result.timings.total ?? 0),
      traceparent: traceparent(call.metadata),
      peer: call.getPeer(),
    });
  };
}
