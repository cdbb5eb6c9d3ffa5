/**
 * Model bundle loading (docs/design.md §3, docs/bundle-format.md): a safetensors file whose metadata
 * carries the adrank config. Loading is all-or-nothing: the whole file is mapped read-only (not
 * copied), hashed and validated (container, config, every tensor's presence/shape/dtype, no extra
 * tensors, finite weights, unique ad ids, sane ad tables) before a LoadedBundle exists. Tensors
 * are views of the mapping; the native engine reads the ad tables in place from it.
 */
import { createHash } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import { Worker } from 'node:worker_threads';
import { binding, type IdIndexHandle, type MappedFile, type TensorArray } from '../engine/binding.js';
import { expectedTensors, modelDims, type DType, type ModelConfig, type SparseField } from './config.js';
import { BundleError, bytesAt, checkSafetensorsStart, readSafetensors, SAFETENSORS_START_BYTES, writeSafetensors, type ByteSource, type FileBytes, type Tensor } from './safetensors.js';
import { shardMeta } from './shard-meta.js';

export { BundleError } from './safetensors.js';

export const BUNDLE_FORMAT = '1';

export interface LoadedBundle {
  path: string;
  config: ModelConfig;
  /** tensors by name, as typed arrays (F32 → Float32Array, I64 → BigInt64Array, U64 → BigUint64Array, BF16 → Uint16Array) */
  tensors: Record<string, TensorArray>;
  shapes: Record<string, number[]>;
  dtypes: Record<string, DType>;
  numAds: number;
  /** sha256 of the file, hex */
  sha256: string;
  fileSize: number;
  /** the raw `__metadata__` strings (set by loadBundle/parseBundle) */
  metadata?: Record<string, string>;
  /** ad id → row in the ads.* tables (set by loadBundle/parseBundle; see adRows()) */
  adIndex?: AdIndex;
  /** the mapped file the tensors view (loadBundle); kept here so the mapping lives as long as they do */
  mapping?: MappedFile;
  /** loadBundle with `hash: 'background'`: resolves once `sha256` is set (it is '' until then) */
  hashed?: Promise<void>;
}

/**
 * ad id → row in the ads.* tables: the native open-addressing index (engine/id_map.h), built in
 * parallel from ads.id and shared with the engine, so no JavaScript copy of the ids exists.
 */
export class AdIndex {
  private constructor(readonly handle: IdIndexHandle, readonly size: number) {}

  /** The index of unique `ids`; a BundleError naming the first duplicate found otherwise. */
  static build(ids: BigInt64Array): AdIndex {
    const r = binding().buildIdIndex(ids);
    if ('duplicate' in r) failTensor('ads.id', `duplicate ad id ${r.duplicate} at rows ${r.rows[0]} and ${r.rows[1]}`);
    return new AdIndex(r.handle, ids.length);
  }

  /** Rows of `ids`, -1 where an id is not in the bundle. */
  rows(ids: BigInt64Array): Int32Array {
    return binding().idIndexRows(this.handle, ids);
  }

  get(id: bigint): number | undefined {
    const r = this.rows(BigInt64Array.of(id))[0];
    return r < 0 ? undefined : r;
  }

  has(id: bigint): boolean {
    return this.get(id) !== undefined;
  }
}

/** advertiser id → its ads' rows, from ads.advertiser (native: typed arrays, no JavaScript map). */
export class AdvertiserIndex {
  private readonly handle: IdIndexHandle;
  private readonly starts: Int32Array;
  private readonly rowList: Int32Array;

  constructor(advertisers: BigInt64Array) {
    const g = binding().buildGroupIndex(advertisers);
    this.handle = g.handle;
    this.starts = g.starts;
    this.rowList = g.rows;
  }

  /** The rows of `advertiser`'s ads, ascending (empty when it has none). */
  rows(advertiser: bigint): Int32Array {
    const g = binding().idIndexRows(this.handle, BigInt64Array.of(advertiser))[0];
    return g < 0 ? new Int32Array(0) : this.rowList.subarray(this.starts[g], this.starts[g + 1]);
  }

  has(advertiser: bigint): boolean {
    return binding().idIndexRows(this.handle, BigInt64Array.of(advertiser))[0] >= 0;
  }
}

/** ad id → row, built (and cached on the bundle) when the bundle did not come from parseBundle. */
export function adRows(b: LoadedBundle): AdIndex {
  b.adIndex ??= AdIndex.build(b.tensors['ads.id'] as BigInt64Array);
  return b.adIndex;
}

/** sha256 of a whole file's bytes, in pieces (a mapped file may exceed one typed array's 2^32 limit). */
function sha256Of(buf: FileBytes): string {
  const hash = createHash('sha256');
  const piece = 1 << 30;
  for (let off = 0; off < buf.byteLength; off += piece) hash.update(bytesAt(buf, off, Math.min(piece, buf.byteLength - off)));
  return hash.digest('hex');
}

/**
 * A cheap check before a server binds its port: the bundle is a readable regular file that starts
 * like a safetensors file. The full validation runs when it is loaded.
 */
export async function checkBundleFile(path: string): Promise<void> {
  let fh: FileHandle | undefined;
  try {
    fh = await open(path, 'r');
    const st = await fh.stat();
    if (!st.isFile()) throw new Error('not a regular file');
    const start = Buffer.alloc(Math.min(SAFETENSORS_START_BYTES, st.size));
    await fh.read(start, 0, start.length, 0);
    checkSafetensorsStart(start, st.size);
  } catch (e) {
    if (e instanceof BundleError) {
      e.message = `bundle ${path}: ${e.message}`;
      throw e;
    }
    throw new BundleError(`cannot read bundle ${path}: ${(e as Error).message}`);
  } finally {
    await fh?.close();
  }
}

/** What a bundle is read for: the whole model (default), or only the ad tables a fallback answer
 *  needs (the --fallback-only stand-in when no version loads; docs/funnel.md "Fallback"). */
export interface BundleReadOptions {
  adsOnly?: boolean;
  /** the file's sha256: 'now' (default) before the bundle is returned; 'background' (loadBundle) on
   *  a worker thread while the caller goes on, `hashed` resolving once `sha256` is set; 'none'
   *  (parseBundle only) not at all */
  hash?: 'now' | 'background' | 'none';
}

/** The sha256 of the file at `path` and which file that was (src/model/hash-worker.ts), on a
 *  worker thread; `stop` ends the worker early. */
function hashInBackground(path: string): { result: Promise<{ sha256: string; id: string }>; stop(): void } {
  const worker = new Worker(new URL(import.meta.url.endsWith('.ts') ? './hash-worker.ts' : './hash-worker.js', import.meta.url), { workerData: { path } });
  const result = new Promise<{ sha256: string; id: string }>((resolve, reject) => {
    worker.once('message', (m: { sha256: string; id: string } | { error: string }) => ('error' in m ? reject(new Error(m.error)) : resolve(m)));
    worker.once('error', reject);
    worker.once('exit', (code) => reject(new Error(`the hashing thread exited with ${code} before answering`)));
  });
  result.catch(() => {}); // a caller that stopped waiting (the bundle was refused) must not see it
  return { result, stop: () => void worker.terminate() };
}

/** The tensors an ads-only read keeps and validates. */
export const AD_TABLES = ['ads.id', 'ads.advertiser', 'ads.bid', 'ads.targeting'] as const;

/**
 * Maps the file read-only and validates it in place (nothing is copied: the tensors view the
 * mapping). A file that changes while it is validated is refused; one that changes later is caught
 * by the engine, which then refuses to answer from it (docs/bundle-format.md "Mapped, not copied").
 */
export async function loadBundle(path: string, options: BundleReadOptions = {}): Promise<LoadedBundle> {
  let mapped: MappedFile;
  try {
    mapped = binding().mapFile(path);
  } catch (e) {
    throw new BundleError(`cannot read bundle ${path}: ${(e as Error).message.replace(`cannot map bundle ${path}: `, '')}`);
  }
  const { handle, size } = mapped;
  const source: ByteSource = { byteLength: size, bytes: (start, length) => new Uint8Array(binding().mapView(handle, start, length)) };
  const background = options.hash === 'background' ? hashInBackground(path) : undefined;
  try {
    const b = parseBundle(source, path, { ...options, hash: background ? 'none' : 'now' });
    const changed = binding().mappedFileChanged(mapped.handle);
    if (changed) throw new BundleError(`changed while it was being validated (${changed.replace(`bundle ${path} `, '')})`);
    b.mapping = mapped;
    if (background) {
      // the hash of the file that was read; if another file was there by then (replaced by rename
      // between the two opens) or the thread failed, the mapping is hashed here
      const id = binding().mappedFileId(handle);
      b.hashed = background.result.then(
        (r) => void (b.sha256 = r.id === id ? r.sha256 : sha256Of(source)),
        () => void (b.sha256 = sha256Of(source)),
      );
    }
    return b;
  } catch (e) {
    background?.stop();
    if (e instanceof BundleError) {
      e.message = `bundle ${path}: ${e.message}`;
    }
    throw e;
  }
}

/** Validates a bundle held in memory (the whole file). Tensors view `buf` where aligned. */
export function parseBundle(buf: FileBytes, path = '<buffer>', options: BundleReadOptions = {}): LoadedBundle {
  const { metadata, tensors } = readSafetensors(buf);
  const format = metadata['adrank.format'];
  if (format !== BUNDLE_FORMAT)
    throw new BundleError(`expected "${BUNDLE_FORMAT}" for __metadata__["adrank.format"], got ${JSON.stringify(format ?? null)}`, { field: 'adrank.format' });
  const rawConfig = metadata['adrank.config'];
  if (rawConfig === undefined) throw new BundleError('__metadata__ has no "adrank.config"', { field: 'adrank.config' });
  let parsed: unknown;
  try {
    parsed = JSON.parse(rawConfig);
  } catch (e) {
    throw new BundleError(`__metadata__["adrank.config"] is not valid JSON: ${(e as Error).message}`, { field: 'adrank.config' });
  }
  const config = validateConfig(parsed);
  shardMeta({ metadata }); // a shard's `adrank.shard` metadata, when present, must be well formed

  const ids = tensors.get('ads.id');
  if (!ids) throw new BundleError('tensor "ads.id": missing (the ad count N comes from it)', { tensor: 'ads.id' });
  if (ids.shape.length !== 1) throw new BundleError(`tensor "ads.id": expected shape [N], got ${JSON.stringify(ids.shape)}`, { tensor: 'ads.id' });
  const numAds = ids.shape[0];

  const adTables = new Set<string>(AD_TABLES);
  // ads-only: the ad tables alone are checked and kept; the model's tensors may be missing or bad
  const expected = expectedTensors(config, numAds).filter((s) => !options.adsOnly || adTables.has(s.name));
  const expectedNames = new Set(expected.map((s) => s.name));
  for (const spec of expected) {
    const t = tensors.get(spec.name);
    const where = { tensor: spec.name };
    if (!t) throw new BundleError(`tensor ${JSON.stringify(spec.name)}: missing (expected shape ${JSON.stringify(spec.shape)})`, where);
    if (!spec.dtypes.includes(t.dtype)) throw new BundleError(`tensor ${JSON.stringify(spec.name)}: expected dtype ${spec.dtypes.join(' or ')}, got ${t.dtype}`, where);
    if (t.shape.length !== spec.shape.length || t.shape.some((s, i) => s !== spec.shape[i]))
      throw new BundleError(`tensor ${JSON.stringify(spec.name)}: expected shape ${JSON.stringify(spec.shape)}, got ${JSON.stringify(t.shape)}${spec.derivation ? ` (${spec.derivation})` : ''}`, where);
    checkFinite(spec.name, t);
  }
  // optional: one fallback list per surface (docs/bundle-format.md "Fallback lists")
  const fallbackNames = new Set(config.surfaces.map((s) => `fallback.${s}`));
  const optional = [...tensors.keys()].filter((n) => fallbackNames.has(n));
  const extra = [...tensors.keys()].filter((n) => !expectedNames.has(n) && !fallbackNames.has(n));
  if (extra.length > 0 && !options.adsOnly)
    throw new BundleError(`unexpected tensor${extra.length > 1 ? 's' : ''} ${extra.map((n) => JSON.stringify(n)).join(', ')} not implied by the config`, { tensor: extra[0] });

  const arr = (name: string) => tensors.get(name)!.data;
  const adRow = checkAdTables(config, numAds, arr);
  if (!options.adsOnly) checkFeatureStats(arr);
  for (const name of optional) checkFallbackList(name, tensors.get(name)!, adRow);

  const out: LoadedBundle = {
    path,
    config,
    tensors: {},
    shapes: {},
    dtypes: {},
    numAds,
    sha256: options.hash === 'none' ? '' : sha256Of(buf),
    fileSize: buf.byteLength,
    metadata,
    adIndex: adRow,
  };
  for (const name of [...expected.map((spec) => spec.name), ...optional]) {
    const t = tensors.get(name)!;
    out.tensors[name] = t.data;
    out.shapes[name] = t.shape;
    out.dtypes[name] = t.dtype;
  }
  return out;
}

/** `fallback.<surface>`: I64 [L], ad ids of the bundle in priority order, each once. */
function checkFallbackList(name: string, t: Tensor, adRow: AdIndex): void {
  const where = { tensor: name };
  if (t.dtype !== 'I64') throw new BundleError(`tensor ${JSON.stringify(name)}: expected dtype I64, got ${t.dtype}`, where);
  if (t.shape.length !== 1) throw new BundleError(`tensor ${JSON.stringify(name)}: expected shape [L], got ${JSON.stringify(t.shape)}`, where);
  const ids = t.data as BigInt64Array;
  const rows = adRow.rows(ids);
  const seen = new Map<bigint, number>();
  for (let i = 0; i < ids.length; i++) {
    if (rows[i] < 0) throw new BundleError(`tensor ${JSON.stringify(name)}: ad id ${ids[i]} at index ${i} is not in ads.id`, where);
    const first = seen.get(ids[i]);
    if (first !== undefined) throw new BundleError(`tensor ${JSON.stringify(name)}: duplicate ad id ${ids[i]} at indices ${first} and ${i}`, where);
    seen.set(ids[i], i);
  }
}

function checkFinite(name: string, t: Tensor): void {
  const bad = (i: number, v: string): never => {
    throw new BundleError(`tensor ${JSON.stringify(name)}: ${v} at flat index ${i} (shape ${JSON.stringify(t.shape)})`, { tensor: name });
  };
  if ((t.dtype === 'F32' || t.dtype === 'BF16') && t.data.length >= 1 << 20) {
    // large (the ad tables): scanned natively, in parallel; the message is the same
    const i = binding().firstNonFinite(t.data as Float32Array | Uint16Array);
    if (i < 0) return;
    if (t.dtype === 'F32') bad(i, String((t.data as Float32Array)[i]));
    const v = (t.data as Uint16Array)[i];
    bad(i, v & 0x7f ? 'NaN' : v & 0x8000 ? '-Infinity' : 'Infinity');
  }
  if (t.dtype === 'F32') {
    const a = t.data as Float32Array;
    for (let i = 0; i < a.length; i++) {
      const v = a[i];
      if (v - v !== 0) bad(i, String(v));
    }
  } else if (t.dtype === 'BF16') {
    const a = t.data as Uint16Array;
    for (let i = 0; i < a.length; i++) if ((a[i] & 0x7f80) === 0x7f80) bad(i, a[i] & 0x7f ? 'NaN' : a[i] & 0x8000 ? '-Infinity' : 'Infinity');
  }
}

function failTensor(tensor: string, problem: string): never {
  throw new BundleError(`tensor ${JSON.stringify(tensor)}: ${problem}`, { tensor });
}

/** Unique ids (→ the id → row index), non-negative bids, targeting masks that allow some value. */
function checkAdTables(c: ModelConfig, n: number, arr: (name: string) => TensorArray): AdIndex {
  const fail = failTensor;
  const ids = arr('ads.id') as BigInt64Array;
  const adRow = AdIndex.build(ids);
  const bid = arr('ads.bid') as Float32Array;
  for (let i = 0; i < n; i++) if (!(bid[i] >= 0)) fail('ads.bid', `negative bid ${bid[i]} at row ${i} (ad ${ids[i]})`);
  const tg = arr('ads.targeting') as BigUint64Array;
  const dims = c.targeting_dims.length;
  const halves = new Uint32Array(tg.buffer, tg.byteOffset, tg.length * 2); // no BigInt per mask
  for (let i = 0; i < tg.length; i++)
    if (halves[2 * i] === 0 && halves[2 * i + 1] === 0)
      fail('ads.targeting', `row ${Math.floor(i / dims)} (ad ${ids[Math.floor(i / dims)]}) allows no value of targeting dimension ${JSON.stringify(c.targeting_dims[i % dims])} (mask 0; deactivate the ad instead)`);
  return adRow;
}

/** The dense features' standard deviations divide: they must be positive. */
function checkFeatureStats(arr: (name: string) => TensorArray): void {
  for (const key of ['user_dense', 'ad_dense'] as const) {
    const name = `features.${key}.std`;
    const std = arr(name) as Float32Array;
    for (let i = 0; i < std.length; i++) if (!(std[i] > 0)) failTensor(name, `std ${std[i]} at index ${i} is not positive`);
  }
}

// ---------------------------------------------------------------------------------------------
// Config validation, field by field: "expected <what> for adrank.config.<field>, got <value>".

const NAME_RE = /^[A-Za-z0-9_]+$/;
const CONFIG_KEYS = [
  'name', 'version', 'tasks', 'surfaces', 'targeting_dims', 'user_dense', 'ad_dense', 'dense_clip', 'user_sparse', 'ad_sparse',
  'user_embedding_dim', 'ad_embedding_dim', 'surface_dim', 'sequence', 'masknet', 'dcn', 'mlp', 'retrieval', 'reserve_price',
];

class ConfigReader {
  constructor(private readonly root: Record<string, unknown>) {}

  fail(field: string, what: string, got: unknown): never {
    let shown: string;
    try {
      shown = got === undefined ? 'nothing' : JSON.stringify(got);
    } catch {
      shown = String(got);
    }
    if (shown.length > 80) shown = shown.slice(0, 77) + '...';
    throw new BundleError(`expected ${what} for adrank.config.${field}, got ${shown}`, { field });
  }

  get(field: string): unknown {
    let v: unknown = this.root;
    for (const part of field.split('.')) v = v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>)[part] : undefined;
    return v;
  }

  int(field: string, min: number, v: unknown = this.get(field)): number {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) this.fail(field, min === 1 ? 'a positive integer' : `an integer >= ${min}`, v);
    return v as number;
  }

  num(field: string, positive: boolean, v: unknown = this.get(field)): number {
    if (typeof v !== 'number' || !Number.isFinite(v) || (positive ? v <= 0 : v < 0)) this.fail(field, positive ? 'a positive number' : 'a non-negative number', v);
    return v as number;
  }

  str(field: string, v: unknown = this.get(field)): string {
    if (typeof v !== 'string' || v.length === 0) this.fail(field, 'a non-empty string', v);
    return v as string;
  }

  list(field: string, minLen: number, v: unknown = this.get(field)): unknown[] {
    if (!Array.isArray(v) || v.length < minLen) this.fail(field, minLen > 0 ? `a list of at least ${minLen}` : 'a list', v);
    return v as unknown[];
  }

  names(field: string, minLen: number): string[] {
    const out = this.list(field, minLen).map((v, i) => {
      const s = this.str(`${field}[${i}]`, v);
      if (!NAME_RE.test(s)) this.fail(`${field}[${i}]`, 'a name of letters, digits and _', s);
      return s;
    });
    const dup = out.find((s, i) => out.indexOf(s) !== i);
    if (dup !== undefined) this.fail(field, 'unique names', dup);
    return out;
  }

  /** Refuses keys outside `keys` (a misspelt optional key would otherwise pass silently). */
  known(field: string, keys: string[]): void {
    const o = (field ? this.get(field) : this.root) as Record<string, unknown>;
    const bad = Object.keys(o).find((k) => !keys.includes(k));
    if (bad !== undefined) this.fail(field ? `${field}.${bad}` : bad, `no such key (known: ${keys.join(', ')})`, o[bad]);
  }

  object(field: string): void {
    const v = this.get(field);
    if (v === null || typeof v !== 'object' || Array.isArray(v)) this.fail(field, 'an object', v);
  }

  sparse(field: string): SparseField[] {
    const out = this.list(field, 0).map((v, i) => {
      const f = `${field}[${i}]`;
      if (v === null || typeof v !== 'object' || Array.isArray(v)) this.fail(f, 'an object {name, cardinality, dim}', v);
      const o = v as Record<string, unknown>;
      const name = this.str(`${f}.name`, o.name);
      if (!NAME_RE.test(name)) this.fail(`${f}.name`, 'a name of letters, digits and _', name);
      return { name, cardinality: this.int(`${f}.cardinality`, 1, o.cardinality), dim: this.int(`${f}.dim`, 1, o.dim) };
    });
    const names = out.map((f) => f.name);
    const dup = names.find((s, i) => names.indexOf(s) !== i);
    if (dup !== undefined) this.fail(field, 'unique field names', dup);
    return out;
  }
}

/** Checks a parsed `adrank.config` and returns it as a ModelConfig (defaults filled in). */
export function validateConfig(raw: unknown): ModelConfig {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new BundleError(`expected a JSON object for adrank.config, got ${JSON.stringify(raw)}`, { field: 'adrank.config' });
  const r = new ConfigReader(raw as Record<string, unknown>);
  for (const o of ['sequence', 'masknet', 'dcn', 'retrieval']) r.object(o);
  r.known('', CONFIG_KEYS);
  r.known('sequence', ['max_len', 'item_buckets', 'actions', 'dim', 'heads', 'ffn_dim', 'layers']);
  r.known('masknet', ['blocks', 'projection_ratio', 'output_dim', 'hidden']);
  r.known('dcn', ['layers', 'rank']);
  r.known('retrieval', ['dim', 'hidden']);
  const targeting = r.names('targeting_dims', 0);
  const c: ModelConfig = {
    name: r.str('name'),
    version: r.str('version'),
    tasks: r.names('tasks', 1),
    surfaces: r.names('surfaces', 1),
    targeting_dims: targeting,
    user_dense: r.int('user_dense', 0),
    ad_dense: r.int('ad_dense', 0),
    dense_clip: r.get('dense_clip') === undefined ? 5 : r.num('dense_clip', true),
    user_sparse: r.sparse('user_sparse'),
    ad_sparse: r.sparse('ad_sparse'),
    user_embedding_dim: r.int('user_embedding_dim', 1),
    ad_embedding_dim: r.int('ad_embedding_dim', 1),
    surface_dim: r.int('surface_dim', 1),
    sequence: {
      max_len: r.int('sequence.max_len', 1),
      item_buckets: r.int('sequence.item_buckets', 1),
      actions: r.int('sequence.actions', 1),
      dim: r.int('sequence.dim', 1),
      heads: r.int('sequence.heads', 1),
      ffn_dim: r.int('sequence.ffn_dim', 1),
      layers: r.int('sequence.layers', 0),
    },
    masknet: {
      blocks: r.int('masknet.blocks', 1),
      projection_ratio: r.num('masknet.projection_ratio', true),
      output_dim: r.int('masknet.output_dim', 1),
    },
    dcn: { layers: r.int('dcn.layers', 0), rank: r.int('dcn.rank', 0) },
    mlp: r.list('mlp', 0).map((v, i) => r.int(`mlp[${i}]`, 1, v)),
    retrieval: { dim: r.int('retrieval.dim', 1), hidden: r.list('retrieval.hidden', 0).map((v, i) => r.int(`retrieval.hidden[${i}]`, 1, v)) },
  };
  if (c.sequence.dim % c.sequence.heads !== 0) r.fail('sequence.heads', `a divisor of sequence.dim (${c.sequence.dim})`, c.sequence.heads);
  if (r.get('reserve_price') !== undefined) c.reserve_price = r.num('reserve_price', false);
  if (r.get('masknet.hidden') !== undefined) c.masknet.hidden = r.int('masknet.hidden', 1);
  if (modelDims(c).maskHidden < 1) r.fail('masknet.projection_ratio', 'a ratio giving a mask width ⌊ratio · d + ½⌋ >= 1 (or masknet.hidden)', c.masknet.projection_ratio);
  return c;
}

/** Writes a bundle file: the config as metadata plus the tensors (see docs/bundle-format.md).
 *  The result is validated only when read back; call parseBundle/loadBundle to check it. */
export async function writeBundle(path: string, config: ModelConfig, tensors: Map<string, Tensor> | Record<string, Tensor>): Promise<{ sha256: string; size: number }> {
  return writeSafetensors(path, tensors, bundleMetadata(config));
}

export function bundleMetadata(config: ModelConfig): Record<string, string> {
  return { 'adrank.format': BUNDLE_FORMAT, 'adrank.config': JSON.stringify(config) };
}
