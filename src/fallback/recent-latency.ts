/**
 * The model path's recent latency by RPC and request size, for the deadline trigger of the
 * fallback (docs/funnel.md "Fallback"): a request whose remaining deadline is below the recent p99
 * for its size is answered from the fallback rather than started and missed.
 *
 * Size buckets are powers of two of the request's work (candidates for Rank, retrieve_count for
 * RetrieveAndRank, one bucket for Retrieve). Each bucket keeps its last WINDOW latencies; a p99 is
 * given only once MIN_SAMPLES have been seen, so a cold server never falls back on a guess.
 */
export const WINDOW = 256;
export const MIN_SAMPLES = 20;

/** The last WINDOW values, also kept in sorted order (one insertion and one removal per value,
 *  a move of at most WINDOW doubles), so that the p99 read on every call with a deadline costs a lookup. */
class Ring {
  private readonly values = new Float64Array(WINDOW);
  private readonly sorted = new Float64Array(WINDOW);
  private count = 0;
  private next = 0;

  add(v: number): void {
    if (this.count === WINDOW) {
      const at = this.lowerBound(this.values[this.next]);
      this.sorted.copyWithin(at, at + 1, this.count);
      this.count--;
    }
    this.values[this.next] = v;
    this.next = (this.next + 1) % WINDOW;
    const at = this.lowerBound(v);
    this.sorted.copyWithin(at + 1, at, this.count);
    this.sorted[at] = v;
    this.count++;
  }

  /** The first index of `sorted` holding a value >= v. */
  private lowerBound(v: number): number {
    let lo = 0;
    let hi = this.count;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.sorted[mid] < v) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** The 99th percentile (nearest rank) of what is held, or undefined below MIN_SAMPLES. */
  p99(): number | undefined {
    if (this.count < MIN_SAMPLES) return undefined;
    return this.sorted[Math.min(this.count - 1, Math.ceil(0.99 * this.count) - 1)];
  }
}

export class RecentLatency {
  private readonly rings = new Map<string, Ring>();

  static bucket(size: number): number {
    return size <= 1 ? 0 : Math.ceil(Math.log2(size));
  }

  private key(rpc: string, size: number): string {
    return `${rpc}/${RecentLatency.bucket(size)}`;
  }

  /** One model-path latency in ms for a request of `size`. */
  record(rpc: string, size: number, ms: number): void {
    const k = this.key(rpc, size);
    let r = this.rings.get(k);
    if (!r) this.rings.set(k, (r = new Ring()));
    r.add(ms);
  }

  /** The recent p99 in ms for requests of this RPC and size, or undefined when too few were seen. */
  p99(rpc: string, size: number): number | undefined {
    return this.rings.get(this.key(rpc, size))?.p99();
  }
}
