/**
 * What the handlers need from the server: the engine now serving, limits, the in-flight
 * bound, the logger and counters. The server (src/server/server.ts) owns one of these.
 */
import type { Engine } from '../engine/index.js';
import type { FeatureLog } from '../featurelog/writer.js';
import type { Logger } from '../server/log.js';
import type { Limits } from './validate.js';

export interface HandlerContext {
  /** the serving engine, or undefined while the model loads or after shutdown began */
  engine(): Engine | undefined;
  limits: Limits;
  inflight: InflightLimit;
  log: Logger;
  stats: Stats;
  /** feature logging of served calls (--feature-log), when on */
  featureLog?: FeatureLog;
}

/** Counters by RPC and outcome, for tests and logs. */
export class Stats {
  /** engine calls started, by RPC */
  readonly engineCalls: Record<string, number> = {};
  /** finished calls by "rpc status" (e.g. "Rank OK", "Rank INVALID_ARGUMENT") */
  readonly outcomes: Record<string, number> = {};

  engineCall(rpc: string): void {
    this.engineCalls[rpc] = (this.engineCalls[rpc] ?? 0) + 1;
  }
  outcome(rpc: string, code: string): void {
    const key = `${rpc} ${code}`;
    this.outcomes[key] = (this.outcomes[key] ?? 0) + 1;
  }
}

/** A bound on concurrent engine RPCs: when full, new calls fail at once (RESOURCE_EXHAUSTED). */
export class InflightLimit {
  private count = 0;
  constructor(readonly max: number) {
    if (!Number.isInteger(max) || max < 1) throw new Error(`expected an integer >= 1 for max in-flight, got ${max}`);
  }
  tryAcquire(): boolean {
    if (this.count >= this.max) return false;
    this.count++;
    return true;
  }
  release(): void {
    this.count--;
  }
  get current(): number {
    return this.count;
  }
}
