/**
 * Live ad state (docs/operations.md "Live ad state"): what UpdateAdStates set, by ad id and by
 * advertiser id, kept durable in the state file (log.ts) and applied to every engine that serves.
 *
 * Each field of each target carries the sequence number of the update that set it; an ad's
 * effective field is its own or its advertiser's, whichever was set last, else the default
 * (active, in budget, rate 1, the bundle's bid). State is kept by id, so it follows an ad into
 * every model version that has it, and an advertiser's state reaches its ads in later versions.
 *
 * Order of an update: validate (the caller) → append to the state file and fsync → apply to the
 * in-memory maps and to every attached engine (one atomic native batch per engine) → answer.
 * Updates are serialized, so the file's order is the order they took effect in.
 */
import type { Engine } from '../engine/index.js';
import { adRows, AdvertiserIndex, type AdIndex } from '../model/bundle.js';
import type { Logger } from '../server/log.js';
import { StateFileError, StateLog } from './log.js';

export type Field = 'active' | 'inBudget' | 'pacingRate' | 'bid';
export const FIELDS: readonly Field[] = ['active', 'inBudget', 'pacingRate', 'bid'];

/** One validated change (AdStateUpdate); unset fields are left as they are. */
export interface AdStateChange {
  target: 'ad' | 'advertiser';
  id: bigint;
  active?: boolean;
  inBudget?: boolean;
  pacingRate?: number;
  bid?: number;
}

/** Per field: [value, sequence number of the update that set it]. */
type Entry = { active?: [boolean, number]; inBudget?: [boolean, number]; pacingRate?: [number, number]; bid?: [number, number] };

/** An ad's state in effect; bidOverride undefined = the bundle's bid. */
export interface EffectiveState {
  active: boolean;
  inBudget: boolean;
  pacingRate: number;
  bidOverride?: number;
}

export class StateUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StateUnavailableError';
  }
}

/** Per-engine lookups, built once per engine. */
interface EngineIndex {
  rows: AdIndex;
  advertiser: BigInt64Array;
  adIds: BigInt64Array;
  byAdvertiser: AdvertiserIndex;
}

export interface StoreOptions {
  log?: Logger;
  /** compact the state file when it grows past this many bytes (default 16 MiB) */
  compactBytes?: number;
}

export const DEFAULT_COMPACT_BYTES = 16 * 1024 * 1024;

export class AdStateStore {
  private ads = new Map<bigint, Entry>();
  private advertisers = new Map<bigint, Entry>();
  private seq = 0;
  private readonly engines = new Set<Engine>();
  private readonly index = new WeakMap<Engine, EngineIndex>();
  private queue: Promise<unknown> = Promise.resolve();
  private broken: string | undefined;
  private readonly log: Logger | undefined;
  private readonly compactBytes: number;
  /** the file's size after the last compaction: the next one waits until the log has doubled it */
  private compactedBytes = 0;

  private constructor(
    private readonly file: StateLog | undefined,
    opts: StoreOptions,
  ) {
    this.log = opts.log;
    this.compactBytes = opts.compactBytes ?? DEFAULT_COMPACT_BYTES;
  }

  /** A store with no file: state lives as long as the process (tests, embedding). */
  static memory(opts: StoreOptions = {}): AdStateStore {
    return new AdStateStore(undefined, opts);
  }

  /** Opens the state file (creating it) and replays it. Throws StateFileError when it is corrupt. */
  static async open(path: string, opts: StoreOptions = {}): Promise<AdStateStore> {
    const t0 = performance.now();
    const { log: file, read } = await StateLog.open(path);
    const store = new AdStateStore(file, opts);
    if (read.tornTail)
      opts.log?.warn('state_file_torn_tail', {
        path,
        offset: read.tornTail.offset,
        bytes: read.tornTail.bytes,
        why: read.tornTail.why,
        note: 'the last record was an unacknowledged append cut short by a crash; it was dropped and cut off the file',
      });
    for (const r of read.records) store.replay(r, path);
    opts.log?.info('state_file_replayed', { path, records: read.records.length, ads: store.ads.size, advertisers: store.advertisers.size, bytes: file.bytes, ms: Math.round(performance.now() - t0) });
    return store;
  }

  get path(): string | undefined {
    return this.file?.path;
  }
  get size(): { ads: number; advertisers: number } {
    return { ads: this.ads.size, advertisers: this.advertisers.size };
  }

  /** Applies all state to `engine` (one batch) and keeps it up to date from now on. Synchronous,
   *  so no update can fall between the two. Returns the number of ads given a state. */
  attach(engine: Engine): number {
    const ix = this.indexOf(engine);
    const ids = new Set<bigint>();
    for (const id of this.ads.keys()) if (ix.rows.has(id)) ids.add(id);
    for (const adv of this.advertisers.keys()) for (const row of ix.byAdvertiser.rows(adv)) ids.add(ix.adIds[row]);
    this.push(engine, ids);
    this.engines.add(engine);
    return ids.size;
  }

  detach(engine: Engine): void {
    this.engines.delete(engine);
  }

  /** The state in effect for an ad of `engine`'s bundle; undefined when the bundle lacks it. */
  effective(engine: Engine, adId: bigint): EffectiveState | undefined {
    const ix = this.indexOf(engine);
    const row = ix.rows.get(adId);
    if (row === undefined) return undefined;
    return this.resolve(adId, ix.advertiser[row]);
  }

  /**
   * Persists and applies one batch (already validated). Updates whose target no attached engine
   * has are unknown and not stored. Resolves once the batch is on disk and in effect.
   */
  update(changes: AdStateChange[]): Promise<{ applied: number; unknown: number }> {
    const run = this.queue.then(() => this.updateNow(changes));
    this.queue = run.catch(() => {});
    return run;
  }

  private async updateNow(changes: AdStateChange[]): Promise<{ applied: number; unknown: number }> {
    if (this.broken) throw new StateUnavailableError(`live ad state is read-only after a state file write failed (${this.broken}); restart the server`);
    if (this.engines.size === 0) throw new StateUnavailableError('no model version is ready yet (health: NOT_SERVING)');
    const kept = changes.filter((c) => this.knownAnywhere(c));
    if (kept.length > 0) {
      if (this.file) {
        try {
          await this.file.append({ t: 'batch', u: kept.map(encodeChange) });
        } catch (e) {
          this.broken = (e as Error).message;
          this.log?.error('state_file_write_failed', { path: this.file.path, error: e });
          throw new StateUnavailableError(`cannot write the state file: ${(e as Error).message}`);
        }
      }
      // From here to the end of the loop below nothing awaits: every engine gets the batch in
      // the same turn of the event loop.
      for (const c of kept) this.record(c);
      for (const engine of this.engines) {
        const ix = this.indexOf(engine);
        const ids = new Set<bigint>();
        for (const c of kept) {
          if (c.target === 'ad') {
            if (ix.rows.has(c.id)) ids.add(c.id);
          } else for (const row of ix.byAdvertiser.rows(c.id)) ids.add(ix.adIds[row]);
        }
        this.push(engine, ids);
      }
      // past the threshold and twice the last snapshot: a live state larger than the threshold
      // would otherwise be rewritten on every batch; this keeps compaction O(1) per update, amortised
      if (this.file && this.file.bytes > Math.max(this.compactBytes, 2 * this.compactedBytes)) await this.compactNow('size');
    }
    return { applied: kept.length, unknown: changes.length - kept.length };
  }

  /** Rewrites the state file as one snapshot, dropping state of ads and advertisers that no
   *  attached engine has (reported). No-op without a file or without engines. */
  compact(reason = 'requested'): Promise<void> {
    const run = this.queue.then(() => this.compactNow(reason));
    this.queue = run.catch(() => {});
    return run;
  }

  private async compactNow(reason: string): Promise<void> {
    if (!this.file || this.broken || this.engines.size === 0) return;
    const t0 = performance.now();
    const before = this.file.bytes;
    const goneAds: bigint[] = [];
    const goneAdvertisers: bigint[] = [];
    const ix = [...this.engines].map((e) => this.indexOf(e));
    for (const id of this.ads.keys()) if (!ix.some((x) => x.rows.has(id))) goneAds.push(id);
    for (const id of this.advertisers.keys()) if (!ix.some((x) => x.byAdvertiser.has(id))) goneAdvertisers.push(id);
    const goneAdSet = new Set(goneAds);
    const goneAdvertiserSet = new Set(goneAdvertisers);
    const snapshot = {
      t: 'snapshot',
      seq: this.seq,
      ads: [...this.ads].filter(([id]) => !goneAdSet.has(id)).map(([id, e]) => [String(id), e]),
      advertisers: [...this.advertisers].filter(([id]) => !goneAdvertiserSet.has(id)).map(([id, e]) => [String(id), e]),
    };
    try {
      await this.file.compact([snapshot]);
    } catch (e) {
      this.broken = (e as Error).message;
      this.log?.error('state_file_write_failed', { path: this.file.path, error: e });
      return;
    }
    this.compactedBytes = this.file.bytes;
    for (const id of goneAds) this.ads.delete(id);
    for (const id of goneAdvertisers) this.advertisers.delete(id);
    if (goneAds.length || goneAdvertisers.length)
      this.log?.info('ad_states_dropped', { ads: goneAds.length, advertisers: goneAdvertisers.length, sampleAdIds: goneAds.slice(0, 10).map(String), sampleAdvertiserIds: goneAdvertisers.slice(0, 10).map(String), reason: 'not in any loaded model version' });
    this.log?.info('state_file_compacted', { path: this.file.path, reason, bytesBefore: before, bytesAfter: this.file.bytes, ads: this.ads.size, advertisers: this.advertisers.size, ms: Math.round(performance.now() - t0) });
  }

  /** Waits for queued updates, then closes the file. */
  async close(): Promise<void> {
    await this.queue;
    await this.file?.close();
  }

  private knownAnywhere(c: AdStateChange): boolean {
    for (const e of this.engines) {
      const ix = this.indexOf(e);
      if (c.target === 'ad' ? ix.rows.has(c.id) : ix.byAdvertiser.has(c.id)) return true;
    }
    return false;
  }

  private record(c: AdStateChange): void {
    const map = c.target === 'ad' ? this.ads : this.advertisers;
    let e = map.get(c.id);
    if (!e) map.set(c.id, (e = {}));
    const s = ++this.seq;
    if (c.active !== undefined) e.active = [c.active, s];
    if (c.inBudget !== undefined) e.inBudget = [c.inBudget, s];
    if (c.pacingRate !== undefined) e.pacingRate = [c.pacingRate, s];
    if (c.bid !== undefined) e.bid = [c.bid, s];
  }

  private resolve(adId: bigint, advertiser: bigint): EffectiveState {
    const a = this.ads.get(adId);
    const v = this.advertisers.get(advertiser);
    const pick = <T>(x: [T, number] | undefined, y: [T, number] | undefined): T | undefined => {
      if (x && y) return x[1] > y[1] ? x[0] : y[0];
      return (x ?? y)?.[0];
    };
    return {
      active: pick(a?.active, v?.active) ?? true,
      inBudget: pick(a?.inBudget, v?.inBudget) ?? true,
      pacingRate: pick(a?.pacingRate, v?.pacingRate) ?? 1,
      bidOverride: pick(a?.bid, v?.bid),
    };
  }

  /** One native batch with the effective state of `ids` (all in the engine's bundle). */
  private push(engine: Engine, ids: Set<bigint>): void {
    if (ids.size === 0) return;
    const ix = this.indexOf(engine);
    const n = ids.size;
    const idArr = BigInt64Array.from(ids);
    const rows = ix.rows.rows(idArr); // one native lookup for the whole batch
    const active = new Uint8Array(n);
    const inBudget = new Uint8Array(n);
    const rate = new Float32Array(n);
    const bid = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const s = this.resolve(idArr[i], ix.advertiser[rows[i]]);
      active[i] = s.active ? 1 : 0;
      inBudget[i] = s.inBudget ? 1 : 0;
      rate[i] = s.pacingRate;
      bid[i] = s.bidOverride ?? NaN;
    }
    engine.setAdState(idArr, active, inBudget, rate, bid);
  }

  private indexOf(engine: Engine): EngineIndex {
    let ix = this.index.get(engine);
    if (!ix) {
      const t = engine.bundle.tensors;
      const adIds = t['ads.id'] as BigInt64Array;
      const advertiser = t['ads.advertiser'] as BigInt64Array;
      const byAdvertiser = new AdvertiserIndex(advertiser);
      ix = { rows: adRows(engine.bundle), advertiser, adIds, byAdvertiser };
      this.index.set(engine, ix);
    }
    return ix;
  }

  private replay(r: unknown, path: string): void {
    const rec = r as { t?: string; u?: unknown[]; seq?: number; ads?: [string, Entry][]; advertisers?: [string, Entry][] };
    if (rec?.t === 'batch' && Array.isArray(rec.u)) {
      for (const c of rec.u) this.record(decodeChange(c, path));
    } else if (rec?.t === 'snapshot' && Number.isInteger(rec.seq) && Array.isArray(rec.ads) && Array.isArray(rec.advertisers)) {
      this.ads = new Map(rec.ads.map(([id, e]) => [BigInt(id), e]));
      this.advertisers = new Map(rec.advertisers.map(([id, e]) => [BigInt(id), e]));
      this.seq = rec.seq!;
    } else {
      throw new StateFileError(`state file ${path}: unknown record ${JSON.stringify(r).slice(0, 200)}`);
    }
  }
}

function encodeChange(c: AdStateChange): Record<string, unknown> {
  const o: Record<string, unknown> = { [c.target === 'ad' ? 'ad' : 'advertiser']: String(c.id) };
  for (const f of FIELDS) if (c[f] !== undefined) o[f] = c[f];
  return o;
}

function decodeChange(o: unknown, path: string): AdStateChange {
  const r = o as Record<string, unknown>;
  const target = typeof r.ad === 'string' ? 'ad' : typeof r.advertiser === 'string' ? 'advertiser' : undefined;
  if (!target) throw new StateFileError(`state file ${path}: an update without a target: ${JSON.stringify(o)}`);
  const c: AdStateChange = { target, id: BigInt(r[target] as string) };
  if (typeof r.active === 'boolean') c.active = r.active;
  if (typeof r.inBudget === 'boolean') c.inBudget = r.inBudget;
  if (typeof r.pacingRate === 'number') c.pacingRate = r.pacingRate;
  if (typeof r.bid === 'number') c.bid = r.bid;
  return c;
}
