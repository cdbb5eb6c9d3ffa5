/**
 * The feature log's writer thread (a worker_threads Worker started by src/featurelog/writer.ts).
 * It gets batches of raw wire bytes (request and response protobufs) from the serving thread,
 * decodes them into JSON records, and appends them to gzip'd JSON-lines files:
 * - one gzip member per flush (every FLUSH_MS or FLUSH_BYTES of JSON), so a crash loses at
 *   most the member being written, and concatenated members are an ordinary .gz file;
 * - the file being written is `<name>.jsonl.gz.open`; at rotation (size or age) it is fsynced,
 *   closed and renamed to `<name>.jsonl.gz`, and the directory is fsynced.
 * Format: docs/feature-log.md.
 */
import { closeSync, fsyncSync, openSync, renameSync, writeSync } from 'node:fs';
import { setPriority } from 'node:os';
import { join } from 'node:path';
import { parentPort, workerData } from 'node:worker_threads';
import { gzipSync } from 'node:zlib';
import type protobuf from 'protobufjs';
import { loadProto } from '../wire/proto.js';
import { requestDecoder } from '../wire/codec.js';

export interface WorkerInit {
  dir: string;
  maxBytes: number;
  maxAgeMs: number;
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
  | { type: 'ack'; n: number }
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

class FileWriter {
  private fd = -1;
  private name = '';
  private opened = 0;
  private bytes = 0;
  private records = 0;
  private seq = 0;

  constructor(
    private readonly init: WorkerInit,
    private readonly post: (m: FromWorker) => void,
  ) {}

  write(member: Buffer, records: number): void {
    if (this.fd < 0) this.open();
    writeSync(this.fd, member);
    this.bytes += member.length;
    this.records += records;
    if (this.bytes >= this.init.maxBytes) this.rotate();
  }

  /** Rotates when the open file is older than maxAgeMs. */
  tick(): void {
    if (this.fd >= 0 && Date.now() - this.opened >= this.init.maxAgeMs) this.rotate();
  }

  private open(): void {
    this.opened = Date.now();
    this.name = `features-${stamp(new Date(this.opened))}-${process.pid}-${String(this.seq++).padStart(4, '0')}.jsonl.gz`;
    this.fd = openSync(join(this.init.dir, `${this.name}.open`), 'a');
    this.bytes = 0;
    this.records = 0;
  }

  /** fsync, close, rename to the final name, fsync the directory. */
  rotate(): void {
    if (this.fd < 0) return;
    fsyncSync(this.fd);
    closeSync(this.fd);
    this.fd = -1;
    renameSync(join(this.init.dir, `${this.name}.open`), join(this.init.dir, this.name));
    try {
      const d = openSync(this.init.dir, 'r');
      fsyncSync(d);
      closeSync(d);
    } catch {
      // some filesystems refuse fsync on a directory; the file itself is synced
    }
    this.post({ type: 'rotated', file: join(this.init.dir, this.name), records: this.records, bytes: this.bytes });
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
  let failed = false;

  const flush = () => {
    if (timer) clearTimeout(timer);
    timer = undefined;
    if (lines.length === 0) return;
    const n = lines.length;
    const text = lines.join('');
    lines = [];
    pendingBytes = 0;
    try {
      if (!failed) file.write(gzipSync(text), n);
    } catch (e) {
      failed = true; // disk full, directory gone: keep acking so the serving thread drops, not blocks
      post({ type: 'error', message: (e as Error).message });
    }
    post({ type: 'ack', n });
  };
  const ageTimer = setInterval(() => {
    try {
      if (!failed) file.tick();
    } catch (e) {
      failed = true;
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
        if (!failed) file.rotate();
      } catch (e) {
        post({ type: 'error', message: (e as Error).message });
      }
      post({ type: 'closed' });
      port.close();
    }
  });
}

main();
