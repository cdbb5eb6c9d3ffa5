/**
 * What the router sends to shards and reads back. Requests are the caller's own bytes with a
 * few top-level fields replaced (protobuf parsers take the last value of a scalar field and
 * concatenate repeated ones), so user features are never re-encoded. Responses are decoded
 * into candidates (src/router/merge.ts) and counts.
 */
import { status } from '@grpc/grpc-js';
import protobuf from 'protobufjs';
import { loadProto } from '../server/proto.js';
import { RequestError } from '../handlers/validate.js';
import type { DropCounts } from '../generated/adrank/v1/DropCounts.js';
import type { ServerTimings } from '../generated/adrank/v1/ServerTimings.js';
import { cand, type Cand } from './merge.js';
import type { ShardCallError, ShardClient } from './shard-client.js';

/** Request field numbers (the same in the three request messages). */
export const F = { exclusions: 5, k: 6, cap: 7, ranking: 9, reserve: 10, modelVersion: 11, candidates: 15, price: 16, retrieveCount: 17 } as const;

/** The largest float32: a reserve that makes every GSP price equal the winner's bid. */
export const FLT_MAX = 3.4028234663852886e38;

/** `buf` without the top-level fields in `drop`. */
export function stripFields(buf: Uint8Array, drop: readonly number[]): Buffer {
  const r = protobuf.Reader.create(buf);
  const parts: Uint8Array[] = [];
  let keepFrom = 0;
  while (r.pos < r.len) {
    const start = r.pos;
    const tag = r.uint32();
    r.skipType(tag & 7);
    if (drop.includes(tag >>> 3)) {
      if (start > keepFrom) parts.push(buf.subarray(keepFrom, start));
      keepFrom = r.pos;
    }
  }
  if (keepFrom < buf.length) parts.push(buf.subarray(keepFrom));
  return Buffer.concat(parts);
}

/** Field overrides appended to a stripped request. */
export interface Overrides {
  k?: number;
  cap?: number;
  reserve?: number;
  modelVersion?: string;
  /** candidate ids (field 15, packed) */
  candidates?: BigInt64Array;
  price?: boolean;
  retrieveCount?: number;
  /** ad ids added to the request's exclusions (merged with the caller's) */
  excludeAds?: BigInt64Array;
}

function writeIds(w: protobuf.Writer, ids: BigInt64Array): void {
  const words = new Uint32Array(ids.buffer, ids.byteOffset, 2 * ids.length);
  for (let i = 0; i < ids.length; i++) w.int64({ low: words[2 * i] | 0, high: words[2 * i + 1] | 0, unsigned: false } as unknown as number);
}

export function withFields(base: Buffer, o: Overrides): Buffer {
  const w = protobuf.Writer.create();
  if (o.k !== undefined) w.uint32((F.k << 3) | 0).uint32(o.k);
  if (o.cap !== undefined) w.uint32((F.cap << 3) | 0).int32(o.cap);
  if (o.reserve !== undefined) w.uint32((F.reserve << 3) | 5).float(o.reserve);
  if (o.modelVersion !== undefined) w.uint32((F.modelVersion << 3) | 2).string(o.modelVersion);
  if (o.price !== undefined) w.uint32((F.price << 3) | 0).bool(o.price);
  if (o.retrieveCount !== undefined) w.uint32((F.retrieveCount << 3) | 0).uint32(o.retrieveCount);
  if (o.candidates && o.candidates.length > 0) {
    w.uint32((F.candidates << 3) | 2).fork();
    writeIds(w, o.candidates);
    w.ldelim();
  }
  if (o.excludeAds && o.excludeAds.length > 0) {
    w.uint32((F.exclusions << 3) | 2).fork();
    w.uint32((2 << 3) | 2).fork();
    writeIds(w, o.excludeAds);
    w.ldelim();
    w.ldelim();
  }
  const tail = w.finish();
  return Buffer.concat([base, tail]);
}

interface WinnerObj {
  adId: string;
  advertiserId: string;
  score: number;
  taskProbabilities?: number[];
  price?: number;
  value?: number;
}

export interface ShardAnswer {
  shard: number;
  cands: Cand[];
  counts: Counts;
  timings: ServerTimings;
  model: { name: string; version: string };
}

const TO_OBJECT: protobuf.IConversionOptions = { longs: String, enums: String, defaults: false };

/** Decodes a Retrieve/Rank/RetrieveAndRank response into candidates; `bidFromPrice` reads the
 *  price as the bid (requests sent with reserve = FLT_MAX, see docs/funnel.md). */
export function decodeAnswer(typeName: string, shard: number, bytes: Buffer, bidFromPrice: boolean): ShardAnswer {
  const type = loadProto().root.lookupType(typeName);
  const o = type.toObject(type.decode(bytes), TO_OBJECT) as { winners?: WinnerObj[]; counts?: DropCounts; timings?: ServerTimings; model?: { name: string; version: string } };
  const cands = (o.winners ?? []).map((w) =>
    cand(BigInt(w.adId ?? '0'), BigInt(w.advertiserId ?? '0'), w.score ?? 0, shard, w.taskProbabilities ?? [], w.value ?? 0, bidFromPrice ? (w.price ?? 0) : 0),
  );
  return { shard, cands, counts: fullCounts(o.counts), timings: o.timings ?? {}, model: o.model ?? { name: '', version: '' } };
}

const COUNT_KEYS = ['received', 'unknown', 'duplicate', 'inactive', 'outOfBudget', 'paced', 'targeting', 'excludedAd', 'excludedAdvertiser', 'capped', 'eligible'] as const;

export type Counts = Record<(typeof COUNT_KEYS)[number], number>;

export function fullCounts(c?: DropCounts): Counts {
  const out = {} as Counts;
  for (const k of COUNT_KEYS) out[k] = Number(c?.[k] ?? 0);
  return out;
}

export function sumCounts(cs: DropCounts[]): Counts {
  const out = fullCounts();
  for (const c of cs) for (const k of COUNT_KEYS) out[k] += Number(c[k] ?? 0);
  return out;
}

/** Shard errors that mean the request itself is bad: passed to the caller, not made partial. */
const CALLER_ERRORS = new Set([status.INVALID_ARGUMENT, status.OUT_OF_RANGE]);

/** One request's fan-out state: the caller's deadline and the shards that did not answer. */
export class Fanout {
  readonly missing = new Set<number>();
  /** per phase: the slowest shard's engine timings */
  readonly timings: ServerTimings[] = [];

  constructor(
    readonly shards: readonly ShardClient[],
    /** ms since the epoch by which shard answers must be in */
    readonly deadline: number,
    readonly onShardFailure: (shard: number, code: status, details: string) => void,
  ) {}

  /** Sends `calls` in parallel; failed or late shards are marked missing and left out. */
  async phase(method: string, responseType: string, calls: { shard: number; bytes: Buffer }[], bidFromPrice: boolean): Promise<ShardAnswer[]> {
    const live = calls.filter((c) => !this.missing.has(c.shard));
    if (Date.now() >= this.deadline) throw new RequestError(status.DEADLINE_EXCEEDED, 'deadline exceeded before the shards were asked');
    const settled = await Promise.allSettled(live.map((c) => this.shards[c.shard].call(method, c.bytes, this.deadline)));
    const out: ShardAnswer[] = [];
    let slowest: ServerTimings = {};
    settled.forEach((s, i) => {
      const shard = live[i].shard;
      if (s.status === 'fulfilled') {
        const a = decodeAnswer(responseType, shard, s.value, bidFromPrice);
        if ((a.timings.engineTotalUs ?? 0) >= (slowest.engineTotalUs ?? 0)) slowest = a.timings;
        out.push(a);
        return;
      }
      const e = s.reason as ShardCallError;
      if (CALLER_ERRORS.has(e.code)) throw new RequestError(e.code, e.details ?? e.message);
      this.missing.add(shard);
      this.onShardFailure(shard, e.code ?? status.UNKNOWN, e.details ?? e.message);
    });
    this.timings.push(slowest);
    if (out.length === 0 && live.length > 0 && this.missing.size >= this.shards.length)
      throw new RequestError(status.UNAVAILABLE, `no shard answered (${this.shards.length} shards; see the router's shard_failed logs)`);
    return out;
  }

  /** Shards that answered every phase so far, of `of`. */
  answered(of: readonly number[]): number[] {
    return of.filter((s) => !this.missing.has(s));
  }
}
