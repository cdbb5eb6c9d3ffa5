/**
 * The model repository (docs/operations.md "Model versions"): a directory of numbered versions,
 * `<dir>/<N>/model.safetensors`, rescanned every poll interval, on SIGHUP and on ReloadModels.
 *
 * A scan keeps the `keep` highest versions that load: walking from the highest version down, it
 * counts READY versions and loads missing ones (load → validate → warm on the serving device →
 * READY, which makes the highest one the default) until `keep` are READY; versions below those
 * and versions whose directory is gone are retired (drained, then freed) after the loads, so a
 * rollback never leaves a gap. A version whose file is still changing (size or mtime differ from
 * what was seen `settleMs` earlier) is left for a later scan; a version that failed is tried again
 * only when its file changes. The shadow version (--shadow-version), when its directory is
 * there, is loaded too, after the others and outside the `keep` count, and kept while it is there.
 */
import { readdir, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Engine } from '../engine/index.js';
import type { Logger } from '../log.js';
import { FALLBACK_ONLY_VERSION, type ModelRegistry, type ModelVersion } from './registry.js';

export const MODEL_FILE = 'model.safetensors';
export const DEFAULT_POLL_MS = 5000;
export const DEFAULT_KEEP_VERSIONS = 1;

export interface RepositoryOptions {
  dir: string;
  registry: ModelRegistry;
  log: Logger;
  /** reads, validates and builds the engine (Engine.load with the server's device options) */
  load(path: string): Promise<Engine>;
  /** before READY: give the engine the live ad state and warm it up */
  prepare(engine: Engine, version: string): Promise<void>;
  /** after a failed prepare: undo it (detach from the live ad state) */
  discard?(engine: Engine): void;
  /** default 1 */
  keepVersions?: number;
  /** default 5000; 0 = no polling (SIGHUP and ReloadModels only) */
  pollMs?: number;
  /** how long a version's file must stay unchanged before it is loaded (default min(1000, pollMs)) */
  settleMs?: number;
  /** --shadow-version: loaded beside the kept versions (it does not count towards keepVersions
   *  and is not retired while its directory is there); the registry holds it out of the default */
  shadowVersion?: string;
}

export interface ScanResult {
  loaded: string[];
  failed: string[];
  retired: string[];
}

interface Seen {
  stamp: string;
  at: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class ModelRepository {
  readonly dir: string;
  readonly keep: number;
  readonly pollMs: number;
  readonly settleMs: number;
  private readonly seen = new Map<string, Seen>();
  private queue: Promise<unknown> = Promise.resolve();
  private scanning = false;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private readonly retiring = new Set<Promise<void>>();

  constructor(private readonly o: RepositoryOptions) {
    this.dir = resolve(o.dir);
    this.keep = o.keepVersions ?? DEFAULT_KEEP_VERSIONS;
    this.pollMs = o.pollMs ?? DEFAULT_POLL_MS;
    this.settleMs = o.settleMs ?? Math.min(1000, this.pollMs || 1000);
    if (!Number.isInteger(this.keep) || this.keep < 1) throw new Error(`expected an integer >= 1 for keep versions, got ${this.keep}`);
    if (!Number.isInteger(this.pollMs) || this.pollMs < 0) throw new Error(`expected an integer >= 0 for repository poll ms, got ${this.pollMs}`);
  }

  /** The first scan, then polling. Throws when no version loads (polling not started; the server's
   *  --fallback-only starts it with startPolling()). */
  async start(): Promise<ScanResult> {
    const r = await this.rescan('start');
    if (this.o.registry.ready().length === 0) {
      const why = this.o.registry.all().map((v) => `version ${v.version}: ${v.reason}`);
      throw new Error(`no model version in ${this.dir} loads${why.length ? ` (${why.join('; ')})` : ` (expected <dir>/<N>/${MODEL_FILE} with N a positive integer)`}`);
    }
    this.startPolling();
    return r;
  }

  startPolling(): void {
    if (this.pollMs > 0 && !this.stopped && !this.timer) this.timer = setInterval(() => this.poll(), this.pollMs);
    this.timer?.unref();
  }

  /** Stops polling and waits for a running scan and for retiring versions. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await this.queue;
    await Promise.all(this.retiring);
  }

  private poll(): void {
    if (this.scanning) return; // one is running; the next tick picks up whatever it missed
    this.scan(false, 'poll').catch((e) => this.o.log.error('repository_scan_failed', { dir: this.dir, error: e }));
  }

  /** Rescans now (SIGHUP, ReloadModels); resolves when the scan's loads have finished or failed. */
  rescan(reason: string): Promise<ScanResult> {
    return this.scan(true, reason);
  }

  private scan(explicit: boolean, reason: string): Promise<ScanResult> {
    const run = this.queue.then(() => this.scanNow(explicit, reason));
    this.queue = run.catch(() => {});
    return run;
  }

  private async scanNow(explicit: boolean, reason: string): Promise<ScanResult> {
    const result: ScanResult = { loaded: [], failed: [], retired: [] };
    if (this.stopped) return result;
    this.scanning = true;
    try {
      const reg = this.o.registry;
      let present = await this.list();
      // the wanted versions still changing (seen for the first time, or changed, within settleMs)
      const unsettled = (p: typeof present) => [...p].filter(([v, s]) => !this.settled(v, s) && this.wanted(v, s)).map(([v]) => v);
      // a version seen for the first time (or changed) in an explicit scan: look again after settleMs
      if (explicit && unsettled(present).length > 0) {
        await sleep(this.settleMs);
        present = await this.list();
        // A timer can fire a millisecond or two before Date.now(), which `settled` reads, says its
        // delay has passed (the event loop's cached clock): a version shipped just before this scan
        // was then still "changing" and the scan loaded nothing. Wait out that remainder for the
        // files that did not change meanwhile (a file that did is left for a later scan, as before).
        const slop = Math.max(0, ...unsettled(present).map((v) => this.seen.get(v)!.at + this.settleMs - Date.now()));
        if (slop > 0 && slop <= 5) {
          await sleep(slop + 1);
          present = await this.list();
        }
      }
      const shadow = this.o.shadowVersion;
      const versions = [...present.keys()].sort((a, b) => Number(b) - Number(a));
      let ready = 0;
      const keep = new Set<string>();
      // the shadow version is tried last, outside the count: the serving versions come first
      const order = shadow !== undefined && present.has(shadow) ? [...versions.filter((v) => v !== shadow), shadow] : versions;
      for (const version of order) {
        const isShadow = version === shadow;
        if (this.stopped) break;
        if (ready >= this.keep && !isShadow) continue;
        const stamp = present.get(version)!;
        const known = reg.get(version);
        if (known?.state === 'READY') {
          if (!isShadow) ready++;
          keep.add(version);
          continue;
        }
        if (known?.state === 'LOADING' || known?.state === 'UNLOADING') continue;
        if (known?.state === 'FAILED' && known.fileStamp === stamp) continue; // retried when the file changes
        if (!this.settled(version, stamp)) {
          this.o.log.info('model_version_waiting', { version, why: 'its file is still changing', settleMs: this.settleMs });
          continue;
        }
        if (await this.load(version, stamp)) {
          result.loaded.push(version);
          if (!isShadow) ready++;
          keep.add(version);
        } else result.failed.push(version);
      }
      // retire what is not kept: below the kept ones, or gone from the directory
      for (const v of reg.all()) {
        if (v.state === 'READY' && !keep.has(v.version) && reg.ready().length > 1) {
          result.retired.push(v.version);
          this.retire(
            v,
            v.version === FALLBACK_ONLY_VERSION
              ? 'a model version loads: fallback-only answers end'
              : present.has(v.version)
                ? `only the ${this.keep} highest loadable versions are kept`
                : 'its directory was removed',
          );
        } else if (v.state === 'FAILED' && !present.has(v.version)) reg.forget(v);
      }
      if (result.loaded.length || result.failed.length || result.retired.length)
        this.o.log.info('repository_scanned', { dir: this.dir, reason, ...result, default: reg.defaultVersion() ?? null });
      return result;
    } finally {
      this.scanning = false;
    }
  }

  private retire(v: ModelVersion, why: string): void {
    const p = this.o.registry.retire(v, why).then(() => undefined);
    this.retiring.add(p);
    p.finally(() => this.retiring.delete(p));
  }

  /** Loads one version; false when it failed (it is then FAILED with the loader's message). */
  private async load(version: string, stamp: string): Promise<boolean> {
    const reg = this.o.registry;
    const path = join(this.dir, version, MODEL_FILE);
    const v = reg.loading(version, path);
    v.fileStamp = stamp;
    const t0 = performance.now();
    let engine: Engine | undefined;
    try {
      engine = await this.o.load(path);
      await this.o.prepare(engine, version);
      reg.markReady(v, engine, Math.round(performance.now() - t0));
      return true;
    } catch (e) {
      if (engine) {
        this.o.discard?.(engine);
        try {
          if (engine.inflight() === 0) engine.dispose();
        } catch {
          /* freed by the process */
        }
      }
      reg.markFailed(v, (e as Error).message ?? String(e), Math.round(performance.now() - t0));
      return false;
    }
  }

  /** version → "size:mtime" of its model file, for directories named by a positive integer. */
  private async list(): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    let entries;
    try {
      entries = await readdir(this.dir, { withFileTypes: true });
    } catch (e) {
      this.o.log.error('repository_unreadable', { dir: this.dir, error: e });
      return out;
    }
    const now = Date.now();
    for (const e of entries) {
      if (!e.isDirectory() || !/^[1-9]\d{0,15}$/.test(e.name)) continue;
      try {
        const s = await stat(join(this.dir, e.name, MODEL_FILE));
        if (!s.isFile()) continue;
        const stamp = `${s.size}:${s.mtimeMs}`;
        out.set(e.name, stamp);
        const seen = this.seen.get(e.name);
        if (!seen || seen.stamp !== stamp) this.seen.set(e.name, { stamp, at: now });
      } catch {
        // no model file (yet)
      }
    }
    for (const name of this.seen.keys()) if (!out.has(name)) this.seen.delete(name);
    return out;
  }

  /** unchanged for settleMs */
  private settled(version: string, stamp: string): boolean {
    const s = this.seen.get(version);
    return !!s && s.stamp === stamp && Date.now() - s.at >= this.settleMs;
  }

  /** would a scan try to load it (not READY, not a FAILED one with the same file) */
  private wanted(version: string, stamp: string): boolean {
    const known = this.o.registry.get(version);
    return !known || (known.state === 'FAILED' && known.fileStamp !== stamp);
  }
}
