/**
 * The router over 3 shard processes equals one server on the unsharded bundle (winners, order,
 * scores, probabilities, values, prices, every count) for random requests of every RPC and
 * mode; a killed or stalled shard gives partial answers naming it, and the router recovers
 * when the shard returns.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import type * as grpc from '@grpc/grpc-js';
import { call, connect } from '../src/cli/client.js';
import { adRows, loadBundle, parseBundle, type LoadedBundle } from '../src/model/bundle.js';
import { encodeSafetensors, readSafetensors } from '../src/model/safetensors.js';
import { readFileSync } from 'node:fs';
import { Rng } from '../src/model/random.js';
import { shardMeta, shardOf, splitmix64, writeShards } from '../src/model/shard.js';
import { RouterServer } from '../src/router/router.js';
import { jsonLogger, silentLogger } from '../src/log.js';
import type { GetModelResponse__Output } from '../src/generated/adrank/v1/GetModelResponse.js';
import type { AdRankerClient } from '../src/generated/adrank/v1/AdRanker.js';
import { addonBuilt } from './support/index.js';
import { protoRequest, smallConfig, writeSmallBundle } from './50.server.helpers.js';
import { makeDemoBundle, writeDemoBundle } from '../src/model/demo.js';
import { writeSafetensors } from '../src/model/safetensors.js';
import { expectSameAnswer, randomRequest, ServeProcess, StallableRelay, type Rpc } from './70.router.helpers.js';

const S = 3;
const ADS = 3000;
/** requests per RPC in the equality test */
const PER_RPC = Number(process.env.ADRANK_ROUTER_REQUESTS ?? 150);

type Answer = Record<string, unknown> & { winners: { adId: string }[]; partial: boolean; missingShards: number[]; counts: Record<string, number> };

describe('70 router: sharded corpus, exact merge', function () {
  this.timeout(240_000);
  if (!addonBuilt()) return;

  let dir: string;
  let source: LoadedBundle;
  let single: ServeProcess;
  let shards: ServeProcess[];
  let shardPaths: string[];
  let router: RouterServer;
  let direct: AdRankerClient;
  let routed: AdRankerClient;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'adrank-router-'));
    const path = join(dir, 'corpus.safetensors');
    await writeSmallBundle(path, ADS);
    source = await loadBundle(path);
    shardPaths = (await writeShards(source, S, join(dir, 'shards'))).map((s) => s.path);
    single = new ServeProcess(path);
    shards = shardPaths.map((p) => new ServeProcess(p));
    const ports = await Promise.all(shards.map((s) => s.ready()));
    const port = await single.ready();
    router = await RouterServer.start({ shards: ports.map((p) => `localhost:${p}`), port: 0, log: process.env.ADRANK_TEST_LOG ? jsonLogger('debug') : silentLogger, refreshMs: 500 });
    await router.ready;
    direct = connect(`localhost:${port}`);
    routed = connect(`localhost:${router.port}`);
  });

  after(async () => {
    direct?.close();
    routed?.close();
    await router?.shutdown('test end');
    for (const p of [single, ...(shards ?? [])]) p?.kill();
    rmSync(dir, { recursive: true, force: true });
  });

  it('shardOf = splitmix64(uint64(id)) mod S, also at the edges of int64', () => {
    expect(splitmix64(0n)).to.equal(0xe220a8397b1dcdafn); // the published first output for seed 0
    const edges = [0n, 1n, -1n, 2n ** 31n, -(2n ** 31n), 2n ** 32n - 1n, 2n ** 53n + 1n, 2n ** 63n - 1n, -(2n ** 63n), 1228523304105n];
    for (const id of edges) for (const s of [1, 2, 3, 5, 7, 64, 1000, 1024]) expect(shardOf(id, s), `${id} mod ${s}`).to.equal(Number(splitmix64(BigInt.asUintN(64, id)) % BigInt(s)));
  });

  it('writes S valid shard bundles that partition the corpus by splitmix64(ad_id) mod S', async () => {
    const ids = source.tensors['ads.id'] as BigInt64Array;
    let total = 0;
    for (let i = 0; i < S; i++) {
      const b = await loadBundle(shardPaths[i]);
      expect(shardMeta(b)).to.deep.equal({ index: i, count: S, source_sha256: source.sha256 });
      expect(b.config).to.deep.equal(source.config);
      const mine = b.tensors['ads.id'] as BigInt64Array;
      for (const id of mine) expect(shardOf(id, S)).to.equal(i);
      // the rows keep their ads' data: same bid and advertiser as in the source
      const row = adRows(source).get(mine[0])!;
      expect((b.tensors['ads.bid'] as Float32Array)[0]).to.equal((source.tensors['ads.bid'] as Float32Array)[row]);
      expect((b.tensors['ads.advertiser'] as BigInt64Array)[0]).to.equal((source.tensors['ads.advertiser'] as BigInt64Array)[row]);
      total += mine.length;
    }
    expect(total).to.equal(ids.length);
  });

  it('a bundle with malformed shard metadata is refused, naming the field', () => {
    const { metadata, tensors } = readSafetensors(readFileSync(shardPaths[0]));
    for (const [meta, field] of [
      [{ index: 3, count: 3, source_sha256: source.sha256 }, 'adrank.shard.index'],
      [{ index: 0, count: 0, source_sha256: source.sha256 }, 'adrank.shard.count'],
      [{ index: 0, count: 3, source_sha256: 'abc' }, 'adrank.shard.source_sha256'],
    ] as const) {
      const buf = encodeSafetensors(tensors, { ...metadata, 'adrank.shard': JSON.stringify(meta) });
      expect(() => parseBundle(buf), field).to.throw(new RegExp(`for ${field.replace(/\./g, '\\.')}, got`));
    }
  });

  it('shards given out of order: the router stays NOT_SERVING (and says why in its logs)', async () => {
    const ports = await Promise.all(shards.map((s) => s.port));
    const errors: string[] = [];
    const log = { ...silentLogger, error: (event: string, f?: Record<string, unknown>) => void errors.push(`${event} ${String(f?.problem ?? '')}`) };
    const wrong = await RouterServer.start({ shards: [ports[1], ports[0], ports[2]].map((p) => `localhost:${p}`), port: 0, log, refreshMs: 200 });
    try {
      await new Promise((r) => setTimeout(r, 1500));
      expect(wrong.healthStatus).to.equal('NOT_SERVING');
      expect(errors.some((e) => e.startsWith('shard_mismatch') && e.includes('shard i goes i-th'))).to.equal(true);
    } finally {
      await wrong.shutdown('test end');
    }
  });

  it('GetModel: the corpus summed, the shards\' versions, the source sha256', async () => {
    const m = await call<object, GetModelResponse__Output>(routed, 'GetModel', {});
    const d = await call<object, GetModelResponse__Output>(direct, 'GetModel', {});
    expect(m.numAds).to.equal(String(ADS));
    expect(m.shardVersions).to.deep.equal([d.version, d.version, d.version]);
    expect(m.bundleSha256).to.equal(d.bundleSha256);
    expect(m.shard).to.equal(null);
    expect(JSON.parse(m.configJson)).to.deep.equal(JSON.parse(d.configJson));
  });

  it('RetrieveAndRank with candidate_ad_ids (blended sources): sources, per-source counts and winners equal one server\'s', async () => {
    const c = smallConfig();
    const ids = Array.from(source.tensors['ads.id'] as BigInt64Array, String);
    const base = { ...protoRequest(c, { k: 30, retrieveCount: 20 }) };
    let fromCaller = 0;
    let earlier = 0;
    let overQuota = 0;
    for (const [i, extra] of [
      { candidateAdIds: ids.slice(0, 200).concat(['-5', ids[3]]) },
      { candidateAdIds: ids.slice(0, 200), candidateQuota: 7 },
      { candidateAdIds: ids.slice(100, 400), retrieveCount: 5 },
    ].entries()) {
      const req = { ...base, ...extra, requestId: `blend-${i}` };
      type Blended = Omit<Answer, 'winners'> & { sourceCounts: { source: string; earlierSource: number; overQuota: number; winners: number }[]; winners: { source: string }[] };
      const [want, got] = await Promise.all([call<object, Blended>(direct, 'RetrieveAndRank', req), call<object, Blended>(routed, 'RetrieveAndRank', req)]);
      expectSameAnswer(got, want, `blended request ${i}`);
      fromCaller += want.winners.filter((w) => w.source === 'CALLER').length;
      earlier += want.sourceCounts[1].earlierSource;
      overQuota += want.sourceCounts[1].overQuota;
    }
    // the cases exercise what the router has to get right
    expect(fromCaller, 'caller winners').to.be.greaterThan(0);
    expect(earlier, 'caller ids retrieval already passed').to.be.greaterThan(0);
    expect(overQuota, 'caller ids over the quota').to.be.greaterThan(0);
  });

  for (const rpc of ['Retrieve', 'Rank', 'RetrieveAndRank'] as Rpc[]) {
    it(`${rpc}: ${PER_RPC} random requests (global and local(P), caps, exclusions) equal one server's answers`, async () => {
      const c = smallConfig();
      const rng = new Rng(rpc.length * 7919);
      const ids = Array.from(source.tensors['ads.id'] as BigInt64Array, String);
      const advertisers = [...new Set(Array.from(source.tensors['ads.advertiser'] as BigInt64Array, String))];
      let capped = 0;
      let local = 0;
      for (let n = 0; n < PER_RPC; n++) {
        const req = randomRequest(rng, c, ids, advertisers, rpc, n);
        const [want, got] = await Promise.all([call<object, Answer>(direct, rpc, req), call<object, Answer>(routed, rpc, req)]);
        expect(got.partial, `request ${n}`).to.equal(false);
        expectSameAnswer(got, want, `${rpc} request ${n}: ${JSON.stringify({ k: req.k, cap: req.perAdvertiserCap, ranking: req.ranking, r: req.retrieveCount })}`);
        if (want.counts.capped > 0) capped++;
        if (req.ranking?.mode === 'LOCAL') local++;
      }
      // the random requests exercise what the merge has to get right
      if (PER_RPC >= 50) {
        expect(capped, 'requests with capped ads').to.be.greaterThan(PER_RPC / 10);
        if (rpc !== 'Retrieve') expect(local, 'local(P) requests').to.be.greaterThan(PER_RPC / 4);
      }
    });
  }

  it('bad input gets the single server\'s status and message', async () => {
    const c = smallConfig();
    const bad = { ...randomRequest(new Rng(1), c, ['1'], ['1'], 'Rank', 0), k: 0 };
    const err = (p: Promise<unknown>) => p.then(() => expect.fail('expected an error'), (e: grpc.ServiceError) => ({ code: e.code, details: e.details }));
    expect(await err(call(routed, 'Rank', bad))).to.deep.equal(await err(call(direct, 'Rank', bad)));
    const pinned = { ...randomRequest(new Rng(2), c, ['1'], ['1'], 'Retrieve', 0), modelVersion: 'nope' };
    expect(await err(call(routed, 'Retrieve', pinned))).to.deep.equal(await err(call(direct, 'Retrieve', pinned)));
  });

  describe('a shard that fails or misses the deadline', () => {
    const c = smallConfig();
    const req = () => ({ ...randomRequest(new Rng(3), c, ['1'], ['1'], 'Retrieve', 0), k: 200, perAdvertiserCap: 0 });

    /** Polls until a call answers without `partial` (bounded: 100 tries, 30 s). */
    async function untilWhole(client = routed): Promise<Answer> {
      const until = Date.now() + 30_000;
      for (let i = 0; i < 100 && Date.now() < until; i++) {
        const a = await call<object, Answer>(client, 'Retrieve', req()).catch(() => undefined);
        if (a && !a.partial) return a;
        await new Promise((r) => setTimeout(r, 300));
      }
      throw new Error('the router did not recover');
    }

    it('killed: answers from the others, partial with the shard named and counted; whole again when it returns', async () => {
      const want = await call<object, Answer>(direct, 'Retrieve', req());
      const port = await shards[1].port;
      const failuresBefore = router.shardFailures[1];
      shards[1].kill('SIGKILL');
      await shards[1].exited;
      for (const rpc of ['Retrieve', 'Rank', 'RetrieveAndRank'] as Rpc[]) {
        const r = rpc === 'Rank' ? { ...req(), candidateAdIds: Array.from(source.tensors['ads.id'] as BigInt64Array, String).slice(0, 900), price: true } : req();
        const a = await call<object, Answer>(routed, rpc, r);
        expect(a.partial, rpc).to.equal(true);
        expect(a.missingShards, rpc).to.deep.equal([1]);
        expect(a.winners.length, rpc).to.be.greaterThan(0);
        for (const w of a.winners) expect(shardOf(BigInt(w.adId), S), `${rpc} winner ${w.adId}`).to.not.equal(1);
      }
      // Retrieve's partial answer is exactly the single server's winners less shard 1's
      const a = await call<object, Answer>(routed, 'Retrieve', req());
      const wantLess = want.winners.filter((w) => shardOf(BigInt(w.adId), S) !== 1).map((w) => w.adId);
      expect(a.winners.map((w) => w.adId).slice(0, wantLess.length)).to.deep.equal(wantLess);
      expect(router.shardFailures[1]).to.be.greaterThan(failuresBefore);
      expect(router.outcomes['Retrieve OK partial']).to.be.greaterThan(0);

      shards[1] = new ServeProcess(shardPaths[1], port);
      await shards[1].ready();
      expectSameAnswer(await untilWhole(), want, 'after the shard returned');
    });

    it('stalled past the deadline: partial within the caller\'s deadline, whole once it resumes', async () => {
      const want = await call<object, Answer>(direct, 'Retrieve', req());
      // shard 2 behind a relay that can hold its traffic: the shard stays up, its answers do not come
      const ports = await Promise.all(shards.map((s) => s.port));
      const relay = new StallableRelay(ports[2]);
      const r2 = await RouterServer.start({ shards: [`localhost:${ports[0]}`, `localhost:${ports[1]}`, `127.0.0.1:${await relay.port}`], port: 0, log: silentLogger, refreshMs: 500, shutdownGraceMs: 1000 });
      const via = connect(`localhost:${r2.port}`);
      try {
        await r2.ready;
        expectSameAnswer(await call<object, Answer>(via, 'Retrieve', req()), want, 'through the relay');
        relay.stall();
        const failuresBefore = r2.shardFailures[2];
        const t0 = Date.now();
        const a = await call<object, Answer>(via, 'Retrieve', req(), 800);
        expect(Date.now() - t0).to.be.lessThan(800);
        expect(a.partial).to.equal(true);
        expect(a.missingShards).to.deep.equal([2]);
        expect(r2.shardFailures[2]).to.be.greaterThan(failuresBefore);
        relay.resume();
        expectSameAnswer(await untilWhole(via), want, 'after the shard resumed');
      } finally {
        relay.resume();
        via.close();
        await r2.shutdown('test end');
        await relay.close();
      }
    });
  });

  describe('model versions', () => {
  it('a new model version rolls out shard by shard: partial while the shards differ, never mixed; whole on the new version once all have it', async () => {
    const c = { ...smallConfig(), version: '8' };
    const path = join(dir, 'corpus-v8.safetensors');
    await writeDemoBundle({ ads: ADS, seed: 7, out: path, config: c });
    const v8 = (await writeShards(await loadBundle(path), S, join(dir, 'shards-v8'))).map((s) => s.path);
    const req = { ...randomRequest(new Rng(5), c, ['1'], ['1'], 'Retrieve', 0), k: 50 };
    const ports = await Promise.all(shards.map((s) => s.port));
    // shard 0 moves to version 8 first
    shards[0].kill('SIGKILL');
    await shards[0].exited;
    shards[0] = new ServeProcess(v8[0], ports[0]);
    await shards[0].ready();
    // once the router has read shard 0's new version (so it is connected), shard 0 refuses the pin
    const until = Date.now() + 30_000;
    while ((await call<object, GetModelResponse__Output>(routed, 'GetModel', {})).shardVersions[0] !== '8' && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
    const a = await call<object, Answer>(routed, 'Retrieve', req);
    // the router still pins 7: shard 0 (now 8) is left out, the answer is version 7 throughout
    expect(a.partial).to.equal(true);
    expect(a.missingShards).to.deep.equal([0]);
    expect((a.model as { version: string }).version).to.equal('7');
    for (const w of a.winners) expect(shardOf(BigInt(w.adId), S)).to.not.equal(0);
    // the others follow; once all serve 8 the pin moves and answers are whole again, on version 8
    for (const i of [1, 2]) {
      shards[i].kill('SIGKILL');
      await shards[i].exited;
      shards[i] = new ServeProcess(v8[i], ports[i]);
      await shards[i].ready();
    }
    const want = await call<object, Answer>(direct, 'Retrieve', { ...req, modelVersion: '' });
    // while shard 2 restarts no shard can answer version 7 (UNAVAILABLE); then the pin moves to 8
    let b: Answer | undefined;
    do b = await call<object, Answer>(routed, 'Retrieve', req).catch(() => undefined);
    while ((!b || b.partial || (b.model as { version: string }).version !== '8') && Date.now() < until + 30_000);
    if (!b) throw new Error('no answer after the rollout');
    expect(b.partial).to.equal(false);
    expect((b.model as { version: string }).version).to.equal('8');
    // same ads and weights as version 7 (same seed): the same winners as the single v7 server
    expect(b.winners.map((w) => w.adId)).to.deep.equal(want.winners.map((w) => w.adId));
    const m = await call<object, GetModelResponse__Output>(routed, 'GetModel', {});
    expect(m.shardVersions).to.deep.equal(['8', '8', '8']);
  });
  });

  describe('Retrieve: a capped count past one listing page (one advertiser owns 90% of the ads, 2 shards)', () => {
    let skewDir: string;
    const procs: ServeProcess[] = [];
    let skewRouter: RouterServer | undefined;
    after(async () => {
      await skewRouter?.shutdown('test end');
      for (const p of procs) p.kill();
      rmSync(skewDir, { recursive: true, force: true });
    });

    it('pages the second phase with exclusions and still counts exactly', async () => {
      skewDir = mkdtempSync(join(tmpdir(), 'adrank-skew-'));
      const b = makeDemoBundle({ ads: 80_000, seed: 9, config: smallConfig() });
      const adv = b.tensors.get('ads.advertiser')!.data as BigInt64Array;
      const rng = new Rng(4);
      for (let i = 0; i < adv.length; i++) if (rng.uniform() < 0.9) adv[i] = 999n;
      const path = join(skewDir, 'skew.safetensors');
      await writeSafetensors(path, b.tensors, b.metadata);
      const paths = (await writeShards(await loadBundle(path), 2, join(skewDir, 'shards'))).map((s) => s.path);
      const one = new ServeProcess(path);
      const two = paths.map((p) => new ServeProcess(p));
      procs.push(one, ...two);
      const [p1, ...ps] = await Promise.all([one.ready(), ...two.map((s) => s.ready())]);
      skewRouter = await RouterServer.start({ shards: ps.map((p) => `localhost:${p}`), port: 0, log: silentLogger });
      await skewRouter.ready;
      const d = connect(`localhost:${p1}`);
      const r = connect(`localhost:${skewRouter.port}`);
      try {
        const c = smallConfig();
        for (let n = 0; n < 3; n++) {
          const req = { ...randomRequest(new Rng(100 + n), c, ['1'], ['1'], 'Retrieve', n), k: 2000, perAdvertiserCap: 1, targeting: c.targeting_dims.map(() => 70), exclusions: undefined };
          const calls = skewRouter.shardCalls.Retrieve ?? 0;
          const [want, got] = await Promise.all([call<object, Answer>(d, 'Retrieve', req), call<object, Answer>(r, 'Retrieve', req)]);
          // phase 1 on both shards, then at least two pages on one of them
          expect((skewRouter.shardCalls.Retrieve ?? 0) - calls, 'shard calls').to.be.at.least(4);
          expect(want.counts.capped, 'capped ads above the K-th winner').to.be.greaterThan(10_000);
          expectSameAnswer(got, want, `skewed Retrieve ${n}`);
        }
      } finally {
        d.close();
        r.close();
      }
    });
  });
});
