/**
 * The model versions a server knows (docs/operations.md "Model versions"): their states, which
 * one is the default, and leases that pin a request to one version for its whole run.
 *
 * A version is LOADING (being read, validated, warmed), READY (serving; the highest READY one is
 * the default), FAILED (with the loader's message) or UNLOADING (no new requests; freed once the
 * requests that hold it have ended). In-flight requests finish on the version they started on:
 * each one holds a lease, and a version is disposed (device memory included) only when no lease
 * and no native run is left on it.
 */
import { status } from '@grpc/grpc-js';
import type { Engine } from '../engine/index.js';
import { RequestError } from '../handlers/validate.js';
import type { Logger } from '../log.js';

export type VersionState = 'LOADING' | 'READY' | 'FAILED' | 'UNLOADING';

/** The stand-in version of `--fallback-only` (an engine of the ad tables only). Not a number, so
 *  any model version that becomes READY outranks it and takes over as the default. */
export const FALLBACK_ONLY_VERSION = 'fallback-only';

/** A request's hold on one version: the engine it runs on and the version label it reports. */
export interface Lease {
  engine: Engine;
  version: string;
  release(): void;
}

/** What the handlers need: a lease by pin ('' = the default) and the default's label. */
export interface ModelLeases {
  acquire(pin: string): Lease;
  defaultVersion(): string | undefined;
}

export class ModelVersion {
  state: VersionState = 'LOADING';
  reason = '';
  engine: Engine | undefined;
  /** ms since the epoch when the load finished (READY or FAILED) */
  loadedAt = 0;
  /** load + validate + warm-up */
  loadMs = 0;
  sha256 = '';
  /** the file's size and mtime when it was loaded (a changed file of a FAILED version is retried) */
  fileStamp = '';
  refs = 0;
  private drained: (() => void) | undefined;

  constructor(
    /** the directory name (repository) or config.version (--bundle); what requests pin */
    readonly version: string,
    readonly path: string,
  ) {}

  /** For ordering: the directory number, else -1. */
  get number(): number {
    return /^\d+$/.test(this.version) ? Number(this.version) : -1;
  }

  /** @internal */
  hold(): void {
    this.refs++;
  }
  /** @internal */
  unhold(): void {
    if (--this.refs === 0 && this.drained) this.drained();
  }
  /** Resolves when no lease is held. */
  whenUnheld(): Promise<void> {
    if (this.refs === 0) return Promise.resolve();
    return new Promise((resolve) => (this.drained = resolve));
  }
}

export interface RegistryHooks {
  /** a version stops taking requests (before it drains): detach it from the live ad state */
  onRetire?(engine: Engine): void;
  /** the set of READY versions or the default changed */
  onChange?(): void;
  /** a version failed to load (the metric adrank_model_load_failures_total) */
  onFailed?(v: ModelVersion): void;
}

/** How long retiring waits for native runs after the leases are gone (they end on their own). */
const NATIVE_RUN_WAIT_MS = 60_000;

export class ModelRegistry implements ModelLeases {
  private readonly versions = new Map<string, ModelVersion>();
  private current: ModelVersion | undefined;

  constructor(
    private readonly log: Logger,
    private readonly hooks: RegistryHooks = {},
    /** --shadow-version: held out of the default while another version is READY (it gets a
     *  sampled copy of the traffic instead, src/shadow/); pins to it still work */
    readonly shadowVersion?: string,
  ) {}

  acquire(pin: string): Lease {
    const v = pin === '' ? this.current : this.versions.get(pin);
    if (!v || v.state !== 'READY' || !v.engine) {
      if (pin === '' || this.ready().length === 0) throw new RequestError(status.UNAVAILABLE, 'no model version is loaded yet (health: NOT_SERVING)');
      throw new RequestError(status.NOT_FOUND, `model version ${JSON.stringify(pin)} is not loaded (loaded: ${this.ready().map((r) => r.version).join(', ')})`);
    }
    v.hold();
    let released = false;
    return {
      engine: v.engine,
      version: v.version,
      release: () => {
        if (released) return;
        released = true;
        v.unhold();
      },
    };
  }

  defaultVersion(): string | undefined {
    return this.current?.version;
  }

  /** A lease on the shadow version when it is READY; undefined otherwise (the shadow run is then
   *  counted as unavailable by the caller). */
  tryAcquireShadow(): Lease | undefined {
    const pin = this.shadowVersion;
    if (pin === undefined) return undefined;
    const v = this.versions.get(pin);
    if (!v || v.state !== 'READY' || !v.engine) return undefined;
    return this.acquire(pin);
  }
  defaultEngine(): Engine | undefined {
    return this.current?.engine;
  }
  get(version: string): ModelVersion | undefined {
    return this.versions.get(version);
  }
  all(): ModelVersion[] {
    return [...this.versions.values()].sort((a, b) => b.number - a.number || (a.version < b.version ? -1 : 1));
  }
  /** READY versions, highest first */
  ready(): ModelVersion[] {
    return this.all().filter((v) => v.state === 'READY');
  }

  /** A version starts loading (or loads again after failing). */
  loading(version: string, path: string): ModelVersion {
    const v = new ModelVersion(version, path);
    this.versions.set(version, v);
    this.log.info('model_version_loading', { version, path });
    return v;
  }

  /** A loaded, validated and warmed version starts serving; the highest READY is the default. */
  markReady(v: ModelVersion, engine: Engine, loadMs: number): void {
    v.engine = engine;
    v.state = 'READY';
    v.loadedAt = Date.now();
    v.loadMs = loadMs;
    v.sha256 = engine.bundle.sha256;
    const c = engine.config;
    this.log.info('model_version_ready', { version: v.version, model: c.name, configVersion: c.version, ads: engine.numAds, backend: engine.backend, device: engine.description, sha256: v.sha256, loadMs });
    this.pickDefault();
    this.hooks.onChange?.();
  }

  /**
   * Puts `engine` in place of `v`'s (a device failover: same version, same bundle, another
   * backend). Leases taken before keep the engine they hold; returns it for the caller to free.
   */
  replaceEngine(v: ModelVersion, engine: Engine): Engine | undefined {
    const old = v.engine;
    v.engine = engine;
    this.log.info('model_version_engine_replaced', { version: v.version, backend: engine.backend, device: engine.description, previous: old?.backend ?? null });
    this.hooks.onChange?.();
    return old;
  }

  markFailed(v: ModelVersion, reason: string, loadMs: number): void {
    v.state = 'FAILED';
    v.reason = reason;
    v.loadedAt = Date.now();
    v.loadMs = loadMs;
    this.log.error('model_load_failed', { version: v.version, path: v.path, reason, serving: this.current?.version ?? null });
    this.hooks.onFailed?.(v);
  }

  /** Forgets a version that is not serving (a FAILED one whose directory went away). */
  forget(v: ModelVersion): void {
    if (v.state === 'READY' || v.state === 'UNLOADING') throw new Error(`cannot forget ${v.state} version ${v.version}`);
    this.versions.delete(v.version);
  }

  /**
   * Stops routing requests to `v`, waits for its leases and native runs to end, then disposes it
   * and forgets it. Resolves when its memory is freed, or after `waitMs` with the engine still
   * running (it is then disposed when its runs end, and returned so that a process about to exit
   * knows native work is left).
   */
  async retire(v: ModelVersion, why: string, waitMs = NATIVE_RUN_WAIT_MS): Promise<Engine | undefined> {
    if (v.state !== 'READY') return undefined;
    v.state = 'UNLOADING';
    const engine = v.engine!;
    this.hooks.onRetire?.(engine);
    this.log.info('model_version_unloading', { version: v.version, why, leases: v.refs });
    this.pickDefault();
    this.hooks.onChange?.();
    const until = Date.now() + waitMs;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([v.whenUnheld(), new Promise<void>((r) => (timer = setTimeout(r, waitMs)))]);
    clearTimeout(timer);
    await untilIdle([engine], until);
    const free = () => {
      try {
        engine.dispose();
        this.log.info('model_version_unloaded', { version: v.version });
      } catch (e) {
        this.log.error('dispose_failed', { version: v.version, error: e });
      }
      v.engine = undefined;
      this.versions.delete(v.version);
    };
    if (v.refs === 0 && engine.inflight() === 0) {
      free();
      return undefined;
    }
    this.log.warn('dispose_deferred', { version: v.version, leases: v.refs, inflight: engine.inflight(), waitedMs: waitMs });
    const poll = setInterval(() => {
      if (v.refs > 0 || engine.inflight() > 0) return;
      clearInterval(poll);
      free();
    }, 20);
    poll.unref();
    return engine;
  }

  /** Retires every version (shutdown), waiting at most `waitMs`; returns the engines whose runs
   *  outlasted it. */
  async close(waitMs = NATIVE_RUN_WAIT_MS): Promise<Engine[]> {
    // versions already being retired (a reload, or a front-end thread mirroring the owner's
    // retirement) still count: their runs in flight hold the exit like the others'
    const until = Date.now() + waitMs;
    const retiring = this.all().filter((v) => v.state === 'UNLOADING' && v.engine);
    const left = await Promise.all(this.all().map((v) => this.retire(v, 'shutdown', waitMs)));
    await untilIdle(retiring.flatMap((v) => (v.engine ? [v.engine] : [])), until);
    const stillRunning = retiring.filter((v) => v.engine && v.engine.inflight() > 0);
    for (const v of stillRunning) this.log.warn('dispose_deferred', { version: v.version, leases: v.refs, inflight: v.engine!.inflight(), waitedMs: waitMs });
    return [...left.filter((e): e is Engine => e !== undefined), ...stillRunning.map((v) => v.engine!)];
  }

  /** The highest READY version, the shadow version excepted while another one is READY (a
   *  shadow is compared against the default, never promoted by arriving: docs/operations.md
   *  "Shadow traffic"). */
  private pickDefault(): void {
    const ready = this.ready();
    const next = ready.find((v) => v.version !== this.shadowVersion) ?? ready[0];
    if (next === this.current) return;
    const prev = this.current;
    this.current = next;
    if (next) this.log.info('model_version_default', { version: next.version, previous: prev?.version ?? null });
    else this.log.warn('no_model_version_ready', { previous: prev?.version ?? null });
    if (next && next.version === this.shadowVersion)
      this.log.warn('shadow_version_is_default', { version: next.version, why: 'no other version is READY: it serves, and shadow runs are skipped (same_version) until another version is READY' });
  }
}

/** Leases on one given engine whatever the pin (the warm-up of a version before it is READY, and
 *  tests); no engine → UNAVAILABLE. */
export function fixedLeases(engine: Engine | undefined, version = engine?.config.version ?? ''): ModelLeases {
  return {
    acquire: () => {
      if (!engine) throw new RequestError(status.UNAVAILABLE, 'no model version is loaded yet (health: NOT_SERVING)');
      return { engine, version, release: () => {} };
    },
    defaultVersion: () => (engine ? version : undefined),
  };
}

/** Waits (polling every 5 ms) until no run is in flight on `engines`, or until `until` (epoch ms). */
async function untilIdle(engines: Engine[], until: number): Promise<void> {
  while (engines.some((e) => e.inflight() > 0) && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
}
