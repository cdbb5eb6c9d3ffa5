/**
 * The gRPC server end to end over real connections on localhost:0 with a small demo bundle:
 * each RPC's answer against the engine called directly on the same request, GetModel, and
 * every docs/design.md §9 row that belongs to this layer (bad input, oversized and malformed messages,
 * expired deadlines, the in-flight bound) — after each bad request the server still answers.
 *
 * One server and bundle for the file (loading and warming a model per test would dominate the
 * run); tests that need other server options start their own in beforeEach/afterEach.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs';
import { Engine, type NativeResult } from '../src/engine/index.js';
import { AdrankServer } from '../src/server/server.js';
import { silentLogger } from '../src/log.js';
import { loadProto } from '../src/wire/proto.js';
import { call, connect } from '../src/cli/client.js';
import type { AdRankerClient } from '../src/generated/adrank/v1/AdRanker.js';
import type { RankResponse__Output } from '../src/generated/adrank/v1/RankResponse.js';
import type { RetrieveAndRankResponse__Output } from '../src/generated/adrank/v1/RetrieveAndRankResponse.js';
import type { GetModelResponse__Output } from '../src/generated/adrank/v1/GetModelResponse.js';
import type { ModelConfig } from '../src/model/config.js';
import { addonBuilt } from './support/index.js';
import { adIds, engineRequest, expectStatus, http2Call, protoRequest, rawClient, writeSmallBundle } from './50.server.helpers.js';

const DEVICE = process.env.ADRANK_TEST_DEVICE ?? 'cpu';

type Answer = RankResponse__Output & Partial<Pick<RetrieveAndRankResponse__Output, 'retrieved' | 'sourceCounts'>>;

/** The server's answer must be exactly the engine's (same device, same request). */
function expectSameAsEngine(got: Answer, want: NativeResult, c: ModelConfig, priced: boolean, scored: boolean): void {
  const T = c.tasks.length;
  expect(got.winners.map((w) => w.adId)).to.deep.equal(Array.from(want.adIds, String));
  expect(got.winners.map((w) => w.advertiserId)).to.deep.equal(Array.from(want.advertisers, String));
  expect(got.winners.map((w) => w.score)).to.deep.equal(Array.from(want.scores));
  if (scored) expect(got.winners.flatMap((w) => w.taskProbabilities)).to.deep.equal(Array.from(want.probs));
  else expect(got.winners.every((w) => w.taskProbabilities.length === 0)).to.equal(true);
  if (scored) expect(got.winners.every((w) => w.taskProbabilities.length === T)).to.equal(true);
  if (priced) expect(got.winners.map((w) => w.price)).to.deep.equal(Array.from(want.prices));
  else expect(got.winners.every((w) => w.price === undefined)).to.equal(true);
  expect(got.counts).to.deep.equal(want.counts);
  expect(got.model).to.deep.equal({ name: c.name, version: c.version });
}

describe('50 server: RPCs end to end', function () {
  this.timeout(120_000);
  let dir: string;
  let bundlePath: string;
  let engine: Engine; // the reference: the engine called directly
  let server: AdrankServer;
  let client: AdRankerClient;
  let c: ModelConfig;
  let ids: string[];

  before(async function () {
    if (!addonBuilt()) this.skip();
    dir = mkdtempSync(join(tmpdir(), 'adrank-50-'));
    bundlePath = join(dir, 'small.safetensors');
    await writeSmallBundle(bundlePath, 2000);
    engine = await Engine.load(bundlePath, { device: DEVICE, threads: 1 });
    c = engine.config;
    ids = adIds(engine.bundle);
    server = await AdrankServer.start({ port: 0, engine: () => Engine.load(bundlePath, { device: DEVICE, threads: 1 }), log: silentLogger });
    await server.ready;
    client = connect(`localhost:${server.port}`);
  });

  after(async () => {
    client?.close();
    await server?.shutdown('test end');
    engine?.dispose();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** A good Rank after a bad request: the server is still serving. */
  async function stillServes(): Promise<void> {
    const r = await call<object, RankResponse__Output>(client, 'Rank', protoRequest(c, { candidateAdIds: ids.slice(0, 50), k: 5 }));
    expect(r.winners).to.have.length(5);
  }

  it('GetModel describes the loaded bundle', async () => {
    const m = await call<object, GetModelResponse__Output>(client, 'GetModel', {});
    expect(m.name).to.equal('adrank-test');
    expect(m.version).to.equal('7');
    expect(m.numAds).to.equal('2000');
    expect(m.backend).to.equal(engine.backend);
    expect(m.tasks).to.deep.equal(c.tasks);
    expect(m.surfaces).to.deep.equal(c.surfaces);
    expect(m.userSparseFields).to.deep.equal(c.user_sparse.map((f) => f.name));
    expect(m.sequenceMaxLen).to.equal(6);
    expect(m.bundleSha256).to.equal(engine.bundle.sha256);
    expect(JSON.parse(m.configJson)).to.deep.equal(c);
  });

  it('Rank equals the engine on the same request, unknown and duplicate ids counted', async () => {
    const candidates = [...ids.slice(0, 300), '-1', '424242', ids[3], ids[4], ids[3]];
    const req = protoRequest(c, { candidateAdIds: candidates, price: true, exclusions: { adIds: [ids[0]], advertiserIds: [] } });
    const got = await call<object, Answer>(client, 'Rank', req);
    const want = await engine.rank(engineRequest(c, req, 'rank'));
    expectSameAsEngine(got, want, c, true, true);
    expect(got.requestId).to.equal('req-1');
    expect(got.counts!.received).to.equal(305);
    expect(got.counts!.unknown).to.equal(2);
    expect(got.counts!.duplicate).to.equal(3);
    expect(got.counts!.excludedAd).to.equal(1);
    expect(got.winners).to.have.length(20);
  });

  it('Rank with a task-weight override and local ranking equals the engine', async () => {
    const req = protoRequest(c, {
      candidateAdIds: ids.slice(100, 900),
      taskWeights: { [c.tasks[1]]: 2, [c.tasks[3]]: 0.5 },
      ranking: { mode: 'LOCAL', partitions: 4 },
      k: 30,
    });
    const got = await call<object, Answer>(client, 'Rank', req);
    expectSameAsEngine(got, await engine.rank(engineRequest(c, req, 'rank')), c, false, true);
    // the override changes the answer (a server that ignored it would match the default order)
    const plain = await call<object, Answer>(client, 'Rank', protoRequest(c, { candidateAdIds: ids.slice(100, 900), ranking: { mode: 'LOCAL', partitions: 4 }, k: 30 }));
    expect(plain.winners.map((w) => w.score)).to.not.deep.equal(got.winners.map((w) => w.score));
  });

  it('Retrieve equals the engine on the same request', async () => {
    const req = protoRequest(c, { k: 50, perAdvertiserCap: 1, exclusions: { advertiserIds: ['100000', '100007'], adIds: [] } });
    const got = await call<object, Answer>(client, 'Retrieve', req);
    expectSameAsEngine(got, await engine.retrieve(engineRequest(c, req, 'retrieve')), c, false, false);
    expect(got.counts!.received).to.equal(2000);
    expect(new Set(got.winners.map((w) => w.advertiserId)).size).to.equal(got.winners.length); // cap 1
  });

  it('RetrieveAndRank equals the engine, priced, with the retrieval count', async () => {
    const req = protoRequest(c, { k: 10, retrieveCount: 200, reserve: 0.02 });
    const got = await call<object, Answer>(client, 'RetrieveAndRank', req);
    const want = await engine.retrieveAndRank(engineRequest(c, req, 'retrieveAndRank'));
    expectSameAsEngine(got, want, c, true, true);
    expect(got.retrieved).to.equal(want.retrieved);
    expect(got.retrieved).to.be.greaterThan(0);
  });

  describe('RetrieveAndRank blended with the caller’s candidate_ad_ids (docs/funnel.md "Blended retrieval sources")', () => {
    const SOURCE = ['CANDIDATE_SOURCE_UNSPECIFIED', 'RETRIEVAL', 'CALLER'];
    /** per-source counts as the engine reports them, in the proto's JSON shape */
    const sourceCountsOf = (r: NativeResult) =>
      r.sourceCounts.map((x) => Object.fromEntries(Object.entries(x).map(([k, v]) => [k, k === 'source' ? SOURCE[v] : v])));

    it('equals the engine: winners with their source, per-source counts, dedupe crediting retrieval, the quota', async () => {
      // the caller's list: 60 corpus ids, an unknown id, a repeat, and the best retrieved ads
      const plain = await call<object, Answer>(client, 'RetrieveAndRank', protoRequest(c, { k: 10, retrieveCount: 20 }));
      const retrievedWinners = plain.winners.slice(0, 3).map((w) => w.adId);
      const others = ids.slice(500, 560).filter((id) => !retrievedWinners.includes(id));
      const caller = [...others, '999999999999', others[0], ...retrievedWinners];
      const req = protoRequest(c, { k: 10, retrieveCount: 20, candidateAdIds: caller, candidateQuota: 25 });
      const got = await call<object, Answer>(client, 'RetrieveAndRank', req);
      const want = await engine.retrieveAndRank(engineRequest(c, req, 'retrieveAndRank'));
      expectSameAsEngine(got, want, c, true, true);
      expect(got.winners.map((w) => w.source)).to.deep.equal(Array.from(want.sources, (x) => SOURCE[x]));
      expect(got.sourceCounts).to.deep.equal(sourceCountsOf(want));
      const [ret, cal] = got.sourceCounts!;
      expect([ret.source, cal.source]).to.deep.equal(['RETRIEVAL', 'CALLER']);
      expect(cal.received).to.equal(caller.length);
      expect([cal.unknown, cal.duplicate, cal.earlierSource]).to.deep.equal([1, 1, 3]); // the 3 retrieved winners credited to retrieval
      expect(cal.ranked).to.equal(Math.min(25, cal.eligible));
      expect(cal.overQuota).to.equal(cal.eligible - cal.ranked);
      expect(cal.overQuota, 'the quota bites').to.be.greaterThan(0);
      expect(ret.ranked).to.equal(got.retrieved);
      expect(ret.winners + cal.winners).to.equal(got.winners.length);
      expect(got.winners.filter((w) => w.source === 'CALLER').length, 'caller candidates win slots').to.equal(cal.winners).and.to.be.greaterThan(0);
      // credited to retrieval: the retrieved winners that the caller repeated are still RETRIEVAL winners
      for (const id of retrievedWinners) {
        const w = got.winners.find((x) => x.adId === id);
        if (w) expect(w.source, `ad ${id}`).to.equal('RETRIEVAL');
      }
      // the top-level counts stay the retrieval source's: the corpus scan
      expect(got.counts!.received).to.equal(2000);
      expect(got.counts!.unknown).to.equal(0);
    });

    it('retrieval alone: every winner RETRIEVAL, an all-zero CALLER entry; Rank winners carry no source', async () => {
      const got = await call<object, Answer>(client, 'RetrieveAndRank', protoRequest(c, { k: 5, retrieveCount: 50 }));
      expect(got.winners.every((w) => w.source === 'RETRIEVAL')).to.equal(true);
      expect(got.sourceCounts!.map((x) => [x.source, x.ranked, x.winners])).to.deep.equal([['RETRIEVAL', 50, 5], ['CALLER', 0, 0]]);
      const rank = await call<object, Answer>(client, 'Rank', protoRequest(c, { candidateAdIds: ids.slice(0, 20), k: 3 }));
      expect(rank.winners.every((w) => w.source === 'CANDIDATE_SOURCE_UNSPECIFIED')).to.equal(true);
    });

    it('with caller candidates retrieve_count may be below k; the union fills K', async () => {
      const got = await call<object, Answer>(client, 'RetrieveAndRank', protoRequest(c, { k: 20, retrieveCount: 5, candidateAdIds: ids.slice(0, 300) }));
      expect(got.retrieved).to.equal(5);
      expect(got.winners).to.have.length(20);
      expect(got.winners.filter((w) => w.source === 'CALLER').length).to.be.at.least(15);
    });

    it('bad caller fields → INVALID_ARGUMENT naming the field', async () => {
      await expectStatus(call(client, 'RetrieveAndRank', protoRequest(c, { k: 5, candidateAdIds: Array.from({ length: 100_001 }, (_, i) => String(i)) })), grpc.status.INVALID_ARGUMENT, 'candidate_ad_ids');
      await expectStatus(call(client, 'RetrieveAndRank', protoRequest(c, { k: 5, candidateQuota: 3 })), grpc.status.INVALID_ARGUMENT, 'candidate_quota');
      await expectStatus(call(client, 'RetrieveAndRank', protoRequest(c, { k: 5, candidateAdIds: ids.slice(0, 5), candidateQuota: 100_001 })), grpc.status.INVALID_ARGUMENT, 'candidate_quota');
      await expectStatus(call(client, 'RetrieveAndRank', protoRequest(c, { k: 50, retrieveCount: 10 })), grpc.status.INVALID_ARGUMENT, 'retrieve_count');
      await stillServes();
    });
  });

  it('reports server timings by stage', async () => {
    const got = await call<object, Answer>(client, 'Rank', protoRequest(c, { candidateAdIds: ids.slice(0, 500) }));
    const t = got.timings!;
    expect(t.decodeUs).to.be.greaterThan(0);
    expect(t.validateUs).to.be.greaterThan(0);
    expect(t.encodeUs).to.be.greaterThan(0);
    expect(t.engineTotalUs).to.be.greaterThan(0);
    expect(t.totalUs).to.be.at.least(t.decodeUs + t.validateUs + t.encodeUs);
  });

  it('empty candidate list → OK with no winners', async () => {
    const got = await call<object, Answer>(client, 'Rank', protoRequest(c, { candidateAdIds: [] }));
    expect(got.winners).to.deep.equal([]);
    expect(got.counts!.received).to.equal(0);
  });

  it('a version pin: the loaded version answers, another is NOT_FOUND', async () => {
    await call(client, 'Rank', protoRequest(c, { candidateAdIds: ids.slice(0, 10), modelVersion: '7' }));
    await expectStatus(call(client, 'Rank', protoRequest(c, { candidateAdIds: ids.slice(0, 10), modelVersion: '8' })), grpc.status.NOT_FOUND, '"8"');
    await stillServes();
  });

  describe('bad input → INVALID_ARGUMENT naming the field', () => {
    const cases: [string, (c: ModelConfig) => object, string][] = [
      ['missing user', (c) => ({ ...protoRequest(c), user: null }), 'for user,'],
      ['empty request id', (c) => protoRequest(c, { requestId: '' }), 'request_id'],
      ['unknown surface', (c) => protoRequest(c, { surface: 'nope' }), 'surface'],
      ['short dense vector', (c) => { const r = protoRequest(c); r.user!.dense = [1, 2]; return r; }, 'user.dense'],
      ['long embedding', (c) => { const r = protoRequest(c); r.user!.embedding = new Array(c.user_embedding_dim + 1).fill(0); return r; }, 'user.embedding'],
      ['NaN feature', (c) => { const r = protoRequest(c); (r.user!.dense as number[])[3] = NaN; return r; }, 'user.dense[3], got NaN'],
      ['Inf embedding', (c) => { const r = protoRequest(c); (r.user!.embedding as number[])[0] = Infinity; return r; }, 'user.embedding[0], got Infinity'],
      ['unknown sparse field', (c) => { const r = protoRequest(c); r.user!.sparse = { bogus: { ids: ['1'] } }; return r; }, 'user.sparse'],
      ['action out of range', (c) => { const r = protoRequest(c); r.user!.sequence = { itemIds: ['1'], actions: [c.sequence.actions] }; return r; }, 'user.sequence.actions[0]'],
      ['actions and items differ in length', (c) => { const r = protoRequest(c); r.user!.sequence = { itemIds: ['1', '2'], actions: [0] }; return r; }, 'user.sequence.actions'],
      ['targeting too short', (c) => protoRequest(c, { targeting: [0] }), 'targeting'],
      ['k = 0 (missing)', (c) => protoRequest(c, { k: 0 }), 'for k,'],
      ['k = 10,001', (c) => protoRequest(c, { k: 10_001 }), 'for k,'],
      ['negative cap', (c) => protoRequest(c, { perAdvertiserCap: -1 }), 'per_advertiser_cap'],
      ['unknown task weight', (c) => protoRequest(c, { taskWeights: { nope: 1 } }), 'task_weights'],
      ['negative task weight', (c) => protoRequest(c, { taskWeights: { [c.tasks[0]]: -1 } }), `task_weights[${'click'}]`],
      ['all-zero task weights', (c) => protoRequest(c, { taskWeights: { [c.tasks[0]]: 0 } }), 'task_weights'],
      ['local mode without partitions', (c) => protoRequest(c, { ranking: { mode: 'LOCAL', partitions: 0 } }), 'ranking.partitions'],
      ['negative reserve', (c) => protoRequest(c, { reserve: -1 }), 'reserve'],
      ['too many candidates', (c) => protoRequest(c, { candidateAdIds: Array.from({ length: 100_001 }, (_, i) => String(i)) }), 'candidate_ad_ids'],
    ];
    for (const [name, make, field] of cases) {
      it(name, async () => {
        await expectStatus(call(client, 'Rank', make(c)), grpc.status.INVALID_ARGUMENT, field);
        await stillServes();
      });
    }

    it('retrieve_count below k (RetrieveAndRank)', async () => {
      await expectStatus(call(client, 'RetrieveAndRank', protoRequest(c, { k: 50, retrieveCount: 10 })), grpc.status.INVALID_ARGUMENT, 'retrieve_count');
      await stillServes();
    });
  });

  describe('transport-level faults', () => {
    const garbage: [string, number[]][] = [
      ['a length past the end', [0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]],
      ['a truncated packed candidate list', [0x7a, 0x05, 0x80, 0x80]],
      ['a candidate varint cut short', [0x7a, 0x02, 0x01, 0x80]],
      ['an invalid wire type', [0x0f, 0x01]],
    ];
    for (const [name, bytes] of garbage) {
      it(`malformed bytes (${name}) → INTERNAL, server alive`, async () => {
        const raw = rawClient(`localhost:${server.port}`, 'Rank');
        try {
          const r = await raw.send(Buffer.from(bytes));
          expect(grpc.status[r.code]).to.equal('INTERNAL');
        } finally {
          raw.close();
        }
        await stillServes();
      });
    }

    it('oversized message (> 8 MiB) → RESOURCE_EXHAUSTED, server alive', async () => {
      const big = protoRequest(c, { requestId: 'x'.repeat(9 * 1024 * 1024) });
      await expectStatus(call(client, 'Rank', big), grpc.status.RESOURCE_EXHAUSTED);
      await stillServes();
    });

    it('deadline already passed → DEADLINE_EXCEEDED without engine work', async () => {
      const type = loadProto().root.lookupType('adrank.v1.RankRequest');
      const bytes = type.encode(type.fromObject(protoRequest(c, { candidateAdIds: ids.slice(0, 100) })) as protobuf.Message).finish();
      const before = server.stats.engineCalls.Rank ?? 0;
      const r = await http2Call(server.port, 'Rank', bytes, '1n');
      expect(grpc.status[r.code]).to.equal('DEADLINE_EXCEEDED');
      expect(server.stats.engineCalls.Rank ?? 0).to.equal(before);
      // the same bytes with time to spare are served
      const ok = await http2Call(server.port, 'Rank', bytes, '10S');
      expect(grpc.status[ok.code]).to.equal('OK');
      expect(server.stats.engineCalls.Rank).to.equal(before + 1);
    });
  });

  describe('in-flight bound', () => {
    let small: AdrankServer;
    let smallClient: AdRankerClient;
    beforeEach(async () => {
      small = await AdrankServer.start({ port: 0, engine: () => Engine.load(bundlePath, { device: DEVICE, threads: 1 }), maxInflight: 1, warmup: false, log: silentLogger });
      await small.ready;
      smallClient = connect(`localhost:${small.port}`);
    });
    afterEach(async () => {
      smallClient.close();
      await small.shutdown('test end');
    });

    it('when full, RESOURCE_EXHAUSTED at once; the admitted call completes', async () => {
      const req = protoRequest(c, { candidateAdIds: ids });
      const results = await Promise.allSettled(Array.from({ length: 6 }, () => call<object, Answer>(smallClient, 'Rank', req)));
      const codes = results.map((r) => (r.status === 'fulfilled' ? 'OK' : grpc.status[(r.reason as grpc.ServiceError).code]));
      expect(codes).to.include('OK');
      expect(codes).to.include('RESOURCE_EXHAUSTED');
      expect(codes.every((x) => x === 'OK' || x === 'RESOURCE_EXHAUSTED')).to.equal(true);
      expect(small.inflight).to.equal(0);
    });
  });
});
