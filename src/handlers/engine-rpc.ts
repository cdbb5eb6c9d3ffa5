/**
 * The path every engine RPC takes: admit (in-flight bound) → deadline → validate → engine →
 * encode. Each RPC file (rank.ts, retrieve.ts, retrieve-and-rank.ts) supplies its validator,
 * engine call and response encoder; this file holds the steps they share and the mapping of
 * errors to gRPC statuses (docs/api.md "Status codes").
 */
import { Metadata, status, type sendUnaryData, type ServerUnaryCall, type ServiceError } from '@grpc/grpc-js';
import { EngineError, type Engine, type EngineRequest, type NativeResult } from '../engine/index.js';
import type { ModelConfig } from '../model/config.js';
import { DECODE_START, DECODE_US, WIRE, type DecodeStamp } from '../server/codec.js';
import type { ServerTimings } from '../generated/adrank/v1/ServerTimings.js';
import type { Winner } from '../generated/adrank/v1/Winner.js';
import type { DropCounts } from '../generated/adrank/v1/DropCounts.js';
import type { HandlerContext } from './context.js';
import { RequestError, type Limits } from './validate.js';

/** The response fields the three engine RPCs share (RetrieveAndRank adds `retrieved`). */
export interface EngineResponse {
  requestId: string;
  winners: Winner[];
  model: { name: string; version: string };
  counts: DropCounts;
  retrieved?: number;
}

export interface EngineRpc<Req> {
  /** the RPC's name as in the proto ("Rank") */
  name: string;
  /** wire bytes → request (the gRPC deserializer; see src/server/codec.ts) */
  decode(bytes: Buffer): Req;
  validate(request: Req, config: ModelConfig, limits: Limits): EngineRequest;
  /** the engine call; `undefined` when the request needs no engine work (empty candidate list) */
  run(engine: Engine, request: EngineRequest): Promise<NativeResult> | undefined;
  encode(response: EngineResponse, timings: ServerTimings, started: number): Buffer;
  /** RetrieveAndRank reports the retrieval count */
  withRetrieved?: boolean;
}

export interface CallState {
  /** ms since the epoch; Infinity = none */
  deadline: number;
  cancelled(): boolean;
}

const NO_CALL: CallState = { deadline: Infinity, cancelled: () => false };

const us = (from: number, to: number) => (to - from) * 1000;

/** Deadline in ms since the epoch from grpc-js's Deadline (Date | number). */
function deadlineMs(d: Date | number): number {
  return d instanceof Date ? d.getTime() : d;
}

function checkDeadline(call: CallState): void {
  if (call.deadline <= Date.now()) throw new RequestError(status.DEADLINE_EXCEEDED, 'deadline exceeded before the request reached the engine');
}

/** One request through validate → engine → encode; resolves to the response bytes. */
export async function execute<Req extends { requestId: string } & DecodeStamp>(ctx: HandlerContext, rpc: EngineRpc<Req>, request: Req, call: CallState = NO_CALL): Promise<Buffer> {
  const started = request[DECODE_START] ?? performance.now();
  const engine = ctx.engine();
  if (!engine) throw new RequestError(status.UNAVAILABLE, 'the model is not loaded yet (health: NOT_SERVING)');
  checkDeadline(call);
  const config = engine.config;

  const t0 = performance.now();
  const er = rpc.validate(request, config, ctx.limits);
  const t1 = performance.now();
  checkDeadline(call);

  const pending = rpc.run(engine, er);
  const t2 = performance.now(); // packing the feature bundle and submitting it is synchronous
  if (pending) ctx.stats.engineCall(rpc.name);
  const result = pending ? await pending : emptyResult();
  if (call.cancelled()) throw new RequestError(status.CANCELLED, 'call cancelled');

  const timings: ServerTimings = {
    decodeUs: request[DECODE_US] ?? 0,
    validateUs: us(t0, t1),
    bundleUs: pending ? us(t1, t2) : 0,
    queueUs: result.timings.queue,
    userUs: result.timings.user,
    retrieveUs: result.timings.retrieve,
    gatherUs: result.timings.gather,
    masknetUs: result.timings.masknet,
    dcnUs: result.timings.dcn,
    mlpUs: result.timings.mlp,
    selectUs: result.timings.select,
    engineTotalUs: result.timings.total,
  };
  return rpc.encode(responseOf(request.requestId, result, config, rpc.withRetrieved), timings, started);
}

/** The response message (less timings) for an engine result. */
export function responseOf(requestId: string, result: NativeResult, config: ModelConfig, withRetrieved = false): EngineResponse {
  const response: EngineResponse = {
    requestId,
    winners: winners(result, config.tasks.length),
    model: { name: config.name, version: config.version },
    counts: result.counts,
  };
  if (withRetrieved) response.retrieved = result.retrieved;
  return response;
}

/** The gRPC unary handler for an engine RPC. */
export function unaryHandler<Req extends { requestId: string } & DecodeStamp>(ctx: HandlerContext, rpc: EngineRpc<Req>) {
  return (call: ServerUnaryCall<Req, Buffer>, callback: sendUnaryData<Buffer>): void => {
    if (!ctx.inflight.tryAcquire()) {
      ctx.stats.outcome(rpc.name, 'RESOURCE_EXHAUSTED');
      callback(serviceError(status.RESOURCE_EXHAUSTED, `too many requests in flight (limit ${ctx.inflight.max})`));
      return;
    }
    const state: CallState = { deadline: deadlineMs(call.getDeadline()), cancelled: () => call.cancelled };
    execute(ctx, rpc, call.request, state).then(
      (bytes) => {
        ctx.inflight.release();
        ctx.stats.outcome(rpc.name, 'OK');
        if (call.cancelled) return;
        callback(null, bytes);
        ctx.featureLog?.record(rpc.name, call.request.requestId, call.request[WIRE], bytes);
      },
      (e: unknown) => {
        ctx.inflight.release();
        const err = toServiceError(e);
        ctx.stats.outcome(rpc.name, status[err.code]);
        if (err.code === status.INTERNAL || err.code === status.UNAVAILABLE) ctx.log.warn('rpc_failed', { rpc: rpc.name, code: status[err.code], details: err.details });
        else ctx.log.debug('rpc_refused', { rpc: rpc.name, code: status[err.code], details: err.details });
        if (!call.cancelled) callback(err);
      },
    );
  };
}

export function serviceError(code: status, details: string): ServiceError {
  return Object.assign(new Error(details), { code, details, metadata: new Metadata() });
}

/** RequestError → its status; EngineError by code (docs/api.md); anything else INTERNAL. */
export function toServiceError(e: unknown): ServiceError {
  if (e instanceof RequestError) return serviceError(e.code, e.message);
  if (e instanceof EngineError) {
    const code = e.code === 'INVALID_REQUEST' ? status.INVALID_ARGUMENT : e.code === 'DEVICE' || e.code === 'DISPOSED' ? status.UNAVAILABLE : status.INTERNAL;
    return serviceError(code, e.message);
  }
  return serviceError(status.INTERNAL, `internal error: ${(e as Error)?.message ?? String(e)}`);
}

/** An int64 for protobufjs's writer without BigInt or string work: the two 32-bit words. */
type Int64Words = { low: number; high: number; unsigned: boolean };

/** Winners in proto shape; ids are passed as their 32-bit words and probabilities as views
 *  into the engine's output (no copies, no per-id strings: see bench/RESULTS.md). */
function winners(r: NativeResult, tasks: number): Winner[] {
  const n = r.adIds.length;
  const out: Winner[] = new Array(n);
  const ad32 = new Uint32Array(r.adIds.buffer, r.adIds.byteOffset, 2 * n);
  const adv32 = new Uint32Array(r.advertisers.buffer, r.advertisers.byteOffset, 2 * n);
  const probs = r.probs.length > 0;
  const prices = r.prices.length > 0;
  for (let i = 0; i < n; i++) {
    out[i] = {
      adId: { low: ad32[2 * i] | 0, high: ad32[2 * i + 1] | 0, unsigned: false } satisfies Int64Words as unknown as Winner['adId'],
      advertiserId: { low: adv32[2 * i] | 0, high: adv32[2 * i + 1] | 0, unsigned: false } satisfies Int64Words as unknown as Winner['advertiserId'],
      score: r.scores[i],
      taskProbabilities: (probs ? r.probs.subarray(i * tasks, (i + 1) * tasks) : []) as number[],
      price: prices ? r.prices[i] : undefined,
    };
  }
  return out;
}

/** The result of a Rank with no candidates (no engine work). */
export function emptyResult(): NativeResult {
  const z = new Float32Array(0);
  return {
    adIds: new BigInt64Array(0),
    advertisers: new BigInt64Array(0),
    rows: new Int32Array(0),
    scores: z,
    probs: z,
    prices: z,
    retrieved: 0,
    counts: { received: 0, unknown: 0, duplicate: 0, inactive: 0, outOfBudget: 0, paced: 0, targeting: 0, excludedAd: 0, excludedAdvertiser: 0, capped: 0, eligible: 0 },
    timings: { queue: 0, user: 0, retrieve: 0, gather: 0, masknet: 0, dcn: 0, mlp: 0, select: 0, total: 0 },
  };
}
