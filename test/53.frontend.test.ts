/**
 * The front end without the addon: the packed-id decoder against protobufjs, the response
 * encoder's appended timings, validation details (truncation, task-weight order, defaults) and
 * the handler path's deadline / error mapping with a stand-in engine.
 */
import { expect } from 'chai';
import { status } from '@grpc/grpc-js';
import protobuf from 'protobufjs';
import { defaultDecoder, readInt64Field, requestDecoder, responseEncoder, TooManyIds } from '../src/wire/codec.js';
import { requestKey } from '../src/features/feature-bundle.js';
import { loadProto } from '../src/wire/proto.js';
import { execute, emptyResult, responseOf, toServiceError, type CallState } from '../src/handlers/engine-rpc.js';
import { rank } from '../src/handlers/rank.js';
import { retrieveAndRank } from '../src/handlers/retrieve-and-rank.js';
import { modelShape, sampleRetrieveAndRank } from '../src/handlers/sample.js';
import { InflightLimit, Stats, type HandlerContext } from '../src/handlers/context.js';
import { RecentLatency } from '../src/fallback/recent-latency.js';
import { RequestError, defaultRetrieveCount, validateRank, validateRetrieveAndRank, type RankInput } from '../src/handlers/validate.js';
import { silentLogger } from '../src/log.js';
import { EngineError, type Engine } from '../src/engine/index.js';
import type { RankResponse__Output } from '../src/generated/adrank/v1/RankResponse.js';
import { protoRequest, smallConfig } from './50.server.helpers.js';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { AdrankServer } from '../src/server/server.js';
import { fixedLeases } from '../src/lifecycle/registry.js';

const EDGE = ['0', '1', '-1', '127', '128', '16383', '16384', '2147483647', '2147483648', '-2147483648', '4294967295', '4294967296', '9007199254740993', '9223372036854775807', '-9223372036854775808', '-123456789012345'];

function encodeRank(obj: object): Buffer {
  const type = loadProto().root.lookupType('adrank.v1.RankRequest');
  return Buffer.from(type.encode(type.fromObject(obj) as protobuf.Message).finish());
}

/** The object with every BigInt64Array turned into an array of decimal strings (proto-loader's longs). */
function strings(v: unknown): unknown {
  if (v instanceof BigInt64Array) return Array.from(v, String);
  if (Array.isArray(v)) return v.map(strings);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, strings(x)]));
  return v;
}

describe('53 front end (no addon)', () => {
  const c = smallConfig();

  describe('packed int64 decoding', () => {
    it('matches protobufjs on edge values (packed)', () => {
      const got = readInt64Field(encodeRank({ candidateAdIds: EDGE }), 15);
      expect(Array.from(got, String)).to.deep.equal(EDGE);
    });

    it('accepts unpacked elements and lists split over several occurrences', () => {
      const w = protobuf.Writer.create();
      w.uint32((15 << 3) | 0).int64('5'); // unpacked
      w.uint32((1 << 3) | 2).string('id'); // another field in between
      w.uint32((15 << 3) | 2).fork().int64('-7').int64('9007199254740993').ldelim(); // packed
      w.uint32((15 << 3) | 0).int64('300');
      expect(Array.from(readInt64Field(w.finish(), 15), String)).to.deep.equal(['5', '-7', '9007199254740993', '300']);
    });

    it('refuses truncated input', () => {
      expect(() => readInt64Field(Uint8Array.from([0x7a, 0x02, 0x01, 0x80]), 15)).to.throw(/truncated/);
      expect(() => readInt64Field(Uint8Array.from([0x7a, 0x05, 0x80, 0x80]), 15)).to.throw(/range/);
      expect(() => readInt64Field(Uint8Array.from([0x7d, 0, 0, 0, 0]), 15)).to.throw(/wire type/);
    });

    it('the request decoder gives proto-loader objects with the id list as BigInt64Array', () => {
      const req = protoRequest(c, { candidateAdIds: ['3', '-4', '9223372036854775807'], reserve: 0.5, price: true });
      const bytes = encodeRank(req);
      const fast = requestDecoder<RankInput>('adrank.v1.RankRequest', ['candidateAdIds'])(bytes);
      const plain = defaultDecoder<Record<string, unknown>>('adrank.v1.RankRequest')(bytes);
      expect(fast.candidateAdIds).to.be.instanceOf(BigInt64Array);
      expect(Array.from(fast.candidateAdIds, String)).to.deep.equal(plain.candidateAdIds);
      const { candidateAdIds: _a, ...rest } = fast;
      const { candidateAdIds: _b, ...restPlain } = plain;
      // every nested id list is a BigInt64Array too; as strings, the object is proto-loader's
      expect(rest.user!.sequence!.itemIds).to.be.instanceOf(BigInt64Array);
      expect(Object.fromEntries(Object.entries(strings(rest) as object))).to.deep.equal(restPlain); // less the decode-time stamps
      expect(fast.reserve).to.equal(0.5);
    });

    it('decodes every nested id list like protobufjs: edge values, exclusions, repeated messages and map keys', () => {
      const req = protoRequest(c, {
        exclusions: { advertiserIds: EDGE, adIds: ['-1', '5'] },
        candidateAdIds: ['1'],
      });
      req.user!.sparse = { [c.user_sparse[0].name]: { ids: EDGE }, [c.user_sparse[1].name]: { ids: [] } };
      req.user!.sequence = { itemIds: EDGE.slice(0, 4), actions: [0, 1, 0, 1] };
      const type = loadProto().root.lookupType('adrank.v1.RankRequest');
      const once = Buffer.from(type.encode(type.fromObject(req) as protobuf.Message).finish());
      // the same user and exclusions again: protobuf merges them (lists concatenate, the later
      // map entry for a key wins)
      const again = Buffer.from(
        type.encode(
          type.fromObject({
            user: { sparse: { [c.user_sparse[0].name]: { ids: ['42'] } }, sequence: { itemIds: ['7'], actions: [2] } },
            exclusions: { adIds: ['9'] },
          }) as protobuf.Message,
        ).finish(),
      );
      const bytes = Buffer.concat([once, again]);
      const fast = rank.decode(bytes);
      const plain = defaultDecoder<Record<string, unknown>>('adrank.v1.RankRequest')(bytes);
      expect(strings(fast)).to.deep.equal({ ...plain, candidateAdIds: ['1'] });
      expect(Array.from(fast.user!.sparse![c.user_sparse[0].name].ids as unknown as BigInt64Array, String)).to.deep.equal(['42']);
      expect(Array.from(fast.exclusions!.adIds as unknown as BigInt64Array, String)).to.deep.equal(['-1', '5', '9']);
    });

    it('counts a huge id list before materialising it and refuses it by count; a long sequence keeps its head', () => {
      const n = 250_000;
      const w = protobuf.Writer.create();
      w.uint32((1 << 3) | 2).string('q');
      w.uint32((5 << 3) | 2).fork().uint32((2 << 3) | 2).fork();
      for (let i = 0; i < n; i++) w.int64(i % 100); // one-byte varints
      w.ldelim().ldelim();
      const bytes = Buffer.from(w.finish());
      const decode = (o: object) => rank.decode(encodeRank(o));
      const r = rank.decode(bytes);
      const adIds = r.exclusions!.adIds as unknown as TooManyIds;
      expect(adIds).to.be.instanceOf(TooManyIds);
      expect(adIds.length).to.equal(n);
      expect(adIds.head.length).to.equal(100_000);
      const req = decode(protoRequest(c, { candidateAdIds: ['1'] }));
      expect(() => validateRank({ ...req, exclusions: r.exclusions }, c, { maxCandidates: 10 })).to.throw(RequestError, 'expected at most 100000 ids for exclusions.ad_ids, got "250000 ids"');
      // a sequence of 150,000 engagements is valid and cut to the max_len most recent
      const seqReq = protoRequest(c, { candidateAdIds: ['1'] });
      seqReq.user!.sequence = { itemIds: Array.from({ length: 150_000 }, (_, i) => String(i + 3)), actions: Array.from({ length: 150_000 }, () => 1) };
      const e = validateRank(decode(seqReq), c, { maxCandidates: 10 });
      expect(Array.from(e.seqItems, String)).to.deep.equal(['3', '4', '5', '6', '7', '8'].slice(0, c.sequence.max_len));
    });

    it('computes the FNV-1a 64 pacing key without BigInt, equal to the BigInt definition', () => {
      const ref = (s: string) => {
        let h = 0xcbf29ce484222325n;
        for (const b of Buffer.from(s, 'utf8')) h = ((h ^ BigInt(b)) * 0x100000001b3n) & ((1n << 64n) - 1n);
        return h;
      };
      const ids = ['', 'a', 'req-1', 'pv-123', 'ünïcødé ✓ 🎯', '\ud800 lone', 'x'.repeat(256), 'y'.repeat(3000)];
      for (let i = 0; i < 500; i++) ids.push(`r${i * 7919}-${String.fromCharCode(i * 37)}`);
      for (const id of ids) expect(requestKey(id), JSON.stringify(id.slice(0, 20))).to.equal(ref(id));
    });
  });

  describe('response encoding', () => {
    it('ids survive as 64-bit words; timings are appended with encode and total time', () => {
      const r = emptyResult();
      r.adIds = BigInt64Array.from([9223372036854775807n, -5n, 300n]);
      r.advertisers = BigInt64Array.from([-9223372036854775808n, 7n, 4294967296n]);
      r.scores = Float32Array.from([3, 2, 1]);
      r.probs = Float32Array.from({ length: 3 * c.tasks.length }, (_, i) => i / 16);
      r.prices = Float32Array.from([0.5, 0.25, 0]);
      const bytes = responseEncoder('adrank.v1.RankResponse')(responseOf('q', r, c), { decodeUs: 1.5 }, performance.now() - 1);
      const back = defaultDecoder<RankResponse__Output>('adrank.v1.RankResponse')(bytes);
      expect(back.winners.map((w) => w.adId)).to.deep.equal(['9223372036854775807', '-5', '300']);
      expect(back.winners.map((w) => w.advertiserId)).to.deep.equal(['-9223372036854775808', '7', '4294967296']);
      expect(back.winners[1].taskProbabilities).to.deep.equal([4, 5, 6, 7].map((i) => i / 16));
      expect(back.winners.map((w) => w.price)).to.deep.equal([0.5, 0.25, 0]);
      expect(back.timings!.decodeUs).to.equal(1.5);
      expect(back.timings!.encodeUs).to.be.greaterThan(0);
      expect(back.timings!.totalUs).to.be.at.least(1000); // started 1 ms before
      expect(back.model).to.deep.equal({ name: 'adrank-test', version: '7' });
    });
  });

  describe('validation', () => {
    const decode = (o: object) => rank.decode(encodeRank(o));

    it('keeps the max_len most recent engagements (the first ones)', () => {
      const e = validateRank(decode(protoRequest(c, { candidateAdIds: ['1'] })), c, { maxCandidates: 10 });
      expect(Array.from(e.seqItems, String)).to.deep.equal(['11', '12', '13', '14', '15', '16']);
      expect(Array.from(e.seqActions)).to.deep.equal([0, 1, 2, 3, 0, 1]);
    });

    it('puts task weights by name into task order, others 0', () => {
      const e = validateRank(decode(protoRequest(c, { taskWeights: { conversion: 3, click: 1 } })), c, { maxCandidates: 10 });
      expect(Array.from(e.taskWeights!)).to.deep.equal([1, 0, 0, 3]);
    });

    it('fills sparse fields in config order, absent ones empty; reserve defaults to the bundle', () => {
      const e = validateRank(decode(protoRequest(c)), c, { maxCandidates: 10 });
      expect(e.userSparse.map((l) => Array.from(l, String))).to.deep.equal([['5', '77', '-3'], [], ['9']]);
      expect(e.reserve).to.be.closeTo(0.01, 1e-9);
      expect(e.surface).to.equal(1);
      expect(Array.from(e.targeting)).to.deep.equal([0, 1, 99]);
    });

    it('the candidate limit is the server’s', () => {
      expect(() => validateRank(decode(protoRequest(c, { candidateAdIds: ['1', '2', '3'] })), c, { maxCandidates: 2 })).to.throw(
        'expected at most 2 ids for candidate_ad_ids, got "3 ids"',
      );
    });

    it('the sample RetrieveAndRank (warm-up, `adrank client --k`) is valid for every K', () => {
      const rar = loadProto().root.lookupType('adrank.v1.RetrieveAndRankRequest');
      for (const k of [1, 10, 1000, 2000, 10_000]) {
        const bytes = Buffer.from(rar.encode(rar.fromObject(sampleRetrieveAndRank(modelShape(c), k)) as protobuf.Message).finish());
        const e = validateRetrieveAndRank(retrieveAndRank.decode(bytes), c, { maxCandidates: 100_000 });
        expect([e.k, e.retrieveCount >= k]).to.deep.equal([k, true]);
      }
    });

    it('RetrieveAndRank: retrieve_count 0 means max(K, min(10K, 10000))', () => {
      expect(defaultRetrieveCount(5)).to.equal(50);
      expect(defaultRetrieveCount(5000)).to.equal(10000);
      const e = validateRetrieveAndRank({ ...decode(protoRequest(c, { k: 7 })), retrieveCount: 0, candidateQuota: 0 }, c, { maxCandidates: 100_000 });
      expect(e.retrieveCount).to.equal(70);
      expect(e.price).to.equal(true);
    });
  });

  describe('handler path with a stand-in engine', () => {
    let calls = 0;
    const engine = {
      config: c,
      rank: async () => {
        calls++;
        return emptyResult();
      },
    } as unknown as Engine;
    const ctx = (e: Engine | undefined): HandlerContext => ({
      engine: () => e,
      models: fixedLeases(e),
      limits: { maxCandidates: 100 },
      inflight: new InflightLimit(1),
      inlineMaxUs: 0,
      inlineIdleMaxUs: 0,
      log: silentLogger,
      stats: new Stats(),
      latency: new RecentLatency(),
    });
    const req = () => rank.decode(encodeRank(protoRequest(c, { candidateAdIds: ['1', '2'] })));
    const fails = async (p: Promise<unknown>) => {
      try {
        await p;
      } catch (e) {
        return e;
      }
      throw new Error('expected a failure');
    };

    it('a passed deadline fails with DEADLINE_EXCEEDED before the engine is called', async () => {
      calls = 0;
      const past: CallState = { deadline: Date.now() - 1, cancelled: () => false };
      const e = await fails(execute(ctx(engine), rank, req(), past));
      expect(toServiceError(e).code).to.equal(status.DEADLINE_EXCEEDED);
      expect(calls).to.equal(0);
      await execute(ctx(engine), rank, req(), { deadline: Date.now() + 10_000, cancelled: () => false });
      expect(calls).to.equal(1);
    });

    it('no engine yet → UNAVAILABLE', async () => {
      expect(toServiceError(await fails(execute(ctx(undefined), rank, req()))).code).to.equal(status.UNAVAILABLE);
    });

    it('maps engine errors to statuses', () => {
      const code = (c: EngineError['code']) => status[toServiceError(new EngineError('x', c)).code];
      expect([code('INVALID_REQUEST'), code('DEVICE'), code('DISPOSED'), code('INTERNAL'), code('BUNDLE')]).to.deep.equal([
        'INVALID_ARGUMENT',
        'UNAVAILABLE',
        'UNAVAILABLE',
        'INTERNAL',
        'INTERNAL',
      ]);
      expect(status[toServiceError(new RequestError(status.NOT_FOUND, 'v')).code]).to.equal('NOT_FOUND');
      expect(status[toServiceError(new TypeError('boom')).code]).to.equal('INTERNAL');
    });

    it('the in-flight bound admits up to its limit', () => {
      const l = new InflightLimit(2);
      expect([l.tryAcquire(), l.tryAcquire(), l.tryAcquire()]).to.deep.equal([true, true, false]);
      l.release();
      expect(l.tryAcquire()).to.equal(true);
    });
  });

  describe('server options', () => {
    const never = () => new Promise<Engine>(() => {});
    const startFails = async (opts: Parameters<typeof AdrankServer.start>[0]) => {
      const r = await AdrankServer.start(opts).then((s) => s, (e: Error) => e);
      if (r instanceof AdrankServer) {
        await r.shutdown('test end');
        throw new Error('expected AdrankServer.start to refuse the options');
      }
      return r;
    };

    it('refuses max candidates above the engine’s 100,000', async () => {
      const e = await startFails({ port: 0, engine: never, maxCandidates: 100_001, log: silentLogger });
      expect(e.message).to.equal('expected an integer in 1..100000 for max candidates, got 100001');
    });

    it('a refused option leaves no port bound', async () => {
      const port = await new Promise<number>((resolve) => {
        const s = createServer().listen(0, 'localhost', () => {
          const p = (s.address() as { port: number }).port;
          s.close(() => resolve(p));
        });
      });
      await startFails({ port, engine: never, maxInflight: 0, log: silentLogger });
      const s = await AdrankServer.start({ port, engine: never, log: silentLogger });
      expect(s.port).to.equal(port);
      await s.shutdown('test end');
    });
  });

  describe('CLI flags from the environment', () => {
    // A file that starts like a bundle (so serve binds) but is truncated (so the load fails).
    const truncated = join(mkdtempSync(join(tmpdir(), 'adrank-51-')), 'truncated.safetensors');
    before(() => {
      const head = Buffer.alloc(8);
      head.writeBigUInt64LE(100n);
      writeFileSync(truncated, Buffer.concat([head, Buffer.from('{"ads.id": ')]));
    });
    after(() => rmSync(dirname(truncated), { recursive: true, force: true }));

    /** `adrank serve` with a truncated bundle: runs until the flags are parsed and the load fails. */
    const serve = (env: Record<string, string>, args: string[] = []) =>
      new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
        const child = spawn(process.execPath, ['--import', 'tsx', join(process.cwd(), 'src', 'cli', 'main.ts'), 'serve', ...args], {
          // the state file is opened before binding, so it needs a directory that exists
          env: { ...process.env, ADRANK_BUNDLE: truncated, ADRANK_STATE_FILE: join(tmpdir(), `adrank-51-${process.pid}.adstate`), ADRANK_PORT: '0', ADRANK_METRICS_PORT: '0', ADRANK_LOG_LEVEL: 'info', ...env },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d) => (stdout += d));
        child.stderr.on('data', (d) => (stderr += d));
        child.on('exit', (code) => {
          rmSync(join(tmpdir(), `adrank-51-${process.pid}.adstate`), { force: true });
          resolve({ code, stdout, stderr });
        });
      });

    it('are applied', async () => {
      const r = await serve({ ADRANK_MAX_INFLIGHT: '3', ADRANK_MAX_CANDIDATES: '5', ADRANK_MAX_MESSAGE_BYTES: '2048', ADRANK_SHUTDOWN_GRACE_MS: '7' });
      const events = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
      expect(events.find((e) => e.event === 'listening')).to.include({ maxInflight: 3, maxCandidates: 5, maxReceiveBytes: 2048 });
      expect(events.find((e) => e.event === 'shutting_down')).to.include({ graceMs: 7 });
      expect(r.code).to.equal(1); // the bundle is truncated
    });

    for (const [name, value] of [['ADRANK_PORT', ''], ['ADRANK_SHUTDOWN_GRACE_MS', ' '], ['ADRANK_MAX_INFLIGHT', '0x10'], ['ADRANK_MAX_CANDIDATES', '100001']]) {
      it(`refuses ${name}=${JSON.stringify(value)} before binding`, async () => {
        const r = await serve({ [name]: value });
        expect(r.code).to.equal(1);
        expect(r.stderr).to.include(name);
        expect(r.stdout).to.not.include('listening');
      });
    }
  });
});
