/**
 * The state file (docs/operations.md "Live ad state"): an append-only log of records, fsync'd
 * after every append, compacted by writing a new file beside it, fsyncing it and renaming it over
 * the old one.
 *
 * Layout: the 8-byte magic `ADRSTAT1`, then records of
 *   u32 LE payload length | u32 LE crc32 of the payload | payload (UTF-8 JSON)
 *
 * Reading: a damaged record at the end of the file (the header or the payload runs past the end,
 * or its crc fails and nothing follows it) is a torn append, the write of a batch that was never
 * acknowledged; it is reported, dropped and cut off the file. A damaged record with data after
 * it is corruption: the file is refused, never half read.
 */
import { closeSync, fsyncSync, openSync, readFileSync, existsSync } from 'node:fs';
import { open, rename, truncate, type FileHandle } from 'node:fs/promises';
import { dirname, basename, join } from 'node:path';
import { crc32 } from 'node:zlib'; // Node >= 20.15 (package.json engines)

export const MAGIC = Buffer.from('ADRSTAT1', 'latin1');
const HEADER = 8;
/** a record larger than this is taken for a damaged length field */
export const MAX_RECORD_BYTES = 256 * 1024 * 1024;

export class StateFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StateFileError';
  }
}

export interface ReadLog {
  records: unknown[];
  /** bytes of whole, valid records (including the magic): where the next append goes */
  validBytes: number;
  /** set when a torn last record was dropped */
  tornTail?: { offset: number; bytes: number; why: string };
}

/** Reads and checks the whole file. Throws StateFileError on corruption (with the offset). */
export function readLog(path: string): ReadLog {
  const buf = readFileSync(path);
  if (buf.length < MAGIC.length) {
    // a crash while creating the file leaves a prefix of the magic (or nothing)
    if (MAGIC.subarray(0, buf.length).equals(buf)) return { records: [], validBytes: 0, tornTail: buf.length ? { offset: 0, bytes: buf.length, why: 'partial file header' } : undefined };
    throw new StateFileError(`state file ${path} is not an adrank state file (expected the magic ${MAGIC.toString('latin1')})`);
  }
  if (!buf.subarray(0, MAGIC.length).equals(MAGIC)) throw new StateFileError(`state file ${path} is not an adrank state file (expected the magic ${MAGIC.toString('latin1')})`);
  const records: unknown[] = [];
  let off = MAGIC.length;
  while (off < buf.length) {
    const damaged = (why: string, end: number): ReadLog => {
      if (end >= buf.length) return { records, validBytes: off, tornTail: { offset: off, bytes: buf.length - off, why } };
      throw new StateFileError(`state file ${path} is corrupt: record ${records.length + 1} at byte ${off}: ${why}, and ${buf.length - end} bytes follow it; refusing to start (restore the file from a backup, or move it away to start with no live state)`);
    };
    if (off + HEADER > buf.length) return damaged('header cut short', buf.length);
    const len = buf.readUInt32LE(off);
    const crc = buf.readUInt32LE(off + 4);
    const end = off + HEADER + len;
    if (len > MAX_RECORD_BYTES) return damaged(`length ${len} is out of range`, end);
    if (end > buf.length) return damaged(`payload of ${len} bytes cut short at ${buf.length - off - HEADER}`, end);
    const payload = buf.subarray(off + HEADER, end);
    if (crc32(payload) !== crc) return damaged('crc32 mismatch', end);
    let record: unknown;
    try {
      record = JSON.parse(payload.toString('utf8'));
    } catch (e) {
      return damaged(`payload is not JSON (${(e as Error).message})`, end);
    }
    records.push(record);
    off = end;
  }
  return { records, validBytes: off };
}

export function frame(record: unknown): Buffer {
  const payload = Buffer.from(JSON.stringify(record), 'utf8');
  const out = Buffer.allocUnsafe(HEADER + payload.length);
  out.writeUInt32LE(payload.length, 0);
  out.writeUInt32LE(crc32(payload), 4);
  payload.copy(out, HEADER);
  return out;
}

function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** An open state file: append + fsync, and compaction by rewrite-and-rename. */
export class StateLog {
  private constructor(
    readonly path: string,
    private fh: FileHandle,
    private size: number,
  ) {}

  /** Opens (creating it when missing) after reading it; cuts a torn tail off. */
  static async open(path: string): Promise<{ log: StateLog; read: ReadLog }> {
    let read: ReadLog = { records: [], validBytes: 0 };
    if (existsSync(path)) read = readLog(path);
    if (read.validBytes === 0) {
      // new (or only a partial header): write the magic through a fresh file
      await writeAtomically(path, [MAGIC]);
      read.validBytes = MAGIC.length;
    } else if (read.tornTail) {
      await truncate(path, read.validBytes);
    }
    const fh = await open(path, 'r+');
    await fh.sync();
    return { log: new StateLog(path, fh, read.validBytes), read };
  }

  get bytes(): number {
    return this.size;
  }

  /** Appends one record and returns once it is on disk (fdatasync). */
  async append(record: unknown): Promise<void> {
    const buf = frame(record);
    let written = 0;
    while (written < buf.length) {
      const { bytesWritten } = await this.fh.write(buf, written, buf.length - written, this.size + written);
      written += bytesWritten;
    }
    await this.fh.datasync();
    this.size += buf.length;
  }

  /** Replaces the file's content with `records` (temp file, fsync, rename, fsync the directory). */
  async compact(records: unknown[]): Promise<void> {
    const bufs = [MAGIC, ...records.map(frame)];
    await writeAtomically(this.path, bufs);
    await this.fh.close();
    this.fh = await open(this.path, 'r+');
    this.size = bufs.reduce((s, b) => s + b.length, 0);
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

async function writeAtomically(path: string, bufs: Buffer[]): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.tmp-${process.pid}`);
  const fh = await open(tmp, 'w');
  try {
    for (const b of bufs) await fh.write(b);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
  fsyncDir(dirname(path));
}
