/**
 * The path every engine RPC takes: admit (in-flight bound) → deadline → validate → engine →
 * encode. Each RPC file (rank.ts, retrieve.ts, retrieve-and-rank.ts) supplies its validator,
 * engine call and response encoder; this file holds the steps they share and the mapping of
 * errors to gRPC statuses (docs/api.md "Status codes").
 */
import { Metadata, status, type sendUnaryData, type ServerUnaryCall, type ServiceError } from '@grpc/grpc-js';
import { EngineError, WireRefusal, type Engine, type EngineRequest, type FallbackOp, type NativeOp, type NativeResult, type NativeWireRequest } from '../engine/index.js';
import { binding } from '../engine/binding.js';
import type { ModelConfig } from '../model/config.js';
import { DECODE_START, DECODE_US, patchTimings, timingsOf, type DecodeStamp } from '../wire/codec.js';
import type { ServerTimings } from '../generated/adrank/v1/ServerTimings.js';
import type { Winner } from '../generated/adrank/v1/Winner.js';
import type { DropCounts } from '../generated/adrank/v1/DropCounts.js';
import type { SourceCounts } from '../generated/adrank/v1/SourceCounts.js';
import type { HandlerContext } from './context.js';
import type { BatchOp } from '../batcher/index.js';
import { RequestError, type Limits } from './validate.js';

import { FALLBACK_REASON, type CallState, type EngineResponse, type EngineRpc, type FallbackReason } from './rpc.js';
export { FALLBACK_REASON, type CallState, type EngineResponse, type EngineRpc, type FallbackReason };

const us = (from: number, to: number) => (to - from) * 1000;

/** Deadline in ms since the epoch from grpc-js's Deadline (Date | number). */
function deadlineMs(d: Date | number): number {
  return d instanceof Date ? d.getTime() : d;
}

function checkDeadline(call: CallState): void {
  if (call.deadline <= Date.now()) throw new RequestError(status.DEADLINE_EXCEEDED, 'deadline exceeded before the request reached the engine');
}

/** One request through validate → engine → encode; resolves to the response bytes. The request
 *  holds a lease on its model version (the pinned one, else the default) until it ends, so a
 *  version swapped out meanwhile is freed only after it (src/lifecycle/registry.ts). When the model
 *  path cannot answer (an engine error, or too little deadline left for a request of this size) and
 *  the request allows it, the answer comes from the fallback (docs/funnel.md "Fallback"). */
export async function execute<Req extends { requestId: string; modelVersion?: string; allowFallback?: boolean | null } & DecodeStamp>(
  ctx: HandlerContext,
  rpc: EngineRpc<Req>,
  request: Req | Uint8Array,
  call: CallState = { deadline: Infinity, cancelled: () => false },
): Promise<Buffer> {
  if (request instanceof Uint8Array) return executeWire(ctx, rpc, request, call);
  const lease = ctx.models.acquire(request.modelVersion ?? '');
  try {
    return await executeOn(ctx, rpc, request, call, lease.engine, lease.version);
  } finally {
    lease.release();
  }
}

async function executeOn<Req extends { requestId: string; allowFallback?: boolean | null } & DecodeStamp>(
  ctx: HandlerContext,
  rpc: EngineRpc<Req>,
  request: Req,
  call: CallState,
  engine: Engine,
  version: string,
): Promise<Buffer> {
  const started = request[DECODE_START] ?? performance.now();
  checkDeadline(call);
  const config = engine.config;

  const t0 = performance.now();
  const er = rpc.validate(request, config, ctx.limits);
  const t1 = performance.now();
  checkDeadline(call);
  const allowFallback = request.allowFallback ?? true;
  const size = rpc.size(er);

  let result: NativeResult;
  let fallback: FallbackReason | undefined;
  let pending: Promise<NativeResult> | undefined;
  let packed = t1; // packing the feature bundle and submitting it is synchronous
  const p99 = ctx.latency.p99(rpc.name, size);
  if (engine.adsOnly) {
    // --fallback-only: no model version loads; the ad tables of the newest one answer
    if (!allowFallback)
      throw new RequestError(status.UNAVAILABLE, 'no model version loads; this server answers from the fallback only (--fallback-only), and allow_fallback is false');
    fallback = 'NO_MODEL';
    result = engine.fallback(rpc.fallbackOp, er);
  } else if (allowFallback && p99 !== undefined && call.deadline - Date.now() < p99 && engine.fallbackPlan) {
    fallback = 'DEADLINE';
    result = engine.fallback(rpc.fallbackOp, er);
  } else {
    pending = rpc.batch && ctx.batcher?.wants(size) ? ctx.batcher.submit(engine, rpc.batch.op, engine.pack(er), size, call) : rpc.run(engine, er, call.deadline);
    packed = performance.now();
    if (pending) ctx.stats.engineCall(rpc.name);
    try {
      result = pending ? await pending : emptyResult();
      if (pending) ctx.latency.record(rpc.name, size, performance.now() - started);
    } catch (e) {
      if (e instanceof EngineError && e.sticky) ctx.deviceFailed?.(engine, version, e);
      if (!(allowFallback && isModelPathFailure(e) && engine.fallbackPlan)) throw e;
      ctx.log.warn('fallback_served', { rpc: rpc.name, reason: 'ENGINE_ERROR', requestId: request.requestId, error: e });
      fallback = 'ENGINE_ERROR';
      result = engine.fallback(rpc.fallbackOp, er);
    }
  }
  if (fallback) {
    ctx.stats.fallback(fallback);
    ctx.metrics?.fallbacks.inc({ rpc: rpc.name, reason: fallback });
  }
  if (call.cancelled()) throw new RequestError(status.CANCELLED, 'call cancelled');

  const timings: ServerTimings = {
    decodeUs: request[DECODE_US] ?? 0,
    validateUs: us(t0, t1),
    bundleUs: pending ? us(t1, packed) : 0,
    queueUs: result.timings.queue,
    batchWaitUs: result.batchWaitUs ?? 0,
    userUs: result.timings.user,
    retrieveUs: result.timings.retrieve,
    gatherUs: result.timings.gather,
    masknetUs: result.timings.masknet,
    dcnUs: result.timings.dcn,
    mlpUs: result.timings.mlp,
    selectUs: result.timings.select,
    engineTotalUs: result.timings.total,
  };
  call.done = { result, timings, config, surface: er.surface, version, fallback };
  const response = responseOf(request.requestId, result, config, rpc.withRetrieved, version);
  if (fallback) Object.assign(response, { fallback: true, fallbackReason: FALLBACK_REASON[fallback] });
  return rpc.encode(response, timings, started);
}

/** The served path (docs/wire.md): the request bytes parsed and validated in native code into the
 *  feature bundle, the response written natively into one buffer; the same steps, statuses and
 *  fallback rules as executeOn, whose JS view of the request is never built here. */
async function executeWire<Req>(ctx: HandlerContext, rpc: EngineRpc<Req>, bytes: Uint8Array, call: CallState): Promise<Buffer> {
  const started = performance.now();
  call.started = started;
  let parsed: NativeWireRequest;
  try {
    parsed = new (binding().WireRequest)(rpc.op, bytes);
  } catch (e) {
    throw new RequestError(status.INTERNAL, `cannot decode the ${rpc.name} request: ${(e as Error).message}`);
  }
  call.requestId = parsed.requestId;
  let wire = parsed;
  const lease = ctx.models.acquire(parsed.modelVersion);
  try {
    const { engine, version } = lease;
    checkDeadline(call);
    const config = engine.config;
    // an engine of another copy of the addon (a test build) takes only its own WireRequests
    if (!engine.ownsWire(parsed)) wire = engine.parseWire(rpc.op, bytes);
    let size: number;
    try {
      size = engine.prepare(wire, ctx.limits.maxCandidates, version);
    } catch (e) {
      throw e instanceof WireRefusal ? refusal(rpc, bytes, config, ctx.limits, e) : e;
    }
    checkDeadline(call);
    const allowFallback = wire.allowFallback ?? true;

    let result: NativeResult;
    let fallback: FallbackReason | undefined;
    // only a call with a deadline can fall back for lack of time
    const p99 = allowFallback && call.deadline !== Infinity ? ctx.latency.p99(rpc.name, size) : undefined;
    if (engine.adsOnly) {
      if (!allowFallback)
        throw new RequestError(status.UNAVAILABLE, 'no model version loads; this server answers from the fallback only (--fallback-only), and allow_fallback is false');
      fallback = 'NO_MODEL';
      result = engine.fallbackWire(rpc.fallbackOp, wire, FALLBACK_REASON[fallback]);
    } else if (p99 !== undefined && call.deadline - Date.now() < p99 && engine.fallbackPlan) {
      fallback = 'DEADLINE';
      result = engine.fallbackWire(rpc.fallbackOp, wire, FALLBACK_REASON[fallback]);
    } else if (rpc.emptyAtZero && size === 0) {
      result = engine.emptyWire(wire);
    } else {
      // a run cheaper than the hand-off to a request thread and back runs here (docs/wire.md "Inline runs")
      const cost = (ctx.inlineMaxUs > 0 || ctx.inlineIdleMaxUs > 0) && engine.runsHere ? engine.runCost.estimate(rpc.op, size) : undefined;
      const here = cost !== undefined && (cost <= ctx.inlineMaxUs || (cost <= ctx.inlineIdleMaxUs && ctx.inflight.quiet(started)));
      const batched = !here && rpc.batch !== undefined && ctx.batcher?.wants(size) === true;
      ctx.stats.engineCall(rpc.name);
      if (here) ctx.stats.inlineRuns++;
      try {
        result = here
          ? engine.runWireHere(rpc.op, wire, call.deadline)
          : await (batched ? ctx.batcher!.submit(engine, rpc.batch!.op, wire, size, call) : engine.runWire(rpc.op, wire, call.deadline));
        if (!batched && engine.runsHere) engine.runCost.record(rpc.op, size, result.timings.total);
        ctx.latency.record(rpc.name, size, performance.now() - started);
      } catch (e) {
        if (e instanceof EngineError && e.sticky) ctx.deviceFailed?.(engine, version, e);
        if (!(allowFallback && isModelPathFailure(e) && engine.fallbackPlan)) throw e;
        ctx.log.warn('fallback_served', { rpc: rpc.name, reason: 'ENGINE_ERROR', requestId: wire.requestId, error: e });
        fallback = 'ENGINE_ERROR';
        result = engine.fallbackWire(rpc.fallbackOp, wire, FALLBACK_REASON[fallback]);
      }
    }
    if (fallback) {
      ctx.stats.fallback(fallback);
      ctx.metrics?.fallbacks.inc({ rpc: rpc.name, reason: fallback });
    }
    if (call.cancelled()) throw new RequestError(status.CANCELLED, 'call cancelled');
    const response = result.response;
    if (!response) throw new EngineError('the engine answered a WireRequest without its response', 'INTERNAL');
    patchTimings(response, (performance.now() - started) * 1000, result.batchWaitUs);
    call.done = { result, timings: timingsOf(response), config, surface: wire.surface ?? 0, version, fallback };
    return response;
  } finally {
    // every run of it has ended here: its native memory goes now, not at a later collection
    parsed.release();
    if (wire !== parsed) wire.release();
    lease.release();
  }
}

/** The status of a request the native validation refused: the message validate.ts gives for it
 *  (so that quoting and number formatting match its messages byte for byte), else the native one. */
function refusal<Req>(rpc: EngineRpc<Req>, bytes: Uint8Array, config: ModelConfig, limits: Limits, e: WireRefusal): RequestError {
  try {
    rpc.validate(rpc.decode(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)), config, limits);
  } catch (js) {
    if (js instanceof RequestError && js.message.includes(` for ${e.field},`)) return js;
  }
  return new RequestError(status.INVALID_ARGUMENT, e.message);
}

/** A failure of the model path itself (engine or device), not of the request or of shutdown. */
function isModelPathFailure(e: unknown): boolean {
  return e instanceof EngineError && (e.code === 'DEVICE' || e.code === 'INTERNAL');
}

/** The response message (less timings) for an engine result; `version` is the served version's
 *  label (the repository directory name; config.version for a single bundle). */
export function responseOf(requestId: string, result: NativeResult, config: ModelConfig, withRetrieved = false, version = config.version): EngineResponse {
  const response: EngineResponse = {
    requestId,
    winners: winners(result, config.tasks.length),
    model: { name: config.name, version },
    counts: result.counts,
  };
  if (withRetrieved) {
    response.retrieved = result.retrieved;
    response.sourceCounts = result.sourceCounts.map((c) => ({ ...c, source: c.source as unknown as SourceCounts['source'] }));
  }
  return response;
}

/** The gRPC unary handler for an engine RPC. */
export function unaryHandler<Req extends { requestId: string; modelVersion?: string } & DecodeStamp>(ctx: HandlerContext, rpc: EngineRpc<Req>) {
  return (call: ServerUnaryCall<Buffer, Buffer>, callback: sendUnaryData<Buffer>): void => {
    const state: CallState = { deadline: deadlineMs(call.getDeadline()), cancelled: () => call.cancelled, onCancel: (fn) => call.once('cancelled', fn) };
    ctx.shadow?.arrived();
    if (!ctx.inflight.tryAcquire()) {
      ctx.stats.outcome(rpc.name, 'RESOURCE_EXHAUSTED');
      ctx.observe?.(rpc.name, status.RESOURCE_EXHAUSTED, call, state);
      callback(serviceError(status.RESOURCE_EXHAUSTED, `too many requests in flight (limit ${ctx.inflight.max})`));
      return;
    }
    execute(ctx, rpc, call.request, state).then(
      (bytes) => {
        ctx.inflight.release();
        const cancelled = call.cancelled;
        if (!cancelled) callback(null, bytes);
        // after the answer is handed to grpc-js
        ctx.stats.outcome(rpc.name, 'OK');
        ctx.observe?.(rpc.name, status.OK, call, state);
        if (cancelled) return;
        const requestId = state.requestId ?? '';
        ctx.featureLog?.record(rpc.name, requestId, call.request, bytes);
        // the copy itself starts on a later turn, from a JS view of the request built then
        ctx.shadow?.offerWire(rpc, requestId, call.request, state.done, ctx.afterSent);
      },
      (e: unknown) => {
        ctx.inflight.release();
        const err = toServiceError(e);
        ctx.stats.outcome(rpc.name, status[err.code]);
        ctx.observe?.(rpc.name, err.code, call, state);
        const fields = { rpc: rpc.name, code: status[err.code], details: err.details, requestId: state.requestId, traceparent: traceparent(call.metadata) };
        if (err.code === status.INTERNAL || err.code === status.UNAVAILABLE) ctx.log.warn('rpc_failed', fields);
        else ctx.log.debug('rpc_refused', fields);
        if (!call.cancelled) callback(err);
      },
    );
  };
}

/** The W3C trace context of a call (`traceparent` metadata), when sent and well formed. */
export function traceparent(metadata: Metadata): string | undefined {
  const v = metadata.get('traceparent')[0];
  return typeof v === 'string' && /^[\da-f]{2}-[\da-f]{32}-[\da-f]{16}-[\da-f]{2}$/.test(v) ? v : undefined;
}

export function serviceError(code: status, details: string): ServiceError {
  return Object.assign(new Error(details), { code, details, metadata: new Metadata() });
}

/** RequestError → its status; EngineError by code (docs/api.md); anything else INTERNAL. */
export function toServiceError(e: unknown): ServiceError {
  if (e instanceof RequestError) return serviceError(e.code, e.message);
  if (e instanceof EngineError) {
    const code =
      e.code === 'INVALID_REQUEST'
        ? status.INVALID_ARGUMENT
        : e.code === 'DEADLINE'
          ? status.DEADLINE_EXCEEDED
          : e.code === 'DEVICE' || e.code === 'DISPOSED'
            ? status.UNAVAILABLE
            : status.INTERNAL;
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
  const values = r.values.length > 0;
  const sources = r.sources.length > 0;
  for (let i = 0; i < n; i++) {
    out[i] = {
      adId: { low: ad32[2 * i] | 0, high: ad32[2 * i + 1] | 0, unsigned: false } satisfies Int64Words as unknown as Winner['adId'],
      advertiserId: { low: adv32[2 * i] | 0, high: adv32[2 * i + 1] | 0, unsigned: false } satisfies Int64Words as unknown as Winner['advertiserId'],
      score: r.scores[i],
      taskProbabilities: (probs ? r.probs.subarray(i * tasks, (i + 1) * tasks) : []) as number[],
      price: prices ? r.prices[i] : undefined,
      value: values ? r.values[i] : undefined,
      source: (sources ? r.sources[i] : 0) as unknown as Winner['source'],
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
    values: z,
    retrieved: 0,
    sources: new Uint8Array(0),
    sourceCounts: [],
    counts: { received: 0, unknown: 0, duplicate: 0, inactive: 0, outOfBudget: 0, paced: 0, targeting: 0, excludedAd: 0, excludedAdvertiser: 0, capped: 0, eligible: 0 },
    timings: { queue: 0, user: 0, retrieve: 0, gather: 0, masknet: 0, dcn: 0, mlp: 0, select: 0, total: 0 },
  };
}
