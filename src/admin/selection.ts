/**
 * The selection walk of docs/funnel.md ("Order and selection"), replayed in TypeScript on the
 * engine's own float32 scores so that Explain can say, for every eligible candidate, whether it
 * won, was passed over by the cap (and by whom) or was outranked. The engine's winners are the
 * truth; src/admin/explain.ts checks that this walk reproduces them.
 */

export interface WalkCandidate {
  id: bigint;
  advertiser: bigint;
  /** the engine's score (utility or retrieval score); NaN sorts last, as in the engine */
  score: number;
}

export type WalkStatus =
  | { kind: 'won'; slot: number }
  | { kind: 'capped'; by: bigint[] }
  | { kind: 'outranked' }
  /** LOCAL mode: won its partition, cut when the partition winners were merged */
  | { kind: 'cut' };

export interface Walk<C extends WalkCandidate> {
  /** final order */
  winners: C[];
  /** the ad the last winner is priced against (global: the next ad the walk would take;
   *  local: the (K+1)-th merged partition winner) */
  runnerUp?: C;
  /** status of every candidate, by index into the input */
  status: WalkStatus[];
  /** 1-based position of every candidate in the full order (score desc, ad id asc) */
  position: number[];
  /** passed over by the cap before the walk stopped (the engine's counts.capped) */
  capped: number;
}

const key = (s: number) => (Number.isNaN(s) ? -Infinity : s);

/** Score descending, ad id ascending (the engine's `before`). */
export function before(a: WalkCandidate, b: WalkCandidate): number {
  const sa = key(a.score);
  const sb = key(b.score);
  if (sa !== sb) return sb > sa ? 1 : -1;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/** Mathematical modulo: the partition of an ad id in LOCAL(P). */
export function partitionOf(id: bigint, partitions: number): number {
  const p = BigInt(partitions);
  return Number(((id % p) + p) % p);
}

interface Indexed<C> {
  c: C;
  i: number;
}

/** The greedy walk over `order` (already sorted): take while the advertiser has < cap taken. */
function walkGreedy<C extends WalkCandidate>(order: Indexed<C>[], k: number, cap: number, wantRunnerUp: boolean, status: WalkStatus[]): { winners: Indexed<C>[]; runnerUp?: Indexed<C>; capped: number } {
  const taken = new Map<bigint, bigint[]>();
  const winners: Indexed<C>[] = [];
  let runnerUp: Indexed<C> | undefined;
  let capped = 0;
  let done = false;
  for (const x of order) {
    if (done) {
      status[x.i] = { kind: 'outranked' };
      continue;
    }
    const mine = taken.get(x.c.advertiser) ?? [];
    if (cap > 0 && mine.length >= cap) {
      if (winners.length < k) {
        capped++;
        status[x.i] = { kind: 'capped', by: [...mine] };
      } else status[x.i] = { kind: 'outranked' };
      continue;
    }
    if (winners.length < k) {
      mine.push(x.c.id);
      taken.set(x.c.advertiser, mine);
      status[x.i] = { kind: 'won', slot: winners.length + 1 };
      winners.push(x);
      if (winners.length === k && !wantRunnerUp) done = true;
    } else {
      runnerUp = x;
      status[x.i] = { kind: 'outranked' };
      done = true;
    }
  }
  return { winners, runnerUp, capped };
}

/** GLOBAL (partitions = 0) or LOCAL(partitions) selection of K with the per-advertiser cap. */
export function walk<C extends WalkCandidate>(cands: C[], k: number, cap: number, partitions: number, wantRunnerUp: boolean): Walk<C> {
  const order = cands.map((c, i) => ({ c, i })).sort((a, b) => before(a.c, b.c));
  const position = new Array<number>(cands.length);
  order.forEach((x, p) => (position[x.i] = p + 1));
  const status = new Array<WalkStatus>(cands.length);
  if (partitions <= 0) {
    const g = walkGreedy(order, k, cap, wantRunnerUp, status);
    return { winners: g.winners.map((x) => x.c), runnerUp: g.runnerUp?.c, status, position, capped: g.capped };
  }
  const kp = Math.ceil(k / partitions);
  const groups = new Map<number, Indexed<C>[]>();
  for (const x of order) {
    const p = partitionOf(x.c.id, partitions);
    const g = groups.get(p);
    if (g) g.push(x);
    else groups.set(p, [x]);
  }
  let merged: Indexed<C>[] = [];
  let capped = 0;
  for (const g of groups.values()) {
    const s = walkGreedy(g, kp, cap, false, status);
    capped += s.capped;
    merged.push(...s.winners);
  }
  merged.sort((a, b) => before(a.c, b.c));
  const runnerUp = wantRunnerUp && merged.length > k ? merged[k] : undefined;
  for (const x of merged.slice(k)) status[x.i] = { kind: 'cut' };
  merged = merged.slice(0, k);
  merged.forEach((x, slot) => (status[x.i] = { kind: 'won', slot: slot + 1 }));
  return { winners: merged.map((x) => x.c), runnerUp: runnerUp?.c, status, position, capped };
}
