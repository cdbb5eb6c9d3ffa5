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
import { LOADER_OPTIONS, PROTO_FILE, PROTO_DIR } from './proto.js';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
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

function freshRoot(): protobuf.Root {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => (existsSync(target) ? target : join(PROTO_DIR, target));
  root.loadSync(PROTO_FILE, { keepCase: LOADER_OPTIONS.keepCase });
  root.resolveAll();
  return root;
}


/**
 * Decodes the varints in buf[start, end) as int64 into out32 (the Uint32Array view of a
 * BigInt64Array) from element `at`; returns the next element index.
 */
function readVarints64(buf: Uint8Array, start: number, end: number, out32: Uint32Array, at: number): number {
  let i = start;
  let n = at;
  while (i < end) {
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
 * Reads the top-level repeated int64 field `fieldNumber` of a message (packed or not, possibly
 * split over several occurrences) into one BigInt64Array.
 */
export function readInt64Field(buf: Uint8Array, fieldNumber: number): BigInt64Array {
  const reader = protobuf.Reader.create(buf);
  const ranges: number[] = [];
  let bytes = 0;
  while (reader.pos < reader.len) {
    const tag = reader.uint32();
    const wireType = tag & 7;
    if (tag >>> 3 !== fieldNumber) {
      reader.skipType(wireType);
      continue;
    }
    let start: number;
    let end: number;
    if (wireType === 2) {
      const len = reader.uint32();
      start = reader.pos;
      end = start + len;
      if (end > reader.len) throw new Error(`index out of range: ${end} > ${reader.len}`);
      reader.pos = end;
    } else if (wireType === 0) {
      start = reader.pos;
      reader.skip(); // one varint
      end = reader.pos;
    } else {
      throw new Error(`invalid wire type ${wireType} for int64 field ${fieldNumber}`);
    }
    bytes += end - start;
    ranges.push(start, end);
  }
  // at most one id per byte: decode into scratch, then copy out exactly the ids read
  if (scratch.length < 2 * bytes) scratch = new Uint32Array(2 * bytes);
  let count = 0;
  for (let r = 0; r < ranges.length; r += 2) count = readVarints64(buf, ranges[r], ranges[r + 1], scratch, count);
  return new BigInt64Array(scratch.buffer.slice(0, 8 * count));
}

const TO_OBJECT: protobuf.IConversionOptions = {
  longs: LOADER_OPTIONS.longs,
  enums: LOADER_OPTIONS.enums,
  defaults: LOADER_OPTIONS.defaults,
  oneofs: LOADER_OPTIONS.oneofs,
};

/**
 * A gRPC request deserializer for `typeName`: proto-loader semantics for every field except the
 * repeated int64 fields named in `int64Fields` (top-level only), which come back as BigInt64Array.
 */
export function requestDecoder<T>(typeName: string, int64Fields: string[] = []): (buf: Buffer) => T {
  const root = freshRoot();
  const type = root.lookupType(typeName);
  const fast = int64Fields.map((name) => {
    const field = type.fields[name];
    if (!field || !field.repeated || field.type !== 'int64') throw new Error(`${typeName}.${name} is not a repeated int64 field`);
    type.remove(field); // protobufjs now skips it as an unknown field
    return { name, id: field.id };
  });
  return (buf: Buffer): T => {
    const t0 = performance.now();
    const obj = type.toObject(type.decode(buf), TO_OBJECT) as Record<string | symbol, unknown>;
    for (const f of fast) obj[f.name] = readInt64Field(buf, f.id);
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
  const root = freshRoot();
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
  const type = freshRoot().lookupType(typeName);
  return (buf) => type.toObject(type.decode(buf), TO_OBJECT) as T;
}

