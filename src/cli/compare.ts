/**
 * Comparing two answers to the same request (replay: logged vs now; compare-modes: GLOBAL vs
 * LOCAL(P)). Pure functions over winner lists; docs/feature-log.md "Replay" defines them.
 */

export interface WinnerLike {
  adId: string;
  advertiserId: string;
  taskProbabilities: number[];
}

/** |A ∩ B| / max(|A|, |B|) over the top k of each (k = all when undefined); 1 when both are empty. */
export function overlapAtK(a: string[], b: string[], k?: number): number {
  const ta = k === undefined ? a : a.slice(0, k);
  const tb = k === undefined ? b : b.slice(0, k);
  const denom = Math.max(ta.length, tb.length);
  if (denom === 0) return 1;
  const sb = new Set(tb);
  return ta.filter((x) => sb.has(x)).length / denom;
}

/** Kendall's tau of the common items' order in `a` and in `b`; undefined with fewer than 2. */
export function kendallTau(a: string[], b: string[]): number | undefined {
  const pb = new Map(b.map((x, i) => [x, i]));
  const common = a.filter((x) => pb.has(x)).map((x) => pb.get(x)!); // b-positions in a's order
  const n = common.length;
  if (n < 2) return undefined;
  let s = 0;
  for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) s += Math.sign(common[j] - common[i]);
  return s / ((n * (n - 1)) / 2);
}

/** Accumulates replay-style differences over many request pairs (before → after). */
export class Divergence {
  requests = 0;
  failed = 0;
  private overlapSum = 0;
  minOverlap = 1;
  private tauSum = 0;
  private tauN = 0;
  private readonly dpMax: number[] = [];
  private readonly dpSum: number[] = [];
  private dpN = 0;
  /** advertiser → winners that entered / left */
  readonly byAdvertiser = new Map<string, { entered: number; left: number }>();

  constructor(private readonly k?: number) {}

  add(before: WinnerLike[], after: WinnerLike[]): void {
    this.requests++;
    const a = before.map((w) => w.adId);
    const b = after.map((w) => w.adId);
    const o = overlapAtK(a, b, this.k);
    this.overlapSum += o;
    this.minOverlap = Math.min(this.minOverlap, o);
    const tau = kendallTau(a, b);
    if (tau !== undefined) {
      this.tauSum += tau;
      this.tauN++;
    }
    const after1 = new Map(after.map((w) => [w.adId, w]));
    for (const w of before) {
      const x = after1.get(w.adId);
      if (!x || w.taskProbabilities.length === 0 || x.taskProbabilities.length !== w.taskProbabilities.length) continue;
      this.dpN++;
      w.taskProbabilities.forEach((p, t) => {
        const d = Math.abs(x.taskProbabilities[t] - p);
        this.dpMax[t] = Math.max(this.dpMax[t] ?? 0, d);
        this.dpSum[t] = (this.dpSum[t] ?? 0) + d;
      });
    }
    const inBefore = new Set(a);
    const inAfter = new Set(b);
    const bump = (adv: string, key: 'entered' | 'left') => {
      const e = this.byAdvertiser.get(adv) ?? { entered: 0, left: 0 };
      e[key]++;
      this.byAdvertiser.set(adv, e);
    };
    for (const w of after) if (!inBefore.has(w.adId)) bump(w.advertiserId, 'entered');
    for (const w of before) if (!inAfter.has(w.adId)) bump(w.advertiserId, 'left');
  }

  /** A request that got no answer: counts as overlap 0. */
  fail(): void {
    this.requests++;
    this.failed++;
    this.minOverlap = 0;
  }

  get meanOverlap(): number {
    return this.requests === 0 ? 1 : this.overlapSum / this.requests;
  }
  /** mean Kendall tau over requests with at least two common winners; undefined if none */
  get meanTau(): number | undefined {
    return this.tauN === 0 ? undefined : this.tauSum / this.tauN;
  }
  /** 1 − mean overlap@K: the share of winner slots that changed (failed requests count fully) */
  get divergence(): number {
    return 1 - this.meanOverlap;
  }
  /** per task: max and mean |Δp| over common winners */
  deltaP(): { max: number; mean: number }[] {
    return this.dpMax.map((m, t) => ({ max: m, mean: this.dpN ? this.dpSum[t] / this.dpN : 0 }));
  }
  get commonWinners(): number {
    return this.dpN;
  }
}
