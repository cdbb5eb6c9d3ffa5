/**
 * Request validation shared by the engine RPCs: every field of a decoded request is checked
 * against the loaded model's config and turned into the EngineRequest the feature bundle packs.
 * Bad input throws RequestError with the gRPC status and the message shape of STYLE.md:
 * "expected <what> for <field>, got <value>".
 */
import { status } from '@grpc/grpc-js';
import { RankingMode, type EngineRequest } from '../features/feature-bundle.js';
import type { ModelConfig } from '../model/config.js';
import { MAX_DECODED_IDS, TooManyIds, type Decoded, type Int64List } from '../wire/codec.js';
import type { RetrieveRequest__Output } from '../generated/adrank/v1/RetrieveRequest.js';
import type { RankRequest__Output } from '../generated/adrank/v1/RankRequest.js';
import type { RetrieveAndRankRequest__Output } from '../generated/adrank/v1/RetrieveAndRankRequest.js';

/** Limits of the API (docs/api.md, docs/funnel.md "Limits"). */
export const MAX_K = 10_000;
export const MAX_RETRIEVE_COUNT = 10_000;
/** candidate ids per Rank the engine accepts (native kMaxCandidates); --max-candidates may only lower it */
export const MAX_CANDIDATES = 100_000;
export const DEFAULT_MAX_CANDIDATES = MAX_CANDIDATES;
export const MAX_PARTITIONS = 1024;
export const MAX_REQUEST_ID_BYTES = 256;
/** per user sparse field, and per exclusion list */
export const MAX_ID_LIST = 100_000;

export type RankInput = Decoded<RankRequest__Output, 'candidateAdIds'>;
export type RetrieveInput = Decoded<RetrieveRequest__Output>;
export type RetrieveAndRankInput = Decoded<RetrieveAndRankRequest__Output, 'candidateAdIds'>;
/** The fields every engine RPC shares (same names and numbers in the proto). */
export type CommonInput = RetrieveInput | RankInput | RetrieveAndRankInput;

export interface Limits {
  maxCandidates: number;
}

/** Bad input, with the gRPC status it maps to. */
export class RequestError extends Error {
  constructor(
    readonly code: status,
    message: string,
  ) {
    super(message);
    this.name = 'RequestError';
  }
}

/** Short, log-safe rendering of an offending value. */
export function show(v: unknown): string {
  if (typeof v === 'number') return Number.isNaN(v) ? 'NaN' : String(v);
  if (typeof v === 'string') return JSON.stringify(v.length > 64 ? v.slice(0, 64) + '…' : v);
  if (v === null || v === undefined) return 'nothing';
  if (typeof v === 'bigint') return v.toString();
  return JSON.stringify(v)?.slice(0, 64) ?? String(v);
}

export function invalid(field: string, what: string, got: unknown): RequestError {
  return new RequestError(status.INVALID_ARGUMENT, `expected ${what} for ${field}, got ${show(got)}`);
}

function floats(field: string, values: number[] | null | undefined, length: number): Float32Array {
  const v = values ?? [];
  if (v.length !== length) throw invalid(field, `${length} values`, `${v.length} values`);
  const out = new Float32Array(length);
  for (let i = 0; i < length; i++) {
    const x = v[i];
    if (!Number.isFinite(x)) throw invalid(`${field}[${i}]`, 'a finite number', x);
    out[i] = x;
  }
  return out;
}

/** int64 ids as decoded (src/wire/codec.ts: BigInt64Array, or TooManyIds) or as strings → BigInt64Array, at most `max`. */
export function ids(field: string, values: string[] | Int64List | null | undefined, max: number): BigInt64Array {
  if (!values) return new BigInt64Array(0);
  if (values.length > max) throw invalid(field, `at most ${max} ids`, `${values.length} ids`);
  if (values instanceof BigInt64Array) return values;
  if (values instanceof TooManyIds) throw invalid(field, `at most ${MAX_DECODED_IDS} ids`, `${values.length} ids`);
  const out = new BigInt64Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = BigInt(values[i]);
  return out;
}

function integerIn(field: string, v: number, lo: number, hi: number): number {
  if (!Number.isInteger(v) || v < lo || v > hi) throw invalid(field, `an integer in ${lo}..${hi}`, v);
  return v;
}

export type RpcKind = 'retrieve' | 'rank' | 'retrieveAndRank';

/**
 * Validates the fields shared by the three engine RPCs and returns an EngineRequest with no
 * candidates, no pricing and no retrieve count (the per-RPC validators fill those in).
 */
export function validateCommon(r: CommonInput, c: ModelConfig, kind: RpcKind): EngineRequest {
  const requestId = r.requestId;
  const idBytes = Buffer.byteLength(requestId, 'utf8');
  if (idBytes < 1 || idBytes > MAX_REQUEST_ID_BYTES) throw invalid('request_id', `1..${MAX_REQUEST_ID_BYTES} bytes`, `${idBytes} bytes`);

  const surface = c.surfaces.indexOf(r.surface);
  if (surface < 0) throw invalid('surface', `one of ${c.surfaces.join(', ')}`, r.surface);

  const user = r.user;
  if (!user) throw invalid('user', 'user features', null);
  const userDense = floats('user.dense', user.dense, c.user_dense);
  const userEmbedding = floats('user.embedding', user.embedding, c.user_embedding_dim);

  const sparseNames = c.user_sparse.map((f) => f.name);
  const given = user.sparse ?? {};
  for (const name of Object.keys(given))
    if (!sparseNames.includes(name)) throw invalid('user.sparse', `field names among ${sparseNames.join(', ') || '(none)'}`, name);
  const userSparse = sparseNames.map((name) => ids(`user.sparse[${name}].ids`, given[name]?.ids as string[] | Int64List | undefined, MAX_ID_LIST));

  const seq = user.sequence;
  const itemIds = (seq?.itemIds ?? []) as string[] | Int64List;
  const actions = seq?.actions ?? [];
  if (itemIds.length !== actions.length)
    throw invalid('user.sequence.actions', `one action per item id (${itemIds.length})`, `${actions.length} actions`);
  // most recent first: keep the first max_len
  const n = Math.min(itemIds.length, c.sequence.max_len);
  const seqItems = ids('user.sequence.item_ids', itemIds.slice(0, n), c.sequence.max_len);
  const seqActions = new Uint32Array(n);
  for (let j = 0; j < n; j++) {
    const a = actions[j];
    if (!(a >= 0 && a < c.sequence.actions)) throw invalid(`user.sequence.actions[${j}]`, `an action in 0..${c.sequence.actions - 1}`, a);
    seqActions[j] = a;
  }

  const dims = c.targeting_dims;
  if (r.targeting.length !== dims.length)
    throw invalid('targeting', `${dims.length} values (${dims.join(', ') || 'no targeting dimensions'})`, `${r.targeting.length} values`);
  const targeting = Uint32Array.from(r.targeting);

  const excludedAdvertisers = ids('exclusions.advertiser_ids', r.exclusions?.advertiserIds as string[] | Int64List | undefined, MAX_ID_LIST);
  const excludedAds = ids('exclusions.ad_ids', r.exclusions?.adIds as string[] | Int64List | undefined, MAX_ID_LIST);

  const k = integerIn('k', r.k, 1, MAX_K);
  const cap = r.perAdvertiserCap;
  if (!Number.isInteger(cap) || cap < 0) throw invalid('per_advertiser_cap', 'an integer >= 0 (0 = no cap)', cap);

  let taskWeights: Float32Array | undefined;
  const tw = r.taskWeights ?? {};
  const twNames = Object.keys(tw);
  if (twNames.length > 0) {
    taskWeights = new Float32Array(c.tasks.length);
    for (const name of twNames) {
      const t = c.tasks.indexOf(name);
      if (t < 0) throw invalid('task_weights', `task names among ${c.tasks.join(', ')}`, name);
      const w = tw[name];
      if (!Number.isFinite(w) || w < 0) throw invalid(`task_weights[${name}]`, 'a finite weight >= 0', w);
      taskWeights[t] = w;
    }
    if (taskWeights.every((w) => w === 0)) throw invalid('task_weights', 'at least one weight > 0', 'all zero');
  }

  let mode = RankingMode.Global;
  let partitions = 0;
  const ranking = r.ranking;
  if (ranking && ranking.mode === 'LOCAL') {
    if (kind === 'retrieve') throw invalid('ranking.mode', 'GLOBAL (Retrieve has no ranking modes)', ranking.mode);
    mode = RankingMode.Local;
    partitions = integerIn('ranking.partitions', ranking.partitions, 1, MAX_PARTITIONS);
  } else if (ranking) {
    if (ranking.mode !== 'GLOBAL') throw invalid('ranking.mode', 'GLOBAL or LOCAL', ranking.mode);
    if (ranking.partitions !== 0) throw invalid('ranking.partitions', '0 with GLOBAL mode', ranking.partitions);
  }

  let reserve = c.reserve_price ?? 0;
  if (r.reserve !== undefined && r.reserve !== null) {
    if (!Number.isFinite(r.reserve) || r.reserve < 0) throw invalid('reserve', 'a finite price >= 0', r.reserve);
    reserve = r.reserve;
  }

  return {
    requestId,
    surface,
    k,
    cap,
    mode,
    partitions,
    taskWeights,
    price: false,
    reserve,
    retrieveCount: 0,
    userDense,
    userEmbedding,
    targeting,
    userSparse,
    seqItems,
    seqActions,
    candidates: new BigInt64Array(0),
    excludedAdvertisers,
    excludedAds,
  };
}

export function validateRetrieve(r: RetrieveInput, c: ModelConfig): EngineRequest {
  return validateCommon(r, c, 'retrieve');
}

export function validateRank(r: RankInput, c: ModelConfig, limits: Limits): EngineRequest {
  const e = validateCommon(r, c, 'rank');
  e.candidates = ids('candidate_ad_ids', r.candidateAdIds, limits.maxCandidates);
  e.price = r.price;
  return e;
}

export function validateRetrieveAndRank(r: RetrieveAndRankInput, c: ModelConfig, limits: Limits): EngineRequest {
  const e = validateCommon(r, c, 'retrieveAndRank');
  // the caller's source (docs/funnel.md "Blended retrieval sources"): the same list limit as Rank
  e.candidates = ids('candidate_ad_ids', r.candidateAdIds, limits.maxCandidates);
  const quota = r.candidateQuota ?? 0;
  e.candidateQuota = integerIn('candidate_quota', quota, 0, limits.maxCandidates);
  if (quota > 0 && e.candidates.length === 0) throw invalid('candidate_quota', '0 when candidate_ad_ids is empty', quota);
  const R = r.retrieveCount === 0 ? defaultRetrieveCount(e.k) : r.retrieveCount;
  // With caller candidates the union may fill K, so R need not reach K.
  const minR = e.candidates.length > 0 ? 1 : e.k;
  e.retrieveCount = integerIn('retrieve_count', R, minR, MAX_RETRIEVE_COUNT);
  e.price = true;
  return e;
}

/** R when a RetrieveAndRank request leaves retrieve_count at 0. */
export function defaultRetrieveCount(k: number): number {
  return Math.max(k, Math.min(10 * k, MAX_RETRIEVE_COUNT));
}
