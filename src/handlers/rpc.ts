/**
 * The shapes an engine RPC passes between its parts: the RPC's description (EngineRpc, supplied by
 * rank.ts, retrieve.ts and retrieve-and-rank.ts), the state of one call (CallState) and the
 * response they share. They sit apart from engine-rpc.ts (the steps) and context.ts (what the
 * handlers are given) so that neither of those, nor the shadow that reads calls, imports another
 * in a circle.
 */
import type { Engine, EngineRequest, FallbackOp, NativeOp, NativeResult } from '../engine/index.js';
import type { ModelConfig } from '../model/config.js';
import type { ServerTimings } from '../generated/adrank/v1/ServerTimings.js';
import type { Winner } from '../generated/adrank/v1/Winner.js';
import type { DropCounts } from '../generated/adrank/v1/DropCounts.js';
import type { SourceCounts } from '../generated/adrank/v1/SourceCounts.js';
import type { BatchOp } from '../batcher/index.js';
import type { Limits } from './validate.js';

/** The response fields the three engine RPCs share (RetrieveAndRank adds `retrieved`). */
export interface EngineResponse {
  requestId: string;
  winners: Winner[];
  model: { name: string; version: string };
  counts: DropCounts;
  retrieved?: number;
  /** RetrieveAndRank: one entry per source (the encoder writes the enum as its number) */
  sourceCounts?: SourceCounts[];
  fallback?: boolean;
  /** the proto's FallbackReason as its number (the encoder writes numbers) */
  fallbackReason?: (typeof FALLBACK_REASON)[FallbackReason];
}

/** Why an answer came from the fallback: the proto's FallbackReason values. */
export const FALLBACK_REASON = { ENGINE_ERROR: 1, DEADLINE: 2, NO_MODEL: 3 } as const;
export type FallbackReason = keyof typeof FALLBACK_REASON;

export interface EngineRpc<Req> {
  /** the RPC's name as in the proto ("Rank") */
  name: string;
  /** its native op (WireRequest, runBatch): 0 rank, 1 retrieve, 2 retrieveAndRank */
  op: NativeOp;
  /** true when a request of size 0 needs no engine work (a Rank without candidates) */
  emptyAtZero?: boolean;
  /** wire bytes → the JS view of a request (src/wire/codec.ts): built only when something needs
   *  it (a shadow copy, the message of a refusal, Explain); the served path parses natively */
  decode(bytes: Buffer): Req;
  validate(request: Req, config: ModelConfig, limits: Limits): EngineRequest;
  /** the engine call; `undefined` when the request needs no engine work (empty candidate list).
   *  `deadline`: the call's, ms since the epoch (Infinity = none); queued native work past it is dropped */
  run(engine: Engine, request: EngineRequest, deadline: number): Promise<NativeResult> | undefined;
  encode(response: EngineResponse, timings: ServerTimings, started: number): Buffer;
  /** RetrieveAndRank reports the retrieval count */
  withRetrieved?: boolean;
  /** the engine's fallback answer for this RPC (docs/funnel.md "Fallback") */
  fallbackOp: FallbackOp;
  /** the request's size: candidates (Rank), retrieve count (RetrieveAndRank); it sizes micro-batches
   *  and keys the recent-latency buckets of the fallback's deadline trigger */
  size(request: EngineRequest): number;
  /** Rank and RetrieveAndRank can be micro-batched (src/batcher/): the engine op */
  batch?: { op: BatchOp };
}

export interface CallState {
  /** ms since the epoch; Infinity = none */
  deadline: number;
  cancelled(): boolean;
  /** registers a callback for the call's cancellation (the batcher drops queued requests) */
  onCancel?(fn: () => void): void;
  /** set by execute once the engine answered: what metrics, the access log and the shadow read;
   *  `version` is the version that answered, `fallback` set when the answer came from the fallback */
  done?: { result: NativeResult; timings: ServerTimings; config: ModelConfig; surface: number; version?: string; fallback?: FallbackReason };
  /** set by execute once the request was parsed: its id and when the call's work began (performance.now()) */
  requestId?: string;
  started?: number;
}

/** What the handlers hand the shadow (src/shadow/): each call's arrival, and each answered call's
 *  request bytes with its answer, to be compared off the request path. */
export interface ShadowTap {
  arrived(): void;
  offerWire<Req extends { requestId: string }>(rpc: EngineRpc<Req>, requestId: string, bytes: Buffer, done: CallState['done'], afterSent?: (request: object, fn: () => void) => void): void;
}
