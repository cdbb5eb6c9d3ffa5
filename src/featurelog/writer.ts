/**
 * Feature logging of served requests (docs/feature-log.md), the serving thread's side.
 *
 * On the request path it only decides (deterministically by request id, src/featurelog/sampler.ts)
 * and copies the request's and the response's wire bytes into the current batch buffer; every
 * POST_MS (or when the buffer is full) the batch is transferred to a worker thread
 * (src/featurelog/worker.ts), which decodes, writes and rotates, and hands the buffer back. The queue is bounded: past `queueMax` records not yet written, records are dropped
 * and counted (`dropped`), with a rate-limited log line. The worker keeps the directory under
 * `maxTotalBytes` and stops writing below `minFreeBytes` free; what it drops is counted here too,
 * by reason (`droppedBy`).
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { Logger } from '../log.js';
import { sampled } from './sampler.js';
import type { FromWorker, RawRecord, ToWorker, WorkerInit } from './worker.js';

export interface FeatureLogOptions {
  /** directory of the log files (created if missing) */
  dir: string;
  /** fraction of requests logged, 0..1, by request id */
  sample: number;
  /** rotate when a file reaches this many (compressed) bytes; default 256 MiB */
  maxBytes?: number;
  /** rotate when a file is this old; default 1 hour */
  maxAgeMs?: number;
  /** records queued or being written at most; beyond → dropped (default 10,000) */
  queueMax?: number;
  /** complete files past this total are deleted, oldest first (default 10 GiB) */
  maxTotalBytes?: number;
  /** below this much free space on the log's file system, records are dropped (default 1 GiB) */
  minFreeBytes?: number;
  log: Logger;
}

export const DEFAULT_FEATURE_LOG_MAX_BYTES = 256 * 1024 * 1024;
export const DEFAULT_FEATURE_LOG_MAX_AGE_MS = 3600_000;
export const DEFAULT_FEATURE_LOG_QUEUE = 10_000;

/** Why a sampled record was not written (the `reason` of adrank_feature_log_dropped_total). */
export type DropReason = 'queue_full' | 'low_disk' | 'write_error' | 'shutting_down';
export const DROP_REASONS: readonly DropReason[] = ['queue_full', 'low_disk', 'write_error', 'shutting_down'];
export const DEFAULT_FEATURE_LOG_MAX_TOTAL_BYTES = 10 * 1024 ** 3;
export const DEFAULT_FEATURE_LOG_MIN_FREE_BYTES = 1024 ** 3;
/** batch buffer size (larger records get a buffer of their own), and how many handed-back
 *  buffers are kept for reuse */
const BATCH_BYTES = 1 << 20;
const MAX_FREE_BUFFERS = 4;
/** a batch goes to the writer this long after its first record, or when its buffer is full */
const POST_MS = 20;
/** at most one `feature_log_dropped` line per this many ms */
const DROP_LOG_MS = 10_000;

function workerUrl(): URL {
  // dist/src/featurelog/writer.js once compiled
  if (!import.meta.url.endsWith('.ts')) return new URL('./worker.js', import.meta.url);
  // src/featurelog/writer.ts under tsx (tests, benchmarks): workers do not inherit tsx's loader
  // hooks, so a tiny module registers them before importing worker.ts
  const pkg = createRequire(import.meta.url).resolve('tsx/package.json');
  const esmApi = (JSON.parse(readFileSync(pkg, 'utf8')) as { exports: Record<string, { import: { default: string } }> }).exports['./esm/api'].import.default;
  const tsx = pathToFileURL(join(dirname(pkg), esmApi)).href;
  const worker = new URL('./worker.ts', import.meta.url).href;
  return new URL(`data:text/javascript,${encodeURIComponent(`import { register } from ${JSON.stringify(tsx)}; register(); await import(${JSON.stringify(worker)});`)}`);
}

export class FeatureLog {
  readonly sample: number;
  private readonly queueMax: number;
  private readonly worker: Worker;
  /** the batch being filled: the records' bytes, copied into one transferable buffer */
  private slab: Uint8Array | undefined;
  private used = 0;
  private items: RawRecord[] = [];
  private timer: NodeJS.Timeout | undefined;
  /** records posted to the worker and not yet acknowledged */
  private inWorker = 0;
  private droppedTotal = 0;
  private readonly droppedByReason = new Map<DropReason, number>(DROP_REASONS.map((r) => [r, 0]));
  private diskBytesNow = 0;
  private deletedFiles = 0;
  private droppedUnlogged = 0;
  private lastDropLog = 0;
  private writtenTotal = 0;
  private closing: Promise<void> | undefined;
  private closed = false;
  private exited = false;
  /** batch buffers the writer handed back, reused so that steady logging allocates nothing */
  private readonly free: ArrayBuffer[] = [];
  private readonly files: string[] = [];

  constructor(private readonly opts: FeatureLogOptions) {
    if (!(opts.sample >= 0 && opts.sample <= 1)) throw new Error(`expected a rate in 0..1 for feature log sample, got ${opts.sample}`);
    this.sample = opts.sample;
    this.queueMax = opts.queueMax ?? DEFAULT_FEATURE_LOG_QUEUE;
    mkdirSync(opts.dir, { recursive: true });
    const init: WorkerInit = {
      dir: opts.dir,
      maxBytes: opts.maxBytes ?? DEFAULT_FEATURE_LOG_MAX_BYTES,
      maxAgeMs: opts.maxAgeMs ?? DEFAULT_FEATURE_LOG_MAX_AGE_MS,
      maxTotalBytes: opts.maxTotalBytes ?? DEFAULT_FEATURE_LOG_MAX_TOTAL_BYTES,
      minFreeBytes: opts.minFreeBytes ?? DEFAULT_FEATURE_LOG_MIN_FREE_BYTES,
    };
    this.worker = new Worker(workerUrl(), { workerData: init });
    this.worker.unref();
    this.worker.on('message', (m: FromWorker) => this.onMessage(m));
    this.worker.on('error', (e) => {
      this.closed = true;
      opts.log.error('feature_log_failed', { error: e });
    });
    this.worker.on('exit', () => {
      this.closed = true;
      this.exited = true;
    });
    opts.log.info('feature_log', { dir: opts.dir, sample: this.sample, maxBytes: init.maxBytes, maxAgeMs: init.maxAgeMs, queueMax: this.queueMax, maxTotalBytes: init.maxTotalBytes, minFreeBytes: init.minFreeBytes });
  }

  /** sampled records not written, all reasons together */
  get dropped(): number {
    return this.droppedTotal;
  }
  /** sampled records not written, by reason (adrank_feature_log_dropped_total) */
  get droppedBy(): ReadonlyMap<DropReason, number> {
    return this.droppedByReason;
  }
  /** bytes of the log's files on disk, as of the last write or rotation (adrank_feature_log_bytes) */
  get diskBytes(): number {
    return this.diskBytesNow;
  }
  /** complete files deleted to keep under maxTotalBytes (adrank_feature_log_files_deleted_total) */
  get filesDeleted(): number {
    return this.deletedFiles;
  }
  /** records written to disk */
  get written(): number {
    return this.writtenTotal;
  }
  /** files completed (rotated) so far */
  get rotatedFiles(): readonly string[] {
    return this.files;
  }

  /**
   * Called once per served call with its decoded request's wire bytes and the response bytes.
   * A hash of the request id; for a sampled call, a copy of both into the batch buffer.
   */
  record(rpc: string, requestId: string, request: Uint8Array | undefined, response: Uint8Array): void {
    if (!request || !sampled(requestId, this.sample)) return;
    if (this.closed || this.items.length + this.inWorker >= this.queueMax) return this.drop(this.closed ? this.stopReason() : 'queue_full');
    const n = request.length + response.length;
    if (this.slab && this.used + n > this.slab.length) this.post();
    if (!this.slab) {
      const i = this.free.findIndex((b) => b.byteLength >= n);
      // a handed-back buffer, else a fresh one without zero-filling (every byte used is written)
      this.slab = new Uint8Array(i >= 0 ? this.free.splice(i, 1)[0] : Buffer.allocUnsafeSlow(Math.max(n, BATCH_BYTES)).buffer);
    }
    this.slab.set(request, this.used);
    this.slab.set(response, this.used + request.length);
    this.items.push({ rpc, t: Date.now(), offset: this.used, requestBytes: request.length, responseBytes: response.length });
    this.used += n;
    // one postMessage per POST_MS (waking the writer costs tens of µs), or when the buffer is full
    this.timer ??= setTimeout(() => this.post(), POST_MS);
  }

  /**
   * A shadow comparison (src/shadow/) of a request the log samples, written as a `"record":
   * "shadow"` line beside the request's own record (docs/feature-log.md "Shadow records"). The
   * object is small (the comparison and the shadow's winners) and is posted as it is.
   */
  recordShadow(requestId: string, shadow: Record<string, unknown>): void {
    if (!sampled(requestId, this.sample)) return;
    if (this.closed || this.items.length + this.inWorker >= this.queueMax) return this.drop(this.closed ? this.stopReason() : 'queue_full');
    this.items.push({ rpc: String(shadow.rpc ?? ''), t: Date.now(), offset: 0, requestBytes: 0, responseBytes: 0, json: shadow });
    this.timer ??= setTimeout(() => this.post(), POST_MS);
  }

  private post(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.items.length === 0) return;
    // a batch of shadow records alone has no bytes: a small buffer stands in for the slab
    const buf = (this.slab?.buffer ?? new ArrayBuffer(8)) as ArrayBuffer;
    const m: ToWorker = { type: 'batch', items: this.items, buf };
    this.inWorker += this.items.length;
    this.slab = undefined;
    this.used = 0;
    this.items = [];
    this.worker.postMessage(m, [buf]);
  }

  /** closed: shutting down, or the writer thread failed */
  private stopReason(): DropReason {
    return this.closing ? 'shutting_down' : 'write_error';
  }

  /** The one place a record is dropped: counted by reason, and logged at most once per DROP_LOG_MS. */
  private drop(reason: DropReason, n = 1): void {
    this.droppedTotal += n;
    this.droppedByReason.set(reason, (this.droppedByReason.get(reason) ?? 0) + n);
    this.droppedUnlogged += n;
    const now = Date.now();
    if (now - this.lastDropLog >= DROP_LOG_MS) {
      this.opts.log.warn('feature_log_dropped', { dropped: this.droppedUnlogged, droppedTotal: this.droppedTotal, byReason: Object.fromEntries(this.droppedByReason), queueMax: this.queueMax });
      this.lastDropLog = now;
      this.droppedUnlogged = 0;
    }
  }

  private onMessage(m: FromWorker): void {
    if (m.type === 'ack') {
      this.inWorker -= m.n;
      this.writtenTotal += m.n - m.dropped;
      if (m.dropped > 0) this.drop(m.reason ?? 'write_error', m.dropped);
    } else if (m.type === 'usage') {
      this.diskBytesNow = m.bytes;
      this.deletedFiles = m.deleted;
    } else if (m.type === 'deleted') {
      this.opts.log.info('feature_log_deleted', { files: m.files, bytes: m.bytes, totalBytes: m.totalBytes, reason: 'over --feature-log-max-total-bytes' });
    } else if (m.type === 'paused') {
      if (m.reason === 'low_disk')
        this.opts.log.warn('feature_log_paused', { reason: m.reason, freeBytes: m.freeBytes, minFreeBytes: this.opts.minFreeBytes ?? DEFAULT_FEATURE_LOG_MIN_FREE_BYTES, note: 'records are dropped until free space returns' });
      else this.opts.log.error('feature_log_paused', { reason: m.reason, error: m.message, note: 'records are dropped until a write succeeds' });
    } else if (m.type === 'resumed') {
      this.opts.log.info('feature_log_resumed', { dropped: m.dropped });
    } else if (m.type === 'free') {
      if (this.free.length < MAX_FREE_BUFFERS && m.buf.byteLength >= BATCH_BYTES) this.free.push(m.buf);
    } else if (m.type === 'rotated') {
      this.files.push(m.file);
      this.opts.log.info('feature_log_rotated', { file: m.file, records: m.records, bytes: m.bytes });
    } else if (m.type === 'error') {
      this.opts.log.error('feature_log_error', { error: m.message });
    }
  }

  /** Writes what is queued, closes the current file (fsync, rename) and stops the worker. */
  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      this.post();
      this.closed = true;
      const done = () => {
        if (this.droppedUnlogged > 0) this.opts.log.warn('feature_log_dropped', { dropped: this.droppedUnlogged, droppedTotal: this.droppedTotal, byReason: Object.fromEntries(this.droppedByReason), queueMax: this.queueMax });
        resolve();
      };
      if (this.exited) return done(); // the writer failed earlier
      this.worker.on('message', (m: FromWorker) => {
        if (m.type === 'closed') void this.worker.terminate().then(done, done);
      });
      this.worker.once('exit', done);
      this.worker.postMessage({ type: 'close' } satisfies ToWorker);
    });
    return this.closing;
  }
}
