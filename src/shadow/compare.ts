/**
 * How a shadow answer differs from the primary one (docs/operations.md "Shadow traffic"):
 * overlap@K, |Δp| per task on the common winners, and the price shift on the common winners.
 * Pure functions of two engine results, so that they are tested without a server.
 */
import type { NativeResult } from '../engine/index.js';

/** One request's comparison. */
export interface ShadowComparison {
  /** K: the larger of the two winner counts (each ≤ the request's k) */
  k: number;
  /** winners in both answers (by ad id) */
  common: number;
  /** |primary ∩ shadow| / K; 1 when both answers are empty */
  overlap: number;
  /** per task present in both models (by name): mean and max of |p_shadow − p_primary| over the
   *  common winners; absent when there are no common winners or the RPC returns no probabilities */
  deltaP: Record<string, { mean: number; max: number }>;
  /** every common winner's |Δp|, by task (what the metric's histogram observes) */
  deltas: Record<string, Float64Array>;
  /** mean of (price_shadow − price_primary) / price_primary over the common winners priced in both
   *  with a primary price > 0; undefined when there is none (an unpriced Rank) */
  priceShift?: number;
  /** common winners that entered the price shift */
  priced: number;
}

/** Compares two engine results; `primaryTasks` / `shadowTasks` are the models' task names (the
 *  row layout of `probs`). */
export function compareResults(primary: NativeResult, shadow: NativeResult, primaryTasks: readonly string[], shadowTasks: readonly string[]): ShadowComparison {
  const np = primary.adIds.length;
  const ns = shadow.adIds.length;
  const k = Math.max(np, ns);
  const rowOf = new Map<bigint, number>();
  for (let i = 0; i < ns; i++) rowOf.set(shadow.adIds[i], i);
  // pairs of rows (primary, shadow) of the common winners
  const pairs: [number, number][] = [];
  for (let i = 0; i < np; i++) {
    const j = rowOf.get(primary.adIds[i]);
    if (j !== undefined) pairs.push([i, j]);
  }
  const common = pairs.length;
  const deltaP: ShadowComparison['deltaP'] = {};
  const deltas: ShadowComparison['deltas'] = {};
  const tp = primaryTasks.length;
  const ts = shadowTasks.length;
  if (common > 0 && primary.probs.length >= np * tp && shadow.probs.length >= ns * ts && tp > 0 && ts > 0) {
    for (let t = 0; t < tp; t++) {
      const u = shadowTasks.indexOf(primaryTasks[t]);
      if (u < 0) continue;
      const d = new Float64Array(common);
      let sum = 0;
      let max = 0;
      for (let c = 0; c < common; c++) {
        const [i, j] = pairs[c];
        const x = Math.abs(shadow.probs[j * ts + u] - primary.probs[i * tp + t]);
        d[c] = x;
        sum += x;
        if (x > max) max = x;
      }
      deltas[primaryTasks[t]] = d;
      deltaP[primaryTasks[t]] = { mean: sum / common, max };
    }
  }
  let shift = 0;
  let priced = 0;
  if (primary.prices.length >= np && shadow.prices.length >= ns && primary.prices.length > 0 && shadow.prices.length > 0) {
    for (const [i, j] of pairs) {
      const p = primary.prices[i];
      if (!(p > 0)) continue;
      shift += (shadow.prices[j] - p) / p;
      priced++;
    }
  }
  return { k, common, overlap: k === 0 ? 1 : common / k, deltaP, deltas, priceShift: priced > 0 ? shift / priced : undefined, priced };
}
