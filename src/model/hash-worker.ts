/**
 * The sha256 of a bundle file, on a worker thread (loadBundle's `hash: 'background'`): the thread
 * that loads the bundle validates it and builds the engine meanwhile. It reads the file (from the
 * page cache, in 16 MiB pieces) rather than mapping it, so no page is counted twice in the process's
 * resident set, and says which file it read ("dev:ino:size:mtime_ns", as MappedFile::identity), so
 * that a file replaced between the two opens is noticed.
 */
import { createHash } from 'node:crypto';
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';

const PIECE = 16 << 20;

function hashFile(path: string): { sha256: string; id: string } {
  const fd = openSync(path, 'r');
  try {
    const st = fstatSync(fd, { bigint: true });
    const hash = createHash('sha256');
    const buf = Buffer.allocUnsafe(PIECE);
    for (let off = 0; off < Number(st.size); ) {
      const n = readSync(fd, buf, 0, PIECE, off);
      if (n <= 0) break;
      hash.update(buf.subarray(0, n));
      off += n;
    }
    return { sha256: hash.digest('hex'), id: `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}` };
  } finally {
    closeSync(fd);
  }
}

try {
  parentPort!.postMessage(hashFile((workerData as { path: string }).path));
} catch (e) {
  parentPort!.postMessage({ error: (e as Error).message });
}
