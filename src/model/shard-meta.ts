/**
 * Which shard of a sharded corpus an ad belongs to, and the shard metadata of a bundle
 * (docs/deploy.md): shard i of S holds the ads whose `splitmix64(ad_id) mod S == i`
 * (splitmix64 as in docs/funnel.md "Pacing hash", on the ad id read as uint64); its
 * `__metadata__["adrank.shard"]` is {"index", "count", "source_sha256"}. Checked when a bundle
 * is loaded; used by `adrank shard` (src/model/shard.ts) and the router.
 */
import { BundleError } from './safetensors.js';

export const SHARD_METADATA_KEY = 'adrank.shard';
/** More shards than this is not a deployment we can test or reason about. */
export const MAX_SHARDS = 1024;

export interface ShardMeta {
  index: number;
  count: number;
  /** sha256 (hex) of the unsharded bundle file */
  source_sha256: string;
}

const M64 = (1n << 64n) - 1n;

/** splitmix64 (docs/funnel.md) of a 64-bit value; BigInt, so it is exact. */
export function splitmix64(x: bigint): bigint {
  x = (x + 0x9e3779b97f4a7c15n) & M64;
  let z = x;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M64;
  return z ^ (z >> 31n);
}

/** The shard (0..count-1) that holds ad `id`: splitmix64(uint64(id)) mod count. */
export function shardOf(id: bigint, count: number): number {
  const u = BigInt.asUintN(64, id);
  return shardOfWords(Number(u & 0xffffffffn), Number(u >> 32n), count);
}

/** (hi, lo) · (ch, cl) mod 2^64, into mulHi / mulLo (no allocation). */
let mulHi = 0;
let mulLo = 0;
function mul64(hi: number, lo: number, ch: number, cl: number): void {
  // lo · cl in full (16-bit limbs keep every partial product exact in a double)
  const a0 = lo & 0xffff, a1 = lo >>> 16, b0 = cl & 0xffff, b1 = cl >>> 16;
  const mid = a0 * b1 + a1 * b0; // < 2^33
  const low = a0 * b0 + (mid % 65536) * 65536; // < 2^33
  const carry = a1 * b1 + Math.floor(mid / 65536) + Math.floor(low / 4294967296);
  mulLo = low >>> 0;
  mulHi = (carry + Math.imul(hi, cl) + Math.imul(lo, ch)) >>> 0;
}

/** shardOf for the id's two 32-bit words (the Uint32Array view of a BigInt64Array): the router's
 *  hot path, about 30x faster than BigInt arithmetic. */
export function shardOfWords(lo: number, hi: number, count: number): number {
  // x += 0x9e3779b97f4a7c15
  let l = lo + 0x7f4a7c15;
  let h = (hi + 0x9e3779b9 + (l > 0xffffffff ? 1 : 0)) >>> 0;
  l >>>= 0;
  // z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
  l = (l ^ ((l >>> 30) | (h << 2))) >>> 0;
  h = (h ^ (h >>> 30)) >>> 0;
  mul64(h, l, 0xbf58476d, 0x1ce4e5b9);
  h = mulHi;
  l = mulLo;
  // z = (z ^ (z >> 27)) * 0x94d049bb133111eb
  l = (l ^ ((l >>> 27) | (h << 5))) >>> 0;
  h = (h ^ (h >>> 27)) >>> 0;
  mul64(h, l, 0x94d049bb, 0x133111eb);
  h = mulHi;
  l = mulLo;
  // z ^ (z >> 31)
  l = (l ^ ((l >>> 31) | (h << 1))) >>> 0;
  h = (h ^ (h >>> 31)) >>> 0;
  return ((h % count) * (4294967296 % count) + (l % count)) % count;
}

/** The bundle's shard metadata, or undefined for an unsharded bundle; malformed metadata throws. */
export function shardMeta(b: { metadata?: Record<string, string> }): ShardMeta | undefined {
  const raw = b.metadata?.[SHARD_METADATA_KEY];
  if (raw === undefined) return undefined;
  let m: unknown;
  try {
    m = JSON.parse(raw);
  } catch {
    throw new BundleError(`expected JSON for __metadata__["${SHARD_METADATA_KEY}"], got ${JSON.stringify(raw.slice(0, 64))}`, { field: SHARD_METADATA_KEY });
  }
  const o = m as Record<string, unknown>;
  const count = o?.count;
  const index = o?.index;
  if (!Number.isInteger(count) || (count as number) < 1 || (count as number) > MAX_SHARDS)
    throw new BundleError(`expected an integer in 1..${MAX_SHARDS} for ${SHARD_METADATA_KEY}.count, got ${JSON.stringify(count)}`, { field: SHARD_METADATA_KEY });
  if (!Number.isInteger(index) || (index as number) < 0 || (index as number) >= (count as number))
    throw new BundleError(`expected an integer in 0..${(count as number) - 1} for ${SHARD_METADATA_KEY}.index, got ${JSON.stringify(index)}`, { field: SHARD_METADATA_KEY });
  if (typeof o.source_sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(o.source_sha256))
    throw new BundleError(`expected 64 hex digits for ${SHARD_METADATA_KEY}.source_sha256, got ${JSON.stringify(o.source_sha256)}`, { field: SHARD_METADATA_KEY });
  return { index: index as number, count: count as number, source_sha256: o.source_sha256 };
}
