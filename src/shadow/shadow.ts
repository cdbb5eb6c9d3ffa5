/**
 * Shadow traffic (docs/operations.md "Shadow traffic"): a sampled copy of each Rank and
 * RetrieveAndRank call also runs on the shadow version (--shadow-version, a version of the model
 * repository loaded beside the default) after the primary answer has been handed to grpc-js, and
 * the two answers are compared (./compare.ts) into metrics and, for the requests the feature log
 * samples, into the feature log.
 *
 * The primary never waits for it: a shadow run starts on a later turn of the event loop than the
 * answer's callback, never holds a primary in-flight slot or a micro-batch slot, and is dropped
 * (counted by reason, never queued) when `maxInflight` shadow runs are already running, when
 * primary work is in flight or waiting (`primaryBusy`, the server's policy), when the next primary
 * call is expected before the shadow run would end (`idleGapFactor`), or once shutdown has begun.
 */
import { status } from '@grpc/grpc-js';
import type { ModelRegistry } from '../lifecycle/registry.js';
import type { Metrics } from '../metrics/index.js';
import type { FeatureLog } from '../featurelog/writer.js';
import { sampled } from '../featurelog/sampler.js';
import type { Logger } from '../log.js';
import type { Limits } from '../handlers/validate.js';
import { emptyResult, toServiceError } from '../handlers/engine-rpc.js';
import type { CallState, EngineRpc, ShadowTap } from '../handlers/rpc.js';
import { compareResults, type ShadowComparison } from './compare.js';

export interface ShadowOptions {
  /** the repository version that gets the copies (a directory name, a positive integer) */
  version: string;
  /** fraction of Rank and RetrieveAndRank calls copied, 0..1, by request id */
  sample: number;
  /** shadow runs in flight at most; beyond, a copy is dropped (default by backend: cpu 1, cuda 4) */
  maxInflight?: number;
  /** A copy starts only if the next primary call is expected later than this many times the
   *  recent shadow run time (expected from the recent gap between primary arrivals); 0 = no such
   *  check. Default by backend: cpu 2 (a native run cannot be preempted, so a shadow run that a
   *  primary call arrives into delays it), cuda 0. */
  idleGapFactor?: number;
}

export const DEFAULT_SHADOW_MAX_INFLIGHT = { cpu: 1, cuda: 4 } as const;
export const DEFAULT_SHADOW_IDLE_GAP_FACTOR = { cpu: 2, cuda: 0 } as const;

/** The RPCs that are shadowed: those whose answers carry probabilities and prices to compare.
 *  Retrieve is not (its answers have neither, and RetrieveAndRank already runs the shadow's
 *  retrieval tower). */
export const SHADOWED_RPCS: ReadonlySet<string> = new Set(['Rank', 'RetrieveAndRank']);

/** What happened to a sampled copy that was not dropped. */
export type ShadowOutcome = 'compared' | 'failed' | 'unavailable' | 'same_version' | 'primary_fallback';
export type ShadowDropReason = 'inflight_full' | 'primary_busy' | 'no_idle_gap' | 'shutting_down';

/** The salt of the shadow's draw: FNV-1a's offset basis XOR "SHDW", so that the shadowed sample
 *  is independent of the feature log's (which hashes the same id from the plain basis). */
export const SHADOW_SALT = 0x53484457;

/** Whether the shadow copies this request: the feature log's draw (src/featurelog/sampler.ts)
 *  under SHADOW_SALT, so that the two samples are independent. */
export function shadowSampled(requestId: string, rate: number): boolean {
  return sampled(requestId, rate, SHADOW_SALT);
}

export function checkShadowOptions(o: ShadowOptions): void {
  if (!/^[1-9]\d{0,15}$/.test(o.version)) throw new Error(`expected a repository version (a positive integer) for shadow version, got ${JSON.stringify(o.version)}`);
  if (!(o.sample >= 0 && o.sample <= 1)) throw new Error(`expected a fraction in 0..1 for shadow sample, got ${o.sample}`);
  if (o.maxInflight !== undefined && !(Number.isInteger(o.maxInflight) && o.maxInflight >= 1)) throw new Error(`expected an integer >= 1 for shadow max in-flight, got ${o.maxInflight}`);
  if (o.idleGapFactor !== undefined && !(o.idleGapFactor >= 0 && Number.isFinite(o.idleGapFactor))) throw new Error(`expected a number >= 0 for shadow idle gap factor, got ${o.idleGapFactor}`);
}

export interface ShadowDeps {
  models: ModelRegistry;
  limits: Limits;
  log: Logger;
  metrics?: Metrics;
  featureLog?: FeatureLog;
  /** true while primary work is in flight or waiting: copies are dropped then (the policy is the
   *  server's, by backend) */
  primaryBusy(): boolean;
  /** the serving backend, for the default of maxInflight */
  backend(): 'cpu' | 'cuda' | undefined;
  /** test hook: called when a shadow run is about to be submitted to the engine */
  onStart?(rpc: string, requestId: string): void;
}

/** Counters for tests and logs (the metrics have the same numbers). */
export interface ShadowStats {
  sampled: number;
  started: number;
  outcomes: Partial<Record<ShadowOutcome, number>>;
  dropped: Partial<Record<ShadowDropReason, number>>;
}

type Done = NonNullable<CallState['done']>;
type Request = { requestId: string };

/** at most one `shadow_failed` line per this many ms */
const FAIL_LOG_MS = 10_000;

export class Shadow implements ShadowTap {
  readonly version: string;
  readonly sample: number;
  readonly stats: ShadowStats = { sampled: 0, started: 0, outcomes: {}, dropped: {} };
  private running = 0;
  private closed = false;
  private idle: (() => void)[] = [];
  private lastFailLog = 0;
  /** when the last primary engine call arrived (performance.now() ms), and the moving average
   *  of the gaps between arrivals */
  private lastArrival = -Infinity;
  private gapMs = Infinity;
  /** moving average of a shadow run's wall time, ms (0 until one has run) */
  private runMs = 0;

  constructor(
    private readonly opts: ShadowOptions,
    private readonly deps: ShadowDeps,
  ) {
    checkShadowOptions(opts);
    this.version = opts.version;
    this.sample = opts.sample;
  }

  /** shadow runs in flight */
  get inflight(): number {
    return this.running;
  }

  get maxInflight(): number {
    return this.opts.maxInflight ?? DEFAULT_SHADOW_MAX_INFLIGHT[this.deps.backend() ?? 'cpu'];
  }

  /** the moving average of a shadow run's wall time, ms (0 until one has run): the idle-gap test
   *  wants the next primary call no sooner than idleGapFactor times this */
  get runMsEstimate(): number {
    return this.runMs;
  }

  get idleGapFactor(): number {
    return this.opts.idleGapFactor ?? DEFAULT_SHADOW_IDLE_GAP_FACTOR[this.deps.backend() ?? 'cpu'];
  }

  /** A primary engine call arrived (every one, before admission): a subtraction and a multiply. */
  arrived(): void {
    const now = performance.now();
    const gap = now - this.lastArrival;
    this.lastArrival = now;
    this.gapMs = this.gapMs === Infinity ? gap : 0.8 * this.gapMs + 0.2 * gap;
  }

  /** Is the next primary call expected before a shadow run started now would end (with margin)? */
  private noIdleGap(): boolean {
    const f = this.idleGapFactor;
    if (f === 0 || this.runMs === 0 || this.gapMs === Infinity) return false;
    const expectedIn = this.gapMs - (performance.now() - this.lastArrival);
    return expectedIn < f * this.runMs;
  }

  /**
   * Called after a primary answer was handed to grpc-js. For a sampled call, the copy starts
   * once `afterSent` says the call's status has been sent (grpc-js sends it after writing the
   * answer), on the next turn, unless it is dropped then.
   */
  offer<Req extends Request>(rpc: EngineRpc<Req>, request: Req, done: Done | undefined, afterSent?: (request: object, fn: () => void) => void): void {
    this.schedule(rpc, request.requestId, request, () => request, done, afterSent);
  }

  /** offer() for a call served from its wire bytes (docs/wire.md): the JS view of the request is
   *  decoded only for a sampled copy, when it starts. */
  offerWire<Req extends Request>(rpc: EngineRpc<Req>, requestId: string, bytes: Buffer, done: Done | undefined, afterSent?: (request: object, fn: () => void) => void): void {
    this.schedule(rpc, requestId, bytes, () => rpc.decode(bytes), done, afterSent);
  }

  /** `key`: the call's request message as grpc-js delivered it (what afterSent knows the call by). */
  private schedule<Req extends Request>(rpc: EngineRpc<Req>, requestId: string, key: object, view: () => Req, done: Done | undefined, afterSent?: (request: object, fn: () => void) => void): void {
    if (!done || !SHADOWED_RPCS.has(rpc.name) || !shadowSampled(requestId, this.sample)) return;
    this.stats.sampled++;
    const go = () => void setImmediate(() => this.start(rpc, view(), done));
    if (afterSent) afterSent(key, go);
    else go();
  }

  private start<Req extends Request>(rpc: EngineRpc<Req>, request: Req, done: Done): void {
    if (done.fallback) return this.outcome(rpc.name, 'primary_fallback');
    if (done.version === this.version) return this.outcome(rpc.name, 'same_version');
    if (this.closed) return this.drop('shutting_down');
    if (this.running >= this.maxInflight) return this.drop('inflight_full');
    if (this.deps.primaryBusy()) return this.drop('primary_busy');
    if (this.noIdleGap()) return this.drop('no_idle_gap');
    const lease = this.deps.models.tryAcquireShadow();
    if (!lease) return this.outcome(rpc.name, 'unavailable');
    this.running++;
    this.stats.started++;
    void this.run(rpc, request, done, lease).finally(() => {
      lease.release();
      if (--this.running === 0) for (const f of this.idle.splice(0)) f();
    });
  }

  private async run<Req extends Request>(rpc: EngineRpc<Req>, request: Req, done: Done, lease: { engine: import('../engine/index.js').Engine; version: string }): Promise<void> {
    const t0 = performance.now();
    try {
      const config = lease.engine.config;
      const er = rpc.validate(request, config, this.deps.limits);
      this.deps.onStart?.(rpc.name, request.requestId);
      const pending = rpc.run(lease.engine, er, Infinity); // no caller waits on a shadow run
      const result = pending ? await pending : emptyResult();
      const seconds = (performance.now() - t0) / 1000;
      const cmp = compareResults(done.result, result, done.config.tasks, config.tasks);
      this.outcome(rpc.name, 'compared');
      this.deps.metrics?.shadowCompared(rpc.name, cmp, seconds);
      this.deps.featureLog?.recordShadow(request.requestId, {
        rpc: rpc.name,
        requestId: request.requestId,
        model: { version: done.version },
        shadow: { version: lease.version, outcome: 'compared', ...summary(cmp), engineUs: Math.round(result.timings.total), winners: winnersOf(result, config.tasks.length) },
      });
    } catch (e) {
      // the shadow version refused the request (another config) or its engine failed
      this.outcome(rpc.name, 'failed');
      const err = toServiceError(e);
      const now = Date.now();
      if (now - this.lastFailLog >= FAIL_LOG_MS) {
        this.lastFailLog = now;
        this.deps.log.warn('shadow_failed', { rpc: rpc.name, version: lease.version, requestId: request.requestId, code: status[err.code], details: err.details });
      }
      this.deps.featureLog?.recordShadow(request.requestId, {
        rpc: rpc.name,
        requestId: request.requestId,
        model: { version: done.version },
        shadow: { version: lease.version, outcome: 'failed', code: status[err.code], details: err.details },
      });
    } finally {
      const ms = performance.now() - t0;
      this.runMs = this.runMs === 0 ? ms : 0.8 * this.runMs + 0.2 * ms;
    }
  }

  private outcome(rpc: string, o: ShadowOutcome): void {
    this.stats.outcomes[o] = (this.stats.outcomes[o] ?? 0) + 1;
    this.deps.metrics?.shadowRequests.child({ rpc, outcome: o }).inc();
  }

  private drop(reason: ShadowDropReason): void {
    this.stats.dropped[reason] = (this.stats.dropped[reason] ?? 0) + 1;
    this.deps.metrics?.shadowDropped.child({ reason }).inc();
  }

  /** No new shadow runs; resolves when the running ones have ended (shutdown). */
  close(): Promise<void> {
    this.closed = true;
    return this.running === 0 ? Promise.resolve() : new Promise((resolve) => this.idle.push(resolve));
  }
}

/** The comparison as the feature log writes it (docs/feature-log.md "Shadow records"). */
function summary(c: ShadowComparison) {
  return { k: c.k, common: c.common, overlap: c.overlap, deltaP: c.deltaP, priceShift: c.priceShift ?? null, priced: c.priced };
}

/** The shadow's winners: ids as strings, probabilities in its config's task order. */
function winnersOf(r: import('../engine/index.js').NativeResult, tasks: number) {
  const out = [];
  for (let i = 0; i < r.adIds.length; i++) {
    out.push({
      adId: String(r.adIds[i]),
      advertiserId: String(r.advertisers[i]),
      utility: r.scores[i],
      taskProbabilities: r.probs.length > 0 ? Array.from(r.probs.subarray(i * tasks, (i + 1) * tasks)) : [],
      price: r.prices.length > 0 ? r.prices[i] : null,
    });
  }
  return out;
}
