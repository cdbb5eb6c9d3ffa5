/**
 * The native wire path (docs/wire.md) against protobufjs, on random and mutated request messages:
 *  - parsing (new WireRequest): the native reader and protobufjs accept and refuse the same bytes and
 *    read the same values, with repeated fields packed, unpacked and split, sub-messages repeated
 *    (merged), map entries repeated (the last one per key wins), unknown fields of every wire type
 *    (groups included) and random byte flips, cuts and insertions;
 *  - validation (Engine.prepare): it refuses the requests validate.ts refuses, naming the same
 *    field, and for the others writes the very feature bundle the JS path packs;
 *  - the response it writes decodes (protobufjs) to what the JS encoder writes for the same result.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import protobuf from 'protobufjs';
import { Engine, WireRefusal, type NativeOp, type NativeWireRequest } from '../src/engine/index.js';
import { binding } from '../src/engine/binding.js';
import { defaultDecoder } from '../src/wire/codec.js';
import { loadProto } from '../src/wire/proto.js';
import { rank } from '../src/handlers/rank.js';
import { retrieve } from '../src/handlers/retrieve.js';
import { retrieveAndRank } from '../src/handlers/retrieve-and-rank.js';
import { RequestError } from '../src/handlers/validate.js';
import { responseOf, type EngineRpc } from '../src/handlers/engine-rpc.js';
import { Rng, addonBuilt } from './support/index.js';
import { adId, config, randomBundle } from './support/tiny-model.js';
import { adIds, protoRequest, smallConfig, writeSmallBundle } from './50.server.helpers.js';
import { mutate, words } from './support/wire-fuzz.js';

const RPCS: [NativeOp, EngineRpc<never>, string][] = [
  [0, rank as unknown as EngineRpc<never>, 'adrank.v1.RankRequest'],
  [1, retrieve as unknown as EngineRpc<never>, 'adrank.v1.RetrieveRequest'],
  [2, retrieveAndRank as unknown as EngineRpc<never>, 'adrank.v1.RetrieveAndRankRequest'],
];

/** A small hand-written encoder of the request messages, so that every wire form can be chosen. */
class Enc {
  constructor(
    private readonly r: Rng,
    private readonly unknowns: boolean,
  ) {}
  private w = protobuf.Writer.create();
  chance(p: number): boolean {
    return this.r.u32() / 4294967296 < p;
  }
  int(n: number): number {
    return this.r.u32() % n;
  }
  tag(field: number, wt: number): void {
    this.w.uint32(((field << 3) | wt) >>> 0);
  }
  /** an unknown field now and then: varint, fixed64, bytes, fixed32 or a group */
  noise(): void {
    if (!this.unknowns || !this.chance(0.15)) return;
    const field = 100 + this.int(50);
    switch (this.int(5)) {
      case 0: this.tag(field, 0); this.w.uint64(this.r.u32() * 1000); break;
      case 1: this.tag(field, 1); this.w.fixed64(this.r.u32()); break;
      case 2: this.tag(field, 2); this.w.bytes(Uint8Array.from({ length: this.int(6) }, () => this.int(256))); break;
      case 3: this.tag(field, 5); this.w.fixed32(this.r.u32()); break;
      default: this.tag(field, 3); this.tag(field + 1, 0); this.w.uint32(7); this.tag(field, 4);
    }
  }
  str(field: number, s: string | Uint8Array): void {
    this.noise();
    this.tag(field, 2);
    if (typeof s === 'string') this.w.string(s);
    else this.w.bytes(s);
  }
  /** an int32 / uint32 / bool / enum field (a negative int32 as its 5-byte two's complement, as protobufjs reads it) */
  varint(field: number, v: number): void {
    this.noise();
    this.tag(field, 0);
    this.w.uint32(v >>> 0);
  }
  f32(field: number, v: number): void {
    this.noise();
    this.tag(field, 5);
    this.w.float(v);
  }
  /** a repeated scalar field: packed, unpacked, or split into several packed runs */
  repeated<T>(field: number, values: T[], wt: 0 | 5, put: (w: protobuf.Writer, v: T) => void): void {
    if (values.length === 0) return;
    const form = this.int(3);
    if (form === 1) {
      for (const v of values) {
        this.noise();
        this.tag(field, wt);
        put(this.w, v);
      }
      return;
    }
    const cut = form === 2 ? this.int(values.length + 1) : values.length;
    for (const part of [values.slice(0, cut), values.slice(cut)]) {
      if (part.length === 0 && form !== 2) continue;
      this.noise();
      this.tag(field, 2);
      this.w.fork();
      for (const v of part) put(this.w, v);
      this.w.ldelim();
    }
  }
  ids(field: number, values: bigint[]): void {
    this.repeated(field, values, 0, (w, v) => w.int64(words(v) as never));
  }
  floats(field: number, values: number[]): void {
    this.repeated(field, values, 5, (w, v) => w.float(v));
  }
  u32s(field: number, values: number[]): void {
    this.repeated(field, values, 0, (w, v) => w.uint32(v));
  }
  message(field: number, body: () => void): void {
    this.noise();
    this.tag(field, 2);
    this.w.fork();
    body();
    this.noise();
    this.w.ldelim();
  }
  finish(): Uint8Array {
    return this.w.finish();
  }
}

function pick<T>(r: Rng, xs: T[]): T {
  return xs[r.u32() % xs.length];
}

function randomId(r: Rng): bigint {
  switch (r.u32() % 4) {
    case 0: return adId(r.u32() % 50);
    case 1: return BigInt(r.u32() % 1000) - 500n;
    case 2: return BigInt.asIntN(64, (BigInt(r.u32()) << 32n) | BigInt(r.u32()));
    default: return BigInt(r.u32());
  }
}

function randomFloat(r: Rng): number {
  const x = r.u32() % 40;
  if (x === 0) return NaN;
  if (x === 1) return Infinity;
  if (x === 2) return -1;
  return Math.fround((r.u32() / 4294967296) * 4 - 1);
}

function randomString(r: Rng, choices: string[]): string | Uint8Array {
  const x = r.u32() % 10;
  if (x < 6 && choices.length) return pick(r, choices);
  if (x === 6) return Uint8Array.from({ length: r.u32() % 6 }, () => r.u32() % 256); // maybe invalid UTF-8
  if (x === 7) return 'é' + String(r.u32() % 3);
  if (x === 8) return String(r.u32() % 4); // array-index keys enumerate first in JS
  return '';
}

/** One random request message of `op`'s type, every field optional and near its limits. */
function randomMessage(r: Rng, op: NativeOp, unknowns: boolean): Uint8Array {
  const e = new Enc(r, unknowns);
  const some = (p: number) => e.chance(p);
  const n = (max: number) => r.u32() % (max + 1);
  if (some(0.95)) e.str(1, some(0.05) ? 'x'.repeat(257) : some(0.1) ? Uint8Array.from([0x72, 0xff, 0xc3]) : some(0.1) ? 'é'.repeat(n(200)) : `req-${r.u32()}`);
  if (some(0.95)) e.str(2, randomString(r, config.surfaces));
  const userTimes = some(0.9) ? (some(0.1) ? 2 : 1) : 0;
  for (let u = 0; u < userTimes; u++)
    e.message(3, () => {
      const dense = some(0.9) ? config.user_dense : n(5);
      e.floats(1, Array.from({ length: userTimes === 2 && u === 0 ? n(dense) : dense }, () => (some(0.97) ? Math.fround(r.u32() / 4294967296) : randomFloat(r))));
      const entries = n(3);
      for (let i = 0; i < entries; i++)
        e.message(2, () => {
          if (some(0.9)) e.str(1, randomString(r, config.user_sparse.map((f) => f.name)));
          const values = some(0.15) ? 2 : 1;
          for (let v = 0; v < values; v++) if (some(0.9)) e.message(2, () => e.ids(1, Array.from({ length: n(6) }, () => randomId(r))));
        });
      const emb = some(0.9) ? config.user_embedding_dim : n(7);
      e.floats(3, Array.from({ length: emb }, () => (some(0.97) ? Math.fround(r.u32() / 4294967296) : randomFloat(r))));
      if (some(0.7))
        e.message(4, () => {
          const len = n(9);
          e.ids(1, Array.from({ length: len }, () => randomId(r)));
          e.u32s(2, Array.from({ length: some(0.9) ? len : n(9) }, () => (some(0.95) ? n(config.sequence.actions - 1) : n(5))));
        });
    });
  if (some(0.95)) e.u32s(4, Array.from({ length: some(0.9) ? config.targeting_dims.length : n(3) }, () => n(70)));
  if (some(0.5))
    e.message(5, () => {
      e.ids(1, Array.from({ length: n(4) }, () => randomId(r)));
      e.ids(2, Array.from({ length: n(4) }, () => randomId(r)));
    });
  if (some(0.95)) e.varint(6, some(0.9) ? 1 + n(20) : pick(r, [0, 10_000, 10_001, 4294967295]));
  if (some(0.4)) e.varint(7, some(0.9) ? n(3) : -1);
  if (some(0.3)) {
    const entries = 1 + n(3);
    for (let i = 0; i < entries; i++)
      e.message(8, () => {
        if (some(0.9)) e.str(1, randomString(r, config.tasks));
        if (some(0.9)) e.f32(2, some(0.85) ? Math.fround(r.u32() / 4294967296) : randomFloat(r));
      });
  }
  if (some(0.3))
    e.message(9, () => {
      if (some(0.8)) e.varint(1, some(0.9) ? n(1) : pick(r, [2, -1]));
      if (some(0.6)) e.varint(2, pick(r, [0, 1, 3, 1024, 1025]));
    });
  if (some(0.3)) e.f32(10, some(0.85) ? Math.fround(r.u32() / 4294967296) : randomFloat(r));
  if (some(0.2)) e.str(11, pick(r, ['', '1', '2']));
  if (op !== 1 || some(0.2)) e.ids(15, Array.from({ length: some(0.1) ? 0 : n(30) }, () => randomId(r)));
  if (some(0.5)) e.varint(16, n(1));
  if (some(0.5)) e.varint(17, pick(r, [0, 1, 5, 50, 10_000, 10_001]));
  if (some(0.3)) e.varint(18, pick(r, [0, 1, 3, 200_000]));
  if (some(0.3)) e.varint(20, n(1));
  e.noise();
  return e.finish();
}

/** A random byte flip, cut, insertion or duplication of a valid message. */
const str = (v: bigint) => v.toString();
const floats = (a: ArrayLike<number>) => Array.from(a, (x) => (Number.isNaN(x) ? 'NaN' : x));

/** protobufjs's object (proto-loader options: longs as strings, enums as names) in the shape of WireRequest.toObject(). */
function fromProtobufjs(o: Record<string, any>, op: NativeOp): Record<string, unknown> {
  const u = o.user;
  const mode = o.ranking?.mode;
  const out: Record<string, unknown> = {
    requestId: o.requestId,
    surface: o.surface,
    modelVersion: o.modelVersion,
    hasUser: u != null,
    dense: floats(u?.dense ?? []),
    embedding: floats(u?.embedding ?? []),
    sparse: Object.keys(u?.sparse ?? {}).map((k) => [k, (u.sparse[k]?.ids ?? []).map(String)]),
    seqItems: (u?.sequence?.itemIds ?? []).map(String),
    seqActions: u?.sequence?.actions ?? [],
    targeting: o.targeting,
    excludedAdvertisers: (o.exclusions?.advertiserIds ?? []).map(String),
    excludedAds: (o.exclusions?.adIds ?? []).map(String),
    k: o.k,
    cap: o.perAdvertiserCap,
    taskWeights: Object.keys(o.taskWeights ?? {}).map((k) => [k, Number.isNaN(o.taskWeights[k]) ? 'NaN' : o.taskWeights[k]]),
    hasRanking: o.ranking != null,
    mode: mode === 'GLOBAL' ? 0 : mode === 'LOCAL' ? 1 : (mode ?? 0),
    partitions: o.ranking?.partitions ?? 0,
    candidates: op === 1 ? [] : (o.candidateAdIds ?? []).map(String),
    price: op === 0 ? o.price : false,
    retrieveCount: op === 2 ? o.retrieveCount : 0,
    candidateQuota: op === 2 ? o.candidateQuota : 0,
  };
  if (o.reserve != null) out.reserve = Number.isNaN(o.reserve) ? 'NaN' : o.reserve;
  if (o.allowFallback != null) out.allowFallback = o.allowFallback;
  return out;
}

function fromNative(o: Record<string, any>): Record<string, unknown> {
  return {
    ...o,
    dense: floats(o.dense),
    embedding: floats(o.embedding),
    sparse: o.sparse.map(([k, ids]: [string, BigInt64Array]) => [k, Array.from(ids, str)]),
    seqItems: Array.from(o.seqItems as BigInt64Array, str),
    seqActions: Array.from(o.seqActions as Uint32Array),
    targeting: Array.from(o.targeting as Uint32Array),
    excludedAdvertisers: Array.from(o.excludedAdvertisers as BigInt64Array, str),
    excludedAds: Array.from(o.excludedAds as BigInt64Array, str),
    candidates: Array.from(o.candidates as BigInt64Array, str),
    taskWeights: o.taskWeights.map(([k, w]: [string, number]) => [k, Number.isNaN(w) ? 'NaN' : w]),
    ...(o.reserve !== undefined && Number.isNaN(o.reserve) ? { reserve: 'NaN' } : {}),
  };
}

describe('native wire path (docs/wire.md) against protobufjs', function () {
  this.timeout(120_000);
  let engine: Engine;
  const decoders = RPCS.map(([, , type]) => defaultDecoder<Record<string, any>>(type));

  before(function () {
    if (!addonBuilt()) this.skip();
    engine = Engine.fromBundle(randomBundle(7), { device: 'cpu', threads: 1 });
  });
  after(() => engine?.dispose());

  /** Parses with both; returns what each made of the bytes (an Error when it refused them). */
  function both(op: NativeOp, bytes: Uint8Array): { native: NativeWireRequest | Error; js: Record<string, any> | Error } {
    let native: NativeWireRequest | Error;
    let js: Record<string, any> | Error;
    try {
      native = new (binding().WireRequest)(op, bytes);
    } catch (e) {
      native = e as Error;
    }
    try {
      js = decoders[op](Buffer.from(bytes));
    } catch (e) {
      js = e as Error;
    }
    return { native, js };
  }

  const stats = { accepted: 0, refused: 0, validated: 0, invalid: 0 };

  function check(op: NativeOp, bytes: Uint8Array, label: string): void {
    const { native, js } = both(op, bytes);
    const hex = Buffer.from(bytes).toString('hex');
    expect(native instanceof Error, `${label}: native ${native instanceof Error ? 'refused' : 'accepted'} (${native instanceof Error ? native.message : ''}), protobufjs ${js instanceof Error ? 'refused: ' + js.message : 'accepted'}; bytes ${hex}`).to.equal(js instanceof Error);
    if (native instanceof Error || js instanceof Error) {
      stats.refused++;
      if (native instanceof Error) expect(native.message).to.match(/^malformed request: /);
      return;
    }
    stats.accepted++;
    expect(fromNative(native.toObject()), `${label}: values; bytes ${hex}`).to.deep.equal(fromProtobufjs(js, op));

    // validation: the same refusals (same field) as validate.ts over the served JS view, else the same bundle
    const rpc = RPCS[op][1];
    let view: unknown;
    try {
      view = rpc.decode(Buffer.from(bytes));
    } catch {
      return; // the JS view's own id-list reader refused it: nothing to compare
    }
    let jsErr: RequestError | undefined;
    let jsBundle: Uint8Array | undefined;
    try {
      jsBundle = engine.pack(rpc.validate(view as never, config, { maxCandidates: 25 }));
    } catch (e) {
      if (!(e instanceof RequestError)) throw e;
      jsErr = e;
    }
    let refusal: WireRefusal | undefined;
    try {
      engine.prepare(native, 25, '1');
    } catch (e) {
      if (!(e instanceof WireRefusal)) throw e;
      refusal = e;
    }
    expect(refusal?.field, `${label}: native refusal ${refusal?.message} vs validate.ts ${jsErr?.message}; bytes ${hex}`).to.equal(
      jsErr ? /for (.*), got /s.exec(jsErr.message)?.[1] : undefined,
    );
    if (refusal) {
      stats.invalid++;
      return;
    }
    stats.validated++;
    expect(Buffer.from(native.bundle()!).equals(Buffer.from(jsBundle!)), `${label}: feature bundle; bytes ${hex}`).to.equal(true);
    expect(native.surface).to.equal(config.surfaces.indexOf(js.surface));
  }

  it('reads well-formed messages in every wire form as protobufjs does, and validates them as validate.ts', () => {
    const r = new Rng(20261207);
    for (let i = 0; i < 3000; i++) {
      const op = (i % 3) as NativeOp;
      check(op, randomMessage(r, op, i % 2 === 1), `message ${i} (op ${op})`);
    }
    expect(stats.validated, 'some requests pass validation').to.be.greaterThan(100);
    expect(stats.invalid, 'some requests are refused').to.be.greaterThan(100);
  });

  it('accepts and refuses mutated messages as protobufjs does', () => {
    const r = new Rng(7);
    const before = { ...stats };
    for (let i = 0; i < 6000; i++) {
      const op = (i % 3) as NativeOp;
      check(op, mutate(r, randomMessage(r, op, i % 2 === 0)), `mutant ${i} (op ${op})`);
    }
    expect(stats.refused - before.refused, 'some mutants are malformed').to.be.greaterThan(300);
    expect(stats.accepted - before.accepted, 'some mutants still parse').to.be.greaterThan(300);
  });

  it('reads a varint the same with ten or more bytes left and near the end: ten-byte ids read, an eleven-byte one refused anywhere', () => {
    // the reader decodes a varint without bound checks while ten bytes or more are left (most of a
    // packed id list), with them near the end: both must give protobufjs's values and refusals
    const type = loadProto().root.lookupType('adrank.v1.RankRequest');
    const ids = [-1n, -(2n ** 62n), 2n ** 63n - 1n, 1n, 127n, 128n, -128n, 2n ** 35n, -(2n ** 56n) - 3n];
    const varint = (v: bigint) => {
      const out: number[] = [];
      let u = BigInt.asUintN(64, v);
      do {
        out.push(Number(u & 127n) | (u > 127n ? 128 : 0));
        u >>= 7n;
      } while (u > 0n);
      return out;
    };
    const overlong = [...Array(10).fill(0xff), 0x01]; // eleven bytes: refused when read
    const packed = (body: number[]) => [(15 << 3) | 2, ...varint(BigInt(body.length)), ...body];
    const head = Array.from(type.encode(type.fromObject({ requestId: 'v', surface: 'home', k: 3 })).finish());
    const list = ids.flatMap(varint);
    for (const [label, body, tail] of [
      ['ids, then a field after them', list, [(6 << 3) | 0, 5]],
      ['ids last in the message', list, []],
      ['an eleven-byte varint first, ten or more bytes after it', [...overlong, ...list], []],
      ['an eleven-byte varint last', [...list, ...overlong], []],
      ['an eleven-byte varint as the last field of the message', [], [(6 << 3) | 0, ...overlong]],
    ] as [string, number[], number[]][]) {
      for (const op of [0, 2] as NativeOp[]) check(op, Uint8Array.from([...head, ...packed(body), ...tail]), `${label} (op ${op})`);
    }
    const { native } = both(0, Uint8Array.from([...head, ...packed(list)]));
    expect(fromNative((native as NativeWireRequest).toObject()).candidates, 'the ids, every one of them').to.deep.equal(ids.map(String));
  });

  it('reads the edge forms: last entry per map key, merged sub-messages, groups; refuses ill-formed UTF-8', () => {
    const type = loadProto().root.lookupType('adrank.v1.RankRequest');
    const base = type.encode(type.fromObject({ requestId: 'a', surface: 'home', k: 3 })).finish();
    const w = protobuf.Writer.create();
    // user twice (merged): sparse topics twice (the last entry wins), dense split over both
    w.uint32(26).fork().uint32(18).fork().uint32(10).string('topics').uint32(18).fork().uint32(8).int64(words(5n) as never).ldelim().ldelim().uint32(13).float(0.5).ldelim();
    w.uint32(26).fork().uint32(18).fork().uint32(10).string('topics').uint32(18).fork().uint32(8).int64(words(9n) as never).uint32(8).int64(words(-3n) as never).ldelim().ldelim().uint32(13).float(0.25).ldelim();
    // an unknown group with a nested field, then a second request id (the last one wins)
    w.uint32((99 << 3) | 3).uint32((5 << 3) | 0).uint32(1).uint32((99 << 3) | 4);
    w.uint32(10).string('b\u00e9');
    const bytes = Buffer.concat([base, w.finish()]);
    const o = fromNative(new (binding().WireRequest)(0, bytes).toObject());
    expect(o.sparse).to.deep.equal([['topics', ['9', '-3']]]);
    expect(o.dense).to.deep.equal([0.5, 0.25]);
    expect(o.requestId).to.equal('b\u00e9');
    expect(o).to.deep.equal(fromProtobufjs(decoders[0](bytes), 0));
    for (const [what, bad] of [
      ['a group whose end tag names another field', Buffer.concat([base, Uint8Array.from([(99 << 3) | 3, 1, (98 << 3) | 4, 6])])],
      ['an ill-formed UTF-8 request id', Buffer.concat([base, Uint8Array.from([10, 3, 0x61, 0xed, 0xa0])])],
      ['a surrogate in UTF-8', Buffer.concat([base, Uint8Array.from([18, 3, 0xed, 0xa0, 0x80])])],
    ] as const) {
      const { native, js } = both(0, bad);
      expect(native, what).to.be.instanceOf(Error);
      expect(js, what).to.be.instanceOf(Error);
    }
  });

  it('writes the response the JS encoder writes for the same result', async () => {
    const type = loadProto().root.lookupType('adrank.v1.RankRequest');
    const req = {
      requestId: 'résumé-1',
      surface: 'search',
      user: { dense: [0.3, -1.2, 2.0], embedding: [0.1, 0.2, -0.3, 0.4, 0.5], sparse: { topics: { ids: ['4', '-9'] } }, sequence: { itemIds: ['5', '-2'], actions: [0, 2] } },
      targeting: [3],
      k: 5,
      price: true,
      candidateAdIds: Array.from({ length: 20 }, (_, i) => adId(i).toString()),
    };
    const bytes = type.encode(type.fromObject(req)).finish();
    const w = engine.parseWire(0, bytes);
    await engine.runWire(0, w).then(
      () => expect.fail('ran an unprepared request'),
      (e: Error) => expect(e.message).to.match(/expected a prepared WireRequest/),
    );
    expect(engine.prepare(w, 100, '7')).to.equal(20);
    expect(() => engine.prepare(w, 100, '7'), 'a second prepare could change the bundle under a run').to.throw(/not yet prepared/);
    const result = await engine.runWire(0, w);
    const got = loadProto().root.lookupType('adrank.v1.RankResponse').toObject(
      loadProto().root.lookupType('adrank.v1.RankResponse').decode(result.response!),
      { longs: String, enums: String, defaults: true },
    );
    const want = responseOf('résumé-1', result, config, false, '7');
    expect(got.requestId).to.equal(want.requestId);
    expect(got.model).to.deep.equal(want.model);
    expect(got.winners.map((x: { adId: string }) => x.adId)).to.deep.equal(Array.from(result.adIds, str));
    expect(got.winners.map((x: { advertiserId: string }) => x.advertiserId)).to.deep.equal(Array.from(result.advertisers, str));
    expect(got.winners.map((x: { score: number }) => x.score)).to.deep.equal(Array.from(result.scores));
    expect(got.winners.map((x: { price: number }) => x.price)).to.deep.equal(Array.from(result.prices));
    expect(got.winners.flatMap((x: { taskProbabilities: number[] }) => x.taskProbabilities)).to.deep.equal(Array.from(result.probs));
    expect(got.winners.length).to.equal(5);
    for (const [k, v] of Object.entries(result.counts)) expect(got.counts[k], `counts.${k}`).to.equal(v);
    expect(got.timings.engineTotalUs).to.equal(result.timings.total);
    expect(got.timings.decodeUs).to.equal(w.decodeUs);
    expect(got.timings.totalUs).to.equal(0); // filled in when the answer is sent
    expect(got.fallback).to.equal(false);
  });
  it('release() frees a request at once: it keeps its id, and can no longer be prepared, run or read', async () => {
    const type = loadProto().root.lookupType('adrank.v1.RankRequest');
    const many = Array.from({ length: 1000 }, (_, i) => adId(i % 40).toString() + (i >= 40 ? String(i) : ''));
    const user = { dense: [0.3, -1.2, 2.0], embedding: [0.1, 0.2, -0.3, 0.4, 0.5], sparse: { topics: { ids: ['4'] } }, sequence: { itemIds: ['5'], actions: [0] } };
    const bytes = type.encode(type.fromObject({ requestId: 'rel-1', surface: 'search', user, targeting: [3], k: 5, candidateAdIds: many })).finish();
    const w = engine.parseWire(0, bytes);
    engine.prepare(w, 10_000, '1');
    expect(w.bundle()).to.be.instanceOf(Uint8Array);
    w.release();
    w.release(); // a second time does nothing
    expect(w.requestId).to.equal('rel-1');
    expect(w.bundle()).to.equal(undefined);
    expect(() => w.toObject()).to.throw(/released/);
    await engine.runWire(0, w).then(
      () => expect.fail('ran a released request'),
      (e: Error) => expect(e.message).to.match(/expected a prepared WireRequest/),
    );
    const fresh = engine.parseWire(0, bytes);
    fresh.release();
    expect(() => engine.prepare(fresh, 10_000, '1')).to.throw(/not released/);
    // its native memory (the message and the bundle, ~18 KiB here) goes with release(), not at a
    // later collection: 20,000 requests in a loop that never yields to a collection stay small
    const counts0 = binding().wireRequests();
    const rss0 = process.memoryUsage().rss;
    for (let i = 0; i < 20_000; i++) {
      const x = engine.parseWire(0, bytes);
      engine.prepare(x, 10_000, '1');
      x.release();
    }
    const grew = (process.memoryUsage().rss - rss0) / 2 ** 20;
    expect(grew, `RSS grew ${grew.toFixed(0)} MiB over 20,000 released requests`).to.be.below(120);
    const counts1 = binding().wireRequests();
    expect([counts1.made - counts0.made, counts1.released - counts0.released]).to.deep.equal([20_000, 20_000]);
  });

  it('hands a result over as one block: the arrays, counts and timings the response holds; a response of 64 KiB and more whole', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'adrank-block-'));
    await writeSmallBundle(join(dir, 'b.safetensors'), 3000);
    const big = await Engine.load(join(dir, 'b.safetensors'), { device: 'cpu', threads: 1 });
    try {
      const root = loadProto().root;
      const RankRequest = root.lookupType('adrank.v1.RankRequest');
      const RankResponse = root.lookupType('adrank.v1.RankResponse');
      const ids = adIds(big.bundle);
      for (const [n, k, large] of [[ids.length, 3000, true], [40, 5, false]] as const) {
        const bytes = RankRequest.encode(RankRequest.fromObject(protoRequest(smallConfig(), { candidateAdIds: ids.slice(0, n), k, perAdvertiserCap: 0, price: true }))).finish();
        for (const here of [false, true]) {
          const w = big.parseWire(0, bytes);
          big.prepare(w, 10_000, '1');
          const r = here ? big.runWireHere(0, w) : await big.runWire(0, w);
          const label = `Rank(${n}), k ${k}, ${here ? 'inline' : 'on a request thread'}`;
          expect(r.response!.length > 64 * 1024, `${label}: response of ${r.response!.length} bytes`).to.equal(large);
          // the arrays are views on one block; a small response is in it too, a large one is not copied
          for (const a of [r.advertisers, r.rows, r.scores, r.probs, r.prices, r.values, r.sources]) expect(a.buffer, label).to.equal(r.adIds.buffer);
          expect(r.response!.buffer === r.adIds.buffer, label).to.equal(!large);
          const got = RankResponse.toObject(RankResponse.decode(r.response!), { longs: String, defaults: true }) as Record<string, any>;
          expect(r.adIds.length, label).to.be.greaterThan(large ? 1000 : 0);
          expect(got.winners.map((x: { adId: string }) => x.adId), label).to.deep.equal(Array.from(r.adIds, str));
          expect(got.winners.map((x: { advertiserId: string }) => x.advertiserId)).to.deep.equal(Array.from(r.advertisers, str));
          expect(got.winners.map((x: { score: number }) => x.score)).to.deep.equal(Array.from(r.scores));
          expect(got.winners.map((x: { price: number }) => x.price)).to.deep.equal(Array.from(r.prices));
          expect(got.winners.flatMap((x: { taskProbabilities: number[] }) => x.taskProbabilities)).to.deep.equal(Array.from(r.probs));
          expect(r.rows.length).to.equal(r.adIds.length);
          expect(r.values.length).to.equal(r.adIds.length);
          expect(Object.keys(r.counts)).to.deep.equal(['received', 'unknown', 'duplicate', 'inactive', 'outOfBudget', 'paced', 'targeting', 'excludedAd', 'excludedAdvertiser', 'capped', 'eligible']);
          for (const [key, v] of Object.entries(r.counts)) expect(got.counts[key], `${label}: counts.${key}`).to.equal(v);
          expect(r.counts.received).to.equal(n);
          expect(got.timings.engineTotalUs).to.equal(r.timings.total);
          expect(r.timings.total).to.be.greaterThan(0);
          expect(Object.keys(r.timings)).to.deep.equal(['queue', 'user', 'retrieve', 'gather', 'masknet', 'dcn', 'mlp', 'select', 'total', 'device']);
        }
      }
    } finally {
      big.dispose();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
