/**
 * Micro-batching (src/batcher/, Engine.runBatch):
 *   - a batch's answers equal the requests' answers alone, bit for bit, across mixed RPCs
 *     (Rank, RetrieveAndRank, a Retrieve), K, cap, global/local modes, prices, task weights,
 *     empty and oversized sequences, requests with no eligible candidate, and a malformed one
 *     (refused alone) — in the addon and through the gRPC server;
 *   - the queue policy: full → RESOURCE_EXHAUSTED at once, a deadline that cannot be met →
 *     DEADLINE_EXCEEDED without engine work, a cancelled call leaves the queue;
 *   - fairness: one big caller and many small ones — the big one runs, and no small request waits
 *     behind more than the batches ahead of it when it arrived.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import { binding, type NativeEngine, type NativeResult } from '../src/engine/binding.js';
import { Engine } from '../src/engine/index.js';
import { Batcher, BATCH_OP, batcherFor } from '../src/batcher/index.js';
import { RequestError } from '../src/handlers/validate.js';
import { AdrankServer } from '../src/server/server.js';
import { silentLogger } from '../src/log.js';
import { call, connect } from '../src/cli/client.js';
import type { RankResponse__Output } from '../src/generated/adrank/v1/RankResponse.js';
import { adId, init, pack, randomBundle } from './support/tiny-model.js';
import { addonBuilt } from './support/index.js';
import { adIds, protoRequest, writeSmallBundle } from './50.server.helpers.js';
import { until } from './support/server.js';

const bytes = (a: ArrayBufferView) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

/** Every field of two results equal, floats compared by their bits. */
function expectSameResult(got: NativeResult, want: NativeResult, what: string): void {
  expect(bytes(got.adIds).equals(bytes(want.adIds)), `${what} adIds`).to.equal(true);
  expect(bytes(got.advertisers).equals(bytes(want.advertisers)), `${what} advertisers`).to.equal(true);
  expect(bytes(got.rows).equals(bytes(want.rows)), `${what} rows`).to.equal(true);
  expect(bytes(got.scores).equals(bytes(want.scores)), `${what} scores`).to.equal(true);
  expect(bytes(got.probs).equals(bytes(want.probs)), `${what} probs`).to.equal(true);
  expect(bytes(got.prices).equals(bytes(want.prices)), `${what} prices`).to.equal(true);
  expect(got.retrieved, `${what} retrieved`).to.equal(want.retrieved);
  expect(got.counts, `${what} counts`).to.deep.equal(want.counts);
}

describe('57 batching', function () {
  this.timeout(120_000);

  describe('addon runBatch', () => {
    let engine: NativeEngine;
    before(function () {
      if (!addonBuilt()) this.skip();
      engine = new (binding().Engine)(init());
    });
    after(() => engine?.dispose());

    // ops: 0 rank, 1 retrieve, 2 retrieveAndRank
    const cands = (from: number, n: number, step = 1) => BigInt64Array.from({ length: n }, (_, i) => adId((from + i * step) % 40));
    const cases: [string, number, Uint8Array][] = [
      ['rank k=5', 0, pack({ candidates: cands(0, 20) })],
      ['rank k=1 cap 1 priced', 0, pack({ k: 1, cap: 1, price: true, candidates: cands(3, 25) })],
      ['rank empty sequence', 0, pack({ seqItems: [], seqActions: [], candidates: cands(5, 30) })],
      ['rank full sequence (max_len)', 0, pack({ seqItems: [1n, 2n, 3n, 4n, 5n, 6n], seqActions: [0, 1, 2, 0, 1, 2], candidates: cands(1, 33) })],
      ['rank local mode', 0, pack({ mode: 1, partitions: 3, k: 6, price: true, candidates: cands(7, 36) })],
      ['rank task weights, surface 0', 0, pack({ surface: 0, taskWeights: [2, 0.5, -1], k: 10, candidates: cands(2, 17, 3) })],
      ['rank only unknown ids', 0, pack({ candidates: BigInt64Array.from([1n, 2n, 3n]) })],
      ['rank excluded advertiser', 0, pack({ excludedAdvertisers: [1n, 2n], candidates: cands(0, 40) })],
      ['retrieveAndRank R=12', 2, pack({ candidates: new BigInt64Array(0), retrieveCount: 12, k: 4 })],
      ['retrieveAndRank R=40 empty seq', 2, pack({ candidates: new BigInt64Array(0), retrieveCount: 40, k: 7, seqItems: [], seqActions: [] })],
      ['retrieve', 1, pack({ candidates: new BigInt64Array(0), k: 9 })],
      ['rank k=40 all', 0, pack({ k: 40, cap: 2, price: true, candidates: cands(0, 40) })],
    ];

    it('answers every request of a mixed batch exactly as it answers it alone', async () => {
      const alone = await Promise.all(
        cases.map(([, op, b]) => (op === 0 ? engine.rank(b) : op === 1 ? engine.retrieve(b) : engine.retrieveAndRank(b))),
      );
      // the whole mix, and two other orders (different neighbours and chunk boundaries)
      for (const order of [cases.map((_, i) => i), cases.map((_, i) => cases.length - 1 - i), [3, 0, 8, 11, 4, 9, 1, 5]]) {
        const batch = await engine.runBatch(Uint8Array.from(order, (i) => cases[i][1]), order.map((i) => cases[i][2]));
        expect(batch).to.have.length(order.length);
        order.forEach((i, j) => {
          const r = batch[j];
          if (r instanceof Error) throw r;
          expectSameResult(r, alone[i], cases[i][0]);
        });
      }
      // sanity: the mix has winners with scores, prices and several segments per forward chunk
      expect(alone[11].adIds.length).to.be.greaterThan(10);
      expect(alone[1].prices.length).to.equal(1);
      expect(alone[6].adIds.length).to.equal(0);
    });

    it('refuses a malformed request alone; the rest of its batch is answered', async () => {
      const good = cases[0][2];
      const bad = pack({ candidates: cands(0, 5) }).slice(0, 64); // truncated bundle
      const out = await engine.runBatch(Uint8Array.from([0, 0, 2]), [good, bad, cases[8][2]]);
      expect(out[1]).to.be.instanceOf(Error);
      expect((out[1] as Error).message).to.match(/^expected /);
      expectSameResult(out[0] as NativeResult, await engine.rank(good), 'good');
      expectSameResult(out[2] as NativeResult, await engine.retrieveAndRank(cases[8][2]), 'retrieveAndRank');
    });

    it('checks its arguments', async () => {
      await engine.runBatch(Uint8Array.from([7]), [cases[0][2]]).then(
        () => expect.fail('resolved'),
        (e: Error) => expect(e.message).to.match(/expected 0 \(rank\), 1 \(retrieve\) or 2 \(retrieveAndRank\) for ops\[0\], got 7/),
      );
      await engine.runBatch(Uint8Array.from([0, 0]), [cases[0][2]]).then(
        () => expect.fail('resolved'),
        (e: Error) => expect(e.message).to.match(/ops/),
      );
    });
  });

  describe('through the server', () => {
    let dir: string;
    let on: AdrankServer;
    let off: AdrankServer;
    let ids: string[];
    before(async function () {
      if (!addonBuilt()) this.skip();
      dir = mkdtempSync(join(tmpdir(), 'adrank-53-'));
      const path = join(dir, 'small.safetensors');
      await writeSmallBundle(path, 2000);
      const engine = await Engine.load(path, { device: 'cpu', threads: 2 });
      ids = adIds(engine.bundle);
      engine.dispose();
      // a long delay so that the concurrent calls below surely share batches
      on = await AdrankServer.start({ port: 0, engine: () => Engine.load(path, { device: 'cpu', threads: 2 }), log: silentLogger, batching: { maxDelayUs: 50_000, maxCandidates: 100_000 } });
      off = await AdrankServer.start({ port: 0, engine: () => Engine.load(path, { device: 'cpu', threads: 2 }), log: silentLogger, batching: { maxDelayUs: 0 } });
      await Promise.all([on.ready, off.ready]);
    });
    after(async () => {
      await Promise.all([on?.shutdown('test'), off?.shutdown('test')]);
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    it('gives batched calls the answers of unbatched ones (mixed RPCs, K, modes, sequences)', async () => {
      const c = on.engine!.config;
      const reqs: [string, object][] = [];
      for (let i = 0; i < 12; i++) {
        const base = protoRequest(c, { requestId: `r${i}`, k: 1 + ((i * 7) % 25), perAdvertiserCap: i % 3 });
        if (i % 4 === 3) base.user!.sequence = { itemIds: [], actions: [] }; // empty sequence (others: 8 items, over max_len)
        if (i % 3 === 2) base.ranking = { mode: 'LOCAL', partitions: 2 };
        if (i % 5 === 4) reqs.push(['RetrieveAndRank', { ...base, retrieveCount: 50 + i }]);
        else reqs.push(['Rank', { ...base, candidateAdIds: ids.slice(i * 37, i * 37 + 20 + 13 * i), price: i % 2 === 0 }]);
      }
      const strip = (r: RankResponse__Output) => ({ ...r, timings: null });
      const send = (s: AdrankServer) => {
        const client = connect(`localhost:${s.port}`);
        return Promise.all(reqs.map(([m, r]) => call<object, RankResponse__Output>(client, m, r))).finally(() => client.close());
      };
      const before = on.batchStats()!.batches;
      const [a, b] = [await send(on), await send(off)];
      const stats = on.batchStats()!;
      expect(stats.batches - before, 'the 12 calls ran in fewer than 12 batches').to.be.below(12);
      expect(stats.lastBatchRequests).to.be.greaterThan(1);
      a.forEach((r, i) => {
        expect(r.winners.length, reqs[i][0]).to.be.greaterThan(0);
        expect(strip(r), `${reqs[i][0]} ${i}`).to.deep.equal(strip(b[i]));
      });
      expect(off.batchStats()!.batches).to.equal(0);
    });
  });

  describe('queue policy (Batcher with a controllable engine)', () => {
    /** An engine whose runBatch answers when told to (release) or after `ms`. */
    function fakeEngine(ms?: number) {
      const runs: { ops: number[]; sizes: number[]; release: () => void }[] = [];
      const engine = {
        runBatch(ops: Uint8Array, reqs: Uint8Array[]) {
          return new Promise<NativeResult[]>((resolve) => {
            const release = () => resolve(reqs.map((b) => ({ adIds: new BigInt64Array(0), timings: { queue: 0 }, tag: b[0] }) as unknown as NativeResult));
            runs.push({ ops: [...ops], sizes: reqs.map((b) => b.length), release });
            if (ms !== undefined) setTimeout(release, ms);
          });
        },
      } as unknown as Engine;
      return { engine, runs };
    }
    const req = (size: number) => new Uint8Array(size);
    const noCall = { deadline: Infinity };
    const statusOf = (p: Promise<unknown>) =>
      p.then(
        () => 'OK',
        (e: unknown) => (e instanceof RequestError ? grpc.status[e.code] : String(e)),
      );

    it('batches only requests below half a batch, and nothing when the delay is 0', () => {
      const b = new Batcher({ maxCandidates: 1024, maxDelayUs: 200, maxQueue: 8 });
      expect([0, 1, 10, 511, 512, 1000, 5000].map((n) => b.wants(n))).to.deep.equal([false, true, true, true, false, false, false]);
      expect(new Batcher({ maxCandidates: 1024, maxDelayUs: 0, maxQueue: 8 }).wants(10)).to.equal(false);
    });

    it('refuses at once when the queue is full', async () => {
      const { engine, runs } = fakeEngine();
      const b = new Batcher({ maxCandidates: 1000, maxDelayUs: 10_000_000, maxQueue: 3, dispatchWhenIdle: false });
      const first = b.submit(engine, BATCH_OP.rank, req(10), 10, noCall); // not sent: waits for the delay
      const queued = [b.submit(engine, BATCH_OP.rank, req(10), 10, noCall), b.submit(engine, BATCH_OP.rank, req(10), 10, noCall)];
      const t0 = performance.now();
      expect(await statusOf(b.submit(engine, BATCH_OP.rank, req(10), 10, noCall))).to.equal('RESOURCE_EXHAUSTED');
      expect(performance.now() - t0).to.be.below(1000);
      expect(b.stats().queueDepth).to.equal(3);
      expect(b.stats().refused.queueFull).to.equal(1);
      expect(runs).to.have.length(0);
      // filling to max candidates sends the batch without waiting for the delay
      const b2 = new Batcher({ maxCandidates: 30, maxDelayUs: 10_000_000, maxQueue: 10, dispatchWhenIdle: false });
      const all = [10, 10, 10].map((n) => b2.submit(engine, BATCH_OP.rank, req(n), n, noCall));
      expect(runs).to.have.length(1);
      expect(runs[0].sizes).to.deep.equal([10, 10, 10]);
      runs[0].release();
      expect(await Promise.all(all.map(statusOf))).to.deep.equal(['OK', 'OK', 'OK']);
      void first;
      void queued;
    });

    it('every batcher setting comes from the server options (batcherFor), with defaults by backend; the CLI flags are checked', function () {
      if (!addonBuilt()) this.skip();
      const e = Engine.fromBundle(randomBundle(7), { device: 'cpu', threads: 1 });
      try {
        const d = batcherFor({}, e).options;
        expect(d).to.include({ maxCandidates: 1024, maxDelayUs: 0, maxQueue: 256, maxInflightBatches: 1, dispatchWhenIdle: true });
        const o = batcherFor({ maxCandidates: 64, maxDelayUs: 150, maxQueue: 9, maxInflightBatches: 3, dispatchWhenIdle: false }, e).options;
        expect(o).to.deep.equal({ maxCandidates: 64, maxDelayUs: 150, maxQueue: 9, maxInflightBatches: 3, dispatchWhenIdle: false });
      } finally {
        e.dispose();
      }
      const cli = join(process.cwd(), 'src', 'cli', 'main.ts');
      for (const [flag, value, message] of [
        ['--batch-max-inflight-batches', '0', /--batch-max-inflight-batches <n>' argument '0' is invalid/],
        ['--batch-dispatch-when-idle', 'maybe', /--batch-dispatch-when-idle <bool>' argument 'maybe' is invalid\. expected true or false, got "maybe"/],
      ] as const) {
        const r = spawnSync(process.execPath, ['--import', 'tsx', cli, 'serve', '--demo', flag, value], { encoding: 'utf8', timeout: 60_000 });
        expect(r.status, flag).to.not.equal(0);
        expect(r.stderr, flag).to.match(message);
      }
    });

    it('one batch per free slot (maxInflightBatches, one per CUDA stream): a slot that frees takes what queued meanwhile', async () => {
      const { engine, runs } = fakeEngine();
      const b = new Batcher({ maxCandidates: 1000, maxDelayUs: 10_000_000, maxQueue: 10, maxInflightBatches: 2 });
      const first = b.submit(engine, BATCH_OP.rank, req(10), 10, noCall);
      const second = b.submit(engine, BATCH_OP.rank, req(20), 20, noCall);
      expect(runs.map((r) => r.sizes), 'both slots busy at once, no wait for company').to.deep.equal([[10], [20]]);
      expect(b.stats().inflightBatches).to.equal(2);
      const later = [31, 32, 33].map((n) => b.submit(engine, BATCH_OP.rank, req(n), n, noCall));
      expect(runs, 'every slot busy: they wait').to.have.length(2);
      runs[1].release(); // the second slot frees first
      expect(await statusOf(second)).to.equal('OK');
      await until('the third batch', () => runs.length === 3);
      expect(runs[2].sizes, 'the three that queued, together').to.deep.equal([31, 32, 33]);
      runs[0].release();
      runs[2].release();
      expect(await Promise.all([first, ...later].map(statusOf))).to.deep.equal(['OK', 'OK', 'OK', 'OK']);
      expect(() => new Batcher({ maxCandidates: 10, maxDelayUs: 1, maxQueue: 1, maxInflightBatches: 0 })).to.throw(/maxInflightBatches/);
    });

    it('without dispatchWhenIdle a request waits maxDelayUs for company on one timer (no polling), and its wait is batch_wait, not queue', async () => {
      const { engine, runs } = fakeEngine(0);
      const b = new Batcher({ maxCandidates: 1000, maxDelayUs: 300, maxQueue: 10, dispatchWhenIdle: false });
      const immediates: unknown[] = [];
      const realSetImmediate = global.setImmediate;
      global.setImmediate = ((fn: () => void) => {
        immediates.push(fn);
        return realSetImmediate(fn);
      }) as typeof setImmediate;
      try {
        const t0 = performance.now();
        const p = b.submit(engine, BATCH_OP.rank, req(10), 10, noCall);
        expect(runs, 'waits for company').to.have.length(0);
        const r = await p;
        const waited = performance.now() - t0;
        expect(runs).to.have.length(1);
        expect(waited, 'the timer is at least 1 ms').to.be.at.least(0.9);
        expect(immediates, 'no setImmediate polling while waiting').to.have.length(0);
        expect(r.batchWaitUs, 'the wait in the batcher is reported').to.be.at.least(290);
        expect(r.timings.queue, 'and not added to the engine queue time').to.equal(0);
      } finally {
        global.setImmediate = realSetImmediate;
      }
    });

    it('an idle engine takes a request at once; requests arriving while a batch runs go together after it', async () => {
      const { engine, runs } = fakeEngine();
      const b = new Batcher({ maxCandidates: 1000, maxDelayUs: 10_000_000, maxQueue: 10 });
      const first = b.submit(engine, BATCH_OP.rank, req(10), 10, noCall);
      expect(runs, 'no wait on an idle engine').to.have.length(1);
      const later = [11, 12, 13].map((n) => b.submit(engine, BATCH_OP.rank, req(n), n, noCall));
      expect(runs, 'the engine is busy: they wait').to.have.length(1);
      runs[0].release();
      expect(await statusOf(first)).to.equal('OK');
      await until('the second batch', () => runs.length === 2);
      expect(runs[1].sizes, 'one batch of the three').to.deep.equal([11, 12, 13]);
      runs[1].release();
      expect(await Promise.all(later.map(statusOf))).to.deep.equal(['OK', 'OK', 'OK']);
    });

    it('does not start a request whose deadline cannot be met', async () => {
      const { engine, runs } = fakeEngine(60);
      const b = new Batcher({ maxCandidates: 1000, maxDelayUs: 1, maxQueue: 10 });
      // learn the run time (about 60 ms)
      expect(await statusOf(b.submit(engine, BATCH_OP.rank, req(10), 10, noCall))).to.equal('OK');
      expect(runs).to.have.length(1);
      const late = b.submit(engine, BATCH_OP.rank, req(11), 11, { deadline: Date.now() + 20 }); // 20 ms < 60 ms
      const expired = b.submit(engine, BATCH_OP.rank, req(12), 12, { deadline: Date.now() - 1 });
      const fine = b.submit(engine, BATCH_OP.rank, req(13), 13, { deadline: Date.now() + 5_000 });
      expect(await Promise.all([late, expired, fine].map(statusOf))).to.deep.equal(['DEADLINE_EXCEEDED', 'DEADLINE_EXCEEDED', 'OK']);
      expect(runs.slice(1).flatMap((r) => r.sizes)).to.deep.equal([13]); // neither refused one reached the engine
      expect(b.stats().refused.deadline).to.equal(2);
    });

    it('drops a cancelled call from the queue', async () => {
      const { engine, runs } = fakeEngine();
      const b = new Batcher({ maxCandidates: 1000, maxDelayUs: 1, maxQueue: 10 });
      const running = b.submit(engine, BATCH_OP.rank, req(1), 1, noCall); // occupies the engine
      await new Promise((r) => setTimeout(r, 5));
      expect(runs).to.have.length(1);
      let cancel: () => void = () => {};
      const cancelled = b.submit(engine, BATCH_OP.rank, req(2), 2, { deadline: Infinity, onCancel: (fn) => (cancel = fn) });
      const kept = b.submit(engine, BATCH_OP.rank, req(3), 3, noCall);
      expect(b.stats().queueDepth).to.equal(2);
      cancel();
      expect(await statusOf(cancelled)).to.equal('CANCELLED');
      expect(b.stats().queueDepth).to.equal(1);
      runs[0].release();
      await running;
      await new Promise((r) => setTimeout(r, 5));
      expect(runs).to.have.length(2);
      expect(runs[1].sizes).to.deep.equal([3]);
      runs[1].release();
      expect(await statusOf(kept)).to.equal('OK');
    });

    it('is fair: one big caller and many small ones both progress; no small request waits behind later arrivals', async () => {
      const { engine, runs } = fakeEngine(2);
      const b = new Batcher({ maxCandidates: 100, maxDelayUs: 1, maxQueue: 1000 });
      const waited: { size: number; batches: number }[] = [];
      b.onBatch = (x) => waited.push(...x.waitedBatches.map((w) => ({ size: x.candidates, batches: w })));
      let stop = false;
      const done = { big: 0, small: 0 };
      const caller = async (size: number, kind: 'big' | 'small') => {
        while (!stop) {
          await b.submit(engine, BATCH_OP.rank, req(size), size, noCall);
          done[kind]++;
        }
      };
      const callers = [caller(500, 'big'), ...Array.from({ length: 12 }, () => caller(10, 'small'))];
      while (runs.length < 60) await new Promise((r) => setTimeout(r, 5));
      stop = true;
      await Promise.all(callers);
      // the big request (5x the batch limit) runs alone and keeps running
      expect(done.big).to.be.at.least(10);
      expect(runs.some((r) => r.sizes.length === 1 && r.sizes[0] === 500)).to.equal(true);
      expect(runs.every((r) => !r.sizes.includes(500) || r.sizes.length === 1)).to.equal(true);
      // small ones finish many more, and none waits for more than the batches that were ahead of it
      // in arrival order: at most the other 11 small requests (a batch of 10 and one of 1) and the
      // big one — 3 batches. LIFO or smallest-first would exceed this or starve the big caller.
      expect(done.small).to.be.at.least(5 * done.big);
      expect(Math.max(...waited.map((w) => w.batches))).to.be.at.most(3);
    });
  });
});
