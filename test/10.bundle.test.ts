/**
 * Bundle layer: safetensors reader/writer, bundle validation (each rejection names the tensor or
 * field and the problem), the demo bundle's determinism and numeric behaviour.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { adRows, BundleError, loadBundle, parseBundle, writeBundle, bundleMetadata } from '../src/model/bundle.js';
import { expectedTensors, modelDims, type ModelConfig } from '../src/model/config.js';
import { makeDemoBundle, makeDemoConfig, makeRandomConfig, writeDemoBundle } from '../src/model/demo.js';
import { encodeSafetensors, readSafetensors, MAX_HEADER_BYTES, type Tensor } from '../src/model/safetensors.js';
import { candidate, RefModel, userSide } from './reference/model.js';
import { randomRequest, Rng, toLoaded } from './support/index.js';

/** A small valid bundle: random config, 30 ads. */
function small(seed = 5, extra: Partial<ModelConfig> = {}) {
  const config = { ...makeRandomConfig(new Rng(seed), { dcnRank: 2, seqLayers: 1 }), ...extra };
  const b = makeDemoBundle({ config, ads: 30, seed });
  return { config, tensors: b.tensors, buf: encodeSafetensors(b.tensors, b.metadata) };
}

/** Splits a safetensors buffer into header object and data; `join` puts them back. */
function split(buf: Buffer): { header: Record<string, any>; data: Buffer } {
  const n = Number(buf.readBigUInt64LE(0));
  return { header: JSON.parse(buf.subarray(8, 8 + n).toString('utf8')), data: buf.subarray(8 + n) };
}
function join8(header: unknown, data: Buffer, headerLen?: bigint, align?: number): Buffer {
  let text = JSON.stringify(header);
  if (align !== undefined) while ((8 + Buffer.byteLength(text)) % 8 !== align) text += ' ';
  const h = Buffer.from(text, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(headerLen ?? BigInt(h.length));
  return Buffer.concat([len, h, data]);
}
/** Header entries sorted by data offset. */
function entries(header: Record<string, any>): [string, any][] {
  return Object.entries(header)
    .filter(([k]) => k !== '__metadata__')
    .sort((a, b) => a[1].data_offsets[0] - b[1].data_offsets[0]);
}

function refused(f: () => unknown, ...patterns: (string | RegExp)[]): BundleError {
  let err: unknown;
  try {
    f();
  } catch (e) {
    err = e;
  }
  expect(err, 'expected a BundleError').to.be.instanceOf(BundleError);
  const msg = (err as Error).message;
  for (const p of patterns) {
    if (typeof p === 'string') expect(msg).to.include(p);
    else expect(msg).to.match(p);
  }
  return err as BundleError;
}

function withTensor(tensors: Map<string, Tensor>, name: string, t: Tensor | undefined): Map<string, Tensor> {
  const m = new Map(tensors);
  if (t) m.set(name, t);
  else m.delete(name);
  return m;
}

function withConfig(config: ModelConfig, tensors: Map<string, Tensor>, edit: (c: any) => void): Buffer {
  const c = structuredClone(config);
  edit(c);
  return encodeSafetensors(tensors, { 'adrank.format': '1', 'adrank.config': JSON.stringify(c) });
}

describe('10 bundle', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'adrank-bundle-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  describe('round trip', () => {
    it('writeBundle → loadBundle gives identical tensors, metadata, config and the file sha256', async () => {
      const { config, tensors } = small(11);
      const path = join(dir, 'b.safetensors');
      const w = await writeBundle(path, config, tensors);
      const b = await loadBundle(path);
      const file = readFileSync(path);
      expect(b.sha256).to.equal(createHash('sha256').update(file).digest('hex'));
      expect(w.sha256).to.equal(b.sha256);
      expect(b.fileSize).to.equal(file.length).and.to.equal(w.size);
      expect(b.config).to.deep.equal(config);
      expect(b.metadata).to.deep.equal(bundleMetadata(config));
      expect(b.numAds).to.equal(30);
      const names = expectedTensors(config, 30).map((s) => s.name);
      expect(Object.keys(b.tensors).sort()).to.deep.equal([...names].sort());
      for (const name of names) {
        const t = tensors.get(name)!;
        expect(b.dtypes[name], name).to.equal(t.dtype);
        expect(b.shapes[name], name).to.deep.equal(t.shape);
        expect(Buffer.from(b.tensors[name].buffer, b.tensors[name].byteOffset, b.tensors[name].byteLength).equals(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength)), name).to.equal(true);
      }
      const ids = tensors.get('ads.id')!.data as BigInt64Array;
      expect(adRows(b).get(ids[17])).to.equal(17);
    });

    it('keeps BF16 retrieval tables as raw bits', () => {
      const config = makeRandomConfig(new Rng(3));
      const d = makeDemoBundle({ config, ads: 10, seed: 3, retrievalDtype: 'BF16' });
      const b = toLoaded(config, d.tensors);
      expect(b.dtypes['ads.retrieval']).to.equal('BF16');
      expect(Array.from(b.tensors['ads.retrieval'] as Uint16Array)).to.deep.equal(Array.from(d.tensors.get('ads.retrieval')!.data as Uint16Array));
    });

    it('copies tensors whose data is not aligned for their type', () => {
      const { config, buf } = small(12);
      const { header, data } = split(buf);
      const unaligned = join8(header, data, undefined, 3); // data starts at an odd offset
      expect((8 + Number(unaligned.readBigUInt64LE(0))) % 8).to.not.equal(0);
      const a = parseBundle(unaligned);
      const b = parseBundle(buf);
      for (const name of Object.keys(b.tensors)) expect(Array.from(a.tensors[name] as ArrayLike<unknown>), name).to.deep.equal(Array.from(b.tensors[name] as ArrayLike<unknown>));
      expect(a.config).to.deep.equal(config);
    });

    it('loads all-or-nothing: a file that fails leaves nothing behind and says which file', async () => {
      const path = join(dir, 'missing.safetensors');
      let err: unknown;
      await loadBundle(path).catch((e) => (err = e));
      expect(err).to.be.instanceOf(BundleError);
      expect((err as Error).message).to.include(path);
    });
  });

  describe('safetensors container rejections', () => {
    it('truncated file (data cut short) names the tensor that runs past the end', () => {
      const { buf } = small();
      const last = entries(split(buf).header).at(-1)![0];
      refused(() => parseBundle(buf.subarray(0, buf.length - 3)), `tensor "${last}"`, 'run past the end of the data region');
    });

    it('file shorter than the 8-byte length prefix', () => {
      refused(() => parseBundle(Buffer.alloc(5)), 'too short', 'truncated');
    });

    it('a file of another kind is "not a safetensors file", not a nonsense header length', () => {
      const text = Buffer.from('{"name": "a JSON file, not a bundle", "weights": [1, 2, 3]}\n');
      const e = refused(() => parseBundle(text), 'not a safetensors file', 'got the text "{\\"name\\": \\"a JSON');
      expect(e.message).to.not.match(/header length \d/);
      const binary = Buffer.from('0800120a6f6e6e782d6578616d706c65', 'hex'); // an ONNX protobuf's first bytes
      refused(() => parseBundle(Buffer.concat([binary, Buffer.alloc(64, 1)])), 'not a safetensors file', 'got bytes 0800120a6f6e6e78');
    });

    it('header length larger than the file', () => {
      const { buf } = small();
      const b = Buffer.from(buf);
      b.writeBigUInt64LE(BigInt(buf.length));
      refused(() => parseBundle(b), `header length ${buf.length} runs past the end of the ${buf.length}-byte file`);
    });

    it('header length over the cap (and u64 values that would overflow a double)', () => {
      const { buf } = small();
      for (const n of [BigInt(MAX_HEADER_BYTES) + 1n, (1n << 64n) - 1n]) {
        const b = Buffer.from(buf);
        b.writeBigUInt64LE(n);
        refused(() => parseBundle(b), `header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte cap`);
      }
    });

    it('header that is not JSON, or not an object', () => {
      const { buf } = small();
      const b = Buffer.from(buf);
      b[8] = 'x'.charCodeAt(0);
      refused(() => parseBundle(b), 'header is not valid UTF-8 JSON');
      refused(() => parseBundle(join8([1, 2], Buffer.alloc(0))), 'header is not a JSON object');
    });

    it('overlapping data_offsets', () => {
      const { buf } = small();
      const { header, data } = split(buf);
      const [name, e] = entries(header)[3];
      const [prev, pe] = entries(header)[2];
      e.data_offsets = [e.data_offsets[0] - 4, e.data_offsets[1] - 4];
      refused(() => parseBundle(join8(header, data)), `tensor "${name}": data_offsets [${e.data_offsets[0]},${e.data_offsets[1]}] overlap the previous tensor "${prev}" [${pe.data_offsets[0]},${pe.data_offsets[1]}]`);
    });

    it('a gap between tensors', () => {
      const { buf } = small();
      const { header, data } = split(buf);
      const [name, e] = entries(header)[5];
      e.data_offsets = [e.data_offsets[0] + 8, e.data_offsets[1] + 8];
      refused(() => parseBundle(join8(header, data)), `tensor "${name}"`, 'leave a gap of 8 bytes');
    });

    it('offsets outside the data region', () => {
      const { buf } = small();
      const { header, data } = split(buf);
      const [name, e] = entries(header).at(-1)!;
      e.shape = [...e.shape.slice(0, -1), e.shape.at(-1) * 2];
      e.data_offsets = [e.data_offsets[0], e.data_offsets[0] + 2 * (e.data_offsets[1] - e.data_offsets[0])];
      refused(() => parseBundle(join8(header, data)), `tensor "${name}"`, 'run past the end of the data region');
    });

    it('trailing bytes after the last tensor', () => {
      const { buf } = small();
      refused(() => parseBundle(Buffer.concat([buf, Buffer.alloc(16)])), '16 trailing bytes');
    });

    it('dtype × shape ≠ byte length', () => {
      const { buf } = small();
      const { header, data } = split(buf);
      header['heads.bias'].shape = [header['heads.bias'].shape[0] + 1];
      refused(() => parseBundle(join8(header, data)), 'tensor "heads.bias": dtype F32 × shape', 'bytes but data_offsets');
    });

    it('unknown dtype, negative or fractional dimension, bad data_offsets', () => {
      const { buf } = small();
      for (const [edit, want] of [
        [(e: any) => (e.dtype = 'F16'), 'unsupported dtype "F16"'],
        [(e: any) => (e.shape = [-1]), 'not a non-negative integer'],
        [(e: any) => (e.shape = [1.5]), 'not a non-negative integer'],
        [(e: any) => (e.data_offsets = [0]), 'is not a pair of non-negative integers'],
      ] as [(e: any) => void, string][]) {
        const { header, data } = split(buf);
        edit(header['sequence.norm.bias']);
        refused(() => parseBundle(join8(header, data)), 'tensor "sequence.norm.bias"', want);
      }
    });
  });

  describe('bundle rejections', () => {
    it('missing tensor', () => {
      const { config, tensors } = small();
      refused(() => toLoaded(config, withTensor(tensors, 'dcn.layers.0.bias', undefined)), 'tensor "dcn.layers.0.bias": missing');
    });

    it('mis-shaped tensor', () => {
      const { config, tensors } = small();
      const t = tensors.get('heads.weight')!;
      const [T, last] = t.shape;
      const bad = { dtype: 'F32' as const, shape: [T, last + 1], data: new Float32Array(T * (last + 1)) };
      refused(() => toLoaded(config, withTensor(tensors, 'heads.weight', bad)), `tensor "heads.weight": expected shape [${T},${last}], got [${T},${last + 1}]`);
    });

    it('dtype not allowed for the tensor', () => {
      const { config, tensors } = small();
      const bid = tensors.get('ads.bid')!;
      const bad: Tensor = { dtype: 'BF16', shape: bid.shape, data: new Uint16Array(bid.data.length) };
      refused(() => toLoaded(config, withTensor(tensors, 'ads.bid', bad)), 'tensor "ads.bid": expected dtype F32, got BF16');
    });

    it('unexpected extra tensor', () => {
      const { config, tensors } = small();
      const extra: Tensor = { dtype: 'F32', shape: [2], data: new Float32Array(2) };
      refused(() => toLoaded(config, withTensor(tensors, 'dcn.layer.0.weight', extra)), 'unexpected tensor "dcn.layer.0.weight"');
    });

    it('duplicate ad ids name the id and both rows', () => {
      const { config, tensors } = small();
      const ids = BigInt64Array.from(tensors.get('ads.id')!.data as BigInt64Array);
      ids[20] = ids[4];
      refused(() => toLoaded(config, withTensor(tensors, 'ads.id', { dtype: 'I64', shape: [30], data: ids })), `tensor "ads.id": duplicate ad id ${ids[4]} at rows 4 and 20`);
    });

    it('NaN and Inf weights name the tensor and index', () => {
      const { config, tensors } = small();
      for (const [name, index, v, text] of [
        ['masknet.blocks.0.proj.weight', 7, NaN, 'NaN'],
        ['ads.embedding', 12, Infinity, 'Infinity'],
        ['features.surface', 0, -Infinity, '-Infinity'],
      ] as [string, number, number, string][]) {
        const t = tensors.get(name)!;
        const data = Float32Array.from(t.data as Float32Array);
        data[index] = v;
        refused(() => toLoaded(config, withTensor(tensors, name, { ...t, data })), `tensor "${name}": ${text} at flat index ${index}`);
      }
    });

    it('NaN in a BF16 retrieval table', () => {
      const config = makeRandomConfig(new Rng(4));
      const d = makeDemoBundle({ config, ads: 8, seed: 4, retrievalDtype: 'BF16' });
      const t = d.tensors.get('ads.retrieval')!;
      const data = Uint16Array.from(t.data as Uint16Array);
      data[3] = 0x7fc0;
      refused(() => toLoaded(config, withTensor(d.tensors, 'ads.retrieval', { ...t, data })), 'tensor "ads.retrieval": NaN at flat index 3');
    });

    it('insane ad tables: negative bid, zero targeting mask, zero std', () => {
      const { config, tensors } = small(6, { targeting_dims: ['country', 'device'] });
      const edit = <T extends Tensor['data']>(name: string, f: (a: T) => void) => {
        const t = tensors.get(name)!;
        const data = (t.data as any).slice() as T;
        f(data);
        return withTensor(tensors, name, { ...t, data });
      };
      refused(() => toLoaded(config, edit<Float32Array>('ads.bid', (a) => (a[2] = -1))), 'tensor "ads.bid": negative bid -1 at row 2');
      refused(() => toLoaded(config, edit<BigUint64Array>('ads.targeting', (a) => (a[7] = 0n))), 'tensor "ads.targeting": row 3', 'targeting dimension "device"');
      if (config.user_dense > 0) refused(() => toLoaded(config, edit<Float32Array>('features.user_dense.std', (a) => (a[0] = 0))), 'tensor "features.user_dense.std": std 0 at index 0');
    });

    it('bad or missing adrank.format', () => {
      const { config, tensors } = small();
      refused(() => parseBundle(encodeSafetensors(tensors, { ...bundleMetadata(config), 'adrank.format': '2' })), 'expected "1" for __metadata__["adrank.format"], got "2"');
      refused(() => parseBundle(encodeSafetensors(tensors, { 'adrank.config': JSON.stringify(config) })), 'for __metadata__["adrank.format"], got null');
    });

    it('bad config: each field is named with what was expected', () => {
      const { config, tensors } = small();
      const cases: [(c: any) => void, string][] = [
        [(c) => delete c.tasks, 'expected a list of at least 1 for adrank.config.tasks, got nothing'],
        [(c) => (c.tasks = ['a', 'a']), 'expected unique names for adrank.config.tasks, got "a"'],
        [(c) => (c.sequence.heads = 0), 'expected a positive integer for adrank.config.sequence.heads, got 0'],
        [(c) => (c.sequence.heads = c.sequence.dim + 1), 'expected a divisor of sequence.dim'],
        [(c) => (c.mlp = [4, -2]), 'expected a positive integer for adrank.config.mlp[1], got -2'],
        [(c) => (c.masknet.projection_ratio = '2'), 'expected a positive number for adrank.config.masknet.projection_ratio, got "2"'],
        [(c) => (c.user_sparse = [{ name: 'x', cardinality: 0, dim: 2 }]), 'expected a positive integer for adrank.config.user_sparse[0].cardinality, got 0'],
        [(c) => (c.user_sparse = [{ name: 'a.b', cardinality: 3, dim: 2 }]), 'for adrank.config.user_sparse[0].name, got "a.b"'],
        [(c) => (c.dcn.rank = 1.5), 'expected an integer >= 0 for adrank.config.dcn.rank, got 1.5'],
        [(c) => (c.dense_clp = 3), 'expected no such key'],
        [(c) => (c.retrieval = [64]), 'expected an object for adrank.config.retrieval'],
        [(c) => (c.reserve_price = -1), 'expected a non-negative number for adrank.config.reserve_price, got -1'],
      ];
      for (const [edit, want] of cases) refused(() => parseBundle(withConfig(config, tensors, edit)), want);
      refused(() => parseBundle(encodeSafetensors(tensors, { 'adrank.format': '1', 'adrank.config': '{"name":' })), '__metadata__["adrank.config"] is not valid JSON');
      refused(() => parseBundle(encodeSafetensors(tensors, { 'adrank.format': '1' })), 'no "adrank.config"');
    });

    it('masknet.hidden wins over the ratio; without it h = ⌊ratio · d + ½⌋ and a mismatch names the rule', () => {
      // make d odd so that 0.5 · d ends in .5: the rule gives (d + 1) / 2, Python's round() may give (d − 1) / 2
      const base = small().config;
      const even = modelDims(base).input % 2 === 0;
      const cfg = { ...base, user_dense: base.user_dense + (even ? 1 : 0), masknet: { ...base.masknet, projection_ratio: 0.5 } };
      const d = modelDims(cfg).input;
      expect(d % 2).to.equal(1);
      expect(modelDims(cfg).maskHidden).to.equal((d + 1) / 2);
      const pythonH = (d - 1) / 2;
      const explicit = { ...cfg, masknet: { ...cfg.masknet, hidden: pythonH } };
      const b = makeDemoBundle({ config: explicit, ads: 30, seed: 5 });
      const loaded = parseBundle(encodeSafetensors(b.tensors, b.metadata));
      expect(loaded.config.masknet.hidden).to.equal(pythonH);
      expect(loaded.shapes['masknet.blocks.0.mask.0.weight']).to.deep.equal([pythonH, d]);
      // the same tensors under a config without masknet.hidden: refused, naming the rule and the key
      refused(
        () => parseBundle(withConfig(explicit, b.tensors, (c) => delete c.masknet.hidden)),
        'tensor "masknet.blocks.0.mask.0.weight": expected shape',
        `⌊0.5 · ${d} + ½⌋ = ${(d + 1) / 2}`,
        'set masknet.hidden',
      );
      refused(() => parseBundle(withConfig(explicit, b.tensors, (c) => (c.masknet.hidden = 0))), 'expected a positive integer for adrank.config.masknet.hidden, got 0');
    });

    it('a config change that implies other shapes names the first mismatching tensor', () => {
      const { config, tensors } = small();
      refused(() => parseBundle(withConfig(config, tensors, (c) => (c.surface_dim += 1))), 'tensor "features.surface": expected shape');
    });
  });

  describe('demo bundle', () => {
    it('the demo config is docs/design.md §4 reference shape', () => {
      const c = makeDemoConfig();
      expect(c.masknet).to.deep.equal({ blocks: 3, projection_ratio: 2, output_dim: 512 });
      expect(c.dcn).to.deep.equal({ layers: 4, rank: 0 });
      expect(c.tasks).to.deep.equal(['click', 'long_click', 'save', 'conversion']);
    });

    it('is deterministic: same seed, same sha256; another seed differs', async () => {
      const config = makeDemoConfig();
      const a = await writeDemoBundle({ ads: 40, seed: 1, out: join(dir, 'a'), config });
      const b = await writeDemoBundle({ ads: 40, seed: 1, out: join(dir, 'b'), config });
      const c = await writeDemoBundle({ ads: 40, seed: 2, out: join(dir, 'c'), config });
      expect(a.sha256).to.equal(b.sha256);
      expect(c.sha256).to.not.equal(a.sha256);
      const loaded = await loadBundle(join(dir, 'a'));
      expect(loaded.sha256).to.equal(a.sha256);
      expect(loaded.config).to.deep.equal(config);
    });

    it('has an ad corpus with sparse unique ids, multi-ad advertisers, lognormal bids and some targeting', () => {
      const config = makeRandomConfig(new Rng(9), { surfaces: 2 });
      config.targeting_dims = ['a', 'b', 'c'];
      const d = makeDemoBundle({ config, ads: 2000, seed: 9 });
      const { tensors } = readSafetensors(encodeSafetensors(d.tensors, d.metadata));
      const ids = tensors.get('ads.id')!.data as BigInt64Array;
      expect(new Set(ids).size).to.equal(2000);
      expect(ids.some((id) => id > 1_000_000n)).to.equal(true);
      const perAdv = new Map<bigint, number>();
      for (const a of tensors.get('ads.advertiser')!.data as BigInt64Array) perAdv.set(a, (perAdv.get(a) ?? 0) + 1);
      expect(perAdv.size).to.be.within(40, 100);
      expect(Math.max(...perAdv.values())).to.be.greaterThan(40); // skewed: some large advertisers
      const bids = Array.from(tensors.get('ads.bid')!.data as Float32Array);
      expect(Math.min(...bids)).to.be.greaterThan(0);
      expect(Math.max(...bids) / Math.min(...bids)).to.be.greaterThan(4);
      const tg = Array.from(tensors.get('ads.targeting')!.data as BigUint64Array);
      const untargeted = tg.filter((m) => m === (1n << 64n) - 1n).length / tg.length;
      expect(untargeted).to.be.within(0.7, 0.9);
    });

    it('gives calibrated click probabilities a real spread and varying retrieval scores (float64 reference)', () => {
      const config = makeDemoConfig();
      const d = makeDemoBundle({ config, ads: 200, seed: 21 });
      const b = toLoaded(config, d.tensors);
      const m = new RefModel(b);
      const rng = new Rng(22);
      const clicks: number[] = [];
      const scores: number[] = [];
      for (let q = 0; q < 8; q++) {
        const r = randomRequest(rng, b, { candidates: 8 });
        const us = userSide(m, r);
        for (const id of r.candidates) {
          const c = candidate(m, us, r, adRows(b).get(id)!);
          clicks.push(c.probs[0]);
          scores.push(c.retrievalScore);
        }
      }
      const pct = (a: number[], p: number) => [...a].sort((x, y) => x - y)[Math.floor(p * (a.length - 1))];
      expect(pct(clicks, 0.95) - pct(clicks, 0.05), 'click p5..p95 span').to.be.greaterThan(0.2);
      expect(pct(clicks, 0.95)).to.be.lessThan(0.99);
      expect(pct(clicks, 0.05)).to.be.greaterThan(0.01);
      expect(pct(scores, 0.95) - pct(scores, 0.05), 'retrieval score span').to.be.greaterThan(0.1);
    });
  });
});
