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
 *
 * Writing: an append that fails (ENOSPC, EIO, ...) is cut back to the last whole record
 * (ftruncate, fsync) before the error is thrown, so a later append follows a whole record; when
 * the cut itself fails, the next append repeats it first and fails if it still cannot. A
 * compaction that fails before its rename leaves the old file as it was and removes its
 * temporary file.
 */
import { closeSync, fsyncSync, openSync, readFileSync, existsSync } from 'node:fs';
import { open, rename, truncate, unlink, type FileHandle } from 'node:fs/promises';
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
  /** bytes past `size` may hold part of a failed append: cut them before the next append */
  private dirty = false;
  /** a compaction's rename is not known to be durable yet: fsync the directory before appending */
  private dirUnsynced = false;

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
      await (await writeAtomically(path, [MAGIC])).close();
      fsyncDir(dirname(path));
      read.validBytes = MAGIC.length;
    } else if (read.tornTail) {
      await truncate(path, read.validBytes);
    }
    const fh = await open(path, 'r+');
    await fh.sync();
    return { log: new StateLog(path, fh, read.validBytes), read };
  }

  /** bytes of whole records (including the magic) */
  get bytes(): number {
    return this.size;
  }

  /** Appends one record and returns once it is on disk (fdatasync). On failure the file is cut
   *  back to its last whole record (when that fails too, the next append cuts first). */
  async append(record: unknown): Promise<void> {
    const buf = frame(record);
    if (this.dirty || this.dirUnsynced) await this.repair();
    this.dirty = true;
    try {
      await writeAll(this.fh, buf, this.size);
      await this.fh.datasync();
    } catch (e) {
      try {
        await this.repair();
      } catch {
        // still dirty: the next append repeats the cut before writing
      }
      throw e;
    }
    this.dirty = false;
    this.size += buf.length;
  }

  /** Cuts anything past the last whole record and syncs the file, and the directory after a
   *  compaction whose directory sync failed. Throws when it cannot. */
  private async repair(): Promise<void> {
    if (this.dirty) {
      await this.fh.truncate(this.size);
      await this.fh.sync();
      this.dirty = false;
    }
    if (this.dirUnsynced) {
      fsyncDir(dirname(this.path));
      this.dirUnsynced = false;
    }
  }

  /** Replaces the file's content with `records` (temp file, fsync, rename, fsync the directory).
   *  A failure before the rename leaves the old file as it was. */
  async compact(records: unknown[]): Promise<void> {
    const bufs = [MAGIC, ...records.map(frame)];
    if (this.dirty) await this.repair();
    const fh = await writeAtomically(this.path, bufs);
    // renamed: the path is the new file from here on, whatever fails next
    const old = this.fh;
    this.fh = fh;
    this.size = bufs.reduce((s, b) => s + b.length, 0);
    this.dirUnsynced = true;
    await old.close().catch(() => {});
    fsyncDir(dirname(this.path));
    this.dirUnsynced = false;
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

async function writeAll(fh: FileHandle, buf: Buffer, position: number): Promise<void> {
  let written = 0;
  while (written < buf.length) {
    const { bytesWritten } = await fh.write(buf, written, buf.length - written, position + written);
    written += bytesWritten;
  }
}

/**
 * Writes `bufs` to a temporary file beside `path`, fsyncs it and renames it over `path`; returns
 * the new file, open for reading and writing (the caller fsyncs the directory). On a failure
 * the temporary file is removed and `path` is untouched.
 */
async function writeAtomically(path: string, bufs: Buffer[]): Promise<FileHandle> {
  const tmp = join(dirname(path), `.${basename(path)}.tmp-${process.pid}`);
  const fh = await open(tmp, 'w+');
  try {
    let at = 0;
    for (const b of bufs) {
      await writeAll(fh, b, at);
      at += b.length;
    }
    await fh.sync();
    await rename(tmp, path);
  } catch (e) {
    await fh.close().catch(() => {});
    await unlink(tmp).catch(() => {}); // gives back the space a full disk needs
    throw e;
  }
  return fh;
}
