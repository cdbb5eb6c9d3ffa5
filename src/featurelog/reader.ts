/**
 * Reads feature-log files (docs/feature-log.md): gzip'd JSON lines, possibly several gzip
 * members, possibly cut short by a crash. What decompresses is read; a torn last record (a line
 * without its newline, or one that does not parse) is skipped and counted, never fatal.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { constants, gunzipSync } from 'node:zlib';

/** One logged call (the fields replay and compare-modes use; the file has more). */
export interface FeatureRecord {
  ts: string;
  rpc: 'Rank' | 'Retrieve' | 'RetrieveAndRank';
  requestId: string;
  surface: string;
  model: { name: string; version: string };
  request: Record<string, unknown>;
  winners: { position: number; adId: string; advertiserId: string; utility?: number; score?: number; taskProbabilities: number[]; price: number | null }[];
  counts: Record<string, number>;
  retrieved?: number;
  timings: Record<string, number>;
}

/** A shadow comparison of a logged request (docs/feature-log.md "Shadow records"): joined to the
 *  request's record by `requestId`. */
export interface ShadowRecord {
  ts: string;
  record: 'shadow';
  rpc: 'Rank' | 'RetrieveAndRank';
  requestId: string;
  /** the primary's served version */
  model: { version: string };
  shadow: {
    version: string;
    outcome: 'compared' | 'failed';
    k?: number;
    common?: number;
    overlap?: number;
    deltaP?: Record<string, { mean: number; max: number }>;
    priceShift?: number | null;
    priced?: number;
    engineUs?: number;
    winners?: { adId: string; advertiserId: string; utility: number; taskProbabilities: number[]; price: number | null }[];
    code?: string;
    details?: string;
  };
}

export interface ReadResult {
  /** the served calls (what replay and compare-modes read) */
  records: FeatureRecord[];
  /** shadow comparisons, apart from the calls */
  shadows: ShadowRecord[];
  /** lines skipped: a torn last record, or a line that is not a JSON object */
  skipped: number;
}

/** Decompresses as much of a (possibly truncated or trailing-garbage) gzip file as it can. */
function gunzipTolerant(bytes: Buffer): Buffer {
  const gunzip = (b: Buffer) => gunzipSync(b, { finishFlush: constants.Z_SYNC_FLUSH });
  try {
    return gunzip(bytes); // whole, or cut short inside its last member
  } catch {
    // damage that is not a clean cut (garbage, a broken member): keep the longest prefix of
    // whole members that decodes
    const starts: number[] = [];
    for (let i = bytes.indexOf(GZIP_MAGIC, 1); i > 0; i = bytes.indexOf(GZIP_MAGIC, i + 1)) starts.push(i);
    for (const end of starts.reverse()) {
      try {
        return gunzip(bytes.subarray(0, end));
      } catch {
        // try a shorter prefix
      }
    }
    return Buffer.alloc(0);
  }
}

const GZIP_MAGIC = Buffer.from([0x1f, 0x8b, 0x08]);

/** The log files of `path`: the file itself, or a directory's `*.jsonl.gz` and `*.jsonl.gz.open`, by name. */
export function featureLogFiles(path: string): string[] {
  if (!statSync(path).isDirectory()) return [path];
  return readdirSync(path)
    .filter((f) => /\.jsonl\.gz(\.open)?$/.test(f))
    .sort()
    .map((f) => join(path, f));
}

export async function readFeatureLogFile(file: string): Promise<ReadResult> {
  const text = gunzipTolerant(readFileSync(file)).toString('utf8');
  const lines = text.split('\n');
  const last = lines.pop() ?? ''; // '' when the text ends with a newline; else a torn record
  let skipped = last.length > 0 ? 1 : 0;
  const records: FeatureRecord[] = [];
  const shadows: ShadowRecord[] = [];
  for (const line of lines) {
    if (line.length === 0) continue;
    try {
      const r = JSON.parse(line) as FeatureRecord | ShadowRecord;
      if (r && typeof r === 'object' && 'record' in r && r.record === 'shadow') shadows.push(r);
      else if (r && typeof r === 'object' && typeof r.rpc === 'string') records.push(r as FeatureRecord);
      else skipped++;
    } catch {
      skipped++;
    }
  }
  return { records, shadows, skipped };
}

/** Every record of a file or directory, in file-name order. */
export async function readFeatureLog(path: string): Promise<ReadResult> {
  const out: ReadResult = { records: [], shadows: [], skipped: 0 };
  for (const f of featureLogFiles(path)) {
    const r = await readFeatureLogFile(f);
    for (const rec of r.records) out.records.push(rec);
    for (const rec of r.shadows) out.shadows.push(rec);
    out.skipped += r.skipped;
  }
  return out;
}
