/**
 * Reference of the funnel (docs/funnel.md): intake, eligibility (in the documented order),
 * pacing hash, ordering, greedy per-advertiser cap, local(P), GSP prices, Retrieve and
 * RetrieveAndRank. Scores come from a `Scorer` so a test can run the selection logic on the
 * engine's own float32 scores (exact comparison) or on the float64 model (candidate()).
 */
import type { NativeCounts, NativeSourceCounts } from '../../src/engine/binding.js';
import { adRows, type LoadedBundle } from '../../src/model/bundle.js';
import { requestKey, type EngineRequest } from '../../src/features/feature-bundle.js';
import { candidate, retrievalScore, userSide, type RefModel, type UserSide } from './model.js';

/** The same counts the engine reports (docs/funnel.md). */
export type Counts = NativeCounts;

export type DropReason = 'excludedAd' | 'excludedAdvertiser' | 'inactive' | 'outOfBudget' | 'targeting' | 'paced';

/** Live ad state by row (docs/funnel.md "Live ad state"). */
export interface AdState {
  active: Uint8Array;
  inBudget: Uint8Array;
  pacing: Float32Array;
  /** live bid override, NaN = the bundle's bid */
  bid: Float32Array;
}

export function defaultAdState(n: number): AdState {
  return { active: new Uint8Array(n).fill(1), inBudget: new Uint8Array(n).fill(1), pacing: new Float32Array(n).fill(1), bid: new Float32Array(n).fill(NaN) };
}

/** The bid in effect for a row: the live override, else the bundle's bid. */
export function effectiveBid(b: LoadedBundle, s: AdState, row: number): number {
  const o = s.bid[row];
  return Number.isNaN(o) ? (b.tensors['ads.bid'] as Float32Array)[row] : o;
}

/** Mirror of Engine.setAdState: returns the number of unknown ids. */
export function applyAdState(b: LoadedBundle, s: AdState, ids: ArrayLike<bigint>, active: ArrayLike<number>, inBudget: ArrayLike<number>, pacing: ArrayLike<number>, bid?: ArrayLike<number>): number {
  let unknown = 0;
  for (let i = 0; i < ids.length; i++) {
    const r = adRows(b).get(ids[i]);
    if (r === undefined) {
      unknown++;
      continue;
    }
    s.active[r] = active[i];
    s.inBudget[r] = inBudget[i];
    s.pacing[r] = pacing[i];
    s.bid[r] = bid ? bid[i] : NaN;
  }
  return unknown;
}

const M64 = (1n << 64n) - 1n;

export function splitmix64(x: bigint): bigint {
  x = (x + 0x9e3779b97f4a7c15n) & M64;
  let z = x;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M64;
  return z ^ (z >> 31n);
}

/** u ∈ [0, 1) of the pacing test for (request key, ad id) */
export function pacingDraw(key: bigint, adId: bigint): number {
  const h = splitmix64(key ^ BigInt.asUintN(64, adId));
  return Number(h >> 11n) * 2 ** -53;
}

const ALL_ONES = M64;

/** The first reason that drops row `row`, or null when eligible. */
export function dropReason(b: LoadedBundle, r: EngineRequest, s: AdState, row: number, key: bigint, exAds: Set<bigint>, exAdv: Set<bigint>): DropReason | null {
  const id = (b.tensors['ads.id'] as BigInt64Array)[row];
  const adv = (b.tensors['ads.advertiser'] as BigInt64Array)[row];
  if (exAds.has(id)) return 'excludedAd';
  if (exAdv.has(adv)) return 'excludedAdvertiser';
  if (!s.active[row]) return 'inactive';
  if (!s.inBudget[row]) return 'outOfBudget';
  const tg = b.tensors['ads.targeting'] as BigUint64Array;
  const nd = b.config.targeting_dims.length;
  for (let k = 0; k < nd; k++) {
    const v = Number(r.targeting[k]);
    const mask = tg[row * nd + k];
    if (v < 64 ? ((mask >> BigInt(v)) & 1n) === 0n : mask !== ALL_ONES) return 'targeting';
  }
  if (!(pacingDraw(key, id) < s.pacing[row])) return 'paced';
  return null;
}

export function emptyCounts(): Counts {
  return { received: 0, unknown: 0, duplicate: 0, inactive: 0, outOfBudget: 0, paced: 0, targeting: 0, excludedAd: 0, excludedAdvertiser: 0, capped: 0, eligible: 0 };
}

export interface Scored {
  row: number;
  id: bigint;
  advertiser: bigint;
  score: number;
}

/** score descending, ties by ad id ascending */
export const byOrder = (a: Scored, b: Scored) => (a.score !== b.score ? b.score - a.score : a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

/** The greedy walk: take while the advertiser has < cap taken (cap 0 = none), stop at k.
 *  `next` is the ad the walk would take after the k-th (the runner-up). */
export function walk(sorted: Scored[], k: number, cap: number): { taken: Scored[]; next: Scored | undefined; capped: number } {
  const taken: Scored[] = [];
  const per = new Map<bigint, number>();
  let capped = 0;
  for (const c of sorted) {
    const n = per.get(c.advertiser) ?? 0;
    const allowed = cap === 0 || n < cap;
    if (taken.length === k) {
      if (allowed) return { taken, next: c, capped };
      continue;
    }
    if (!allowed) {
      capped++;
      continue;
    }
    taken.push(c);
    per.set(c.advertiser, n + 1);
  }
  return { taken, next: undefined, capped };
}

/** Global or local(P) selection; returns winners, the runner-up and the capped count. */
export function select(eligible: Scored[], k: number, cap: number, local: boolean, partitions: number): { winners: Scored[]; runnerUp: Scored | undefined; capped: number } {
  if (!local) {
    const w = walk([...eligible].sort(byOrder), k, cap);
    return { winners: w.taken, runnerUp: w.next, capped: w.capped };
  }
  const P = BigInt(partitions);
  const kp = Math.ceil(k / partitions);
  const parts: Scored[][] = Array.from({ length: partitions }, () => []);
  for (const c of eligible) parts[Number(((c.id % P) + P) % P)].push(c);
  let capped = 0;
  const merged: Scored[] = [];
  for (const p of parts) {
    const w = walk(p.sort(byOrder), kp, cap);
    capped += w.capped;
    merged.push(...w.taken);
  }
  merged.sort(byOrder);
  return { winners: merged.slice(0, k), runnerUp: merged[k], capped };
}

export interface RefResult {
  adIds: bigint[];
  advertisers: bigint[];
  rows: number[];
  scores: number[];
  /** per winner, T probabilities (Rank, RetrieveAndRank) */
  probs: number[][];
  prices: number[];
  retrieved: number;
  counts: Counts;
  /** RetrieveAndRank: per winner 1 (retrieval) or 2 (caller); empty otherwise */
  sources: number[];
  /** RetrieveAndRank: [retrieval, caller] (docs/funnel.md "Blended retrieval sources") */
  sourceCounts: NativeSourceCounts[];
}

function emptySourceCounts(source: number): NativeSourceCounts {
  const { capped: _c, ...c } = emptyCounts();
  return { ...c, source, earlierSource: 0, overQuota: 0, ranked: 0, winners: 0 };
}

/** Rank-side scores of one row: utility, value = Σ w p, probabilities. */
export interface RankScore {
  utility: number;
  value: number;
  probs: ArrayLike<number>;
}
export type RankScorer = (row: number) => RankScore;
export type RetrievalScorer = (row: number) => number;

/** Float64 model scorers for a request (the user side is computed once). */
export function modelScorers(m: RefModel, r: EngineRequest): { us: UserSide; rank: RankScorer; retrieval: RetrievalScorer } {
  const us = userSide(m, r);
  const memo = new Map<number, RankScore>();
  return {
    us,
    rank: (row) => {
      let s = memo.get(row);
      if (!s) {
        const c = candidate(m, us, r, row);
        s = { utility: c.utility, value: c.value, probs: c.probs };
        memo.set(row, s);
      }
      return s;
    },
    retrieval: (row) => retrievalScore(m, us, row),
  };
}

/** utility = bid in effect × value: the scorer's utility (bundle bid) unless the bid is overridden */
function utilityOf(s: AdState, scorer: RankScorer, row: number): number {
  const o = s.bid[row];
  return Number.isNaN(o) ? scorer(row).utility : o * scorer(row).value;
}

function gsp(b: LoadedBundle, s: AdState, winners: Scored[], runnerUp: Scored | undefined, scorer: RankScorer, reserve: number): number[] {
  return winners.map((w, i) => {
    const next = winners[i + 1] ?? runnerUp;
    const b_i = effectiveBid(b, s, w.row);
    if (!next) return Math.min(b_i, reserve);
    const value = scorer(w.row).value;
    return Math.min(b_i, Math.max(reserve, value > 0 ? next.score / value : 0));
  });
}

function exclusions(r: EngineRequest) {
  return { exAds: new Set(Array.from(r.excludedAds, BigInt)), exAdv: new Set(Array.from(r.excludedAdvertisers, BigInt)) };
}

function scored(b: LoadedBundle, row: number, score: number): Scored {
  return { row, id: (b.tensors['ads.id'] as BigInt64Array)[row], advertiser: (b.tensors['ads.advertiser'] as BigInt64Array)[row], score };
}

/** Rank: intake, eligibility, utility, selection (mode), optional prices. */
export function refRank(b: LoadedBundle, r: EngineRequest, s: AdState, scorer: RankScorer): RefResult {
  const counts = emptyCounts();
  counts.received = r.candidates.length;
  const seen = new Set<bigint>();
  const rows: number[] = [];
  for (const raw of r.candidates) {
    const id = BigInt(raw);
    const row = adRows(b).get(id);
    if (row === undefined) counts.unknown++;
    else if (seen.has(id)) counts.duplicate++;
    else {
      seen.add(id);
      rows.push(row);
    }
  }
  return rankRows(b, r, s, scorer, rows, counts, r.price);
}

function rankRows(b: LoadedBundle, r: EngineRequest, s: AdState, scorer: RankScorer, rows: number[], counts: Counts, price: boolean, eligibilityDone = false): RefResult {
  const key = requestKey(r.requestId);
  const { exAds, exAdv } = exclusions(r);
  const eligible: Scored[] = [];
  for (const row of rows) {
    const why = eligibilityDone ? null : dropReason(b, r, s, row, key, exAds, exAdv);
    if (why) counts[why]++;
    else eligible.push(scored(b, row, utilityOf(s, scorer, row)));
  }
  if (!eligibilityDone) counts.eligible = eligible.length;
  const sel = select(eligible, r.k, r.cap, r.mode === 1, r.partitions);
  counts.capped = sel.capped;
  return {
    adIds: sel.winners.map((w) => w.id),
    advertisers: sel.winners.map((w) => w.advertiser),
    rows: sel.winners.map((w) => w.row),
    scores: sel.winners.map((w) => w.score),
    probs: sel.winners.map((w) => Array.from(scorer(w.row).probs)),
    prices: price ? gsp(b, s, sel.winners, sel.runnerUp, scorer, r.reserve) : [],
    retrieved: 0,
    counts,
    sources: [],
    sourceCounts: [],
  };
}

/** Eligible ads of the whole corpus with their retrieval scores, and the counts. */
function retrievalCandidates(b: LoadedBundle, r: EngineRequest, s: AdState, scorer: RetrievalScorer): { eligible: Scored[]; counts: Counts } {
  const counts = emptyCounts();
  counts.received = b.numAds;
  const key = requestKey(r.requestId);
  const { exAds, exAdv } = exclusions(r);
  const eligible: Scored[] = [];
  for (let row = 0; row < b.numAds; row++) {
    const why = dropReason(b, r, s, row, key, exAds, exAdv);
    if (why) counts[why]++;
    else eligible.push(scored(b, row, scorer(row)));
  }
  counts.eligible = eligible.length;
  return { eligible, counts };
}

/** Retrieve: score every ad, eligibility, top K with the cap (global). */
export function refRetrieve(b: LoadedBundle, r: EngineRequest, s: AdState, scorer: RetrievalScorer): RefResult {
  const { eligible, counts } = retrievalCandidates(b, r, s, scorer);
  const sel = select(eligible, r.k, r.cap, false, 1);
  counts.capped = sel.capped;
  return {
    adIds: sel.winners.map((w) => w.id),
    advertisers: sel.winners.map((w) => w.advertiser),
    rows: sel.winners.map((w) => w.row),
    scores: sel.winners.map((w) => w.score),
    probs: [],
    prices: [],
    retrieved: 0,
    counts,
    sources: [],
    sourceCounts: [],
  };
}

/** RetrieveAndRank: top R eligible by score (no cap), rank them, select K (cap, mode), priced.
 *  Counts are the retrieval stage's (the corpus scan), plus `capped` from the final selection. */
export function refRetrieveAndRank(b: LoadedBundle, r: EngineRequest, s: AdState, retrieval: RetrievalScorer, rank: RankScorer): RefResult {
  const { eligible, counts } = retrievalCandidates(b, r, s, retrieval);
  const top = eligible.sort(byOrder).slice(0, r.retrieveCount);
  const ret = emptySourceCounts(1);
  for (const k of ['received', 'unknown', 'duplicate', 'inactive', 'outOfBudget', 'paced', 'targeting', 'excludedAd', 'excludedAdvertiser', 'eligible'] as const) ret[k] = counts[k];
  ret.ranked = top.length;
  // The caller's source (docs/funnel.md "Blended retrieval sources"), walked in request order:
  // unknown, repeat within the list, already retrieved (credited to retrieval), the eligibility
  // reasons, over the quota; the rest are ranked with the retrieved ads.
  const caller = emptySourceCounts(2);
  const retrievedIds = new Set(top.map((c) => c.id));
  const seen = new Set<bigint>();
  const callerRows: number[] = [];
  const key = requestKey(r.requestId);
  const { exAds, exAdv } = exclusions(r);
  const quota = r.candidateQuota ?? 0;
  for (const raw of r.candidates) {
    const id = BigInt(raw);
    caller.received++;
    const row = adRows(b).get(id);
    if (row === undefined) caller.unknown++;
    else if (seen.has(id)) caller.duplicate++;
    else {
      seen.add(id);
      if (retrievedIds.has(id)) caller.earlierSource++;
      else {
        const why = dropReason(b, r, s, row, key, exAds, exAdv);
        if (why) caller[why]++;
        else {
          caller.eligible++;
          if (quota > 0 && caller.ranked >= quota) caller.overQuota++;
          else {
            caller.ranked++;
            callerRows.push(row);
          }
        }
      }
    }
  }
  const out = rankRows(b, r, s, rank, [...top.map((c) => c.row), ...callerRows], counts, true, true);
  out.retrieved = top.length;
  const fromCaller = new Set(callerRows);
  out.sources = out.rows.map((row) => (fromCaller.has(row) ? 2 : 1));
  ret.winners = out.sources.filter((x) => x === 1).length;
  caller.winners = out.sources.filter((x) => x === 2).length;
  out.sourceCounts = [ret, caller];
  return out;
}

