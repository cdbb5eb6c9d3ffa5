/**
 * Device failover (docs/cuda.md "Errors"): a sticky CUDA error (illegal address, ECC, a launch
 * failure) poisons the engine's device context, and every later request on it would fail the same
 * way. The first such error on an engine takes the server out of rotation (health NOT_SERVING),
 * rebuilds that version on the CPU backend from the bundle already in memory, puts it in the
 * engine's place, and reports SERVING again. Meanwhile requests get fallback answers
 * (ENGINE_ERROR) where they allow them. The failed engine is freed once its runs have ended.
 */
import type { Engine } from '../engine/index.js';
import type { Metrics } from '../metrics/index.js';
import type { Logger } from '../log.js';
import type { ModelRegistry } from './registry.js';

export interface FailoverOptions {
  registry: ModelRegistry;
  log: Logger;
  /** builds and prepares (ad state, fallback plan, warm-up) the replacement of a failed engine */
  rebuild(failed: Engine, version: string): Promise<Engine>;
  /** out of rotation while rebuilding (false), back when done (true) */
  serving(ok: boolean): void;
  metrics?: Metrics;
  /** how long the failed engine is kept after the swap for requests that already hold it */
  keepFailedMs?: number;
}

export class DeviceFailover {
  private readonly failed = new WeakSet<Engine>();
  private running: Promise<void> = Promise.resolve();

  constructor(private readonly o: FailoverOptions) {}

  /** Called for every sticky error; acts once per engine, one rebuild at a time. */
  onStickyError(engine: Engine, version: string, error: Error): void {
    if (this.failed.has(engine)) return;
    const v = this.o.registry.get(version);
    if (!v || v.engine !== engine) return; // already replaced, or retired
    this.failed.add(engine);
    this.o.log.error('device_failed', { version, backend: engine.backend, device: engine.description, error, action: 'rebuilding on the CPU backend' });
    this.running = this.running.then(() => this.replace(engine, version));
  }

  /** Resolves when the failovers begun so far have finished (tests, shutdown). */
  settled(): Promise<void> {
    return this.running;
  }

  private async replace(engine: Engine, version: string): Promise<void> {
    const v = this.o.registry.get(version);
    if (!v || v.engine !== engine) return;
    const wasDefault = this.o.registry.defaultEngine() === engine;
    if (wasDefault) this.o.serving(false);
    const t0 = performance.now();
    try {
      const next = await this.o.rebuild(engine, version);
      const old = this.o.registry.replaceEngine(v, next);
      this.o.metrics?.deviceFailovers.inc({ from: engine.backend, outcome: 'rebuilt' });
      this.o.log.warn('device_failover_done', { version, backend: next.backend, device: next.description, ms: Math.round(performance.now() - t0) });
      if (old) this.free(old, version);
      if (wasDefault) this.o.serving(true);
    } catch (e) {
      // the version keeps its failed engine and health stays NOT_SERVING: requests get fallback
      // answers (ENGINE_ERROR) where they allow them, and the balancer sends traffic elsewhere
      this.o.metrics?.deviceFailovers.inc({ from: engine.backend, outcome: 'failed' });
      this.o.log.error('device_failover_failed', { version, error: e });
    }
  }

  private free(old: Engine, version: string): void {
    const until = Date.now() + (this.o.keepFailedMs ?? 30_000);
    const poll = setInterval(() => {
      if (Date.now() < until || old.inflight() > 0) return;
      clearInterval(poll);
      try {
        old.dispose();
      } catch (e) {
        this.o.log.warn('dispose_failed', { version, error: e });
      }
    }, 100);
    poll.unref();
  }
}
