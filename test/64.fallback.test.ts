/**
 * Fallback answers (docs/funnel.md "Fallback"): what they hold, the bundle's fallback lists, and
 * each trigger — an engine/device error (injected through the test-hooks build of the addon, which
 * a release build does not contain), a deadline below the recent p99, and allow_fallback = false.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'chai';
import { status } from '@grpc/grpc-js';
import { Engine, type EngineRequest } from '../src/engine/index.js';
import { binding, loadBinding } from '../src/engine/binding.js';
import { execute, toServiceError, type CallState } from '../src/handlers/engine-rpc.js';
import { InflightLimit, Stats, type HandlerContext } from '../src/handlers/context.js';
import { rank } from '../src/handlers/rank.js';
import { retrieve } from '../src/handlers/retrieve.js';
import { retrieveAndRank } from '../src/handlers/retrieve-and-rank.js';
import { RecentLatency, MIN_SAMPLES, WINDOW } from '../src/fallback/recent-latency.js';
import { fixedLeases } from '../src/lifecycle/registry.js';
import { silentLogger } from '../src/log.js';
import { loadProto } from '../src/wire/proto.js';
import { parseBundle } from '../src/model/bundle.js';
import { encodeSafetensors, type Tensor } from '../src/model/safetensors.js';
import { bundleMetadata } from '../src/model/bundle.js';
import { adId, advertiserOf, config, N, randomBundle, request } from './support/tiny-model.js';
import type { LoadedBundle } from '../src/model/bundle.js';
import type { RankResponse__Output } from '../src/generated/adrank/v1/RankResponse.js';

/** The tiny random bundle with non-negative task weights (so values, utilities and prices are as
 *  in a real bundle). */
function fallbackBundle(): LoadedBundle {
  const b = randomBundle();
  const w = b.tensors['utility.task_weights'] as Float32Array;
  for (let i = 0; i < w.length; i++) w[i] = Math.abs(w[i]);
  return b;
}

/** The bundle as a file would carry it, plus `fallback.<surface>` lists, parsed back. */
function withLists(lists: Record<string, bigint[]>): LoadedBundle {
  const b = fallbackBundle();
  const tensors = new Map<string, Tensor>();
  for (const [name, data] of Object.entries(b.tensors)) tensors.set(name, { dtype: b.dtypes[name], shape: b.shapes[name], data } as Tensor);
  for (const [surface, ids] of Object.entries(lists)) tensors.set(`fallback.${surface}`, { dtype: 'I64', shape: [ids.length], data: BigInt64Array.from(ids) } as Tensor);
  return parseBundle(encodeSafetensors(tensors, bundleMetadata(config)));
}

/** Independent reference: listed ids first, then by bid descending and id ascending; the greedy cap
 *  walk to K (+ runner-up); prices = the next bid, at least the reserve, at most the own bid. */
function reference(b: LoadedBundle, listed: bigint[], candidates: bigint[], k: number, cap: number, reserve: number, excluded: bigint[] = []) {
  const ids = b.tensors['ads.id'] as BigInt64Array;
  const bids = b.tensors['ads.bid'] as Float32Array;
  const row = new Map(Array.from(ids, (id, i) => [id, i] as [bigint, number]));
  const pos = (id: bigint) => listed.indexOf(id);
  const unique = [...new Set(candidates)].filter((id) => row.has(id) && !excluded.includes(id));
  unique.sort((a, b2) => {
    const pa = pos(a), pb = pos(b2);
    if (pa >= 0 || pb >= 0) return (pa < 0 ? Infinity : pa) - (pb < 0 ? Infinity : pb);
    const ba = bids[row.get(a)!], bb = bids[row.get(b2)!];
    return ba !== bb ? bb - ba : a < b2 ? -1 : 1;
  });
  const taken = new Map<bigint, number>();
  const walk: bigint[] = [];
  let capped = 0;
  for (const id of unique) {
    const adv = advertiserOf(ids.indexOf(id) >= 0 ? Number(ids.indexOf(id)) : 0);
    const n = taken.get(adv) ?? 0;
    if (cap > 0 && n >= cap) {
      if (walk.length < k) capped++;
      continue;
    }
    taken.set(adv, n + 1);
    walk.push(id);
    if (walk.length === k + 1) break;
  }
  const winners = walk.slice(0, k);
  const bid = (id: bigint) => bids[row.get(id)!];
  const prices = winners.map((id, i) => {
    const next = walk[i + 1];
    return next === undefined ? Math.min(bid(id), reserve) : Math.min(bid(id), Math.max(reserve, bid(next)));
  });
  return { winners, prices, eligible: unique.length, capped };
}

describe('64 fallback', function () {
  this.timeout(60_000);

  describe('answers', () => {
    let engine: Engine;
    let b: LoadedBundle;
    const listed = [adId(7), adId(3), adId(30)];
    before(async () => {
      b = withLists({ home: listed });
      engine = Engine.fromBundle(b, { device: 'cpu', threads: 1 });
      await engine.prepareFallback();
    });
    after(() => engine.dispose());

    it('estimates each surface: the listed count, the mean probabilities and value = Σ w p̄', () => {
      const plan = engine.fallbackPlan!;
      expect(plan.map((p) => p.surface)).to.deep.equal(config.surfaces);
      expect(plan.map((p) => p.listed)).to.deep.equal([3, 0]);
      const w = b.tensors['utility.task_weights'] as Float32Array;
      const T = config.tasks.length;
      plan.forEach((p, s) => {
        expect(p.sample).to.equal(N);
        for (const q of p.probs) expect(q).to.be.within(0, 1);
        expect(p.value).to.be.closeTo(p.probs.reduce((acc, q, t) => acc + w[s * T + t] * q, 0), 1e-5);
      });
    });

    it('Rank: the listed candidates first, then by bid; cap, exclusions and GSP on bids as the reference', () => {
      const candidates = [adId(30), adId(1), adId(7), adId(2), adId(3), adId(9), adId(1), 999n, adId(11), adId(12), adId(14)];
      for (const [k, cap] of [[3, 0], [4, 1], [10, 2]]) {
        const r: EngineRequest = request({ surface: 0, k, cap, price: true, reserve: 0.05, candidates: BigInt64Array.from(candidates), excludedAds: [adId(2)] });
        const got = engine.fallback('rank', r);
        const want = reference(b, listed, candidates, k, cap, 0.05, [adId(2), 999n]);
        expect(Array.from(got.adIds), `k ${k} cap ${cap}`).to.deep.equal(want.winners);
        Array.from(got.prices).forEach((p, i) => expect(p).to.be.closeTo(want.prices[i], 1e-6));
        expect(got.counts).to.include({ received: candidates.length, unknown: 1, duplicate: 1, excludedAd: 1, eligible: want.eligible, capped: want.capped });
        const plan = engine.fallbackPlan![0];
        const bids = b.tensors['ads.bid'] as Float32Array;
        Array.from(got.rows).forEach((row, i) => expect(got.scores[i]).to.be.closeTo(bids[row] * plan.value, 1e-5));
        expect(Array.from(got.probs.subarray(0, config.tasks.length))).to.deep.equal(Array.from(Float32Array.from(plan.probs)));
      }
    });

    it('Retrieve and RetrieveAndRank walk the surface list over the corpus; a surface without a list goes by bid', () => {
      const all = Array.from(b.tensors['ads.id'] as BigInt64Array);
      for (const [surface, list] of [[0, listed], [1, []]] as const) {
        const r = request({ surface, k: 6, cap: 1, candidates: new BigInt64Array(0), retrieveCount: 20 });
        const want = reference(b, [...list], all, 6, 1, 0);
        for (const op of ['retrieve', 'retrieveAndRank'] as const) {
          const got = engine.fallback(op, op === 'retrieve' ? { ...r, retrieveCount: 0 } : r);
          expect(Array.from(got.adIds), `${op} surface ${surface}`).to.deep.equal(want.winners);
          expect(got.prices.length).to.equal(op === 'retrieveAndRank' ? 6 : 0);
        }
      }
    });

    it('live ad state still applies', () => {
      const ids = BigInt64Array.from([adId(7)]);
      engine.setAdState(ids, Uint8Array.of(0), Uint8Array.of(1), Float32Array.of(1));
      try {
        const got = engine.fallback('rank', request({ surface: 0, k: 2, cap: 0, candidates: BigInt64Array.from([adId(7), adId(3)]) }));
        expect(Array.from(got.adIds)).to.deep.equal([adId(3)]);
        expect(got.counts.inactive).to.equal(1);
      } finally {
        engine.setAdState(ids, Uint8Array.of(1), Uint8Array.of(1), Float32Array.of(1));
      }
    });

    it('the bundle refuses a list with an unknown or repeated id', () => {
      expect(() => withLists({ home: [adId(1), 12345n] })).to.throw(/tensor "fallback.home": ad id 12345 at index 1 is not in ads.id/);
      expect(() => withLists({ search: [adId(1), adId(2), adId(1)] })).to.throw(/tensor "fallback.search": duplicate ad id 1003 at indices 0 and 2/);
      expect(() => withLists({ nowhere: [adId(1)] })).to.throw(/unexpected tensor "fallback.nowhere"/);
    });
  });

  describe('triggers', () => {
    it('the recent p99 is the nearest-rank p99 of the last WINDOW latencies of the bucket', () => {
      const lat = new RecentLatency();
      const seen: number[] = [];
      let x = 12345;
      for (let i = 0; i < 3 * WINDOW; i++) {
        x = (Math.imul(x, 1103515245) + 12345) >>> 0;
        const ms = i % 97 === 0 ? 50 + (x % 50) : (x % 1000) / 100; // repeats and rare slow calls
        lat.record('Rank', 700, ms);
        seen.push(ms);
        const last = seen.slice(-WINDOW).sort((a, b) => a - b);
        const want = last.length < MIN_SAMPLES ? undefined : last[Math.min(last.length - 1, Math.ceil(0.99 * last.length) - 1)];
        expect(lat.p99('Rank', 1000), `after ${i + 1}`).to.equal(want); // same power-of-two bucket as 700
      }
      expect(lat.p99('Rank', 2000)).to.equal(undefined);
      expect(lat.p99('RetrieveAndRank', 700)).to.equal(undefined);
    });

    const { root } = loadProto();
    const decodeRank = (bytes: Buffer) => root.lookupType('adrank.v1.RankResponse').toObject(root.lookupType('adrank.v1.RankResponse').decode(bytes), { longs: String, enums: String, defaults: true }) as RankResponse__Output;
    const ctxFor = (engine: Engine): HandlerContext => ({
      engine: () => engine,
      models: fixedLeases(engine, engine.config.version),
      limits: { maxCandidates: 1000 },
      inflight: new InflightLimit(8),
      inlineMaxUs: 0,
      inlineIdleMaxUs: 0,
      log: silentLogger,
      stats: new Stats(),
      latency: new RecentLatency(),
    });
    const rankRequest = (over: Record<string, unknown> = {}) =>
      rank.decode(
        Buffer.from(
          root
            .lookupType('adrank.v1.RankRequest')
            .encode({
              requestId: 'r-1',
              surface: 'home',
              user: { dense: [0.3, -1.2, 2.0], embedding: [0.1, 0.2, -0.3, 0.4, 0.5], sequence: { itemIds: [5], actions: [1] } },
              targeting: [3],
              candidateAdIds: Array.from({ length: 20 }, (_, i) => adId(i).toString()),
              k: 5,
              ...over,
            })
            .finish(),
        ),
      );
    const call = (msFromNow: number): CallState => ({ deadline: Date.now() + msFromNow, cancelled: () => false });

    let engine: Engine;
    beforeEach(async () => {
      engine = Engine.fromBundle(fallbackBundle(), { device: 'cpu', threads: 1 });
      await engine.prepareFallback();
    });
    afterEach(() => engine.dispose());

    it('a deadline below the recent p99 for the size is answered from the fallback, unless allow_fallback = false', async () => {
      const ctx = ctxFor(engine);
      const normal = decodeRank(await execute(ctx, rank, rankRequest(), call(5_000)));
      expect(normal.fallback).to.equal(false);
      expect(normal.fallbackReason).to.equal('FALLBACK_REASON_UNSPECIFIED');
      // the model path took 2 s for requests of 20 candidates, recently
      for (let i = 0; i < MIN_SAMPLES; i++) ctx.latency.record('Rank', 20, 2_000);
      const fb = decodeRank(await execute(ctx, rank, rankRequest(), call(1_000)));
      expect(fb.fallback).to.equal(true);
      expect(fb.fallbackReason).to.equal('DEADLINE');
      expect(ctx.stats.fallbacks).to.deep.equal({ DEADLINE: 1 });
      expect(ctx.stats.engineCalls.Rank).to.equal(1); // the fallback started no engine run
      // a request of another size has no such history
      const other = decodeRank(await execute(ctx, rank, rankRequest({ candidateAdIds: [adId(1).toString(), adId(2).toString()] }), call(1_000)));
      expect(other.fallback).to.equal(false);
      const refused = decodeRank(await execute(ctx, rank, rankRequest({ allowFallback: false }), call(1_000)));
      expect(refused.fallback).to.equal(false);
      expect(ctx.stats.engineCalls.Rank).to.equal(3);
    });

    const hooksAddon = join(process.cwd(), 'build-test', 'Release', 'adrank.node');
    it('an engine/device error is answered from the fallback (test-hooks build), unless allow_fallback = false', async function () {
      expect(binding().Engine.prototype, 'a release addon has no fault injection').to.not.have.property('injectDeviceErrors');
      if (!existsSync(hooksAddon)) {
        console.log('      [64.fallback] skipped: no test-hooks addon (build-test/); run `npm run build:test-hooks` (CI does)');
        this.skip();
      }
      const hooked = Engine.fromBundle(fallbackBundle(), { device: 'cpu', threads: 1, binding: loadBinding(hooksAddon) });
      try {
        await hooked.prepareFallback();
        const ctx = ctxFor(hooked);
        for (const [rpc, req] of [
          [rank, rankRequest()],
          [retrieve, retrieve.decode(Buffer.from(root.lookupType('adrank.v1.RetrieveRequest').encode({ requestId: 'r', surface: 'search', user: { dense: [0, 0, 0], embedding: [1, 0, 0, 0, 0] }, targeting: [1], k: 3 }).finish()))],
          [retrieveAndRank, retrieveAndRank.decode(Buffer.from(root.lookupType('adrank.v1.RetrieveAndRankRequest').encode({ requestId: 'r', surface: 'search', user: { dense: [0, 0, 0], embedding: [1, 0, 0, 0, 0] }, targeting: [1], k: 3, retrieveCount: 10 }).finish()))],
        ] as const) {
          hooked.injectDeviceErrors(1);
          const bytes = await execute(ctx, rpc as typeof rank, req as ReturnType<typeof rankRequest>, call(5_000));
          const type = root.lookupType(`adrank.v1.${rpc.name}Response`);
          const res = type.toObject(type.decode(bytes), { enums: String, defaults: true, longs: String });
          expect(res.fallback, rpc.name).to.equal(true);
          expect(res.fallbackReason).to.equal('ENGINE_ERROR');
          expect(res.winners.length).to.be.greaterThan(0);
          // the next request runs on the model again
          const again = type.toObject(type.decode(await execute(ctx, rpc as typeof rank, req as ReturnType<typeof rankRequest>, call(5_000))), { enums: String, defaults: true });
          expect(again.fallback).to.equal(false);
        }
        expect(ctx.stats.fallbacks).to.deep.equal({ ENGINE_ERROR: 3 });
        hooked.injectDeviceErrors(1);
        const err = await execute(ctx, rank, rankRequest({ allowFallback: false }), call(5_000)).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(err, 'allow_fallback = false: the error').to.be.instanceOf(Error);
        expect((err as Error).message).to.include('cudaErrorIllegalAddress');
        expect(toServiceError(err).code, `${(err as Error).name} ${(err as { code?: string }).code}`).to.equal(status.UNAVAILABLE);
      } finally {
        hooked.dispose();
      }
    });
  });
});
