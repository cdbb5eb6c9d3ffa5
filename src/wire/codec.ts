/**
 * Request and response codecs for the three engine RPCs.
 *
 * Requests: protobufjs decodes every field with the loader options except the big id list
 * (RankRequest.candidate_ad_ids), which is read straight from the packed varints into a
 * BigInt64Array — no string or Long per id. Measured in docs/api.md ("Decoding cost"):
 * 10,000 ids decode ~30x faster this way than with proto-loader's longs-as-String objects.
 *
 * Responses: the message is encoded without its `timings`, the encode time is measured, and
 * the timings message is appended as its own field (protobuf parsers merge fields in any
 * order), so `timings.encode_us` covers the serialisation of everything else.
 */
import protobuf from 'protobufjs';
import { LOADER_OPTIONS, protoRoot } from './proto.js';
import type { ServerTimings } from '../generated/adrank/v1/ServerTimings.js';

if (new Uint8Array(new Uint32Array([1]).buffer)[0] !== 1) throw new Error('adrank: the front end assumes a little-endian host');

/** Set by the request decoders on the object they return. */
export const DECODE_START = Symbol('adrank.decodeStart');
export const DECODE_US = Symbol('adrank.decodeUs');
/** The request's wire bytes (for the feature log, src/featurelog). */
export const WIRE = Symbol('adrank.wire');

export interface DecodeStamp {
  /** performance.now() when decoding began */
  [DECODE_START]?: number;
  [DECODE_US]?: number;
  [WIRE]?: Uint8Array;
}

/** A generated __Output type with fields `F` read as BigInt64Array. */
export type Decoded<T, F extends keyof T = never> = Omit<T, F> & { [K in F]: BigInt64Array } & DecodeStamp;


/** The most ids one repeated int64 field is decoded into (the API's largest list, docs/api.md). */
export const MAX_DECODED_IDS = 100_000;

/**
 * A repeated int64 field holding more than MAX_DECODED_IDS ids: its count and its first
 * MAX_DECODED_IDS ids, nothing more materialised. Validation refuses an id list by its length;
 * an engagement sequence (cut to max_len anyway) keeps its head.
 */
export class TooManyIds {
  constructor(
    readonly length: number,
    readonly head: BigInt64Array,
  ) {}
  slice(start?: number, end?: number): BigInt64Array {
    return this.head.slice(start, end);
  }
}

/** A repeated int64 field as the request decoder gives it. */
export type Int64List = BigInt64Array | TooManyIds;

/**
 * Decodes the varints in buf[start, end) as int64 into out32 (the Uint32Array view of a
 * BigInt64Array) from element `at`, stopping at element `max`; returns the next element index.
 */
function readVarints64(buf: Uint8Array, start: number, end: number, out32: Uint32Array, at: number, max = Infinity): number {
  let i = start;
  let n = at;
  while (i < end && n < max) {
    let b = buf[i++];
    let lo = b & 127;
    let hi = 0;
    if (b >= 128) {
      b = buf[i++]; lo |= (b & 127) << 7;
      if (b >= 128) {
        b = buf[i++]; lo |= (b & 127) << 14;
        if (b >= 128) {
          b = buf[i++]; lo |= (b & 127) << 21;
          if (b >= 128) {
            b = buf[i++]; lo |= (b & 127) << 28; hi = (b & 127) >>> 4;
            if (b >= 128) {
              b = buf[i++]; hi |= (b & 127) << 3;
              if (b >= 128) {
                b = buf[i++]; hi |= (b & 127) << 10;
                if (b >= 128) {
                  b = buf[i++]; hi |= (b & 127) << 17;
                  if (b >= 128) {
                    b = buf[i++]; hi |= (b & 127) << 24;
                    if (b >= 128) {
                      b = buf[i++]; hi |= (b & 1) << 31;
                      if (b >= 128) throw new Error('invalid varint encoding');
                    }
                  }
                }
              }
            }
          }
        }
      }
    }
    if (i > end) throw new Error('index out of range: truncated varint');
    out32[2 * n] = lo;
    out32[2 * n + 1] = hi;
    n++;
  }
  return n;
}

/** Decoding scratch, reused (decoding is synchronous); grown to the largest list seen. */
let scratch = new Uint32Array(2 * 16384);

/**
 * The byte ranges [start, end) of every occurrence of field `fieldNumber` in buf[from, to):
 * for a length-delimited occurrence its payload, for a varint the varint itself (so a repeated
 * int64 field's ranges, packed or not, are a run of varints). Other wire types throw.
 */
function fieldRanges(buf: Uint8Array, from: number, to: number, fieldNumber: number, out: number[] = []): number[] {
  const reader = protobuf.Reader.create(buf);
  reader.pos = from;
  reader.len = to;
  while (reader.pos < reader.len) {
    const tag = reader.uint32();
    const wireType = tag & 7;
    if (tag >>> 3 !== fieldNumber) {
      reader.skipType(wireType);
      continue;
    }
    if (wireType === 2) {
      const len = reader.uint32();
      const start = reader.pos;
      const end = start + len;
      if (end > reader.len) throw new Error(`index out of range: ${end} > ${reader.len}`);
      reader.pos = end;
      out.push(start, end);
    } else if (wireType === 0) {
      const start = reader.pos;
      reader.skip(); // one varint
      out.push(start, reader.pos);
    } else {
      throw new Error(`invalid wire type ${wireType} for int64 field ${fieldNumber}`);
    }
  }
  return out;
}

/**
 * The int64 varints in `ranges` as one list. The count is known before anything is allocated:
 * at most one id per byte, and when there are more bytes than `limit` the ids are counted by
 * their last bytes first; a list of more than `limit` ids keeps only its first `limit`.
 */
function readInt64Ranges(buf: Uint8Array, ranges: number[], limit: number): Int64List {
  let bytes = 0;
  for (let r = 0; r < ranges.length; r += 2) bytes += ranges[r + 1] - ranges[r];
  let count = bytes;
  if (bytes > limit) {
    count = 0;
    for (let r = 0; r < ranges.length; r += 2) for (let i = ranges[r]; i < ranges[r + 1]; i++) if (buf[i] < 128) count++;
  }
  const keep = Math.min(count, limit);
  if (scratch.length < 2 * keep) scratch = new Uint32Array(2 * keep);
  let n = 0;
  for (let r = 0; r < ranges.length && n < keep; r += 2) n = readVarints64(buf, ranges[r], ranges[r + 1], scratch, n, keep);
  const ids = new BigInt64Array(scratch.buffer.slice(0, 8 * n));
  return count > limit ? new TooManyIds(count, ids) : ids;
}

/**
 * Reads the top-level repeated int64 field `fieldNumber` of a message (packed or not, possibly
 * split over several occurrences) into one BigInt64Array.
 */
export function readInt64Field(buf: Uint8Array, fieldNumber: number): BigInt64Array {
  return readInt64Ranges(buf, fieldRanges(buf, 0, buf.length, fieldNumber), Infinity) as BigInt64Array;
}

/** Field numbers of the nested repeated int64 fields every engine request carries. */
interface NestedIds {
  user: number; // Request.user
  sparse: number; // UserFeatures.sparse (map entries: key = 1, value = 2)
  idList: number; // IdList.ids
  sequence: number; // UserFeatures.sequence
  itemIds: number; // EngagementSequence.item_ids
  exclusions: number; // Request.exclusions
  advertiserIds: number; // Exclusions.advertiser_ids
  adIds: number; // Exclusions.ad_ids
}

/** Removes the nested repeated int64 fields from `root` (protobufjs then skips them) and returns their numbers. */
function detachNestedIds(root: protobuf.Root, type: protobuf.Type): NestedIds | undefined {
  if (!type.fields.user || !type.fields.exclusions) return undefined;
  const detach = (typeName: string, field: string) => {
    const t = root.lookupType(typeName);
    const f = t.fields[field] ?? t.fields[field.replace(/_([a-z])/g, (_m, c: string) => c.toUpperCase())];
    if (!f || !f.repeated || f.type !== 'int64') throw new Error(`${typeName}.${field} is not a repeated int64 field`);
    t.remove(f);
    return f.id;
  };
  const uf = root.lookupType('adrank.v1.UserFeatures');
  return {
    user: type.fields.user.id,
    sparse: uf.fields.sparse.id,
    idList: detach('adrank.v1.IdList', 'ids'),
    sequence: uf.fields.sequence.id,
    itemIds: detach('adrank.v1.EngagementSequence', 'item_ids'),
    exclusions: type.fields.exclusions.id,
    advertiserIds: detach('adrank.v1.Exclusions', 'advertiser_ids'),
    adIds: detach('adrank.v1.Exclusions', 'ad_ids'),
  };
}

const utf8Decoder = new TextDecoder();

/** Fills the nested id lists of a decoded request object from the wire bytes (merge rules of
 *  protobuf: repeated occurrences of a message concatenate their lists; a repeated map key keeps
 *  its last entry). */
function fillNestedIds(buf: Uint8Array, n: NestedIds, obj: Record<string, unknown>): void {
  const user = obj.user as { sparse?: Record<string, { ids?: Int64List }>; sequence?: { itemIds?: Int64List } | null } | null;
  if (user) {
    const users = fieldRanges(buf, 0, buf.length, n.user);
    const byKey = new Map<string, number[]>();
    const seq: number[] = [];
    for (let u = 0; u < users.length; u += 2) {
      const entries = fieldRanges(buf, users[u], users[u + 1], n.sparse);
      for (let e = 0; e < entries.length; e += 2) {
        const keyR = fieldRanges(buf, entries[e], entries[e + 1], 1);
        const key = keyR.length ? utf8Decoder.decode(buf.subarray(keyR[keyR.length - 2], keyR[keyR.length - 1])) : '';
        const idRanges: number[] = [];
        const values = fieldRanges(buf, entries[e], entries[e + 1], 2);
        for (let v = 0; v < values.length; v += 2) fieldRanges(buf, values[v], values[v + 1], n.idList, idRanges);
        byKey.set(key, idRanges);
      }
      const seqs = fieldRanges(buf, users[u], users[u + 1], n.sequence);
      for (let s = 0; s < seqs.length; s += 2) fieldRanges(buf, seqs[s], seqs[s + 1], n.itemIds, seq);
    }
    if (user.sparse) for (const [key, ranges] of byKey) user.sparse[key] = { ...user.sparse[key], ids: readInt64Ranges(buf, ranges, MAX_DECODED_IDS) };
    if (user.sequence) user.sequence.itemIds = readInt64Ranges(buf, seq, MAX_DECODED_IDS);
  }
  const exclusions = obj.exclusions as { advertiserIds?: Int64List; adIds?: Int64List } | null;
  if (exclusions) {
    const ex = fieldRanges(buf, 0, buf.length, n.exclusions);
    const adv: number[] = [];
    const ads: number[] = [];
    for (let x = 0; x < ex.length; x += 2) {
      fieldRanges(buf, ex[x], ex[x + 1], n.advertiserIds, adv);
      fieldRanges(buf, ex[x], ex[x + 1], n.adIds, ads);
    }
    exclusions.advertiserIds = readInt64Ranges(buf, adv, MAX_DECODED_IDS);
    exclusions.adIds = readInt64Ranges(buf, ads, MAX_DECODED_IDS);
  }
}

const TO_OBJECT: protobuf.IConversionOptions = {
  longs: LOADER_OPTIONS.longs,
  enums: LOADER_OPTIONS.enums,
  defaults: LOADER_OPTIONS.defaults,
  oneofs: LOADER_OPTIONS.oneofs,
};

/**
 * A gRPC request deserializer for `typeName`: proto-loader semantics for every field except the
 * repeated int64 fields, which are read straight from the wire (never as strings): the top-level
 * ones named in `int64Fields`, and in an engine request every nested id list (user.sparse[*].ids,
 * user.sequence.item_ids, exclusions.*). Each comes back as a BigInt64Array, or as TooManyIds when
 * it holds more than MAX_DECODED_IDS ids (counted before anything is allocated).
 */
export function requestDecoder<T>(typeName: string, int64Fields: string[] = []): (buf: Buffer) => T {
  const root = protoRoot();
  const type = root.lookupType(typeName);
  const nested = detachNestedIds(root, type);
  const fast = int64Fields.map((name) => {
    const field = type.fields[name];
    if (!field || !field.repeated || field.type !== 'int64') throw new Error(`${typeName}.${name} is not a repeated int64 field`);
    type.remove(field); // protobufjs now skips it as an unknown field
    return { name, id: field.id };
  });
  return (buf: Buffer): T => {
    const t0 = performance.now();
    const obj = type.toObject(type.decode(buf), TO_OBJECT) as Record<string | symbol, unknown>;
    for (const f of fast) obj[f.name] = readInt64Ranges(buf, fieldRanges(buf, 0, buf.length, f.id), MAX_DECODED_IDS);
    if (nested) fillNestedIds(buf, nested, obj);
    obj[DECODE_START] = t0;
    obj[DECODE_US] = (performance.now() - t0) * 1000;
    obj[WIRE] = buf;
    return obj as T;
  };
}

/**
 * Encodes a response of `typeName` (a plain object in generated-type shape) without its timings,
 * then appends the timings with `encode_us` filled in. Returns the wire bytes.
 */
export function responseEncoder<T extends object>(typeName: string): (response: T, timings: ServerTimings, started?: number) => Buffer {
  const root = protoRoot();
  const type = root.lookupType(typeName);
  const timingsField = type.fields.timings;
  if (!timingsField) throw new Error(`${typeName} has no timings field`);
  const timingsType = root.lookupType('adrank.v1.ServerTimings');
  const tag = (timingsField.id << 3) | 2;
  return (response, timings, started) => {
    const t0 = performance.now();
    const body = type.encode(response as protobuf.Message).finish();
    const t1 = performance.now();
    timings.encodeUs = (t1 - t0) * 1000;
    if (started !== undefined) timings.totalUs = (t1 - started) * 1000;
    const w = protobuf.Writer.create();
    w.uint32(tag).fork();
    timingsType.encode(timings as protobuf.Message, w);
    w.ldelim();
    const tail = w.finish();
    const out = Buffer.allocUnsafe(body.length + tail.length);
    out.set(body, 0);
    out.set(tail, body.length);
    return out;
  };
}

/** Used in tests and benchmarks: the proto-loader default deserializer for `typeName`. */
export function defaultDecoder<T>(typeName: string): (buf: Buffer) => T {
  const type = protoRoot().lookupType(typeName);
  return (buf) => type.toObject(type.decode(buf), TO_OBJECT) as T;
}


/**
 * Responses written by the addon (docs/wire.md) end with their ServerTimings message, every one
 * of its TIMING_FIELDS double fields written, in field order: field i's value sits at a fixed
 * offset from the end, so total_us (and a batched request's batch_wait_us) are written in when the
 * answer is handed to grpc-js, and the timings are read back without decoding the message.
 */
const TIMING_FIELDS = 15;
const timingAt = (length: number, field: number) => length - 9 * TIMING_FIELDS + 9 * (field - 1) + 1;

/** Writes total_us (field 14) and batch_wait_us (field 15) into a response the addon wrote. */
export function patchTimings(response: Buffer, totalUs: number, batchWaitUs = 0): void {
  response.writeDoubleLE(totalUs, timingAt(response.length, 14));
  if (batchWaitUs !== 0) response.writeDoubleLE(batchWaitUs, timingAt(response.length, 15));
}

/** The ServerTimings of a response the addon wrote. */
export function timingsOf(response: Buffer): ServerTimings {
  const n = response.length;
  const f = (field: number) => response.readDoubleLE(timingAt(n, field));
  return {
    decodeUs: f(1),
    validateUs: f(2),
    bundleUs: f(3),
    encodeUs: f(4),
    queueUs: f(5),
    userUs: f(6),
    retrieveUs: f(7),
    gatherUs: f(8),
    masknetUs: f(9),
    dcnUs: f(10),
    mlpUs: f(11),
    selectUs: f(12),
    engineTotalUs: f(13),
    totalUs: f(14),
    batchWaitUs: f(15),
  };
}
