/**
 * The path every routed RPC takes (the router's counterpart of src/handlers/engine-rpc.ts):
 * validate against the shards' model config → fan out under the caller's deadline → merge →
 * encode, with `partial` and `missing_shards` set when a shard did not answer. Each RPC file
 * (retrieve.ts, rank.ts, retrieve-and-rank.ts) supplies its merge.
 */
import { status, type sendUnaryData, type ServerUnaryCall } from '@grpc/grpc-js';
import type { ModelConfig } from '../model/config.js';
import type { Limits } from '../handlers/validate.js';
import { RequestError } from '../handlers/validate.js';
import { toServiceError } from '../handlers/engine-rpc.js';
import { DECODE_START, DECODE_US, responseEncoder, type DecodeStamp } from '../wire/codec.js';
import type { Logger } from '../log.js';
import type { ServerTimings } from '../generated/adrank/v1/ServerTimings.js';
import type { Winner } from '../generated/adrank/v1/Winner.js';
import type { DropCounts } from '../generated/adrank/v1/DropCounts.js';
import type { Cand } from './merge.js';
import { Fanout } from './shard-rpc.js';
import type { ShardClient } from './shard-client.js';

/** What a routed RPC needs from the router. */
export interface RouteContext {
  shards: readonly ShardClient[];
  /** the model the shards serve (their common config) */
  config: ModelConfig;
  /** the version every shard request is pinned to */
  version: string;
  limits: Limits;
}

export interface Routed {
  winners: Winner[];
  counts: DropCounts;
  retrieved?: number;
  /** RetrieveAndRank: per-source counts (SourceCounts, the enum as its number) */
  sourceCounts?: Record<string, number>[];
}

export interface RouteRpc<Req> {
  name: string;
  decode(bytes: Buffer): Req;
  /** validates `req` and merges the shards' answers; `raw` is the caller's request bytes */
  route(ctx: RouteContext, raw: Buffer, req: Req, fan: Fanout): Promise<Routed>;
  responseType: string;
}

/** The request as the router's deserializer returns it: decoded, and the bytes it came from. */
export interface RawRequest<Req> {
  raw: Buffer;
  req: Req;
}

export function winnerOf(c: Cand, ranked: boolean, price?: number, source?: number): Winner {
  // int64s as their words (protobufjs writes Long-like objects without strings)
  const w: Winner = {
    adId: { low: c.idLo | 0, high: c.idHi, unsigned: false } as unknown as Winner['adId'],
    advertiserId: { low: c.advLo | 0, high: c.advHi, unsigned: false } as unknown as Winner['advertiserId'],
    score: c.score,
    taskProbabilities: ranked ? c.probs : [],
  };
  if (price !== undefined) w.price = price;
  if (ranked) w.value = c.value;
  if (source !== undefined) w.source = source as unknown as Winner['source'];
  return w;
}

export interface RouterHooks {
  ctx(): RouteContext | undefined;
  log: Logger;
  /** caller deadline unset: how long shards get */
  defaultShardTimeoutMs: number;
  /** a shard did not answer (counted and logged by the router) */
  onShardFailure(shard: number, code: status, details: string): void;
  onOutcome(rpc: string, code: string, partial: boolean): void;
  /** shard calls one request made (phases × shards, pages) */
  onShardCalls(rpc: string, calls: number): void;
}

/** Time kept back from the caller's deadline for the merge and the answer. */
export function shardDeadline(callerDeadline: number, now: number, defaultMs: number): number {
  if (!Number.isFinite(callerDeadline)) return now + defaultMs;
  const left = callerDeadline - now;
  return callerDeadline - Math.min(50, Math.max(2, 0.1 * left));
}

const encoders = new Map<string, ReturnType<typeof responseEncoder>>();

export function routeHandler<Req extends { requestId: string } & DecodeStamp>(hooks: RouterHooks, rpc: RouteRpc<Req>) {
  const encoder = encoders.get(rpc.responseType) ?? responseEncoder<object>(rpc.responseType);
  encoders.set(rpc.responseType, encoder);
  return (call: ServerUnaryCall<RawRequest<Req>, Buffer>, callback: sendUnaryData<Buffer>): void => {
    const { raw, req } = call.request;
    const started = req[DECODE_START] ?? performance.now();
    let partial = false;
    const run = async (): Promise<Buffer> => {
      const ctx = hooks.ctx();
      if (!ctx) throw new RequestError(status.UNAVAILABLE, 'the router has not yet seen every shard (health: NOT_SERVING)');
      // a pin is checked first, as a single server does (src/lifecycle/registry.ts): the router
      // serves the one version its shards agree on
      const pin = (req as { modelVersion?: string }).modelVersion;
      if (pin && pin !== ctx.version) throw new RequestError(status.NOT_FOUND, `model version ${JSON.stringify(pin)} is not loaded (loaded: ${ctx.version})`);
      const d = call.getDeadline();
      const deadline = d instanceof Date ? d.getTime() : Number(d);
      const fan = new Fanout(ctx.shards, shardDeadline(deadline, Date.now(), hooks.defaultShardTimeoutMs), hooks.onShardFailure);
      const r = await rpc.route(ctx, raw, req, fan).finally(() => hooks.onShardCalls(rpc.name, fan.calls));
      const missing = [...fan.missing].sort((a, b) => a - b);
      partial = missing.length > 0;
      const timings: ServerTimings = { decodeUs: req[DECODE_US] ?? 0, ...sumPhases(fan.timings) };
      const response: Record<string, unknown> = {
        requestId: req.requestId,
        winners: r.winners,
        model: { name: ctx.config.name, version: ctx.version },
        counts: r.counts,
        partial: missing.length > 0,
        missingShards: missing,
      };
      if (r.retrieved !== undefined) response.retrieved = r.retrieved;
      if (r.sourceCounts !== undefined) response.sourceCounts = r.sourceCounts;
      return encoder(response, timings, started);
    };
    run().then(
      (bytes) => {
        hooks.onOutcome(rpc.name, 'OK', partial);
        if (!call.cancelled) callback(null, bytes);
      },
      (e: unknown) => {
        const err = toServiceError(e);
        hooks.onOutcome(rpc.name, status[err.code], false);
        if (err.code === status.INTERNAL) hooks.log.warn('rpc_failed', { rpc: rpc.name, code: status[err.code], details: err.details });
        if (!call.cancelled) callback(err);
      },
    );
  };
}

/** Engine stage times: each phase's slowest shard, added over the phases. */
function sumPhases(phases: ServerTimings[]): ServerTimings {
  const keys = ['queueUs', 'userUs', 'retrieveUs', 'gatherUs', 'masknetUs', 'dcnUs', 'mlpUs', 'selectUs', 'engineTotalUs'] as const;
  const out: ServerTimings = {};
  for (const k of keys) out[k] = phases.reduce((s, p) => s + Number(p[k] ?? 0), 0);
  return out;
}
