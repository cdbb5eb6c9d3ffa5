/**
 * AdRankerAdmin.Explain: runs a Rank, Retrieve or RetrieveAndRank request as the AdRanker RPC
 * would, and says for each asked ad where and why it left the funnel (docs/explain.md).
 *
 * The engine supplies the facts: the RPC's own answer (winners, prices, counts), and per asked
 * candidate its eligibility drop under the live ad state, scores and probabilities
 * (Engine.explain). The selection walk is replayed here on those exact float32 scores
 * (src/admin/selection.ts) to tell CAPPED from OUTRANKED and to find positions, thresholds and
 * runner-ups; it must reproduce the RPC's winners, and a disagreement is logged.
 */
import { status, type sendUnaryData, type ServerUnaryCall } from '@grpc/grpc-js';
import type { Engine, EngineRequest, NativeExplain, NativeResult } from '../engine/index.js';
import { RankingMode } from '../features/feature-bundle.js';
import { adRows } from '../model/bundle.js';
import type { HandlerContext } from '../handlers/context.js';
import { emptyResult, serviceError, toServiceError } from '../handlers/engine-rpc.js';
import { ids, invalid, MAX_K, validateRank, validateRetrieve, validateRetrieveAndRank, type Limits, type RankInput, type RetrieveAndRankInput, type RetrieveInput } from '../handlers/validate.js';
import type { Logger } from '../log.js';
import type { ExplainRequest__Output } from '../generated/adrank/v1/ExplainRequest.js';
import type { ExplainResponse } from '../generated/adrank/v1/ExplainResponse.js';
import type { AdExplanation, _adrank_v1_AdExplanation_Outcome__Output as OutcomeName } from '../generated/adrank/v1/AdExplanation.js';
import type { Winner } from '../generated/adrank/v1/Winner.js';
import { walk, type Walk, type WalkCandidate, type WalkStatus } from './selection.js';

/** Ads one Explain may ask about. */
export const MAX_EXPLAIN_ADS = 10_000;

/** Engine.explain drop codes (NativeExplain.drops) → outcome; 0 (eligible) is not a drop. */
const DROP_OUTCOME: OutcomeName[] = ['OUTCOME_UNSPECIFIED', 'EXCLUDED_AD', 'EXCLUDED_ADVERTISER', 'INACTIVE', 'OUT_OF_BUDGET', 'TARGETING', 'PACED'];

const ALL_ONES = (1n << 64n) - 1n;

/** What one explained RPC produced: its answer and the facts per asked ad. */
interface Facts {
  kind: 'rank' | 'retrieve' | 'retrieveAndRank';
  er: EngineRequest;
  result: NativeResult;
  ex: NativeExplain;
  /** ad id → index into ex arrays */
  exIndex: Map<bigint, number>;
  /** the selection stage: eligible candidates with their scores */
  stage: WalkCandidate[];
  walk: Walk<WalkCandidate>;
  stageIndex: Map<bigint, number>;
  /** Retrieve: the stage is the first MAX_K of the order only */
  truncated: boolean;
  /** RetrieveAndRank: the retrieved set and the last retrieved retrieval score */
  retrieved?: Set<bigint>;
  retrievedThreshold?: number;
  /** RetrieveAndRank: the caller's known ids not credited to retrieval (docs/funnel.md "Blended
   *  retrieval sources"), and those of them that were eligible but past candidate_quota */
  caller?: Set<bigint>;
  overQuota?: Set<bigint>;
}

const f = (x: number) => (Number.isInteger(x) ? String(x) : x.toPrecision(5));

/** Validates the oneof and the ad ids; returns the engine request and what to explain. */
function validateExplain(r: ExplainRequest__Output, engine: Engine, limits: Limits) {
  const c = engine.config;
  const asked = ids('ad_ids', r.adIds, MAX_EXPLAIN_ADS);
  if (r.request === 'rank' && r.rank) return { kind: 'rank' as const, er: validateRank(r.rank as unknown as RankInput, c, limits), asked };
  if (r.request === 'retrieve' && r.retrieve) return { kind: 'retrieve' as const, er: validateRetrieve(r.retrieve as RetrieveInput, c), asked };
  if (r.request === 'retrieveAndRank' && r.retrieveAndRank)
    return { kind: 'retrieveAndRank' as const, er: validateRetrieveAndRank(r.retrieveAndRank as unknown as RetrieveAndRankInput, c, limits), asked };
  throw invalid('request', 'one of rank, retrieve, retrieve_and_rank', r.request ?? null);
}

/** The corpus order by retrieval score over eligible ads, uncapped, first `k` (an engine Retrieve). */
function retrievalOrder(engine: Engine, er: EngineRequest, k: number): Promise<NativeResult> {
  return engine.retrieve({ ...er, k, cap: 0, mode: RankingMode.Global, partitions: 0, price: false, candidates: new BigInt64Array(0), candidateQuota: 0 });
}

async function gather(engine: Engine, kind: Facts['kind'], er: EngineRequest, asked: BigInt64Array): Promise<Facts> {
  const rowOf = adRows(engine.bundle);
  const adv = engine.bundle.tensors['ads.advertiser'] as BigInt64Array;
  const idsOf = engine.bundle.tensors['ads.id'] as BigInt64Array;
  const uniqueAsked = [...new Set(asked)];
  let result: NativeResult;
  let candidates: bigint[];
  let order: NativeResult | undefined;
  if (kind === 'rank') {
    result = er.candidates.length === 0 ? emptyResult() : await engine.rank(er);
    candidates = Array.from(er.candidates);
  } else if (kind === 'retrieve') {
    result = await engine.retrieve(er);
    order = await retrievalOrder(engine, er, Math.min(MAX_K, engine.numAds));
    candidates = uniqueAsked;
  } else {
    result = await engine.retrieveAndRank(er);
    order = await retrievalOrder(engine, er, er.retrieveCount);
    const retrieved = Array.from(order.adIds);
    const seen = new Set(retrieved);
    const callerIds = [...new Set(er.candidates)].filter((a) => !seen.has(a));
    callerIds.forEach((a) => seen.add(a));
    candidates = [...retrieved, ...callerIds, ...uniqueAsked.filter((a) => !seen.has(a))];
  }
  const known = candidates.filter((a) => rowOf.has(a));
  const ex: NativeExplain = known.length
    ? await engine.explain({ ...er, candidates: BigInt64Array.from(known) })
    : ({ rows: new Int32Array(0), drops: new Uint8Array(0), utility: new Float32Array(0), probs: new Float32Array(0), retrievalScores: new Float32Array(0) } as NativeExplain);
  const exIndex = new Map<bigint, number>();
  ex.rows.forEach((row, i) => exIndex.set(idsOf[row], i));

  const stage: WalkCandidate[] = [];
  let truncated = false;
  let retrievedSet: Set<bigint> | undefined;
  let retrievedThreshold: number | undefined;
  let caller: Set<bigint> | undefined;
  let overQuota: Set<bigint> | undefined;
  if (kind === 'rank') {
    ex.rows.forEach((row, i) => {
      if (ex.drops[i] === 0) stage.push({ id: idsOf[row], advertiser: adv[row], score: ex.utility[i] });
    });
  } else if (kind === 'retrieve') {
    const o = order!;
    const inOrder = new Set<bigint>();
    o.adIds.forEach((id, j) => {
      inOrder.add(id);
      stage.push({ id, advertiser: o.advertisers[j], score: o.scores[j] });
    });
    truncated = o.adIds.length === Math.min(MAX_K, engine.numAds) && o.adIds.length < engine.numAds;
    // asked eligible ads beyond the first MAX_K come after all of them
    for (const a of uniqueAsked) {
      const i = exIndex.get(a);
      if (i !== undefined && ex.drops[i] === 0 && !inOrder.has(a)) stage.push({ id: a, advertiser: adv[ex.rows[i]], score: ex.retrievalScores[i] });
    }
  } else {
    const o = order!;
    retrievedSet = new Set(o.adIds);
    if (o.adIds.length > 0) retrievedThreshold = o.scores[o.adIds.length - 1];
    o.adIds.forEach((id, j) => {
      const i = exIndex.get(id)!;
      stage.push({ id, advertiser: o.advertisers[j], score: ex.utility[i] });
    });
    // the caller's source: known, unique, not retrieved, eligible, within the quota, in request order
    caller = new Set();
    overQuota = new Set();
    let ranked = 0;
    for (const id of new Set(er.candidates)) {
      const i = exIndex.get(id);
      if (i === undefined || retrievedSet.has(id)) continue;
      caller.add(id);
      if (ex.drops[i] !== 0) continue;
      if (er.candidateQuota && ranked >= er.candidateQuota) {
        overQuota.add(id);
        continue;
      }
      ranked++;
      stage.push({ id, advertiser: adv[ex.rows[i]], score: ex.utility[i] });
    }
  }
  const priced = er.price;
  const w = walk(stage, er.k, er.cap, kind === 'retrieve' || er.mode === RankingMode.Global ? 0 : er.partitions, priced);
  const stageIndex = new Map<bigint, number>();
  stage.forEach((s, i) => stageIndex.set(s.id, i));
  return { kind, er, result, ex, exIndex, stage, walk: w, stageIndex, truncated, retrieved: retrievedSet, retrievedThreshold, caller, overQuota };
}

/** Whether the replayed walk picked the RPC's winners, in order. */
function agrees(facts: Facts): boolean {
  const got = facts.walk.winners.map((s) => s.id);
  const want = Array.from(facts.result.adIds);
  return got.length === want.length && got.every((id, i) => id === want[i]);
}

function explainOne(engine: Engine, facts: Facts, id: bigint, duplicateOf: boolean): AdExplanation {
  const { er, ex, result, walk: w } = facts;
  const c = engine.config;
  const rowOf = adRows(engine.bundle);
  const row = rowOf.get(id);
  const adv = engine.bundle.tensors['ads.advertiser'] as BigInt64Array;
  const e: AdExplanation = { adId: id.toString(), position: 0, taskProbabilities: [], cappedBy: [], runnerUpAdId: '0', winnerPosition: 0, targetingDimension: '', targetingValue: 0, targetingMask: '0', advertiserId: '0', detail: '' };
  // RetrieveAndRank: the source that offered the ad to ranking (retrieval first, then the caller)
  if (facts.kind === 'retrieveAndRank')
    e.source = facts.retrieved!.has(id) ? 'RETRIEVAL' : facts.caller!.has(id) ? 'CALLER' : 'CANDIDATE_SOURCE_UNSPECIFIED';
  const set = (o: OutcomeName, detail: string) => {
    e.outcome = o;
    e.detail = detail;
    return e;
  };
  const n = result.adIds.length;
  if (n > 0) e.thresholdScore = result.scores[n - 1];
  if (row === undefined) return set('UNKNOWN', `ad ${id} is not in model ${c.name} v${c.version}'s ad table`);
  e.advertiserId = adv[row].toString();
  if (duplicateOf) return set('DUPLICATE', `ad ${id} is listed again in candidate_ad_ids; its first entry is the one ranked`);
  const i = facts.exIndex.get(id);
  if (i === undefined) return set('NOT_RETRIEVED', `ad ${id} is not among the request's candidate_ad_ids`);
  e.retrievalScore = ex.retrievalScores[i];
  const drop = ex.drops[i];
  if (drop !== 0) {
    const o = DROP_OUTCOME[drop];
    if (o === 'TARGETING') {
      const dims = c.targeting_dims.length;
      const masks = engine.bundle.tensors['ads.targeting'] as BigUint64Array;
      for (let k = 0; k < dims; k++) {
        const mask = masks[row * dims + k];
        const v = Number(er.targeting[k]);
        const ok = v < 64 ? ((mask >> BigInt(v)) & 1n) === 1n : mask === ALL_ONES;
        if (ok) continue;
        e.targetingDimension = c.targeting_dims[k];
        e.targetingValue = v;
        e.targetingMask = mask.toString();
        return set(o, v < 64 ? `targeting ${c.targeting_dims[k]} = ${v}: bit ${v} of the ad's mask 0x${mask.toString(16)} is clear` : `targeting ${c.targeting_dims[k]} = ${v} is an unknown value, which matches only untargeted ads, and the ad's mask is 0x${mask.toString(16)}`);
      }
      return set(o, 'targeting mismatch');
    }
    const why: Record<string, string> = {
      EXCLUDED_AD: `ad ${id} is in exclusions.ad_ids`,
      EXCLUDED_ADVERTISER: `its advertiser ${adv[row]} is in exclusions.advertiser_ids`,
      INACTIVE: 'the live ad state says inactive',
      OUT_OF_BUDGET: 'the live ad state says out of budget',
      PACED: `it failed the pacing test for request id ${JSON.stringify(er.requestId)}`,
    };
    return set(o, why[o]);
  }
  if (facts.kind === 'retrieveAndRank' && facts.overQuota!.has(id)) {
    e.score = ex.retrievalScores[i];
    return set('OVER_QUOTA', `eligible, in candidate_ad_ids, but past candidate_quota ${er.candidateQuota}: that many earlier caller candidates were ranked`);
  }
  if (facts.kind === 'retrieveAndRank' && !facts.retrieved!.has(id) && !facts.caller!.has(id)) {
    e.score = ex.retrievalScores[i];
    if (facts.retrievedThreshold !== undefined) e.thresholdScore = facts.retrievedThreshold;
    return set('NOT_RETRIEVED', `eligible, but its retrieval score ${f(ex.retrievalScores[i])} is below the ${facts.retrieved!.size}th retrieved ad's ${f(facts.retrievedThreshold ?? NaN)} (retrieve_count ${er.retrieveCount})`);
  }
  const s = facts.stageIndex.get(id)!;
  const cand = facts.stage[s];
  e.score = cand.score;
  if (facts.kind !== 'retrieve') e.taskProbabilities = Array.from(ex.probs.subarray(i * c.tasks.length, (i + 1) * c.tasks.length));
  const beyond = facts.truncated && s >= MAX_K;
  e.position = beyond ? 0 : w.position[s];
  const where = beyond ? `beyond the first ${MAX_K} of the order` : `position ${w.position[s]} of ${facts.stage.length}${facts.truncated ? '+' : ''} ${facts.kind === 'retrieveAndRank' ? 'ranked' : 'eligible'}`;
  const st: WalkStatus = w.status[s];
  const slot = Array.from(result.adIds).indexOf(id);
  if (slot >= 0) {
    e.winnerPosition = slot + 1;
    if (result.prices.length > 0) e.price = result.prices[slot];
    const next = slot + 1 < n ? result.adIds[slot + 1] : w.runnerUp?.id;
    if (next !== undefined) e.runnerUpAdId = next.toString();
    const priced = result.prices.length > 0 ? `, pays ${f(result.prices[slot])}` + (next !== undefined ? ` against ad ${next}` : ' (the reserve: no one below)') : '';
    return set('WON', `won slot ${slot + 1} of ${n} with score ${f(cand.score)} (${where})${priced}`);
  }
  const thr = n > 0 ? result.scores[n - 1] : undefined;
  if (st.kind === 'capped') {
    e.cappedBy = st.by.map(String);
    return set('CAPPED', `score ${f(cand.score)} (${where}), but advertiser ${cand.advertiser} already had ${er.cap} winner(s) ahead of it${facts.er.mode === RankingMode.Local && facts.kind !== 'retrieve' ? ' in its partition' : ''}: ${st.by.join(', ')}`);
  }
  if (st.kind === 'cut') return set('OUTRANKED', `won its partition (${where}) but was cut when the partition winners were merged to K = ${er.k}; the last winner scored ${f(thr ?? NaN)}`);
  return set('OUTRANKED', `score ${f(cand.score)} (${where}) is below the last winner's ${thr === undefined ? '(none)' : f(thr)}`);
}

/** Explain for one decoded request on `engine`; the response object of ExplainResponse. */
export async function explain(engine: Engine, request: ExplainRequest__Output, limits: Limits, log?: Logger): Promise<ExplainResponse> {
  const { kind, er, asked } = validateExplain(request, engine, limits);
  if (kind !== 'rank' && asked.length === 0) throw invalid('ad_ids', 'at least one ad id for Retrieve and RetrieveAndRank', 0);
  if (kind === 'rank' && asked.length === 0 && er.candidates.length > MAX_EXPLAIN_ADS)
    throw invalid('ad_ids', `ad ids to explain when candidate_ad_ids has more than ${MAX_EXPLAIN_ADS} entries`, 0);
  const facts = await gather(engine, kind, er, asked);
  if (!agrees(facts))
    log?.warn('explain_disagrees', { requestId: er.requestId, rpc: kind, engine: Array.from(facts.result.adIds), replayed: facts.walk.winners.map((s) => s.id) });

  const explanations: AdExplanation[] = [];
  if (asked.length > 0) for (const id of asked) explanations.push(explainOne(engine, facts, id, false));
  else {
    const rowOf = adRows(engine.bundle);
    const seen = new Set<bigint>();
    for (const id of er.candidates) {
      const dup = rowOf.has(id) && seen.has(id);
      seen.add(id);
      explanations.push(explainOne(engine, facts, id, dup));
    }
  }
  const c = engine.config;
  const r = facts.result;
  const T = c.tasks.length;
  const winners: Winner[] = Array.from(r.adIds, (id, i) => ({
    adId: id.toString(),
    advertiserId: r.advertisers[i].toString(),
    score: r.scores[i],
    taskProbabilities: r.probs.length ? Array.from(r.probs.subarray(i * T, (i + 1) * T)) : [],
    price: r.prices.length ? r.prices[i] : undefined,
    value: r.values.length ? r.values[i] : undefined,
    source: (['CANDIDATE_SOURCE_UNSPECIFIED', 'RETRIEVAL', 'CALLER'] as const)[r.sources[i] ?? 0],
  }));
  const t = r.timings;
  const response = {
    requestId: er.requestId,
    winners,
    model: { name: c.name, version: c.version },
    counts: r.counts,
    timings: { queueUs: t.queue, userUs: t.user, retrieveUs: t.retrieve, gatherUs: t.gather, masknetUs: t.masknet, dcnUs: t.dcn, mlpUs: t.mlp, selectUs: t.select, engineTotalUs: t.total },
  };
  return {
    [kind]: kind === 'retrieveAndRank'
      ? { ...response, retrieved: r.retrieved, sourceCounts: r.sourceCounts.map((x) => ({ ...x, source: (['CANDIDATE_SOURCE_UNSPECIFIED', 'RETRIEVAL', 'CALLER'] as const)[x.source] })) }
      : response,
    explanations,
  } as ExplainResponse;
}

/** The gRPC unary handler of AdRankerAdmin.Explain. */
export function explainHandler(ctx: HandlerContext) {
  return (call: ServerUnaryCall<ExplainRequest__Output, ExplainResponse>, callback: sendUnaryData<ExplainResponse>): void => {
    const engine = ctx.engine();
    if (!engine) return callback(serviceError(status.UNAVAILABLE, 'the model is not loaded yet (health: NOT_SERVING)'));
    if (!ctx.inflight.tryAcquire()) {
      ctx.stats.outcome('Explain', 'RESOURCE_EXHAUSTED');
      return callback(serviceError(status.RESOURCE_EXHAUSTED, `too many requests in flight (limit ${ctx.inflight.max})`));
    }
    explain(engine, call.request, ctx.limits, ctx.log).then(
      (res) => {
        ctx.inflight.release();
        ctx.stats.outcome('Explain', 'OK');
        callback(null, res);
      },
      (e: unknown) => {
        ctx.inflight.release();
        const err = toServiceError(e);
        ctx.stats.outcome('Explain', status[err.code]);
        ctx.log.debug('rpc_refused', { rpc: 'Explain', code: status[err.code], details: err.details });
        callback(err);
      },
    );
  };
}
