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

export class HistogramChild {
  /** counts[i]: observations in (bounds[i-1], bounds[i]]; the last slot is +Inf */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;
  constructor(private readonly bounds: Float64Array) {
    this.counts = new Float64Array(bounds.length + 1);
  }
  observe(v: number): void {
    const b = this.bounds;
    let i = 0;
    while (i < b.length && v > b[i]) i++;
    this.counts[i]++;
    this.sum += v;
    this.count++;
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
