/**
 * The feature log's writer thread (a worker_threads Worker started by src/featurelog/writer.ts).
 * It gets batches of raw wire bytes (request and response protobufs) from the serving thread,
 * decodes them into JSON records, and appends them to gzip'd JSON-lines files:
 * - one gzip member per flush (every FLUSH_MS or FLUSH_BYTES of JSON), so a crash loses at
 *   most the member being written, and concatenated members are an ordinary .gz file;
 * - the file being written is `<name>.jsonl.gz.open`; at rotation (size or age) it is fsynced,
 *   closed and renamed to `<name>.jsonl.gz`, and the directory is fsynced;
 * - disk budget: after each rotation (and at start) the complete files of the directory are
 *   listed, and the oldest deleted while they total more than `maxTotalBytes`;
 * - free-space floor: a flush that would leave less than `minFreeBytes` free on the directory's
 *   file system is dropped (counted as `low_disk`), checked again at every flush;
 * - a write that fails (ENOSPC, EIO) is cut back off the file and its records counted as
 *   `write_error`; the next flush tries again.
 * Format: docs/feature-log.md.
 */
import { closeSync, fsyncSync, ftruncateSync, openSync, readdirSync, renameSync, statfsSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { setPriority } from 'node:os';
import { join } from 'node:path';
import { parentPort, workerData } from 'node:worker_threads';
import { gzipSync } from 'node:zlib';
import type protobuf from 'protobufjs';
import { loadProto } from '../wire/proto.js';
import { requestDecoder } from '../wire/codec.js';
import type { DropReason } from './writer.js';

export interface WorkerInit {
  dir: string;
  maxBytes: number;
  maxAgeMs: number;
  /** complete files past this total are deleted, oldest first */
  maxTotalBytes: number;
  /** below this much free space on the log's file system, records are dropped */
  minFreeBytes: number;
}


/** One logged call, as the serving thread posts it: its request's and response's wire bytes
 *  lie at [offset, offset + requestBytes + responseBytes) of the batch's buffer. */
export interface RawRecord {
  rpc: string;
  /** ms since the epoch when the response was sent */
  t: number;
  offset: number;
  requestBytes: number;
  responseBytes: number;
  /** a shadow comparison (no bytes): written as `{"ts", "record": "shadow", ...json}` */
  json?: Record<string, unknown>;
}

export type ToWorker = { type: 'batch'; items: RawRecord[]; buf: ArrayBuffer } | { type: 'close' };
export type FromWorker =
  /** `n` records done with: `n - dropped` written, `dropped` (low_disk or write_error) not */
  | { type: 'ack'; n: number; dropped: number; reason?: DropReason }
  /** bytes of the log's files on disk, and files deleted for the budget so far */
  | { type: 'usage'; bytes: number; deleted: number }
  | { type: 'deleted'; files: string[]; bytes: number; totalBytes: number }
  /** writing stopped (low_disk: with the free bytes seen; write_error: with the error) or resumed */
  | { type: 'paused'; reason: 'low_disk' | 'write_error'; freeBytes?: number; message?: string }
  | { type: 'resumed'; dropped: number }
  /** a batch buffer handed back for reuse once its records are decoded */
  | { type: 'free'; buf: ArrayBuffer }
  | { type: 'rotated'; file: string; records: number; bytes: number }
  | { type: 'error'; message: string }
  | { type: 'closed' };

const FLUSH_MS = 100;
const FLUSH_BYTES = 1 << 20;

const TO_OBJECT: protobuf.IConversionOptions = { longs: String, enums: String, defaults: true, oneofs: true };

interface Rpc {
  /** the server's own request decoder: the big id list comes back as a BigInt64Array, ~10×
   *  cheaper than protobufjs's int64 → Long → string (src/wire/codec.ts) */
  request: (bytes: Buffer) => Record<string, unknown>;
  response: protobuf.Type;
}

/** Repeated int64 fields read with the fast path, by request type. */
const FAST_INT64: Record<string, string[]> = { Rank: ['candidateAdIds'] };

const stamp = (d: Date) => d.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');

/** an `.open` file not written for this long past the rotation age was left by a crash */
const STALE_OPEN_MS = 60_000;

/** A log file of the directory: complete (`.jsonl.gz`), or `.open` left by an earlier process. */
const LOG_FILE = /^features-.*\.jsonl\.gz(\.open)?$/;

/** Bytes free to an unprivileged writer on the file system holding `dir`, less what writing
 *  `bytes` there would take (whole blocks, plus one for the file's own growth). */
function freeAfter(dir: string, bytes: number): number {
  const s = statfsSync(dir);
  return (s.bavail - (bytes > 0 ? Math.ceil(bytes / s.bsize) + 1 : 0)) * s.bsize;
}

class FileWriter {
  private fd = -1;
  private name = '';
  private opened = 0;
  private bytes = 0;
  private records = 0;
  private seq = 0;
  /** bytes of the other log files of the directory (complete, and `.open` ones left by others) */
  private otherBytes = 0;
  private deleted = 0;

  constructor(
    private readonly init: WorkerInit,
    private readonly post: (m: FromWorker) => void,
  ) {}

  /** Appends one gzip member. On a failed write the member is cut back off the file (when that
   *  fails too, the file is closed as it is, like a crash would leave it) and the error thrown. */
  write(member: Buffer, records: number): void {
    if (this.fd < 0) this.open();
    try {
      let done = 0;
      while (done < member.length) done += writeSync(this.fd, member, done, member.length - done);
    } catch (e) {
      try {
        ftruncateSync(this.fd, this.bytes);
      } catch {
        this.abandon();
      }
      throw e;
    }
    this.bytes += member.length;
    this.records += records;
    if (this.bytes >= this.init.maxBytes) {
      try {
        this.rotate();
      } catch (e) {
        // the records are written; the file stays `.open` (abandon) or unrenamed
        this.post({ type: 'error', message: `cannot rotate ${this.name}: ${(e as Error).message}` });
      }
    }
  }

  /** Rotates when the open file is older than maxAgeMs. */
  tick(): void {
    if (this.fd >= 0 && Date.now() - this.opened >= this.init.maxAgeMs) this.rotate();
  }

  /** bytes of the log's files on disk */
  get diskBytes(): number {
    return this.otherBytes + (this.fd >= 0 ? this.bytes : 0);
  }

  /**
   * Lists the directory's log files and deletes the oldest complete ones while the complete files
   * total more than maxTotalBytes (never the file being written). Listing each time keeps the
   * count right when something else removes files (a job that ships them off).
   */
  enforceBudget(): void {
    const files: { name: string; bytes: number; mtime: number; open: boolean }[] = [];
    for (const name of readdirSync(this.init.dir)) {
      if (!LOG_FILE.test(name) || name === `${this.name}.open`) continue;
      try {
        const st = statSync(join(this.init.dir, name));
        if (st.isFile()) files.push({ name, bytes: st.size, mtime: st.mtimeMs, open: name.endsWith('.open') });
      } catch {
        // removed meanwhile
      }
    }
    files.sort((a, b) => a.mtime - b.mtime || (a.name < b.name ? -1 : 1));
    let total = files.reduce((s, f) => s + f.bytes, 0);
    const gone: string[] = [];
    let goneBytes = 0;
    const now = Date.now();
    for (const f of files) {
      if (total <= this.init.maxTotalBytes) break;
      // another process's `.open` file may still be written (a directory shared by several
      // servers): only one idle past any rotation age is a leftover
      if (f.open && now - f.mtime < this.init.maxAgeMs + STALE_OPEN_MS) continue;
      try {
        unlinkSync(join(this.init.dir, f.name));
      } catch {
        continue;
      }
      total -= f.bytes;
      goneBytes += f.bytes;
      gone.push(f.name);
    }
    this.otherBytes = total;
    this.deleted += gone.length;
    if (gone.length) this.post({ type: 'deleted', files: gone, bytes: goneBytes, totalBytes: total });
    this.postUsage();
  }

  postUsage(): void {
    this.post({ type: 'usage', bytes: this.diskBytes, deleted: this.deleted });
  }

  /** Closes the open file without renaming it (a write failed and could not be cut back): it
   *  stays `.open`, readable up to the damage, and the next write starts a new file. */
  private abandon(): void {
    try {
      closeSync(this.fd);
    } catch {
      // nothing more to do with it
    }
    this.fd = -1;
    this.otherBytes += this.bytes;
    this.name = '';
  }

  private open(): void {
    this.opened = Date.now();
    this.name = `features-${stamp(new Date(this.opened))}-${process.pid}-${String(this.seq++).padStart(4, '0')}.jsonl.gz`;
    this.fd = openSync(join(this.init.dir, `${this.name}.open`), 'a');
    this.bytes = 0;
    this.records = 0;
  }

  /** fsync, close, rename to the final name, fsync the directory; then the disk budget. */
  rotate(): void {
    if (this.fd < 0) return;
    try {
      fsyncSync(this.fd);
      closeSync(this.fd);
    } catch (e) {
      this.abandon();
      throw e;
    }
    this.fd = -1;
    this.otherBytes += this.bytes;
    renameSync(join(this.init.dir, `${this.name}.open`), join(this.init.dir, this.name));
    try {
      const d = openSync(this.init.dir, 'r');
      fsyncSync(d);
      closeSync(d);
    } catch {
      // some filesystems refuse fsync on a directory; the file itself is synced
    }
    const file = join(this.init.dir, this.name);
    this.name = '';
    // the budget before the news: whoever sees `rotated` sees the directory within it
    try {
      this.enforceBudget();
    } catch (e) {
      this.post({ type: 'error', message: `cannot keep ${this.init.dir} within its budget: ${(e as Error).message}` });
    }
    this.post({ type: 'rotated', file, records: this.records, bytes: this.bytes });
  }
}

/** proto3 JSON writes int64 as strings: the id lists the request decoder reads straight from the
 *  wire (BigInt64Array: sparse ids, sequence items, exclusions) become arrays of strings. */
function int64AsString(_key: string, v: unknown): unknown {
  if (v instanceof BigInt64Array) return Array.from(v, String);
  return typeof v === 'bigint' ? String(v) : v;
}

/** The JSON record of one call (docs/feature-log.md). */
export function toRecord(rpcs: Map<string, Rpc>, root: protobuf.Root, raw: RawRecord, buf: ArrayBuffer): Record<string, unknown> {
  let r = rpcs.get(raw.rpc);
  if (!r) {
    const fast = FAST_INT64[raw.rpc] ?? [];
    r = { request: requestDecoder(`adrank.v1.${raw.rpc}Request`, fast), response: root.lookupType(`adrank.v1.${raw.rpc}Response`) };
    rpcs.set(raw.rpc, r);
  }
  const request = r.request(Buffer.from(buf, raw.offset, raw.requestBytes));
  for (const f of FAST_INT64[raw.rpc] ?? []) request[f] = Array.from(request[f] as BigInt64Array, String); // proto3 JSON: int64 as strings
  const response = r.response.toObject(r.response.decode(new Uint8Array(buf, raw.offset + raw.requestBytes, raw.responseBytes)), TO_OBJECT) as {
    model: unknown;
    counts: unknown;
    timings: unknown;
    retrieved?: number;
    winners: { adId: string; advertiserId: string; score: number; taskProbabilities: number[]; price?: number }[];
  };
  const ranked = raw.rpc !== 'Retrieve';
  return {
    ts: new Date(raw.t).toISOString(),
    rpc: raw.rpc,
    requestId: request.requestId,
    surface: request.surface,
    model: response.model,
    request,
    winners: response.winners.map((w, i) => ({
      position: i + 1,
      adId: w.adId,
      advertiserId: w.advertiserId,
      ...(ranked ? { utility: w.score } : { score: w.score }),
      taskProbabilities: w.taskProbabilities,
      price: w.price ?? null,
    })),
    counts: response.counts,
    ...(raw.rpc === 'RetrieveAndRank' ? { retrieved: response.retrieved } : {}),
    timings: response.timings,
  };
}

function main(): void {
  const port = parentPort;
  if (!port) throw new Error('src/featurelog/worker.ts runs as a worker thread');
  const init = workerData as WorkerInit;
  const post = (m: FromWorker) => port.postMessage(m);
  // Lowest CPU priority for this thread only (on Linux setpriority(2) with pid 0 is per thread):
  // when cores are short, the serving thread wins and the queue drops instead.
  try {
    setPriority(19);
  } catch {
    // not permitted or not supported: run at normal priority
  }
  const file = new FileWriter(init, post);
  const { root } = loadProto();
  const rpcs = new Map<string, Rpc>();
  let lines: string[] = [];
  let pendingBytes = 0;
  let timer: NodeJS.Timeout | undefined;
  /** why writing is stopped (paused is posted once per stop, resumed once it writes again) */
  let paused: 'low_disk' | 'write_error' | undefined;
  let droppedWhilePaused = 0;
  const pause = (reason: 'low_disk' | 'write_error', n: number, detail: { freeBytes?: number; message?: string }) => {
    if (paused !== reason) post({ type: 'paused', reason, ...detail });
    paused = reason;
    droppedWhilePaused += n;
    post({ type: 'ack', n, dropped: n, reason });
  };
  try {
    file.enforceBudget();
  } catch (e) {
    post({ type: 'error', message: `cannot list ${init.dir}: ${(e as Error).message}` });
  }

  const flush = () => {
    if (timer) clearTimeout(timer);
    timer = undefined;
    if (lines.length === 0) return;
    const n = lines.length;
    const text = lines.join('');
    lines = [];
    pendingBytes = 0;
    // the floor first (cheap, and spares the gzip of records that would be dropped), then again
    // with the member's size
    try {
      const floor = init.minFreeBytes;
      if (floor > 0 && freeAfter(init.dir, 0) < floor) return pause('low_disk', n, { freeBytes: freeAfter(init.dir, 0) });
      const member = gzipSync(text);
      if (floor > 0 && freeAfter(init.dir, member.length) < floor) return pause('low_disk', n, { freeBytes: freeAfter(init.dir, 0) });
      file.write(member, n);
    } catch (e) {
      // disk full, I/O error, directory gone: these records are lost; the next flush tries again
      return pause('write_error', n, { message: (e as Error).message });
    }
    if (paused) {
      post({ type: 'resumed', dropped: droppedWhilePaused });
      paused = undefined;
      droppedWhilePaused = 0;
    }
    post({ type: 'ack', n, dropped: 0 });
    file.postUsage();
  };
  const ageTimer = setInterval(() => {
    try {
      file.tick();
    } catch (e) {
      post({ type: 'error', message: (e as Error).message });
    }
  }, Math.max(50, Math.min(init.maxAgeMs, 1000)));

  port.on('message', (m: ToWorker) => {
    if (m.type === 'batch') {
      for (const raw of m.items) {
        let line: string;
        try {
          const record = raw.json ? { ts: new Date(raw.t).toISOString(), record: 'shadow', ...raw.json } : toRecord(rpcs, root, raw, m.buf);
          line = JSON.stringify(record, int64AsString) + '\n';
        } catch (e) {
          post({ type: 'error', message: `cannot decode a logged ${raw.rpc}: ${(e as Error).message}` });
          line = '';
        }
        lines.push(line);
        pendingBytes += line.length;
      }
      port.postMessage({ type: 'free', buf: m.buf } satisfies FromWorker, [m.buf]);
      if (pendingBytes >= FLUSH_BYTES) flush();
      else timer ??= setTimeout(flush, FLUSH_MS);
    } else if (m.type === 'close') {
      flush();
      clearInterval(ageTimer);
      try {
        file.rotate();
      } catch (e) {
        post({ type: 'error', message: (e as Error).message });
      }
      post({ type: 'closed' });
      port.close();
    }
  });
}

main();
