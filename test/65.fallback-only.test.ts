/**
 * --fallback-only (docs/funnel.md "Fallback"): when no model version loads at start, the server
 * answers from the fallback (reason NO_MODEL) with the ad tables of the newest version, until a
 * version loads. Without the flag such a start fails; with it, unreadable ad tables still fail.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import { Engine } from '../src/engine/index.js';
import { AdrankServer } from '../src/server/server.js';
import { silentLogger } from '../src/log.js';
import { call, connect } from '../src/cli/client.js';
import { writeDemoBundle } from '../src/model/demo.js';
import { loadBundle, type LoadedBundle } from '../src/model/bundle.js';
import type { ModelConfig } from '../src/model/config.js';
import type { RankResponse__Output } from '../src/generated/adrank/v1/RankResponse.js';
import type { RetrieveAndRankResponse__Output } from '../src/generated/adrank/v1/RetrieveAndRankResponse.js';
import type { GetModelResponse__Output } from '../src/generated/adrank/v1/GetModelResponse.js';
import { addonBuilt, randomRequest, Rng } from './support/index.js';
import { adminClient, listModels, reloadModels, updateAdStates } from './support/admin.js';
import { protoRequest, smallConfig } from './50.server.helpers.js';
import { until, writeVariant } from './support/server.js';

const ADS = 300;

describe('65 --fallback-only', function () {
  this.timeout(120_000);
  const c: ModelConfig = { ...smallConfig(), version: 'v' };
  let root: string;
  let good: string; // a bundle that loads
  let badModel: string; // the same ads, one model weight NaN: the model is refused, the ad tables read
  let badAds: string; // a negative bid: the ad tables themselves are refused
  let b: LoadedBundle;
  let server: AdrankServer | undefined;

  before(async function () {
    if (!addonBuilt()) this.skip();
    root = mkdtempSync(join(tmpdir(), 'adrank-54fo-'));
    good = join(root, 'good.safetensors');
    badModel = join(root, 'bad-model.safetensors');
    badAds = join(root, 'bad-ads.safetensors');
    await writeDemoBundle({ ads: ADS, seed: 5, out: good, config: c });
    b = await loadBundle(good);
    await writeVariant(b, badModel, c, (t) => ((t['heads.weight'].data as Float32Array)[3] = NaN));
    await writeVariant(b, badAds, c, (t) => ((t['ads.bid'].data as Float32Array)[2] = -1));
  });
  after(() => {
    if (root) rmSync(root, { recursive: true, force: true });
  });
  afterEach(async () => {
    await server?.shutdown();
    server = undefined;
  });

  const fallbackOnly = (bundle?: string) => ({ load: (p: string) => Engine.load(p, { adsOnly: true }), bundle });

  async function startBundle(path: string, withFlag: boolean): Promise<AdrankServer> {
    server = await AdrankServer.start({
      port: 0,
      engine: () => Engine.load(path, { device: 'cpu', threads: 1 }),
      fallbackOnly: withFlag ? fallbackOnly(path) : undefined,
      log: silentLogger,
      auth: { adminInsecure: true },
    });
    await server.ready;
    return server;
  }

  it('reads the ad tables of a bundle whose model is refused (and refuses it as a model)', async () => {
    let refused = '';
    await loadBundle(badModel).catch((e: Error) => (refused = e.message));
    expect(refused).to.match(/heads\.weight.*NaN/);
    const ads = await loadBundle(badModel, { adsOnly: true });
    expect(Object.keys(ads.tensors).sort()).to.deep.equal(['ads.advertiser', 'ads.bid', 'ads.id', 'ads.targeting']);
    const e = Engine.fromBundle(ads, { adsOnly: true });
    try {
      expect(e.adsOnly).to.equal(true);
      expect(e.backend).to.equal('none');
      let err = '';
      await e.rank(randomRequest(new Rng(1), b)).catch((x: Error) => (err = x.message));
      expect(err).to.match(/no model/);
    } finally {
      e.dispose();
    }
  });

  it('without the flag a bundle that does not load fails the start', async () => {
    let failed = '';
    await startBundle(badModel, false).catch((e: Error) => (failed = e.message));
    expect(failed).to.match(/heads\.weight/);
  });

  it('with it: fallback answers (NO_MODEL) from the ad tables, with eligibility, live state and the cap', async () => {
    const s = await startBundle(badModel, true);
    const client = connect(`localhost:${s.port}`);
    const admin = adminClient(`localhost:${s.port}`);
    try {
      const model = await call<object, GetModelResponse__Output>(client, 'GetModel', {});
      expect(model.version).to.equal('fallback-only');
      expect(model.backend).to.equal('none');

      const ids = Array.from(b.tensors['ads.id'] as BigInt64Array);
      const bids = b.tensors['ads.bid'] as Float32Array;
      const adv = b.tensors['ads.advertiser'] as BigInt64Array;
      const candidates = ids.slice(0, 60);
      const req = { ...protoRequest(c, { k: 5, perAdvertiserCap: 1 }), candidateAdIds: candidates.map(String) };
      // the request's targeting, as the funnel applies it: a value < 64 must be in the ad's mask,
      // an unknown one (>= 64) passes only an untargeted dimension (all ones)
      const masks = b.tensors['ads.targeting'] as BigUint64Array;
      const D = c.targeting_dims.length;
      const targeted = (row: number) =>
        req.targeting!.every((v, k) => (v < 64 ? ((masks[row * D + k] >> BigInt(v)) & 1n) === 1n : masks[row * D + k] === (1n << 64n) - 1n));
      const byBid = candidates
        .map((id, i) => ({ id, bid: bids[i], adv: adv[i], ok: targeted(i) }))
        .filter((x) => x.ok)
        .sort((x, y) => y.bid - x.bid || (x.id < y.id ? -1 : 1));
      // pause the highest-bid eligible candidate: the fallback must skip it
      await updateAdStates(admin, [{ adId: String(byBid[0].id), active: false, inBudget: true, pacingRate: 1 }]);
      const r = await call<object, RankResponse__Output>(client, 'Rank', req);
      expect(r.fallback).to.equal(true);
      expect(r.fallbackReason).to.equal('NO_MODEL');
      // reference: active candidates by bid, one per advertiser
      const seen = new Set<bigint>();
      const want: string[] = [];
      for (const x of byBid.slice(1)) {
        if (seen.has(x.adv)) continue;
        seen.add(x.adv);
        want.push(String(x.id));
        if (want.length === 5) break;
      }
      expect(r.winners.map((w) => String(w.adId))).to.deep.equal(want);
      for (const w of r.winners) {
        expect(w.taskProbabilities, 'no model: no probabilities').to.deep.equal([]);
        expect(w.score).to.be.closeTo(bids[ids.indexOf(BigInt(w.adId as string))], 1e-6);
      }
      expect(r.counts!.inactive).to.equal(1);

      const rr = await call<object, RetrieveAndRankResponse__Output>(client, 'RetrieveAndRank', protoRequest(c, { k: 4 }));
      expect(rr.fallbackReason).to.equal('NO_MODEL');
      expect(rr.winners).to.have.length(4);

      let code = -1;
      let message = '';
      await call(client, 'Rank', { ...req, allowFallback: false }).catch((e: grpc.ServiceError) => ((code = e.code), (message = e.message)));
      expect(code).to.equal(grpc.status.UNAVAILABLE);
      expect(message).to.match(/fallback-only.*allow_fallback/);
    } finally {
      client.close();
      admin.close();
    }
  });

  it('unreadable ad tables still fail the start', async () => {
    let failed = '';
    await startBundle(badAds, true).catch((e: Error) => (failed = e.message));
    expect(failed).to.match(/ads\.bid/);
  });

  it('a repository: the stand-in serves until a version loads, then that version takes over', async () => {
    const repo = join(root, 'repo');
    mkdirSync(join(repo, '1'), { recursive: true });
    writeFileSync(join(repo, '1', 'model.safetensors'), readFileSync(badModel));
    server = await AdrankServer.start({
      port: 0,
      repository: { dir: repo, load: (p) => Engine.load(p, { device: 'cpu', threads: 1 }), pollMs: 0, settleMs: 20 },
      fallbackOnly: fallbackOnly(),
      log: silentLogger,
      auth: { adminInsecure: true },
    });
    await server.ready;
    const client = connect(`localhost:${server.port}`);
    const admin = adminClient(`localhost:${server.port}`);
    try {
      const req = { ...protoRequest(c, { k: 3 }), candidateAdIds: Array.from(b.tensors['ads.id'] as BigInt64Array, String).slice(0, 40) };
      const r1 = await call<object, RankResponse__Output>(client, 'Rank', req);
      expect([r1.fallbackReason, r1.model!.version]).to.deep.equal(['NO_MODEL', 'fallback-only']);
      const before = await listModels(admin);
      expect(before.models.map((v) => [v.version, v.state])).to.deep.include.members([['1', 'FAILED'], ['fallback-only', 'READY']]);

      mkdirSync(join(repo, '2'));
      writeFileSync(join(repo, '2', 'model.safetensors'), readFileSync(good));
      await reloadModels(admin);
      const r2 = await call<object, RankResponse__Output>(client, 'Rank', req);
      expect(r2.fallback).to.equal(false);
      expect(r2.model!.version).to.equal('2');
      expect(r2.winners[0].taskProbabilities).to.have.length(c.tasks.length);
      await until('the stand-in to retire', async () => !(await listModels(admin)).models.some((v) => v.version === 'fallback-only'));
    } finally {
      client.close();
      admin.close();
    }
  });
});
