/**
 * Dynamic micro-batching (docs/batching.md): concurrent Rank and RetrieveAndRank requests wait
 * in one bounded FIFO queue and run together as one engine call (Engine.runBatch), where the
 * request sides are computed together and every candidate of the batch goes through one forward,
 * so the weights are streamed once per batch instead of once per request. Each request keeps its
 * own answer, bit for bit what it gets alone (test/57.batching).
 *
 * Policy (after Triton's dynamic batcher):
 *   - a batch is sent when the engine has room (at most `maxInflightBatches` batches running: one
 *     per CUDA stream, one on the CPU) and either that room is free now (`dispatchWhenIdle`, on by
 *     default: requests wait for company only while every slot is busy, and a slot that frees
 *     takes what has queued meanwhile), the queued candidates reach `maxCandidates`, or the oldest
 *     request has waited `maxDelayUs`;
 *   - a batch takes requests in arrival order while their candidates fit `maxCandidates`; a
 *     request larger than that runs alone; nothing overtakes the head of the queue, so a big
 *     request is never starved and small ones wait for at most the batches ahead of them;
 *   - the queue is bounded (`maxQueue` requests): a full queue refuses at once
 *     (RESOURCE_EXHAUSTED);
 *   - a request whose deadline cannot be met (deadline ≤ now + the fastest of the last 16
 *     batches) is refused when its batch forms, without engine work (DEADLINE_EXCEEDED);
 *   - a cancelled call leaves the queue at once (CANCELLED).
 */
import { status } from '@grpc/grpc-js';
import type { Engine, EngineError, NativeResult, NativeWireRequest } from '../engine/index.js';
import { RequestError } from '../handlers/validate.js';

/** Engine ops a batch carries (the addon's runBatch codes). */
export const BATCH_OP = { rank: 0, retrieveAndRank: 2 } as const;
export type BatchOp = (typeof BATCH_OP)[keyof typeof BATCH_OP];

export interface BatcherOptions {
  /** candidates per batch (a RetrieveAndRank counts its retrieve count) */
  maxCandidates: number;
  /** the longest the oldest queued request waits for company; 0 = no batching */
  maxDelayUs: number;
  /** requests waiting at most; more → RESOURCE_EXHAUSTED */
  maxQueue: number;
  /** batches running at once (default 1; src/batcher/index.ts sets one per CUDA stream: a batch
   *  keeps the CPU backend's pool busy while the next forms, a GPU has a stream per batch) */
  maxInflightBatches?: number;
  /** A free slot takes the head of the queue at once instead of letting it wait `maxDelayUs` for
   *  company (default true): company can only come from requests that arrive while the slots are
   *  busy, so waiting with a slot free adds latency at low load and nothing under load. */
  dispatchWhenIdle?: boolean;
}

/** What the batcher needs from a call. */
export interface BatchCall {
  /** ms since the epoch; Infinity = none */
  deadline: number;
  /** registers a callback for the call's cancellation (optional) */
  onCancel?(fn: () => void): void;
}

interface Pending {
  engine: Engine;
  op: BatchOp;
  bundle: Uint8Array | NativeWireRequest;
  size: number;
  deadline: number;
  enqueued: number;
  /** batches dispatched before this request was queued (fairness test) */
  seqAtEnqueue: number;
  done: boolean;
  resolve(r: NativeResult): void;
  reject(e: unknown): void;
}

/** Read-only numbers for metrics and tests. */
export interface BatcherStats {
  /** requests waiting now */
  queueDepth: number;
  /** batches running now */
  inflightBatches: number;
  /** batches sent so far */
  batches: number;
  /** requests sent in batches so far */
  requests: number;
  /** candidates of the last batch sent */
  lastBatchCandidates: number;
  /** requests of the last batch sent */
  lastBatchRequests: number;
  /** refused: queue full, deadline, cancelled */
  refused: { queueFull: number; deadline: number; cancelled: number };
}

const RECENT = 16;

export class Batcher {
  private readonly queue: Pending[] = [];
  private queuedCandidates = 0;
  private inflight = 0;
  private timer: NodeJS.Timeout | undefined;
  /** run times (ms) of the last RECENT batches; the fastest is a lower bound for the next one */
  private readonly recentMs: number[] = [];
  private runMs = 0;
  private readonly s: BatcherStats = {
    queueDepth: 0,
    inflightBatches: 0,
    batches: 0,
    requests: 0,
    lastBatchCandidates: 0,
    lastBatchRequests: 0,
    refused: { queueFull: 0, deadline: 0, cancelled: 0 },
  };
  /** called with every batch as it is sent (tests, metrics) */
  onBatch?: (b: { seq: number; candidates: number; requests: number; waitedBatches: number[] }) => void;

  constructor(readonly options: BatcherOptions) {
    for (const [k, min] of [['maxCandidates', 1], ['maxDelayUs', 0], ['maxQueue', 1], ['maxInflightBatches', 1]] as const) {
      const v = options[k] ?? min;
      if (!Number.isInteger(v) || v < min) throw new Error(`expected an integer >= ${min} for batch ${k}, got ${v}`);
    }
  }

  /** Whether requests go through the batcher (max delay > 0). */
  get enabled(): boolean {
    return this.options.maxDelayUs > 0;
  }

  /**
   * Whether a request of `size` candidates should be batched: batching is on, the request needs
   * engine work, and it fills less than half a batch. A bigger one already amortises the weights
   * over its own candidates, so it runs at once on its own, as with batching off (waiting in the
   * queue could only delay it and serialise it behind other batches).
   */
  wants(size: number): boolean {
    return this.enabled && size > 0 && 2 * size < this.options.maxCandidates;
  }

  /** Queue depth, batch sizes and refusals (the accessor for metrics). */
  stats(): Readonly<BatcherStats> {
    this.s.queueDepth = this.queue.length;
    this.s.inflightBatches = this.inflight;
    return this.s;
  }

  /** Queues one packed request; resolves to its own result. */
  submit(engine: Engine, op: BatchOp, bundle: Uint8Array | NativeWireRequest, size: number, call: BatchCall): Promise<NativeResult> {
    if (this.queue.length >= this.options.maxQueue) {
      this.s.refused.queueFull++;
      return Promise.reject(new RequestError(status.RESOURCE_EXHAUSTED, `batch queue full (${this.options.maxQueue} requests waiting)`));
    }
    return new Promise<NativeResult>((resolve, reject) => {
      const p: Pending = {
        engine,
        op,
        bundle,
        size: Math.max(1, size),
        deadline: call.deadline,
        enqueued: performance.now(),
        seqAtEnqueue: this.s.batches,
        done: false,
        resolve,
        reject,
      };
      this.queue.push(p);
      this.queuedCandidates += p.size;
      call.onCancel?.(() => this.cancel(p));
      this.pump();
    });
  }

  private cancel(p: Pending): void {
    const i = this.queue.indexOf(p);
    if (i < 0 || p.done) return; // already sent: the handler drops the answer
    this.queue.splice(i, 1);
    this.queuedCandidates -= p.size;
    this.s.refused.cancelled++;
    this.settle(p, new RequestError(status.CANCELLED, 'call cancelled while queued for a batch'));
    this.pump();
  }

  private settle(p: Pending, e: unknown, r?: NativeResult): void {
    if (p.done) return;
    p.done = true;
    if (r) p.resolve(r);
    else p.reject(e);
  }

  /** Sends batches while the engine has room and a batch is due; otherwise arms one timer. With
   *  `dispatchWhenIdle` (the default) nothing ever waits on a timer: a request finds a free slot at
   *  once or waits for one, and every batch that ends pumps the queue. */
  private pump(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const maxInflight = this.options.maxInflightBatches ?? 1;
    const dispatchWhenIdle = this.options.dispatchWhenIdle ?? true;
    while (this.queue.length > 0 && this.inflight < maxInflight) {
      const head = this.queue[0];
      const waitedUs = (performance.now() - head.enqueued) * 1000;
      if (!dispatchWhenIdle && this.queuedCandidates < this.options.maxCandidates && waitedUs < this.options.maxDelayUs) {
        // timers have 1 ms granularity: a shorter wait is rounded up to one (no polling per turn)
        const leftMs = (this.options.maxDelayUs - waitedUs) / 1000;
        this.timer = setTimeout(() => this.pump(), Math.max(1, Math.ceil(leftMs))).unref();
        return;
      }
      this.dispatch();
    }
  }

  private dispatch(): void {
    const nowEpoch = Date.now();
    const engine = this.queue[0].engine;
    const batch: Pending[] = [];
    let candidates = 0;
    while (this.queue.length > 0) {
      const p = this.queue[0];
      if (p.engine !== engine) break; // a new model: its requests form their own batches
      if (batch.length > 0 && candidates + p.size > this.options.maxCandidates) break;
      this.queue.shift();
      this.queuedCandidates -= p.size;
      if (p.deadline <= nowEpoch + this.runMs) {
        this.s.refused.deadline++;
        this.settle(p, new RequestError(status.DEADLINE_EXCEEDED, `deadline cannot be met: ${Math.max(0, p.deadline - nowEpoch).toFixed(0)} ms left, a batch takes at least ${this.runMs.toFixed(1)} ms`));
        continue;
      }
      batch.push(p);
      candidates += p.size;
    }
    if (batch.length === 0) return;
    const seq = this.s.batches++;
    this.s.requests += batch.length;
    this.s.lastBatchCandidates = candidates;
    this.s.lastBatchRequests = batch.length;
    this.onBatch?.({ seq, candidates, requests: batch.length, waitedBatches: batch.map((p) => seq - p.seqAtEnqueue) });
    for (const p of batch) p.done = true; // sent: a cancel now only drops the answer
    this.inflight++;
    const t0 = performance.now();
    const ops = Uint8Array.from(batch, (p) => p.op);
    engine.runBatch(ops, batch.map((p) => p.bundle)).then(
      (results) => {
        this.recentMs.push(performance.now() - t0);
        if (this.recentMs.length > RECENT) this.recentMs.shift();
        this.runMs = Math.min(...this.recentMs);
        batch.forEach((p, i) => {
          const r = results[i] as NativeResult | EngineError;
          if (r instanceof Error) p.reject(r);
          else {
            r.batchWaitUs = (t0 - p.enqueued) * 1000; // the wait in this queue, apart from the engine's queue time
            p.resolve(r);
          }
        });
        this.finished();
      },
      (e: unknown) => {
        for (const p of batch) p.reject(e);
        this.finished();
      },
    );
  }

  private finished(): void {
    this.inflight--;
    this.pump();
  }
}
