/**
 * What the wire fuzz tests share (test/27 the engine RPCs' reader, test/58 UpdateAdStates): an
 * int64 in the form protobufjs's writer takes without a Long library, and a mutation of encoded
 * bytes (bytes replaced, bits flipped, cut short, bytes inserted or repeated).
 */
import type { Rng } from '../../src/model/random.js';

/** An int64 as protobufjs's writer takes it without a Long library: its two 32-bit words. */
export function words(v: bigint): { low: number; high: number } {
  const u = BigInt.asUintN(64, v);
  return { low: Number(u & 0xffffffffn) | 0, high: Number(u >> 32n) | 0 };
}

/** `b` with one to three random mutations. */
export function mutate(r: Rng, b: Uint8Array): Uint8Array {
  const out = Array.from(b);
  const times = 1 + (r.u32() % 3);
  for (let i = 0; i < times; i++) {
    const at = out.length ? r.u32() % out.length : 0;
    switch (r.u32() % 5) {
      case 0: out[at] = r.u32() % 256; break;
      case 1: out[at] ^= 1 << (r.u32() % 8); break;
      case 2: out.length = at; break;
      case 3: out.splice(at, 0, r.u32() % 256); break;
      default: out.splice(at, 0, ...out.slice(at, at + 1 + (r.u32() % 8)));
    }
  }
  return Uint8Array.from(out);
}
