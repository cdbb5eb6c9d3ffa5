/**
 * The safetensors container (https://github.com/huggingface/safetensors): an 8-byte
 * little-endian u64 header length N, N bytes of a JSON object header, then the raw tensor data.
 * Every header entry but `__metadata__` is `{dtype, shape, data_offsets: [begin, end]}`, with
 * offsets relative to the start of the data region.
 *
 * The reader validates the way the safetensors library does (header size cap, JSON object,
 * known dtype, integer shapes without overflow, dtype size × elements = byte length, offsets
 * contiguous and covering the data region exactly) and throws a BundleError naming the tensor.
 * Assumes a little-endian host (x86-64, aarch64), as the engine does.
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import type { DType } from './config.js';
import type { TensorArray } from '../engine/binding.js';

/** A bundle that cannot be loaded; `tensor` or `field` names what is wrong when known. */
export class BundleError extends Error {
  readonly code = 'BUNDLE' as const;
  constructor(
    message: string,
    readonly where: { tensor?: string; field?: string } = {},
  ) {
    super(message);
    this.name = 'BundleError';
  }
}

/** Bytes per element of each supported dtype. Any other safetensors dtype is refused. */
export const DTYPE_SIZE: Record<DType, number> = { F32: 4, BF16: 2, I64: 8, U64: 8 };

/** Largest header accepted (the safetensors library uses 100 MB too). */
export const MAX_HEADER_BYTES = 100_000_000;

export interface TensorEntry {
  name: string;
  dtype: DType;
  shape: number[];
  /** byte offsets relative to the data region */
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  /** tensors in data order (sorted by begin offset) */
  entries: TensorEntry[];
  metadata: Record<string, string>;
  /** absolute file offset of the data region (8 + header length) */
  dataStart: number;
}

export interface Tensor {
  dtype: DType;
  shape: number[];
  data: TensorArray;
}

const quote = (s: string) => JSON.stringify(s);
const isDType = (s: unknown): s is DType => typeof s === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_SIZE, s);

/** The first bytes of a file, for messages: printable ASCII as text, else hex. */
function describeStart(buf: Uint8Array): string {
  const head = buf.subarray(0, 16);
  const printable = head.every((b) => b >= 0x20 && b < 0x7f);
  return printable ? `the text ${JSON.stringify(Buffer.from(head).toString('latin1'))}…` : `bytes ${Buffer.from(head).toString('hex')}…`;
}

/** Bytes of a file's start that `checkSafetensorsStart` looks at. */
export const SAFETENSORS_START_BYTES = 16;

/**
 * Refuses a file that is not safetensors at all, from its first bytes and its size: every
 * safetensors header is a JSON object right after the 8-byte length, so an impossible length with
 * no '{' after it is another kind of file (ONNX, pickle, text). Saying so beats quoting the length.
 */
export function checkSafetensorsStart(start: Uint8Array, fileSize: number): void {
  if (fileSize < 8) throw new BundleError(`file is ${fileSize} bytes, too short for the 8-byte safetensors header length (truncated?)`);
  const n64 = new DataView(start.buffer, start.byteOffset, 8).getBigUint64(0, true);
  if ((n64 > BigInt(MAX_HEADER_BYTES) || 8n + n64 > BigInt(fileSize)) && (start.byteLength < 9 || start[8] !== 0x7b))
    throw new BundleError(`not a safetensors file: expected an 8-byte header length followed by a JSON header starting with "{", got ${describeStart(start)}`);
}

/** A file's bytes viewed region by region (a mapped file: one view holds at most 2^32 - 1 bytes). */
export interface ByteSource {
  readonly byteLength: number;
  bytes(start: number, length: number): Uint8Array;
}

/** A whole file's bytes: a Uint8Array, an ArrayBuffer, or a ByteSource. */
export type FileBytes = Uint8Array | ArrayBuffer | ByteSource;

/** `length` bytes of `buf` from `start`, as a view. */
export function bytesAt(buf: FileBytes, start: number, length: number): Uint8Array {
  if (buf instanceof Uint8Array) return buf.subarray(start, start + length);
  if (buf instanceof ArrayBuffer) return new Uint8Array(buf, start, length);
  return buf.bytes(start, length);
}

/** Parses and validates the header of a safetensors file held in `buf` (the whole file). */
export function parseSafetensorsHeader(buf: FileBytes): SafetensorsHeader {
  const fileSize = buf.byteLength;
  checkSafetensorsStart(bytesAt(buf, 0, Math.min(SAFETENSORS_START_BYTES, fileSize)), fileSize);
  const head = bytesAt(buf, 0, 8);
  const n64 = new DataView(head.buffer, head.byteOffset, 8).getBigUint64(0, true);
  if (n64 > BigInt(MAX_HEADER_BYTES)) throw new BundleError(`header length ${n64} exceeds the ${MAX_HEADER_BYTES}-byte cap`);
  const n = Number(n64);
  if (8 + n > fileSize) throw new BundleError(`header length ${n} runs past the end of the ${fileSize}-byte file (truncated?)`);
  if (n < 2) throw new BundleError(`header length ${n} is too short for a JSON object`);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytesAt(buf, 8, n)));
  } catch (e) {
    throw new BundleError(`header is not valid UTF-8 JSON: ${(e as Error).message}`);
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) throw new BundleError('header is not a JSON object');
  const dataStart = 8 + n;
  const dataLen = fileSize - dataStart;
  const metadata: Record<string, string> = {};
  const entries: TensorEntry[] = [];
  for (const [name, v] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new BundleError('__metadata__ is not a JSON object of strings', { field: '__metadata__' });
      for (const [k, s] of Object.entries(v as Record<string, unknown>)) {
        if (typeof s !== 'string') throw new BundleError(`__metadata__[${quote(k)}] is not a string`, { field: k });
        metadata[k] = s;
      }
      continue;
    }
    entries.push(parseEntry(name, v));
  }
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let prev: TensorEntry | undefined;
  for (const e of entries) {
    const at = `tensor ${quote(e.name)}: data_offsets [${e.begin},${e.end}]`;
    const prevEnd = prev ? prev.end : 0;
    if (e.begin < prevEnd) throw new BundleError(`${at} overlap the previous tensor ${quote(prev!.name)} [${prev!.begin},${prev!.end}]`, { tensor: e.name });
    if (e.begin > prevEnd)
      throw new BundleError(`${at} leave a gap of ${e.begin - prevEnd} bytes after ${prev ? `the previous tensor ${quote(prev.name)}` : 'the start of the data'}`, { tensor: e.name });
    if (e.end > dataLen) throw new BundleError(`${at} run past the end of the data region (${dataLen} bytes; truncated?)`, { tensor: e.name });
    prev = e;
  }
  const covered = prev ? prev.end : 0;
  if (covered !== dataLen) throw new BundleError(`tensors cover ${covered} bytes of the ${dataLen}-byte data region (${dataLen - covered} trailing bytes)`);
  return { entries, metadata, dataStart };
}

function parseEntry(name: string, v: unknown): TensorEntry {
  const fail = (problem: string): never => {
    throw new BundleError(`tensor ${quote(name)}: ${problem}`, { tensor: name });
  };
  if (v === null || typeof v !== 'object' || Array.isArray(v)) fail('header entry is not an object {dtype, shape, data_offsets}');
  const { dtype, shape, data_offsets: offs } = v as Record<string, unknown>;
  if (!isDType(dtype)) fail(`unsupported dtype ${JSON.stringify(dtype)} (expected one of ${Object.keys(DTYPE_SIZE).join(', ')})`);
  if (!Array.isArray(shape)) fail(`shape ${JSON.stringify(shape)} is not a list`);
  let elems = 1n;
  for (const s of shape as unknown[]) {
    if (typeof s !== 'number' || !Number.isSafeInteger(s) || s < 0) fail(`shape ${JSON.stringify(shape)} has a dimension that is not a non-negative integer`);
    elems *= BigInt(s as number);
  }
  if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => typeof o === 'number' && Number.isSafeInteger(o) && o >= 0))
    fail(`data_offsets ${JSON.stringify(offs)} is not a pair of non-negative integers`);
  const [begin, end] = offs as [number, number];
  if (end < begin) fail(`data_offsets [${begin},${end}] end before they begin`);
  const bytes = elems * BigInt(DTYPE_SIZE[dtype as DType]);
  if (bytes !== BigInt(end - begin))
    fail(`dtype ${dtype as string} × shape ${JSON.stringify(shape)} = ${bytes} bytes but data_offsets [${begin},${end}] hold ${end - begin}`);
  return { name, dtype: dtype as DType, shape: shape as number[], begin, end };
}

/** A typed-array view of one tensor's data, or a copy when the bytes are not aligned for it. */
export function tensorData(buf: FileBytes, dataStart: number, e: Pick<TensorEntry, 'dtype' | 'begin' | 'end'>): TensorArray {
  const size = DTYPE_SIZE[e.dtype];
  const count = (e.end - e.begin) / size;
  const view = bytesAt(buf, dataStart + e.begin, e.end - e.begin);
  let ab = view.buffer as ArrayBuffer;
  let off = view.byteOffset;
  // aligned in memory: in the buffer and, for a file's regions, in the file (its mapping is page-aligned)
  const inFile = (buf instanceof Uint8Array ? buf.byteOffset : 0) + dataStart + e.begin;
  if (off % size !== 0 || inFile % size !== 0) {
    ab = new Uint8Array(view).buffer as ArrayBuffer; // aligned copy (Buffer.slice would be a view)
    off = 0;
  }
  switch (e.dtype) {
    case 'F32':
      return new Float32Array(ab, off, count);
    case 'BF16':
      return new Uint16Array(ab, off, count);
    case 'I64':
      return new BigInt64Array(ab, off, count);
    case 'U64':
      return new BigUint64Array(ab, off, count);
  }
}

/** Reads a whole safetensors file held in memory; tensors view `buf` where alignment allows. */
export function readSafetensors(buf: FileBytes): { metadata: Record<string, string>; tensors: Map<string, Tensor> } {
  const h = parseSafetensorsHeader(buf);
  const tensors = new Map<string, Tensor>();
  for (const e of h.entries) tensors.set(e.name, { dtype: e.dtype, shape: e.shape, data: tensorData(buf, h.dataStart, e) });
  return { metadata: h.metadata, tensors };
}

const ARRAY_DTYPE: [new (...a: never[]) => TensorArray, DType][] = [
  [Float32Array, 'F32'],
  [Uint16Array, 'BF16'],
  [BigInt64Array, 'I64'],
  [BigUint64Array, 'U64'],
];

interface Layout {
  header: Buffer;
  /** indexes into the input, in data order */
  order: number[];
  dataBytes: number;
}

interface Described {
  name: string;
  dtype: DType;
  shape: number[];
}

/** Header and data order for writing: 8-byte element types first so every tensor stays aligned
 *  (the header is padded with spaces to a multiple of 8, as the safetensors writer does). */
function layoutOf(list: Described[], metadata: Record<string, string>): Layout {
  const bytes = (t: Described) => t.shape.reduce((a, b) => a * b, 1) * DTYPE_SIZE[t.dtype];
  const order = list.map((_, i) => i).sort((a, b) => {
    const [x, y] = [list[a], list[b]];
    return DTYPE_SIZE[y.dtype] - DTYPE_SIZE[x.dtype] || (x.name < y.name ? -1 : x.name > y.name ? 1 : 0);
  });
  const json: Record<string, unknown> = { __metadata__: metadata };
  let off = 0;
  for (const i of order) {
    const t = list[i];
    json[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + bytes(t)] };
    off += bytes(t);
  }
  const text = JSON.stringify(json);
  const len = (Buffer.byteLength(text) + 7) & ~7;
  const header = Buffer.alloc(8 + len, 0x20);
  header.writeBigUInt64LE(BigInt(len), 0);
  header.write(text, 8, 'utf8');
  return { header, order, dataBytes: off };
}

function layout(tensors: Map<string, Tensor> | Record<string, Tensor>, metadata: Record<string, string>): { header: Buffer; order: [string, Tensor][]; dataBytes: number } {
  const list = tensors instanceof Map ? [...tensors] : Object.entries(tensors);
  for (const [name, t] of list) {
    const want = ARRAY_DTYPE.find(([, d]) => d === t.dtype);
    if (!want || !(t.data instanceof want[0])) throw new BundleError(`tensor ${quote(name)}: dtype ${t.dtype} does not match its ${t.data.constructor.name}`, { tensor: name });
    const elems = t.shape.reduce((a, b) => a * b, 1);
    if (elems !== t.data.length) throw new BundleError(`tensor ${quote(name)}: shape ${JSON.stringify(t.shape)} has ${elems} elements, data has ${t.data.length}`, { tensor: name });
  }
  const l = layoutOf(list.map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape })), metadata);
  return { header: l.header, order: l.order.map((i) => list[i]), dataBytes: l.dataBytes };
}

/** One tensor of a streamed write: its data as consecutive pieces (together dtype × shape). */
export interface StreamEntry extends Described {
  chunks: () => Iterable<TensorArray>;
}

const bytesOf = (a: TensorArray) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** Encodes tensors + metadata as one safetensors Buffer (fine for small files and tests). */
export function encodeSafetensors(tensors: Map<string, Tensor> | Record<string, Tensor>, metadata: Record<string, string>): Buffer {
  const { header, order, dataBytes } = layout(tensors, metadata);
  const out = Buffer.allocUnsafe(header.length + dataBytes);
  header.copy(out, 0);
  let off = header.length;
  for (const [, t] of order) {
    out.set(bytesOf(t.data), off);
    off += t.data.byteLength;
  }
  return out;
}

/** Writes a safetensors file tensor by tensor (no whole-file buffer); returns its sha256 and size. */
export async function writeSafetensors(
  path: string,
  tensors: Map<string, Tensor> | Record<string, Tensor>,
  metadata: Record<string, string>,
): Promise<{ sha256: string; size: number }> {
  layout(tensors, metadata); // checks dtype and length against the data
  const list = tensors instanceof Map ? [...tensors] : Object.entries(tensors);
  return writeSafetensorsStream(path, list.map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape, chunks: () => [t.data] })), metadata);
}

/**
 * Writes a safetensors file whose tensors arrive in pieces (`chunks`, produced only when that
 * tensor's turn comes), so a file larger than memory can be written. Each tensor's pieces must add
 * up to its dtype × shape. `onProgress(done, total)` gets the bytes written after each piece.
 */
export async function writeSafetensorsStream(
  path: string,
  entries: StreamEntry[],
  metadata: Record<string, string>,
  onProgress?: (done: number, total: number) => void,
): Promise<{ sha256: string; size: number }> {
  const { header, order, dataBytes } = layoutOf(entries, metadata);
  const total = header.length + dataBytes;
  const hash = createHash('sha256');
  const fh = await open(path, 'w');
  let done = 0;
  try {
    const put = async (b: Uint8Array) => {
      hash.update(b);
      for (let off = 0; off < b.byteLength; ) off += (await fh.write(b, off, b.byteLength - off)).bytesWritten;
      done += b.byteLength;
      onProgress?.(done, total);
    };
    await put(header);
    for (const i of order) {
      const e = entries[i];
      const want = e.shape.reduce((a, b) => a * b, 1) * DTYPE_SIZE[e.dtype];
      let got = 0;
      for (const piece of e.chunks()) {
        await put(bytesOf(piece));
        got += piece.byteLength;
      }
      if (got !== want) throw new BundleError(`tensor ${quote(e.name)}: ${got} bytes written, dtype × shape needs ${want}`, { tensor: e.name });
    }
  } finally {
    await fh.close();
  }
  return { sha256: hash.digest('hex'), size: total };
}

/** The tensor names and shapes of a safetensors file, from its header alone (no data is read,
 *  nothing is validated beyond the header being a JSON object): for quick looks such as an ad count. */
export async function readSafetensorsHeaderFile(path: string): Promise<{ entries: { name: string; shape: number[] }[] }> {
  const fh = await open(path, 'r');
  try {
    const size = (await fh.stat()).size;
    const start = Buffer.alloc(Math.min(SAFETENSORS_START_BYTES, size));
    await fh.read(start, 0, start.length, 0);
    checkSafetensorsStart(start, size);
    const n = Number(start.readBigUInt64LE(0));
    if (n > MAX_HEADER_BYTES || 8 + n > size) throw new BundleError(`header length ${n} is not within the ${size}-byte file`);
    const text = Buffer.alloc(n);
    await fh.read(text, 0, n, 8);
    const header = JSON.parse(text.toString('utf8')) as Record<string, { shape?: number[] }>;
    return { entries: Object.entries(header).filter(([k]) => k !== '__metadata__').map(([name, v]) => ({ name, shape: v.shape ?? [] })) };
  } finally {
    await fh.close();
  }
}
