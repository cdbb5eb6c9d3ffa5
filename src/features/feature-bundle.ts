/**
 * Packs one validated request into the feature bundle: one contiguous little-endian buffer that
 * the engine reads (and, on the GPU, copies to the device in one transfer). The layout is
 * described in native/engine/request.h; the two must change together.
 */
import type { ModelConfig } from '../model/config.js';

export const REQUEST_MAGIC = 0x51524441; // "ADRQ"
export const REQUEST_LAYOUT_VERSION = 1;
export const HEADER_WORDS = 16;

export const enum RankingMode {
  Global = 0,
  Local = 1,
}

/** A request after validation, in the model's terms. Arrays are owned by the caller. */
export interface EngineRequest {
  /** the request id, hashed for pacing */
  requestId: string;
  surface: number;
  k: number;
  /** per-advertiser cap, 0 = none */
  cap: number;
  mode: RankingMode;
  partitions: number;
  /** task-weight override, or undefined for the surface's defaults */
  taskWeights?: Float32Array | number[];
  price: boolean;
  reserve: number;
  /** RetrieveAndRank: ads retrieved before ranking */
  retrieveCount: number;
  /** RetrieveAndRank: most caller candidates ranked, 0 or unset = all (docs/funnel.md "Blended retrieval sources") */
  candidateQuota?: number;
  userDense: Float32Array | number[];
  userEmbedding: Float32Array | number[];
  /** one value per targeting dimension; >= 64 means unknown */
  targeting: Uint32Array | number[];
  /** one id list per user sparse field, config order */
  userSparse: (BigInt64Array | bigint[])[];
  seqItems: BigInt64Array | bigint[];
  seqActions: Uint32Array | number[];
  /** Rank: the candidates. RetrieveAndRank: the caller's candidates, blended with retrieval. */
  candidates: BigInt64Array | bigint[];
  excludedAdvertisers: BigInt64Array | bigint[];
  excludedAds: BigInt64Array | bigint[];
}

const align8 = (n: number) => (n + 7) & ~7;

/** UTF-8 scratch for requestKeyWords (request ids are at most 256 bytes; longer ones get their own). */
const keyScratch = new Uint8Array(1024);
const utf8 = new TextEncoder();

/**
 * FNV-1a 64 of the request id's UTF-8 bytes as its two 32-bit words [low, high], in plain
 * double arithmetic (no BigInt): h·prime mod 2^64 with prime = 2^40 + 0x1b3 is
 * h·0x1b3 + (h << 40), and every partial product stays below 2^53.
 */
export function requestKeyWords(requestId: string): [number, number] {
  let bytes: Uint8Array;
  let n: number;
  if (requestId.length * 3 <= keyScratch.length) {
    n = utf8.encodeInto(requestId, keyScratch).written;
    bytes = keyScratch;
  } else {
    bytes = utf8.encode(requestId);
    n = bytes.length;
  }
  let lo = 0x84222325;
  let hi = 0xcbf29ce4;
  for (let i = 0; i < n; i++) {
    lo = (lo ^ bytes[i]) >>> 0;
    const a = lo * 0x1b3; // < 2^41
    const carry = Math.floor(a / 4294967296);
    hi = (hi * 0x1b3 + carry + ((lo << 8) >>> 0)) >>> 0; // (lo << 40) lands in the high word as lo << 8
    lo = a >>> 0;
  }
  return [lo, hi];
}

/** FNV-1a 64 of the request id's UTF-8 bytes: the request half of the pacing hash (docs/funnel.md). */
export function requestKey(requestId: string): bigint {
  const [lo, hi] = requestKeyWords(requestId);
  return (BigInt(hi) << 32n) | BigInt(lo);
}

/** Byte length of the bundle for these variable counts under a model config. */
export function featureBundleSize(c: ModelConfig, r: Pick<EngineRequest, 'userSparse' | 'seqItems' | 'candidates' | 'excludedAdvertisers' | 'excludedAds'>): number {
  const sparseIds = r.userSparse.reduce((s, l) => s + l.length, 0);
  let n = HEADER_WORDS * 4 + 8;
  n = align8(n + 4 * c.user_dense);
  n = align8(n + 4 * c.user_embedding_dim);
  n = align8(n + 4 * c.tasks.length);
  n = align8(n + 4 * c.targeting_dims.length);
  n = align8(n + 4 * c.user_sparse.length);
  n = align8(n + 8 * sparseIds);
  n = align8(n + 8 * r.seqItems.length);
  n = align8(n + 4 * r.seqItems.length);
  n = align8(n + 8 * r.candidates.length);
  n = align8(n + 8 * r.excludedAdvertisers.length);
  n = align8(n + 8 * r.excludedAds.length);
  return n;
}

/** Packs `r` (already validated against `c`) into a new buffer. */
export function packFeatureBundle(c: ModelConfig, r: EngineRequest): Uint8Array {
  const size = featureBundleSize(c, r);
  const buf = new ArrayBuffer(size);
  const u8 = new Uint8Array(buf);
  const dv = new DataView(buf);
  const sparseIds = r.userSparse.reduce((s, l) => s + l.length, 0);
  const header = [
    REQUEST_MAGIC, REQUEST_LAYOUT_VERSION, r.surface, r.k, r.cap, r.mode, r.partitions,
    (r.taskWeights ? 1 : 0) | (r.price ? 2 : 0), r.retrieveCount, r.seqItems.length, r.candidates.length,
    r.excludedAdvertisers.length, r.excludedAds.length, sparseIds, 0, r.candidateQuota ?? 0,
  ];
  header.forEach((v, i) => dv.setUint32(i * 4, v, true));
  dv.setFloat32(14 * 4, r.reserve, true);
  const [keyLo, keyHi] = requestKeyWords(r.requestId);
  dv.setUint32(HEADER_WORDS * 4, keyLo, true);
  dv.setUint32(HEADER_WORDS * 4 + 4, keyHi, true);
  let off = HEADER_WORDS * 4 + 8;
  const f32 = (src: ArrayLike<number>, len: number) => {
    const dst = new Float32Array(buf, off, len);
    if (src.length) dst.set(src as ArrayLike<number>);
    off = align8(off + 4 * len);
  };
  const u32 = (src: ArrayLike<number>) => {
    new Uint32Array(buf, off, src.length).set(src);
    off = align8(off + 4 * src.length);
  };
  const i64 = (src: BigInt64Array | bigint[]) => {
    new BigInt64Array(buf, off, src.length).set(src);
    off = align8(off + 8 * src.length);
  };
  f32(r.userDense, c.user_dense);
  f32(r.userEmbedding, c.user_embedding_dim);
  f32(r.taskWeights ?? [], c.tasks.length);
  u32(r.targeting);
  u32(r.userSparse.map((l) => l.length));
  for (const l of r.userSparse) {
    new BigInt64Array(buf, off, l.length).set(l);
    off += 8 * l.length;
  }
  off = align8(off);
  i64(r.seqItems);
  u32(r.seqActions);
  i64(r.candidates);
  i64(r.excludedAdvertisers);
  i64(r.excludedAds);
  if (off !== size) throw new Error(`feature bundle packing error: wrote ${off} of ${size} bytes`);
  return u8;
}
