/**
 * The router's half of the funnel (docs/funnel.md "Sharded serving"): the same order, greedy
 * per-advertiser walk, local(P) selection and GSP prices as the engine (native/engine/funnel.cc),
 * run on the candidates the shards sent back. Everything here is float32-exact: scores, values
 * and bids arrive as float32 and the one division is rounded to float32 (Math.fround of a
 * double quotient of two float32s is the correctly rounded float32 quotient).
 */

/** A scored candidate as a shard returned it. Ids are kept as their two 32-bit words (hi
 *  signed, lo unsigned), which order like the int64 and cost no BigInt. */
export interface Cand {
  idHi: number;
  idLo: number;
  advHi: number;
  advLo: number;
  /** the advertiser as a Map key (a number when exact, else text) */
  advKey: number | string;
  /** utility (ranking) or retrieval score; NaN orders as −∞, like the engine */
  score: number;
  /** order key: score with NaN → −∞ */
  key: number;
  /** the shard that owns the ad */
  shard: number;
  /** the Winner message as the shard encoded it (probabilities, value) */
  probs: number[];
  value: number;
  bid: number;
}

/** An int64's words → a Map key: the exact number when |value| < 2^53, else text. */
export function int64Key(hi: number, lo: number): number | string {
  return hi >= -0x200000 && hi < 0x200000 ? hi * 4294967296 + lo : `${hi}:${lo}`;
}

export function cand(idHi: number, idLo: number, advHi: number, advLo: number, score: number, shard: number, probs: number[] = [], value = 0, bid = 0): Cand {
  return { idHi, idLo, advHi, advLo, advKey: int64Key(advHi, advLo), score, key: Number.isNaN(score) ? -Infinity : score, shard, probs, value, bid };
}

/** The id as a BigInt (tests, logs). */
export function idOf(c: Cand): bigint {
  return (BigInt(c.idHi) << 32n) | BigInt(c.idLo);
}

/** score descending, ad id ascending (docs/funnel.md "Order and selection"). */
export function before(a: Cand, b: Cand): boolean {
  return a.key > b.key || (a.key === b.key && (a.idHi < b.idHi || (a.idHi === b.idHi && a.idLo < b.idLo)));
}

export function byOrder(a: Cand, b: Cand): number {
  return before(a, b) ? -1 : before(b, a) ? 1 : 0;
}

export interface Selection {
  winners: Cand[];
  runnerUp?: Cand;
  /** eligible candidates passed over by the cap before the K-th winner */
  capped: number;
}

/** The greedy walk over `sorted` (in order): take while the advertiser has < cap taken (0 = no
 *  cap), stop at k; with wantRunnerUp, go on to the next ad the walk would take. */
export function walk(sorted: Iterable<Cand>, k: number, cap: number, wantRunnerUp: boolean): Selection {
  const s: Selection = { winners: [], capped: 0 };
  if (k === 0) return s;
  const taken = new Map<number | string, number>();
  for (const x of sorted) {
    if (cap > 0) {
      const t = taken.get(x.advKey) ?? 0;
      if (t >= cap) {
        if (s.winners.length < k) s.capped++;
        continue;
      }
      taken.set(x.advKey, t + 1);
    }
    if (s.winners.length < k) {
      s.winners.push(x);
      if (!wantRunnerUp && s.winners.length === k) break;
    } else {
      s.runnerUp = x;
      break;
    }
  }
  return s;
}

/** ad_id mod P, mathematical (0 ≤ partition < P), from the id's words: id = hi·2^32 + lo. */
export function partitionOf(hi: number, lo: number, p: number): number {
  return ((((hi % p) + p) % p) * (4294967296 % p) + (lo % p)) % p;
}

/** local(P): each partition's walk to ⌈k/P⌉ with the cap inside it, merged in order and cut to
 *  k; the runner-up is the (k+1)-th merged partition winner. */
export function selectLocal(sorted: Iterable<Cand>, k: number, cap: number, partitions: number, wantRunnerUp: boolean): Selection {
  const kp = Math.ceil(k / partitions);
  const groups = new Map<number, Cand[]>();
  for (const x of sorted) {
    const p = partitionOf(x.idHi, x.idLo, partitions);
    const g = groups.get(p);
    if (g) g.push(x);
    else groups.set(p, [x]);
  }
  let capped = 0;
  const merged: Cand[] = [];
  for (const g of groups.values()) {
    const sel = walk(g, kp, cap, false);
    capped += sel.capped;
    merged.push(...sel.winners);
  }
  merged.sort(byOrder);
  const s: Selection = { winners: merged.slice(0, k), capped };
  if (wantRunnerUp && merged.length > k) s.runnerUp = merged[k];
  return s;
}

export function select(sorted: Iterable<Cand>, k: number, cap: number, local: boolean, partitions: number, wantRunnerUp: boolean): Selection {
  return local ? selectLocal(sorted, k, cap, partitions, wantRunnerUp) : walk(sorted, k, cap, wantRunnerUp);
}

/** GSP (docs/funnel.md "Auction"): winner i pays min(bid_i, max(reserve, utility_{i+1} / value_i)),
 *  the last one with no runner-up min(bid_i, reserve); value 0 gives ratio 0. `reserve` is float32. */
export function gspPrices(s: Selection, reserve: number): number[] {
  const w = s.winners;
  return w.map((x, i) => {
    const next = i + 1 < w.length ? w[i + 1] : s.runnerUp;
    if (!next) return Math.min(x.bid, reserve);
    const p = x.value > 0 ? Math.fround(next.score / x.value) : 0;
    return Math.min(x.bid, Math.max(reserve, p));
  });
}

/** The candidates' ad ids as a BigInt64Array (written as words). */
export function idsOf(cs: readonly Cand[]): BigInt64Array {
  const out = new BigInt64Array(cs.length);
  const w = new Uint32Array(out.buffer);
  for (let i = 0; i < cs.length; i++) {
    w[2 * i] = cs[i].idLo;
    w[2 * i + 1] = cs[i].idHi;
  }
  return out;
}

/** The first n of an ordered sequence. */
export function take(xs: Iterable<Cand>, n: number): Cand[] {
  const out: Cand[] = [];
  if (n <= 0) return out;
  for (const x of xs) if (out.push(x) >= n) break;
  return out;
}

/** Merges shard lists that are each in order into one sequence in order, lazily: a walk that
 *  stops at K reads only the heads of the lists. */
export function* merged(lists: readonly Cand[][]): Generator<Cand> {
  const at = lists.map(() => 0);
  for (;;) {
    let best = -1;
    for (let i = 0; i < lists.length; i++) if (at[i] < lists[i].length && (best < 0 || before(lists[i][at[i]], lists[best][at[best]]))) best = i;
    if (best < 0) return;
    yield lists[best][at[best]++];
  }
}
