/**
 * What the router sends to shards and reads back. Requests are the caller's own bytes with a
 * few top-level fields replaced (protobuf parsers take the last value of a scalar field and
 * concatenate repeated ones), so user features are never re-encoded. Responses are decoded
 * into candidates (src/router/merge.ts) and counts.
 */
import { status } from '@grpc/grpc-js';
import protobuf from 'protobufjs';
import { loadProto } from '../wire/proto.js';
import { RequestError } from '../handlers/validate.js';
import type { DropCounts } from '../generated/adrank/v1/DropCounts.js';
import type { ServerTimings } from '../generated/adrank/v1/ServerTimings.js';
import { cand, type Cand } from './merge.js';
import type { ShardCallError, ShardClient } from './shard-client.js';

/** Request field numbers (the same in the three request messages; 16 is Rank's, 17 and 18
 *  RetrieveAndRank's). */
export const F = { exclusions: 5, k: 6, cap: 7, ranking: 9, reserve: 10, modelVersion: 11, candidates: 15, price: 16, retrieveCount: 17, quota: 18 } as const;

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

export interface ShardAnswer {
  shard: number;
  cands: Cand[];
  counts: Counts;
  timings: ServerTimings;
  model: { name: string; version: string };
}

const TO_OBJECT: protobuf.IConversionOptions = { longs: String, enums: String, defaults: false };

/** Words of the varint at r.pos (an int64 as two's complement), advancing r. */
function varintWords(r: protobuf.Reader, out: { hi: number; lo: number }): void {
  const buf = r.buf;
  let lo = 0;
  let hi = 0;
  let shift = 0;
  let b: number;
  do {
    if (r.pos >= r.len) throw new Error('truncated varint in a shard response');
    b = buf[r.pos++];
    if (shift < 28) lo |= (b & 127) << shift;
    else if (shift === 28) {
      lo |= (b & 15) << 28;
      hi |= (b & 127) >>> 4;
    } else hi |= (b & 127) << (shift - 32);
    shift += 7;
  } while (b >= 128 && shift < 70);
  out.lo = lo >>> 0;
  out.hi = hi | 0;
}

const words = { hi: 0, lo: 0 };

/** One Winner message (fields 1 ad_id, 2 advertiser_id, 3 score, 4 probabilities, 5 price, 6 value). */
function decodeWinner(r: protobuf.Reader, end: number, shard: number, bidFromPrice: boolean): Cand {
  let idHi = 0, idLo = 0, advHi = 0, advLo = 0, score = 0, price = 0, value = 0;
  const probs: number[] = [];
  while (r.pos < end) {
    const tag = r.uint32();
    switch (tag) {
      case (1 << 3) | 0: varintWords(r, words); idHi = words.hi; idLo = words.lo; break;
      case (2 << 3) | 0: varintWords(r, words); advHi = words.hi; advLo = words.lo; break;
      case (3 << 3) | 5: score = r.float(); break;
      case (4 << 3) | 2: { const e = r.uint32() + r.pos; while (r.pos < e) probs.push(r.float()); break; }
      case (4 << 3) | 5: probs.push(r.float()); break;
      case (5 << 3) | 5: price = r.float(); break;
      case (6 << 3) | 5: value = r.float(); break;
      default: r.skipType(tag & 7);
    }
  }
  return cand(idHi, idLo, advHi, advLo, score, shard, probs, value, bidFromPrice ? price : 0);
}

/** Decodes a Retrieve/Rank/RetrieveAndRank response into candidates (winners read by hand: no
 *  per-id strings or BigInts); `bidFromPrice` reads the price as the bid (requests sent with
 *  reserve = FLT_MAX, see docs/funnel.md "Sharded serving"). */
export function decodeAnswer(shard: number, bytes: Buffer, bidFromPrice: boolean): ShardAnswer {
  const root = loadProto().root;
  const r = protobuf.Reader.create(bytes);
  const cands: Cand[] = [];
  let counts: DropCounts | undefined;
  let timings: ServerTimings = {};
  let model = { name: '', version: '' };
  const sub = (name: string, len: number) => {
    const t = root.lookupType(name);
    const o = t.toObject(t.decode(bytes.subarray(r.pos, r.pos + len)), TO_OBJECT);
    r.pos += len;
    return o;
  };
  while (r.pos < r.len) {
    const tag = r.uint32();
    if (tag === ((2 << 3) | 2)) {
      const end = r.uint32() + r.pos;
      cands.push(decodeWinner(r, end, shard, bidFromPrice));
      r.pos = end;
    } else if (tag === ((3 << 3) | 2)) model = sub('adrank.v1.ModelRef', r.uint32()) as typeof model;
    else if (tag === ((4 << 3) | 2)) counts = sub('adrank.v1.DropCounts', r.uint32()) as DropCounts;
    else if (tag === ((5 << 3) | 2)) timings = sub('adrank.v1.ServerTimings', r.uint32()) as ServerTimings;
    else r.skipType(tag & 7);
  }
  return { shard, cands, counts: fullCounts(counts), timings, model };
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
  /** shard calls made for this request */
  calls = 0;
  /** per phase: the slowest shard's engine timings */
  readonly timings: ServerTimings[] = [];

  constructor(
    readonly shards: readonly ShardClient[],
    /** ms since the epoch by which shard answers must be in */
    readonly deadline: number,
    readonly onShardFailure: (shard: number, code: status, details: string) => void,
  ) {}

  /** Sends `calls` in parallel; failed or late shards are marked missing and left out. */
  async phase(method: string, calls: { shard: number; bytes: Buffer }[], bidFromPrice: boolean): Promise<ShardAnswer[]> {
    const live = calls.filter((c) => !this.missing.has(c.shard));
    if (Date.now() >= this.deadline) throw new RequestError(status.DEADLINE_EXCEEDED, 'deadline exceeded before the shards were asked');
    this.calls += live.length;
    const settled = await Promise.allSettled(live.map((c) => this.shards[c.shard].call(method, c.bytes, this.deadline)));
    const out: ShardAnswer[] = [];
    let slowest: ServerTimings = {};
    settled.forEach((s, i) => {
      const shard = live[i].shard;
      if (s.status === 'fulfilled') {
        const a = decodeAnswer(shard, s.value, bidFromPrice);
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
}
