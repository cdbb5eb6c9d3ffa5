/**
 * Feature logging (docs/feature-log.md): deterministic sampling by request id, what a record
 * holds (the request as received, model, winners, timings), rotation by size and by age, the
 * bounded queue's drops, and a reader that skips a torn last record after a crash.
 */
import { expect } from 'chai';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import protobuf from 'protobufjs';
import { Engine } from '../src/engine/index.js';
import { AdrankServer } from '../src/server/server.js';
import { silentLogger, type Logger } from '../src/log.js';
import { call, connect } from '../src/cli/client.js';
import { loadProto } from '../src/wire/proto.js';
import { FeatureLog } from '../src/featurelog/writer.js';
import { readFeatureLog, readFeatureLogFile } from '../src/featurelog/reader.js';
import { sampleDraw, sampled } from '../src/featurelog/sampler.js';
import type { RankResponse__Output } from '../src/generated/adrank/v1/RankResponse.js';
import { addonBuilt, demoLoaded } from './support/index.js';
import { protoRequest, smallConfig } from './50.server.helpers.js';

const until = async (cond: () => boolean, ms = 10_000) => {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
  expect(cond(), 'condition within time').to.equal(true);
};

describe('68 feature log', function () {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'adrank-fl-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  describe('sampling', () => {
    it('is a deterministic function of the request id with the asked rate', () => {
      const ids = Array.from({ length: 20_000 }, (_, i) => `pv-${i}-${(i * 7919) % 1000}`);
      for (const rate of [0.01, 0.1, 0.5]) {
        const n = ids.filter((id) => sampled(id, rate)).length;
        expect(n / ids.length, `rate ${rate}`).to.be.closeTo(rate, 0.01 + rate * 0.1);
      }
      expect(ids.filter((id) => sampled(id, 0)).length).to.equal(0);
      expect(ids.filter((id) => sampled(id, 1)).length).to.equal(ids.length);
      // nested: whatever is kept at 0.1 is kept at 0.5 (one draw per id)
      expect(ids.filter((id) => sampled(id, 0.1) && !sampled(id, 0.5))).to.deep.equal([]);
      // the same id always draws the same value; a one-character change draws another
      expect(sampleDraw('pv-123')).to.equal(sampleDraw('pv-123'));
      expect(sampleDraw('pv-123')).to.not.equal(sampleDraw('pv-124'));
    });
  });

  describe('reader', () => {
    const lines = (n: number, from = 0) => Array.from({ length: n }, (_, i) => JSON.stringify({ rpc: 'Rank', requestId: `r${from + i}` }) + '\n').join('');

    it('reads concatenated gzip members and skips a torn last record', async () => {
      const f = join(dir, 'a.jsonl.gz');
      // two members; the second ends in the middle of a record (no newline)
      writeFileSync(f, Buffer.concat([gzipSync(lines(3)), gzipSync(lines(2, 3) + '{"rpc":"Rank","requ')]));
      const r = await readFeatureLogFile(f);
      expect(r.records.map((x) => x.requestId)).to.deep.equal(['r0', 'r1', 'r2', 'r3', 'r4']);
      expect(r.skipped).to.equal(1);
    });

    it('a file cut short inside a gzip member, or with garbage after it, is read up to the damage', async () => {
      const whole = Buffer.concat([gzipSync(lines(4)), gzipSync(lines(4, 4))]);
      const cut = join(dir, 'cut.jsonl.gz.open');
      writeFileSync(cut, whole.subarray(0, whole.length - 6)); // the second member's trailer is lost
      const r = await readFeatureLogFile(cut);
      expect(r.records.map((x) => x.requestId)).to.deep.equal(['r0', 'r1', 'r2', 'r3', 'r4', 'r5', 'r6', 'r7']);
      const garbage = join(dir, 'garbage.jsonl.gz');
      writeFileSync(garbage, Buffer.concat([gzipSync(lines(2)), Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xff, 0xee])]));
      expect((await readFeatureLogFile(garbage)).records.map((x) => x.requestId)).to.deep.equal(['r0', 'r1']);
      const torn = join(dir, 'torn.jsonl.gz');
      writeFileSync(torn, whole.subarray(0, 30)); // almost nothing: no complete record
      expect((await readFeatureLogFile(torn)).records.length).to.equal(0);
    });
  });

  describe('writer', () => {
    const { root } = loadProto();
    const rankReq = root.lookupType('adrank.v1.RankRequest');
    const rankRes = root.lookupType('adrank.v1.RankResponse');
    const c = smallConfig();
    const reqBytes = (id: string) => rankReq.encode(rankReq.fromObject(protoRequest(c, { requestId: id, candidateAdIds: ['1', '2'] })) as protobuf.Message).finish();
    const resBytes = rankRes.encode(rankRes.fromObject({ requestId: 'x', winners: [{ adId: '1', advertiserId: '9', score: 2, taskProbabilities: [0.5], price: 1 }], model: { name: 'm', version: '7' } }) as protobuf.Message).finish();

    it('bounded queue: a burst beyond queueMax is dropped, counted and logged; the rest is written', async () => {
      const warns: [string, Record<string, unknown>][] = [];
      const log: Logger = { ...silentLogger, warn: (e, f = {}) => warns.push([e, f]) };
      const fl = new FeatureLog({ dir, sample: 1, queueMax: 5, log });
      for (let i = 0; i < 50; i++) fl.record('Rank', `r${i}`, reqBytes(`r${i}`), resBytes); // one event-loop turn
      await fl.close();
      expect(fl.dropped).to.equal(45);
      expect(fl.written).to.equal(5);
      expect(warns.length).to.be.greaterThan(0);
      expect(warns[0][0]).to.equal('feature_log_dropped');
      expect(warns.reduce((s, [, f]) => s + (f.dropped as number), 0)).to.equal(45);
      const r = await readFeatureLog(dir);
      expect(r.records.map((x) => x.requestId)).to.deep.equal(['r0', 'r1', 'r2', 'r3', 'r4']);
    });

    it('rotates by size (every flush past maxBytes) and by age; closed files are fsynced and renamed', async () => {
      const fl = new FeatureLog({ dir, sample: 1, maxBytes: 1, log: silentLogger });
      for (let i = 0; i < 3; i++) {
        fl.record('Rank', `s${i}`, reqBytes(`s${i}`), resBytes);
        await until(() => fl.written === i + 1);
      }
      await until(() => fl.rotatedFiles.length === 3);
      await fl.close();
      expect(readdirSync(dir).filter((f) => f.endsWith('.jsonl.gz')).length).to.equal(3);
      expect(readdirSync(dir).filter((f) => f.endsWith('.open'))).to.deep.equal([]);

      const aged = join(dir, 'aged');
      const fa = new FeatureLog({ dir: aged, sample: 1, maxAgeMs: 100, log: silentLogger });
      fa.record('Rank', 'a0', reqBytes('a0'), resBytes);
      await until(() => fa.rotatedFiles.length === 1); // rotated by age with no further writes
      fa.record('Rank', 'a1', reqBytes('a1'), resBytes);
      await fa.close();
      expect(fa.rotatedFiles.length).to.equal(2);
      expect((await readFeatureLog(aged)).records.map((x) => x.requestId)).to.deep.equal(['a0', 'a1']);
    });

    it('samples by request id: only the ids the sampler keeps are written', async () => {
      const fl = new FeatureLog({ dir, sample: 0.3, log: silentLogger });
      const ids = Array.from({ length: 200 }, (_, i) => `q${i}`);
      for (const id of ids) fl.record('Rank', id, reqBytes(id), resBytes);
      await fl.close();
      const got = (await readFeatureLog(dir)).records.map((x) => x.requestId);
      expect(got).to.deep.equal(ids.filter((id) => sampled(id, 0.3)));
      expect(got.length).to.be.within(30, 90);
    });
  });

  describe('through the server', function () {
    let server: AdrankServer | undefined;
    let client: ReturnType<typeof connect> | undefined;
    before(function () {
      if (!addonBuilt()) this.skip();
    });
    afterEach(async () => {
      client?.close();
      await server?.shutdown('test');
      server = client = undefined;
    });

    it('logs each served call: the request as received, the model, winners with position, probabilities, utility and price, and timings', async () => {
      const b = demoLoaded({ ads: 300, seed: 5, config: smallConfig() });
      server = await AdrankServer.start({ host: 'localhost', port: 0, engine: Engine.fromBundle(b, { device: 'cpu' }), warmup: false, log: silentLogger, featureLog: { dir, sample: 1 } });
      await server.ready;
      client = connect(`localhost:${server.port}`);
      const ids = Array.from(b.tensors['ads.id'] as BigInt64Array, String);
      const rank = protoRequest(b.config, { requestId: 'pv-1', candidateAdIds: ids.slice(0, 50), k: 5, price: true, exclusions: { adIds: [ids[3]], advertiserIds: [] } });
      // blended: the caller's candidates and quota are logged, so replay re-sends them
      const rar = protoRequest(b.config, { requestId: 'pv-2', k: 4, retrieveCount: 40, candidateAdIds: ids.slice(100, 130), candidateQuota: 7 });
      const retrieve = protoRequest(b.config, { requestId: 'pv-3', k: 3 });
      const a = await call<object, RankResponse__Output>(client, 'Rank', rank);
      const r = await call<object, RankResponse__Output & { retrieved: number }>(client, 'RetrieveAndRank', rar);
      const t = await call<object, RankResponse__Output>(client, 'Retrieve', retrieve);
      await server.shutdown('test'); // flushes and closes the log
      const { records, skipped } = await readFeatureLog(dir);
      expect(skipped).to.equal(0);
      expect(records.map((x) => [x.rpc, x.requestId])).to.deep.equal([['Rank', 'pv-1'], ['RetrieveAndRank', 'pv-2'], ['Retrieve', 'pv-3']]);
      const [lr, la, lt] = records;
      // the request as received: every feature, as proto3 JSON
      expect(lr.request.candidateAdIds).to.deep.equal(ids.slice(0, 50));
      expect((lr.request.user as { dense: number[] }).dense).to.deep.equal(Array.from(Float32Array.from((rank.user as { dense: number[] }).dense)));
      expect((lr.request.user as { sequence: { itemIds: string[] } }).sequence.itemIds).to.deep.equal(['11', '12', '13', '14', '15', '16', '17', '18']); // as sent, before the cut to max_len
      expect(lr.request.exclusions).to.deep.equal({ adIds: [ids[3]], advertiserIds: [] });
      expect([lr.surface, lr.model]).to.deep.equal([rank.surface, { name: b.config.name, version: b.config.version }]);
      // winners as served
      expect(lr.winners.map((w) => [w.position, w.adId, w.advertiserId, w.utility, w.taskProbabilities, w.price])).to.deep.equal(
        a.winners.map((w, i) => [i + 1, w.adId, w.advertiserId, w.score, w.taskProbabilities, w.price]),
      );
      expect(la.winners.map((w) => w.adId)).to.deep.equal(r.winners.map((w) => w.adId));
      expect(la.retrieved).to.equal(r.retrieved);
      expect([la.request.candidateAdIds, la.request.candidateQuota]).to.deep.equal([ids.slice(100, 130), 7]);
      expect(lt.winners.map((w) => [w.adId, w.score])).to.deep.equal(t.winners.map((w) => [w.adId, w.score]));
      expect(lr.counts).to.deep.equal(a.counts);
      expect(lr.timings.engineTotalUs).to.be.greaterThan(0);
      expect(lr.timings.totalUs).to.be.greaterThan(0);
      expect(readFileSync(join(dir, readdirSync(dir)[0])).subarray(0, 2)).to.deep.equal(Buffer.from([0x1f, 0x8b])); // gzip
    });
  });
});
