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
 *
 * A failed write (disk full, I/O error) makes the state read-only: the batch is refused
 * (UNAVAILABLE), the file is cut back to its last whole record (log.ts) and the in-memory state
 * stays at the last acknowledged batch. Every later batch tries to write again, and so does a
 * background retry with backoff (an empty batch record); the first append that reaches the disk
 * makes the state writable again, with no restart (docs/operations.md "When a disk fills").
 */
import type { Engine } from '../engine/index.js';
import { adRows, AdvertiserIndex, type AdIndex } from '../model/bundle.js';
import type { Logger } from '../log.js';
import { StateFileError, StateLog } from './log.js';

export type Field = 'active' | 'inBudget' | 'pacingRate' | 'bid';
export const FIELDS: readonly Field[] = ['active', 'inBudget', 'pacingRate', 'bid'];

/** What one batch did: changes applied and unknown (no attached engine has the target); the time
 *  its record took to reach the disk (append and fsync) and the time the in-memory state and every
 *  engine took to take it (the copy-on-write apply). */
export interface UpdateResult {
  applied: number;
  unknown: number;
  writeMs: number;
  applyMs: number;
}

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
  /** after a failed write: first background retry after this many ms, doubling up to
   *  `retryMaxMs` (defaults 250 ms and 30 s); a failed compaction waits the same way */
  retryMinMs?: number;
  retryMaxMs?: number;
}

export const DEFAULT_COMPACT_BYTES = 16 * 1024 * 1024;
export const DEFAULT_RETRY_MIN_MS = 250;
export const DEFAULT_RETRY_MAX_MS = 30_000;
/** the background retry's record is padded to the failed batch's size, at most this */
const MAX_RETRY_PAD = 1024 * 1024;

/** The `reason` label of adrank_ad_state_write_failures_total: the error code in lower case
 *  (enospc, edquot, eio, erofs, ...), else `other`. */
export function writeFailureReason(e: unknown): string {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' && /^E[A-Z0-9]{2,15}$/.test(code) ? code.toLowerCase() : 'other';
}

/** A doubling delay between `min` and `max` ms. */
class Backoff {
  private next: number;
  constructor(
    private readonly min: number,
    private readonly max: number,
  ) {
    this.next = min;
  }
  take(): number {
    const d = this.next;
    this.next = Math.min(this.max, this.next * 2);
    return d;
  }
  reset(): void {
    this.next = this.min;
  }
}

export class AdStateStore {
  private ads = new Map<bigint, Entry>();
  private advertisers = new Map<bigint, Entry>();
  private seq = 0;
  private readonly engines = new Set<Engine>();
  private readonly index = new WeakMap<Engine, EngineIndex>();
  private queue: Promise<unknown> = Promise.resolve();
  /** set while the state is read-only after a failed write */
  private readOnly: { since: number; error: string; failures: number } | undefined;
  /** JSON bytes of the last batch that failed to be written: the background retry writes as much */
  private failedBytes = 0;
  private readonly failures = new Map<string, number>();
  private readonly retry: Backoff;
  private retryTimer: NodeJS.Timeout | undefined;
  private readonly compactBackoff: Backoff;
  /** no compaction before this time (ms since the epoch) after one failed */
  private compactNotBefore = 0;
  private closed = false;
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
    const min = opts.retryMinMs ?? DEFAULT_RETRY_MIN_MS;
    const max = Math.max(min, opts.retryMaxMs ?? DEFAULT_RETRY_MAX_MS);
    this.retry = new Backoff(min, max);
    this.compactBackoff = new Backoff(min, max);
    // the usual reasons exist from the start, at 0, so that increase() sees their first failure
    if (file) for (const reason of ['enospc', 'eio']) this.failures.set(reason, 0);
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
  /** false while updates are refused after a failed state file write (adrank_ad_state_writable) */
  get writable(): boolean {
    return this.readOnly === undefined;
  }
  /** failed state file writes (appends, background retries, compactions) by reason
   *  (adrank_ad_state_write_failures_total) */
  get writeFailures(): ReadonlyMap<string, number> {
    return this.failures;
  }

  /** Applies all state to `engine` (one batch) and keeps it up to date from now on. Synchronous,
   *  so no update can fall between the two. Returns the number of ads given a state. */
  attach(engine: Engine): number {
    const ix = this.indexOf(engine);
    const rows = new Map<number, Entry | null | undefined>();
    const entries = [...this.ads.values()];
    const adRows = ix.rows.rows(BigInt64Array.from(this.ads.keys()));
    for (let j = 0; j < adRows.length; j++) if (adRows[j] >= 0) rows.set(adRows[j], entries[j]);
    for (const adv of this.advertisers.keys()) for (const row of ix.byAdvertiser.rows(adv)) if (!rows.has(row)) rows.set(row, null);
    this.push(engine, rows);
    this.engines.add(engine);
    return rows.size;
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
  update(changes: AdStateChange[]): Promise<UpdateResult> {
    const run = this.queue.then(() => this.updateNow(changes));
    this.queue = run.catch(() => {});
    return run;
  }

  private async updateNow(changes: AdStateChange[]): Promise<UpdateResult> {
    if (this.engines.size === 0) throw new StateUnavailableError('no model version is ready yet (health: NOT_SERVING)');
    const { kept, adRows } = this.known(changes);
    let writeMs = 0;
    let applyMs = 0;
    if (kept.length > 0) {
      const t0 = performance.now();
      if (this.file) {
        // read-only or not, every batch tries: the first append that reaches the disk recovers
        const record = { t: 'batch', u: kept.map(encodeChange) };
        try {
          await this.file.append(record);
        } catch (e) {
          this.failedBytes = Math.min(JSON.stringify(record).length, MAX_RETRY_PAD);
          this.writeFailed(e, 'append');
          throw new StateUnavailableError(`cannot write the state file: ${(e as Error).message}; live ad state is read-only until a write succeeds (each batch and a background retry try again)`);
        }
        this.writeSucceeded('batch');
      }
      const t1 = performance.now();
      writeMs = t1 - t0;
      // From here to the end of the loop below nothing awaits: every engine gets the batch in
      // the same turn of the event loop.
      const adEntries: Entry[] = [];
      for (const c of kept) {
        const e = this.record(c);
        if (c.target === 'ad') adEntries.push(e);
      }
      for (const engine of this.engines) {
        const ix = this.indexOf(engine);
        // the rows the batch touches in this engine's bundle: its ads' rows (looked up in known(),
        // each with the entry just recorded), and every ad of its advertisers (looked up below)
        const rows = new Map<number, Entry | null | undefined>();
        const ar = adRows.get(engine)!;
        for (let j = 0; j < ar.length; j++) if (ar[j] >= 0) rows.set(ar[j], adEntries[j]);
        for (const c of kept) if (c.target === 'advertiser') for (const row of ix.byAdvertiser.rows(c.id)) if (!rows.has(row)) rows.set(row, undefined);
        this.push(engine, rows);
      }
      applyMs = performance.now() - t1;
      // past the threshold and twice the last snapshot: a live state larger than the threshold
      // would otherwise be rewritten on every batch; this keeps compaction O(1) per update, amortised
      if (this.file && this.file.bytes > Math.max(this.compactBytes, 2 * this.compactedBytes)) await this.compactNow('size');
    }
    return { applied: kept.length, unknown: changes.length - kept.length, writeMs, applyMs };
  }

  /** Rewrites the state file as one snapshot, dropping state of ads and advertisers that no
   *  attached engine has (reported). No-op without a file or without engines. */
  compact(reason = 'requested'): Promise<void> {
    const run = this.queue.then(() => this.compactNow(reason));
    this.queue = run.catch(() => {});
    return run;
  }

  private async compactNow(reason: string): Promise<void> {
    if (!this.file || this.readOnly || this.engines.size === 0 || Date.now() < this.compactNotBefore) return;
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
      // the old file is intact (log.ts) and appends go on; compaction is tried again later
      const wait = this.compactBackoff.take();
      this.compactNotBefore = Date.now() + wait;
      const reason = this.countFailure(e);
      this.log?.warn('state_file_compaction_failed', { path: this.file.path, reason, error: e, retryAfterMs: wait, note: 'the state file is unchanged; compaction is retried with a later batch' });
      return;
    }
    this.compactBackoff.reset();
    this.compactNotBefore = 0;
    this.compactedBytes = this.file.bytes;
    for (const id of goneAds) this.ads.delete(id);
    for (const id of goneAdvertisers) this.advertisers.delete(id);
    if (goneAds.length || goneAdvertisers.length)
      this.log?.info('ad_states_dropped', { ads: goneAds.length, advertisers: goneAdvertisers.length, sampleAdIds: goneAds.slice(0, 10).map(String), sampleAdvertiserIds: goneAdvertisers.slice(0, 10).map(String), reason: 'not in any loaded model version' });
    this.log?.info('state_file_compacted', { path: this.file.path, reason, bytesBefore: before, bytesAfter: this.file.bytes, ads: this.ads.size, advertisers: this.advertisers.size, ms: Math.round(performance.now() - t0) });
  }

  /** Waits for queued updates, then closes the file. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    await this.queue;
    await this.file?.close();
  }

  private countFailure(e: unknown): string {
    const reason = writeFailureReason(e);
    this.failures.set(reason, (this.failures.get(reason) ?? 0) + 1);
    return reason;
  }

  /** A failed append (a batch's or a background retry's): read-only, and a retry scheduled. */
  private writeFailed(e: unknown, op: 'append' | 'retry'): void {
    const reason = this.countFailure(e);
    const message = (e as Error).message;
    if (!this.readOnly) {
      this.readOnly = { since: Date.now(), error: message, failures: 1 };
      this.log?.error('state_file_read_only', { path: this.file?.path, op, reason, error: e, note: 'updates are refused (UNAVAILABLE) until a write succeeds; each batch and a background retry try again' });
    } else this.readOnly.failures++;
    this.scheduleRetry();
  }

  private writeSucceeded(op: 'batch' | 'retry'): void {
    if (!this.readOnly) return;
    const { since, error, failures } = this.readOnly;
    this.readOnly = undefined;
    this.retry.reset();
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.log?.info('state_file_recovered', { path: this.file?.path, by: op, readOnlyMs: Date.now() - since, failedWrites: failures, firstError: error });
  }

  /** The background retry, in the update queue: an empty batch record (replay ignores it) padded
   *  to the size of the batch that failed, so that its success means such a batch fits again
   *  (a few bytes could fit in the file's last allocated block on a full disk). */
  private scheduleRetry(): void {
    if (this.retryTimer || this.closed) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      const run = this.queue.then(async () => {
        if (!this.readOnly || this.closed || !this.file) return;
        try {
          await this.file.append({ t: 'batch', u: [], pad: ' '.repeat(this.failedBytes) });
        } catch (e) {
          this.writeFailed(e, 'retry');
          return;
        }
        this.writeSucceeded('retry');
      });
      this.queue = run.catch(() => {});
    }, this.retry.take());
    this.retryTimer.unref();
  }

  /** The changes whose target some attached engine has, and per engine the row of each ad change
   *  (-1 where that engine lacks it): one native lookup of the ads per engine, for this and the apply. */
  private known(changes: AdStateChange[]): { kept: AdStateChange[]; adRows: Map<Engine, Int32Array> } {
    const found = new Uint8Array(changes.length);
    const ads = changes.flatMap((c, i) => (c.target === 'ad' ? [i] : []));
    const adIds = BigInt64Array.from(ads, (i) => changes[i].id);
    const rowsOf = new Map<Engine, Int32Array>();
    for (const e of this.engines) {
      const ix = this.indexOf(e);
      const rows = ix.rows.rows(adIds);
      rowsOf.set(e, rows);
      for (let j = 0; j < ads.length; j++) if (rows[j] >= 0) found[ads[j]] = 1;
      changes.forEach((c, i) => {
        if (c.target === 'advertiser' && ix.byAdvertiser.has(c.id)) found[i] = 1;
      });
    }
    // the rows of the kept ad changes, in their order
    const keptAds: number[] = [];
    for (let j = 0; j < ads.length; j++) if (found[ads[j]] === 1) keptAds.push(j);
    const adRows = new Map<Engine, Int32Array>();
    for (const [e, rows] of rowsOf) adRows.set(e, Int32Array.from(keptAds, (j) => rows[j]));
    return { kept: changes.filter((_, i) => found[i] === 1), adRows };
  }

  /** Records a change; returns its target's entry. */
  private record(c: AdStateChange): Entry {
    const map = c.target === 'ad' ? this.ads : this.advertisers;
    let e = map.get(c.id);
    if (!e) map.set(c.id, (e = {}));
    const s = ++this.seq;
    if (c.active !== undefined) e.active = [c.active, s];
    if (c.inBudget !== undefined) e.inBudget = [c.inBudget, s];
    if (c.pacingRate !== undefined) e.pacingRate = [c.pacingRate, s];
    if (c.bid !== undefined) e.bid = [c.bid, s];
    return e;
  }

  /** `ad`: the ad's entry where the caller has it (undefined: none; absent: look it up). */
  private resolve(adId: bigint, advertiser: bigint, ad?: Entry | null): EffectiveState {
    const a = ad === null ? undefined : (ad ?? this.ads.get(adId));
    // most batches are ad-level: no advertiser state, no lookup (a BigInt key is hashed and compared)
    const v = this.advertisers.size > 0 ? this.advertisers.get(advertiser) : undefined;
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

  /** One native batch with the effective state of the ads at `rows` of the engine's bundle (row →
   *  the ad's entry where the caller has it, null for an ad with none, undefined to look it up). */
  private push(engine: Engine, rows: Map<number, Entry | null | undefined>): void {
    const n = rows.size;
    if (n === 0) return;
    const ix = this.indexOf(engine);
    const idArr = new BigInt64Array(n);
    const active = new Uint8Array(n);
    const inBudget = new Uint8Array(n);
    const rate = new Float32Array(n);
    const bid = new Float32Array(n);
    let i = 0;
    for (const [row, entry] of rows) {
      idArr[i] = ix.adIds[row];
      const s = this.resolve(idArr[i], ix.advertiser[row], entry);
      active[i] = s.active ? 1 : 0;
      inBudget[i] = s.inBudget ? 1 : 0;
      rate[i] = s.pacingRate;
      bid[i] = s.bidOverride ?? NaN;
      i++;
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
