/**
 * What the handlers need from the server: the engine now serving, limits, the in-flight
 * bound, the logger and counters. The server (src/server/server.ts) owns one of these.
 */
import type { ServerUnaryCall, status } from '@grpc/grpc-js';
import type { Engine } from '../engine/index.js';
import type { ModelLeases } from '../lifecycle/registry.js';
import type { CallState, ShadowTap } from './rpc.js';
import type { Metrics } from '../metrics/index.js';
import type { FeatureLog } from '../featurelog/writer.js';
import type { Logger } from '../log.js';
import type { Limits } from './validate.js';
import type { RecentLatency } from '../fallback/recent-latency.js';
import type { Batcher } from '../batcher/index.js';

export interface HandlerContext {
  /** the default version's engine, or undefined while no version is ready. Dispatch a native
   *  call on it in the same turn (a swapped-out version is freed once its runs end); to hold a
   *  version across awaits, take a lease from `models`. */
  engine(): Engine | undefined;
  /** leases on model versions by pin ('' = the default); see src/lifecycle/registry.ts */
  models: ModelLeases;
  limits: Limits;
  inflight: InflightLimit;
  /** a request whose engine run is expected to take at most this many µs runs on the JS thread
   *  that received it instead of a request thread (--inline-max-us; 0 = never; CPU backend only) */
  inlineMaxUs: number;
  /** a CPU run expected to take at most this many µs runs on the receiving thread while that
   *  thread's calls do not overlap (--inline-idle-max-us; 0 = never; InflightLimit.quiet) */
  inlineIdleMaxUs: number;
  log: Logger;
  stats: Stats;
  /** the model path's recent latency by RPC and size (fallback's deadline trigger) */
  latency: RecentLatency;
  /** the micro-batcher for the engine now serving (src/batcher/); absent = every request alone */
  batcher?: Batcher;
  /** called once per engine RPC answered (metrics, access log); absent = nothing to record */
  observe?: EngineCallObserver;
  /** the server's metrics, for handlers that record their own (admin: adrank_ad_state_updates_total) */
  metrics?: Metrics;
  /** feature logging of served calls (--feature-log), when on */
  featureLog?: FeatureLog;
  /** an engine hit a sticky device error (its context is poisoned): the server replaces it
   *  (src/lifecycle/failover.ts); absent = nothing is done */
  deviceFailed?(engine: Engine, version: string, error: Error): void;
  /** shadow traffic (--shadow-version), when on: offered each answered call (src/shadow/) */
  shadow?: ShadowTap;
  /** runs a function once the status of the call with this request message has been sent
   *  (src/server/drain.ts CallTracker.afterSent) */
  afterSent?(request: object, fn: () => void): void;
}

/** An engine RPC finished with `code`; `state.done` is set when the engine answered. `call.request`
 *  is the request bytes (docs/wire.md); `state.requestId` is its id once parsed. */
export type EngineCallObserver = (rpc: string, code: status, call: ServerUnaryCall<unknown, unknown>, state: CallState) => void;

/** Counters by RPC and outcome, for tests and logs. */
export class Stats {
  /** engine calls started, by RPC */
  readonly engineCalls: Record<string, number> = {};
  /** finished calls by "rpc status" (e.g. "Rank OK", "Rank INVALID_ARGUMENT") */
  readonly outcomes: Record<string, number> = {};
  /** fallback answers by reason (ENGINE_ERROR, DEADLINE) */
  readonly fallbacks: Record<string, number> = {};
  /** engine runs made on the receiving JS thread (--inline-max-us) */
  inlineRuns = 0;

  engineCall(rpc: string): void {
    this.engineCalls[rpc] = (this.engineCalls[rpc] ?? 0) + 1;
  }
  fallback(reason: string): void {
    this.fallbacks[reason] = (this.fallbacks[reason] ?? 0) + 1;
  }
  /** "rpc code" keys, made once each (not a new string per call) */
  private readonly keys = new Map<string, Map<string, string>>();
  outcome(rpc: string, code: string): void {
    let byCode = this.keys.get(rpc);
    if (!byCode) this.keys.set(rpc, (byCode = new Map()));
    let key = byCode.get(code);
    if (key === undefined) byCode.set(code, (key = `${rpc} ${code}`));
    this.outcomes[key] = (this.outcomes[key] ?? 0) + 1;
  }
}

/** Idle inline runs (--inline-idle-max-us, docs/wire.md "Idle inline runs") are for a thread whose
 *  calls do not overlap: one that starts within IDLE_GAP_MS of the last one's end was queued behind
 *  it (an inline run holds the event loop, so the overlap shows only this way), and for
 *  OVERLAP_WINDOW_MS after calls overlapped, every run goes to the engine threads, side by side. */
export const IDLE_GAP_MS = 0.1;
export const OVERLAP_WINDOW_MS = 1000;

/** A bound on concurrent engine RPCs: when full, new calls fail at once (RESOURCE_EXHAUSTED). */
export class InflightLimit {
  private count = 0;
  /** performance.now() when the count last fell to 0 */
  private idleSince = 0;
  /** performance.now() when calls last overlapped here */
  private lastOverlap = -Infinity;
  constructor(readonly max: number) {
    if (!Number.isInteger(max) || max < 1) throw new Error(`expected an integer >= 1 for max in-flight, got ${max}`);
  }
  tryAcquire(): boolean {
    if (this.count >= this.max) return false;
    if (++this.count >= 2) this.lastOverlap = performance.now();
    return true;
  }
  release(): void {
    if (--this.count === 0) this.idleSince = performance.now();
  }
  get current(): number {
    return this.count;
  }
  /** Whether the call that started at `started` may run on this thread as an idle one: the only
   *  call in flight here, not queued behind the last, and no calls overlapped here for
   *  OVERLAP_WINDOW_MS (a call found queued counts as an overlap). */
  quiet(started: number): boolean {
    if (this.count !== 1) return false;
    if (started - this.idleSince < IDLE_GAP_MS) {
      this.lastOverlap = started;
      return false;
    }
    return started - this.lastOverlap >= OVERLAP_WINDOW_MS;
  }
}
