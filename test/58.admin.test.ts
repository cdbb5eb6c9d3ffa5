/**
 * adrank.v1.AdRankerAdmin over real connections (one --bundle server with a state file):
 * UpdateAdStates by ad and by advertiser seen by the next Rank, Retrieve and RetrieveAndRank
 * (counts as test/reference computes them), pacing as participation over many request ids, the
 * bid override in utility and price, refused batches that change nothing, concurrent batches
 * never seen half-applied, GetAdStates, ListModels, ReloadModels without a repository.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import { Engine } from '../src/engine/index.js';
import { AdrankServer } from '../src/server/server.js';
import { silentLogger } from '../src/log.js';
import { AdStateStore } from '../src/state/store.js';
import { call, connect } from '../src/cli/client.js';
import { loadBundle, type LoadedBundle } from '../src/model/bundle.js';
import type { AdRankerClient } from '../src/generated/adrank/v1/AdRanker.js';
import type { AdRankerAdminClient } from '../src/generated/adrank/v1/AdRankerAdmin.js';
import type { RankResponse__Output } from '../src/generated/adrank/v1/RankResponse.js';
import type { RetrieveAndRankResponse__Output } from '../src/generated/adrank/v1/RetrieveAndRankResponse.js';
import { addonBuilt } from './support/index.js';
import { adminClient, getAdStates, listModels, reloadModels, updateAdStates } from './support/admin.js';
import { engineRequest, expectStatus, protoRequest, reflectionClient, smallConfig, writeSmallBundle } from './50.server.helpers.js';
import { defaultAdState, refRank, refRetrieve, type AdState } from './reference/funnel.js';
import protobuf from 'protobufjs';
import { protoRoot } from '../src/wire/proto.js';
import { decodeUpdateBatch, validateUpdates, type AdStateBatch } from '../src/admin/update-ad-states.js';
import { invalid, RequestError } from '../src/handlers/validate.js';
import type { AdStateChange } from '../src/state/store.js';
import { Rng } from '../src/model/random.js';
import { mutate, words } from './support/wire-fuzz.js';

const DEVICE = process.env.ADRANK_TEST_DEVICE ?? 'cpu';
const c = smallConfig();

describe('58 admin: live ad state', function () {
  this.timeout(120_000);
  let dir: string;
  let bundle: LoadedBundle;
  let server: AdrankServer;
  let client: AdRankerClient;
  let admin: AdRankerAdminClient;
  let ids: bigint[];
  let advertiserOf: Map<bigint, bigint>;
  /** advertisers by ad count, largest first */
  let advertisers: [bigint, bigint[]][];
  // untargeted request: every targeting value 0 (so eligibility turns on state, not targeting)
  const req = (over: Parameters<typeof protoRequest>[1] = {}) => protoRequest(c, { targeting: c.targeting_dims.map(() => 0), perAdvertiserCap: 0, ...over });

  before(async function () {
    if (!addonBuilt()) this.skip();
    dir = mkdtempSync(join(tmpdir(), 'adrank-53-'));
    const path = join(dir, 'small.safetensors');
    await writeSmallBundle(path, 2000);
    bundle = await loadBundle(path);
    ids = Array.from(bundle.tensors['ads.id'] as BigInt64Array);
    const adv = bundle.tensors['ads.advertiser'] as BigInt64Array;
    advertiserOf = new Map(ids.map((id, i) => [id, adv[i]]));
    const by = new Map<bigint, bigint[]>();
    ids.forEach((id, i) => by.set(adv[i], [...(by.get(adv[i]) ?? []), id]));
    advertisers = [...by].sort((a, b) => b[1].length - a[1].length);
  });
  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  beforeEach(async () => {
    const adState = await AdStateStore.open(join(dir, `state-${Date.now()}-${Math.random()}.adstate`), { log: silentLogger });
    server = await AdrankServer.start({ port: 0, engine: () => Engine.load(bundle.path, { device: DEVICE, threads: 2 }), adState, log: silentLogger, auth: { adminInsecure: true }, reflection: true });
    await server.ready;
    client = connect(`localhost:${server.port}`);
    admin = adminClient(`localhost:${server.port}`);
  });
  afterEach(async () => {
    client?.close();
    admin?.close();
    await server?.shutdown();
  });

  /** The reference's state by row from GetAdStates (what the server says is in effect). */
  async function referenceState(): Promise<AdState> {
    const s = defaultAdState(bundle.numAds);
    const got = await getAdStates(admin, ids);
    got.states.forEach((st, row) => {
      s.active[row] = st.active ? 1 : 0;
      s.inBudget[row] = st.inBudget ? 1 : 0;
      s.pacing[row] = st.pacingRate;
      s.bid[row] = st.bidOverride ?? NaN;
    });
    return s;
  }

  const pick = (o: object, ...keys: string[]) => Object.fromEntries(keys.map((k) => [k, (o as Record<string, unknown>)[k]]));
  const stateKeys = ['inactive', 'outOfBudget', 'paced', 'eligible'];

  it('ad- and advertiser-level updates are seen by the next Rank, Retrieve and RetrieveAndRank', async () => {
    const [bigAdv, bigAds] = advertisers[0];
    const [pacedAdv, pacedAds] = advertisers[1];
    const lone = ids.find((id) => advertiserOf.get(id) !== bigAdv && advertiserOf.get(id) !== pacedAdv)!;
    const broke = ids.find((id) => id !== lone && advertiserOf.get(id) !== bigAdv && advertiserOf.get(id) !== pacedAdv)!;
    const r = await updateAdStates(admin, [
      { adId: String(lone), active: false },
      { adId: String(broke), inBudget: false },
      { advertiserId: String(bigAdv), active: false },
      { advertiserId: String(pacedAdv), pacingRate: 0 },
      { adId: '999999999', active: false },
    ]);
    expect(r).to.deep.equal({ applied: 4, unknown: 1 });

    const others = ids.filter((id) => id !== lone && id !== broke && advertiserOf.get(id) !== bigAdv).slice(0, 50);
    const candidates = [lone, broke, ...bigAds.slice(0, 5), ...pacedAds.slice(0, 4), ...others].map(String);
    const rank = await call<object, RankResponse__Output>(client, 'Rank', req({ candidateAdIds: candidates }));
    const retrieve = await call<object, RankResponse__Output>(client, 'Retrieve', req());
    const rar = await call<object, RetrieveAndRankResponse__Output>(client, 'RetrieveAndRank', req({ retrieveCount: 100 }));

    const s = await referenceState();
    const noScore = () => ({ utility: 0, value: 0, probs: [] });
    const wantRank = refRank(bundle, engineRequest(c, req({ candidateAdIds: candidates }), 'rank'), s, noScore).counts;
    const wantScan = refRetrieve(bundle, engineRequest(c, req(), 'retrieve'), s, () => 0).counts;
    expect(pick(rank.counts!, ...stateKeys)).to.deep.equal(pick(wantRank, ...stateKeys));
    expect(pick(retrieve.counts!, ...stateKeys)).to.deep.equal(pick(wantScan, ...stateKeys));
    expect(pick(rar.counts!, ...stateKeys)).to.deep.equal(pick(wantScan, ...stateKeys));
    // and by hand: the whole big advertiser is inactive (checked before targeting); the paced
    // advertiser's ads that pass targeting never participate
    expect(retrieve.counts!.inactive).to.equal(bigAds.length + 1);
    expect(retrieve.counts!.outOfBudget).to.equal(1);
    expect(retrieve.counts!.paced).to.be.greaterThan(0).and.at.most(pacedAds.length);
    expect(rank.counts!.inactive).to.equal(6);
    const winners = [...rank.winners, ...retrieve.winners, ...rar.winners].map((w) => BigInt(w.adId));
    expect(winners.some((id) => id === lone || id === broke || advertiserOf.get(id) === bigAdv || advertiserOf.get(id) === pacedAdv)).to.equal(false);

    // a later ad-level update wins over the earlier advertiser-level one, for that ad only
    await updateAdStates(admin, [{ adId: String(bigAds[0]), active: true }]);
    const again = await call<object, RankResponse__Output>(client, 'Retrieve', req());
    expect(again.counts!.inactive).to.equal(bigAds.length);
    // and a later advertiser-level update wins over the ad-level one
    await updateAdStates(admin, [{ advertiserId: String(bigAdv), active: true }]);
    expect((await call<object, RankResponse__Output>(client, 'Retrieve', req())).counts!.inactive).to.equal(1);
  });

  it('the pacing rate is the participation rate over many request ids (and the documented hash per request)', async () => {
    const rate = 0.3;
    await updateAdStates(admin, advertisers.map(([adv]) => ({ advertiserId: String(adv), pacingRate: rate })));
    const s = await referenceState();
    let paced = 0;
    let eligible = 0;
    for (let i = 0; i < 60; i++) {
      const p = req({ requestId: `pv-${i}` });
      const got = await call<object, RankResponse__Output>(client, 'Retrieve', p);
      expect(got.counts!.paced, `request ${i}`).to.equal(refRetrieve(bundle, engineRequest(c, p, 'retrieve'), s, () => 0).counts.paced);
      paced += got.counts!.paced;
      eligible += got.counts!.eligible;
    }
    const participation = eligible / (paced + eligible);
    // 120,000 draws: the standard error is ~0.0013
    expect(participation).to.be.closeTo(rate, 0.01);
  });

  it('a bid override changes utility and GSP price as the reference computes', async () => {
    const candidates = ids.slice(0, 200).map(String);
    // six winners without the override: the sixth is the runner-up once the fifth moves up
    const before = await call<object, RankResponse__Output>(client, 'Rank', req({ candidateAdIds: candidates, price: true, k: 6 }));
    // raise the last winner's bid far above the rest: it wins at bid × value, and pays what the
    // ad below it forces (its utility / own value), capped by the new bid
    const target = before.winners[4];
    const bundleBid = (bundle.tensors['ads.bid'] as Float32Array)[ids.indexOf(BigInt(target.adId))];
    const value = target.score / bundleBid;
    const newBid = 1000;
    expect(await updateAdStates(admin, [{ adId: target.adId, bid: newBid }])).to.deep.equal({ applied: 1, unknown: 0 });
    const st = (await getAdStates(admin, [target.adId])).states[0];
    expect(st).to.deep.include({ known: true, bundleBid, bidOverride: newBid, effectiveBid: newBid, active: true, inBudget: true, pacingRate: 1 });
    const after = await call<object, RankResponse__Output>(client, 'Rank', req({ candidateAdIds: candidates, price: true, k: 5 }));
    expect(after.winners[0].adId).to.equal(target.adId);
    expect(after.winners[0].score).to.be.closeTo(newBid * value, newBid * value * 1e-5);
    expect(after.winners.slice(1).map((w) => w.adId)).to.deep.equal(before.winners.slice(0, 4).map((w) => w.adId));
    expect(after.winners.slice(1).map((w) => w.score)).to.deep.equal(before.winners.slice(0, 4).map((w) => w.score));
    const reserve = c.reserve_price ?? 0;
    expect(after.winners[0].price).to.be.closeTo(Math.min(newBid, Math.max(reserve, after.winners[1].score / value)), 1e-4);
    // the same with the reference on the engine's own scores
    const s = await referenceState();
    const byId = new Map(before.winners.map((w) => [BigInt(w.adId), w]));
    const scorer = (row: number) => {
      const w = byId.get(ids[row]);
      const v = w ? w.score / (bundle.tensors['ads.bid'] as Float32Array)[row] : 0;
      return { utility: w!.score, value: v, probs: [] };
    };
    const want = refRank(bundle, engineRequest(c, req({ candidateAdIds: before.winners.map((w) => w.adId), price: true, k: 5 }), 'rank'), s, scorer);
    expect(want.adIds.map(String)).to.deep.equal(after.winners.map((w) => w.adId));
    want.prices.forEach((p, i) => expect(after.winners[i].price, `price ${i}`).to.be.closeTo(p, Math.abs(p) * 1e-5 + 1e-6));
    // a bid equal to the bundle's gives back the answer without override
    await updateAdStates(admin, [{ adId: target.adId, bid: bundleBid }]);
    const back = await call<object, RankResponse__Output>(client, 'Rank', req({ candidateAdIds: candidates, price: true, k: 6 }));
    expect(back.winners.map((w) => [w.adId, w.score])).to.deep.equal(before.winners.map((w) => [w.adId, w.score]));
  });

  it('a refused batch changes nothing and names the index and the field', async () => {
    const a = String(ids[3]);
    const rank = () => call<object, RankResponse__Output>(client, 'Rank', req({ candidateAdIds: ids.slice(0, 100).map(String), price: true }));
    const before = await rank();
    const states = async () => (await getAdStates(admin, [a])).states[0];
    const s0 = await states();
    await expectStatus(updateAdStates(admin, [{ adId: a, active: false }, { adId: a, pacingRate: 1.5 }]), grpc.status.INVALID_ARGUMENT, 'expected a rate in [0, 1] for updates[1].pacing_rate, got 1.5');
    await expectStatus(updateAdStates(admin, [{ adId: a, active: false }, { advertiserId: '1', bid: -2 }]), grpc.status.INVALID_ARGUMENT, 'for updates[1].bid, got -2');
    await expectStatus(updateAdStates(admin, [{ adId: a, bid: NaN }]), grpc.status.INVALID_ARGUMENT, 'for updates[0].bid, got NaN');
    await expectStatus(updateAdStates(admin, [{ adId: a, bid: Infinity }]), grpc.status.INVALID_ARGUMENT, 'for updates[0].bid, got Infinity');
    await expectStatus(updateAdStates(admin, [{ adId: a, active: false }, { active: false }]), grpc.status.INVALID_ARGUMENT, 'expected ad_id or advertiser_id for updates[1].target');
    await expectStatus(updateAdStates(admin, [{ adId: a }]), grpc.status.INVALID_ARGUMENT, 'updates[0]');
    expect(await states()).to.deep.equal(s0);
    const after = await rank();
    expect(after.winners).to.deep.equal(before.winners);
    expect(after.counts).to.deep.equal(before.counts);
    // and the server still serves and takes a valid batch
    expect(await updateAdStates(admin, [{ adId: a, active: false }])).to.deep.equal({ applied: 1, unknown: 0 });
  });

  it('concurrent batches and requests: no request sees half of a batch', async () => {
    // each batch flips one large advertiser and 20 single ads of other advertisers together
    const [adv, advAds] = advertisers[0];
    const singles = ids.filter((id) => advertiserOf.get(id) !== adv).slice(0, 20);
    const batch = (active: boolean) => [{ advertiserId: String(adv), active }, ...singles.map((id) => ({ adId: String(id), active }))];
    const whole = advAds.length + singles.length;
    const seen = new Set<number>();
    const deadline = Date.now() + 30_000;
    for (let round = 0; round < 15 && Date.now() < deadline; round++) {
      const requests = Array.from({ length: 8 }, (_, i) => call<object, RankResponse__Output>(client, 'Retrieve', req({ requestId: `c${round}-${i}` })));
      const updates = Array.from({ length: 4 }, (_, i) => updateAdStates(admin, batch((round + i) % 2 === 0)));
      const [got] = await Promise.all([Promise.all(requests), Promise.all(updates)]);
      for (const r of got) seen.add(r.counts!.inactive);
    }
    for (const n of seen) expect([0, whole], `inactive ${n}`).to.include(n);
  });

  it('GetAdStates reports unknown ids; ListModels the one bundle; ReloadModels needs a repository', async () => {
    const got = await getAdStates(admin, [ids[0], 424242n]);
    expect(got.modelVersion).to.equal(c.version);
    expect(got.states[0]).to.deep.include({ adId: String(ids[0]), known: true, active: true, inBudget: true, pacingRate: 1, advertiserId: String(advertiserOf.get(ids[0])) });
    expect(got.states[0].bidOverride).to.equal(undefined);
    expect(got.states[1]).to.deep.include({ adId: '424242', known: false });
    const models = await listModels(admin);
    expect(models.defaultVersion).to.equal(c.version);
    expect(models.models).to.have.length(1);
    expect(models.models[0]).to.deep.include({ version: c.version, state: 'READY', isDefault: true, sha256: bundle.sha256, numAds: '2000', modelName: c.name });
    expect(Number(models.models[0].loadTimeUnixMs)).to.be.greaterThan(Date.now() - 120_000);
    await expectStatus(reloadModels(admin), grpc.status.FAILED_PRECONDITION, '--model-repository');
  });

  it('server reflection serves admin.proto (what grpcurl needs to call AdRankerAdmin)', async () => {
    const r = reflectionClient(`localhost:${server.port}`);
    try {
      const files = await new Promise<Buffer[]>((resolve, reject) => {
        const st = r.ServerReflectionInfo();
        st.on('data', (m: any) => {
          if (m.error_response) reject(new Error(m.error_response.error_message));
          else resolve(m.file_descriptor_response.file_descriptor_proto);
          st.end();
        });
        st.on('error', reject);
        st.write({ file_containing_symbol: 'adrank.v1.AdRankerAdmin' });
      });
      const text = Buffer.concat(files).toString('latin1');
      for (const m of ['UpdateAdStates', 'GetAdStates', 'ListModels', 'ReloadModels', 'AdStateUpdate', 'bidOverride']) expect(text).to.include(m);
    } finally {
      r.close();
    }
  });
});

describe('58 admin: UpdateAdStates read into columns', () => {
  // The reference: the request as objects (protobufjs, this project's copy, as the data RPCs read
  // theirs; toObject with the server's loader options) and the validation written against them,
  // as the server had it (an optional field present when its key is: protobufjs 8 names no
  // synthetic oneofs); the served path must accept, refuse and read the same.
  const type = protoRoot('adrank/v1/admin.proto', false).lookupType('adrank.v1.UpdateAdStatesRequest');
  const deserialize = (b: Buffer) => type.toObject(type.decode(b), { longs: String, enums: String, defaults: true, oneofs: true }) as { updates: Record<string, any>[] };
  function referenceChanges(updates: Record<string, any>[]): AdStateChange[] {
    return updates.map((u, i) => {
      const at = `updates[${i}]`;
      if (u.target !== 'adId' && u.target !== 'advertiserId') throw invalid(`${at}.target`, 'ad_id or advertiser_id', null);
      const change: AdStateChange = u.target === 'adId' ? { target: 'ad', id: BigInt(u.adId) } : { target: 'advertiser', id: BigInt(u.advertiserId) };
      if (u.active !== undefined) change.active = !!u.active;
      if (u.inBudget !== undefined) change.inBudget = !!u.inBudget;
      if (u.pacingRate !== undefined) {
        if (!(u.pacingRate >= 0 && u.pacingRate <= 1)) throw invalid(`${at}.pacing_rate`, 'a rate in [0, 1]', u.pacingRate);
        change.pacingRate = u.pacingRate;
      }
      if (u.bid !== undefined) {
        if (!(Number.isFinite(u.bid) && u.bid >= 0)) throw invalid(`${at}.bid`, 'a finite bid >= 0', u.bid);
        change.bid = u.bid;
      }
      if (change.active === undefined && change.inBudget === undefined && change.pacingRate === undefined && change.bid === undefined)
        throw invalid(at, 'at least one of active, in_budget, pacing_rate, bid', 'none');
      return change;
    });
  }
  const outcome = (f: () => AdStateChange[]) => {
    try {
      return { changes: f() };
    } catch (e) {
      return { refused: e instanceof RequestError ? e.message : 'malformed' };
    }
  };
  const int64 = (r: Rng) => BigInt.asIntN(64, (BigInt(r.u32()) << BigInt(r.u32() % 33)) * (r.u32() % 2 ? -1n : 1n) + BigInt(r.u32() % 3));
  const floats = [0, 0.5, 1, -0.25, 1.5, NaN, Infinity, -Infinity, 3.25, 1e-9];
  function update(r: Rng, w: protobuf.Writer): void {
    const fields: (() => void)[] = [];
    const some = (p: number) => r.uniform() < p;
    if (some(0.8)) fields.push(() => w.uint32(8).int64(words(int64(r)) as never));
    if (some(0.3)) fields.push(() => w.uint32(16).int64(words(int64(r)) as never));
    if (some(0.5)) fields.push(() => w.uint32(24).bool(some(0.5)));
    if (some(0.5)) fields.push(() => w.uint32(32).bool(some(0.5)));
    if (some(0.5)) fields.push(() => w.uint32(45).float(floats[r.u32() % floats.length]));
    if (some(0.5)) fields.push(() => w.uint32(53).float(floats[r.u32() % floats.length]));
    if (some(0.1)) fields.push(() => w.uint32((9 << 3) | 0).uint32(r.u32())); // unknown
    if (some(0.05)) fields.push(() => w.uint32(8).int64(words(int64(r)) as never)); // ad_id again: the last wins
    for (let i = fields.length - 1; i > 0; i--) {
      const j = r.u32() % (i + 1);
      [fields[i], fields[j]] = [fields[j], fields[i]];
    }
    for (const f of fields) f();
  }
  function request(r: Rng): Uint8Array {
    const w = protobuf.Writer.create();
    const n = r.u32() % 6;
    for (let i = 0; i < n; i++) {
      w.uint32(10).fork();
      update(r, w);
      w.ldelim();
    }
    if (r.u32() % 10 === 0) w.uint32((3 << 3) | 2).bytes(Uint8Array.of(1, 2, 3)); // unknown field of the request
    return w.finish();
  }
  it('accepts, refuses and reads random and mutated requests as the request\'s objects and their validation do', () => {
    const r = new Rng(58);
    let accepted = 0;
    let refused = 0;
    let malformed = 0;
    for (let i = 0; i < 4000; i++) {
      const bytes = i % 2 ? mutate(r, request(r)) : request(r);
      const want = (() => {
        let obj: { updates: Record<string, any>[] };
        try {
          obj = deserialize(Buffer.from(bytes));
        } catch {
          return { refused: 'malformed' };
        }
        return outcome(() => referenceChanges(obj.updates));
      })();
      const got = (() => {
        let batch: AdStateBatch;
        try {
          batch = structuredClone(decodeUpdateBatch(bytes)); // as a front-end thread forwards it
        } catch {
          return { refused: 'malformed' };
        }
        return outcome(() => validateUpdates(batch));
      })();
      expect(got, `request ${i}: ${Buffer.from(bytes).toString('hex')}`).to.deep.equal(want);
      if (want.changes) accepted++;
      else if (want.refused === 'malformed') malformed++;
      else refused++;
    }
    expect(accepted, 'some requests are accepted').to.be.greaterThan(300);
    expect(refused, 'some are refused by validation').to.be.greaterThan(300);
    expect(malformed, 'some do not decode').to.be.greaterThan(50);
  });

  it('both targets on the wire: the last one wins (a oneof, as the protobuf specification has it)', () => {
    for (const [order, want] of [
      [[8, 16], { target: 'advertiser', id: 7n, active: false }],
      [[16, 8], { target: 'ad', id: 5n, active: false }],
    ] as const) {
      const w = protobuf.Writer.create().uint32(10).fork();
      for (const tag of order) w.uint32(tag).int64(words(tag === 8 ? 5n : 7n) as never);
      w.uint32(24).bool(false).ldelim();
      const bytes = w.finish();
      expect(validateUpdates(decodeUpdateBatch(bytes)), `tags ${order}`).to.deep.equal([want]);
      expect(referenceChanges(deserialize(Buffer.from(bytes)).updates), `tags ${order}`).to.deep.equal([want]);
    }
  });
});
