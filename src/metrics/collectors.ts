/**
 * Counters and histograms for the request path, cheaper to record than prom-client's own.
 *
 * prom-client's `counter.inc(labels, n)` and `histogram.observe(labels, v)` hash the label object
 * on every call; a request records ~90 values (12 candidate outcomes, 11 stages, one prediction
 * per winner and task), which would cost tens of µs. Here a label set is resolved once into a
 * child that the hot path keeps, and recording is an add (counter) or a bucket search and
 * three adds (histogram). The classes implement the interface prom-client's Registry reads
 * (`name`, `help`, `type`, `get()`), so they are scraped with the others in the text format.
 */
import type { Registry } from 'prom-client';

export type Labels = Record<string, string>;

interface Sample {
  labels: Labels;
  value: number;
  metricName?: string;
}

interface Collected {
  name: string;
  help: string;
  type: 'counter' | 'gauge' | 'histogram';
  values: Sample[];
  aggregator: 'sum';
}

abstract class Collector<Child> {
  protected readonly children = new Map<string, { labels: Labels; child: Child }>();
  abstract readonly type: 'counter' | 'gauge' | 'histogram';
  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[],
  ) {}

  protected abstract make(): Child;

  /** The child for a label set (create once, keep it: recording through it is the cheap part). */
  child(labels: Labels): Child {
    const key = this.labelNames.map((n) => labels[n] ?? '').join('\u0000');
    let c = this.children.get(key);
    if (!c) {
      for (const n of Object.keys(labels)) if (!this.labelNames.includes(n)) throw new Error(`${this.name}: unknown label ${n}`);
      c = { labels: { ...labels }, child: this.make() };
      this.children.set(key, c);
    }
    return c.child;
  }

  /** Registers this collector with a prom-client registry. */
  register(registry: Registry): this {
    registry.registerMetric(this as unknown as Parameters<Registry['registerMetric']>[0]);
    return this;
  }

  abstract get(): Collected;

  reset(): void {
    this.children.clear();
  }
}

export class CounterChild {
  value = 0;
  inc(n = 1): void {
    this.value += n;
  }
}

/** A monotonic counter (`_total` is part of the name given). */
export class FastCounter extends Collector<CounterChild> {
  readonly type = 'counter';
  protected make(): CounterChild {
    return new CounterChild();
  }
  get(): Collected {
    const values = [...this.children.values()].map(({ labels, child }) => ({ labels, value: child.value }));
    return { name: this.name, help: this.help, type: this.type, values, aggregator: 'sum' };
  }
}

/** A gauge read at scrape time from a function (no recording on the request path). */
export class CallbackGauge {
  readonly type = 'gauge';
  constructor(
    readonly name: string,
    readonly help: string,
    public read: () => number | undefined,
  ) {}
  register(registry: Registry): this {
    registry.registerMetric(this as unknown as Parameters<Registry['registerMetric']>[0]);
    return this;
  }
  get(): Collected {
    const v = this.read();
    return { name: this.name, help: this.help, type: this.type, values: v === undefined ? [] : [{ labels: {}, value: v }], aggregator: 'sum' };
  }
  reset(): void {}
}

/** A counter or gauge with labels, read at scrape time from a function (values another object
 *  keeps, e.g. counts by reason). */
export class CallbackFamily {
  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: 'counter' | 'gauge',
    public read: () => Iterable<[Labels, number]>,
  ) {}
  register(registry: Registry): this {
    registry.registerMetric(this as unknown as Parameters<Registry['registerMetric']>[0]);
    return this;
  }
  get(): Collected {
    const values = Array.from(this.read(), ([labels, value]) => ({ labels, value }));
    return { name: this.name, help: this.help, type: this.type, values, aggregator: 'sum' };
  }
  reset(): void {}
}

/** Bucket lookup in O(1) for values in [0, bounds[last]): a table of cells no wider than the
 *  narrowest bucket, each holding the first bucket that can contain its values (one fix-up). */
const LUT_CELLS_MAX = 8192;

function lookupTable(bounds: Float64Array): { lut: Uint8Array; scale: number } | undefined {
  const n = bounds.length;
  if (n === 0 || n > 255 || !(bounds[0] > 0)) return undefined;
  let gap = bounds[0];
  for (let i = 1; i < n; i++) gap = Math.min(gap, bounds[i] - bounds[i - 1]);
  const cells = Math.ceil(bounds[n - 1] / gap);
  if (cells > LUT_CELLS_MAX) return undefined;
  const scale = cells / bounds[n - 1];
  const lut = new Uint8Array(cells);
  for (let c = 0, i = 0; c < cells; c++) {
    const start = c / scale;
    while (i < n - 1 && bounds[i] < start) i++;
    lut[c] = i;
  }
  return { lut, scale };
}

export class HistogramChild {
  /** counts[i]: observations in (bounds[i-1], bounds[i]]; the last slot is +Inf */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;
  private readonly lut: Uint8Array | undefined;
  private readonly scale: number;
  private readonly cells: number;
  constructor(private readonly bounds: Float64Array) {
    this.counts = new Float64Array(bounds.length + 1);
    const t = lookupTable(bounds);
    this.lut = t?.lut;
    this.scale = t?.scale ?? 0;
    this.cells = t?.lut.length ?? 0;
  }
  observe(v: number): void {
    const b = this.bounds;
    let i: number;
    const cell = (v * this.scale) | 0;
    if (this.lut !== undefined && v >= 0 && cell < this.cells) {
      i = this.lut[cell];
      if (v > b[i]) i++;
    } else {
      i = 0;
      while (i < b.length && v > b[i]) i++;
    }
    this.counts[i]++;
    this.sum += v;
    this.count++;
  }

  /** observe(values[start + j * stride]) for j < n, with the lookups hoisted out of the loop
   *  (one column of a row-major matrix: a task's probabilities over the winners). */
  observeStrided(values: ArrayLike<number>, start: number, stride: number, n: number): void {
    const b = this.bounds;
    const counts = this.counts;
    const lut = this.lut;
    const scale = this.scale;
    const cells = this.cells;
    const nb = b.length;
    let sum = 0;
    for (let j = 0, at = start; j < n; j++, at += stride) {
      const v = values[at];
      let i: number;
      const cell = (v * scale) | 0;
      if (lut !== undefined && v >= 0 && cell < cells) {
        i = lut[cell];
        if (v > b[i]) i++;
      } else {
        i = 0;
        while (i < nb && v > b[i]) i++;
      }
      counts[i]++;
      sum += v;
    }
    this.sum += sum;
    this.count += n;
  }
}

/** A histogram with fixed upper bounds (`le`), cumulative buckets as Prometheus expects. */
export class FastHistogram extends Collector<HistogramChild> {
  readonly type = 'histogram';
  readonly bounds: Float64Array;
  constructor(name: string, help: string, labelNames: readonly string[], buckets: readonly number[]) {
    super(name, help, labelNames);
    for (let i = 1; i < buckets.length; i++) if (!(buckets[i] > buckets[i - 1])) throw new Error(`${name}: buckets must increase`);
    this.bounds = Float64Array.from(buckets);
  }
  protected make(): HistogramChild {
    return new HistogramChild(this.bounds);
  }
  get(): Collected {
    const values: Sample[] = [];
    for (const { labels, child } of this.children.values()) {
      let acc = 0;
      for (let i = 0; i < this.bounds.length; i++) {
        acc += child.counts[i];
        values.push({ metricName: `${this.name}_bucket`, labels: { ...labels, le: String(this.bounds[i]) }, value: acc });
      }
      values.push({ metricName: `${this.name}_bucket`, labels: { ...labels, le: '+Inf' }, value: child.count });
      values.push({ metricName: `${this.name}_sum`, labels, value: child.sum });
      values.push({ metricName: `${this.name}_count`, labels, value: child.count });
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: 'sum' };
  }
}
