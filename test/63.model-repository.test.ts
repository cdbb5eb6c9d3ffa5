/**
 * The model repository with hot reload (docs/operations.md "Model versions"), in process with
 * small bundles: versions arriving under load with no failed call (one of them corrupt), pins,
 * keep-versions, draining the old version before it is freed, rollback by removing a directory,
 * a file still being written left alone, and the live ad state following ads into a new version.
 */
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync, appendFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import { Engine } from '../src/engine/index.js';
import { AdrankServer } from '../src/server/server.js';
import { call, connect } from '../src/cli/client.js';
import { writeDemoBundle } from '../src/model/demo.js';
import { loadBundle } from '../src/model/bundle.js';
import type { ModelConfig } from '../src/model/config.js';
import type { RankResponse__Output } from '../src/generated/adrank/v1/RankResponse.js';
import type { AdRankerClient } from '../src/generated/adrank/v1/AdRanker.js';
import { addonBuilt } from './support/index.js';
import { adminClient, getAdStates, listModels, reloadModels, updateAdStates } from './support/admin.js';
import { engineRequest, protoRequest, smallConfig } from './50.server.helpers.js';
import { recordingLogger, shiftHeadBias, shipVersion, until, writeVariant } from './support/server.js';

const DEVICE = process.env.ADRANK_TEST_DEVICE ?? 'cpu';
const ADS = 400;

describe('63 model repository and hot reload', function () {
  this.timeout(180_000);
  let root: string;
  let repo: string;
  let server: AdrankServer | undefined;
  let log: ReturnType<typeof recordingLogger>;
  const c1: ModelConfig = { ...smallConfig(), version: 'one' };
  const c2: ModelConfig = { ...smallConfig(), version: 'two' };
  let bundles: Record<string, string>;
  let candidates: string[];

  before(async function () {
    if (!addonBuilt()) this.skip();
    root = mkdtempSync(join(tmpdir(), 'adrank-54-'));
    bundles = { one: join(root, 'one.safetensors'), two: join(root, 'two.safetensors'), corrupt: join(root, 'corrupt.safetensors') };
    await writeDemoBundle({ ads: ADS, seed: 11, out: bundles.one, config: c1 });
    // version 2: the same ads, other head biases (so its answers differ)
    const b1 = await loadBundle(bundles.one);
    await writeVariant(b1, bundles.two, c2, shiftHeadBias);
    const whole = readFileSync(bundles.two);
    writeFileSync(bundles.corrupt, whole.subarray(0, Math.floor(whole.length * 0.6))); // truncated
    candidates = Array.from(b1.tensors['ads.id'] as BigInt64Array, String).slice(0, 300);
  });
  after(() => {
    if (root) rmSync(root, { recursive: true, force: true });
  });

  beforeEach(() => {
    repo = mkdtempSync(join(root, 'repo-'));
    log = recordingLogger();
  });
  afterEach(async () => {
    await server?.shutdown();
    server = undefined;
  });

  async function start(keepVersions: number, pollMs = 100): Promise<AdrankServer> {
    server = await AdrankServer.start({
      port: 0,
      repository: { dir: repo, load: (p) => Engine.load(p, { device: DEVICE, threads: 1 }), keepVersions, pollMs, settleMs: 50 },
      shutdownGraceMs: 5000,
      log,
      auth: { adminInsecure: true },
    });
    await server.ready;
    return server;
  }

  /** 4 clients, each on its own channel, sending Rank without pause until stop(). */
  function underLoad(s: AdrankServer) {
    let stopped = false;
    const failures: string[] = [];
    const versions: string[][] = [[], [], [], []];
    const health = new Set<string>();
    const clients = versions.map(async (seen, i) => {
      const client = connect(`localhost:${s.port}`);
      const end = Date.now() + 60_000; // bounded even if the test fails before stop()
      try {
        for (let n = 0; !stopped && Date.now() < end; n++) {
          try {
            const r = await rank(client, { requestId: `c${i}-${n}` });
            seen.push(r.model!.version);
          } catch (e) {
            failures.push(`client ${i} call ${n}: ${(e as grpc.ServiceError).code} ${(e as Error).message}`);
          }
          health.add(s.healthStatus);
        }
      } finally {
        client.close();
      }
    });
    const stop = async () => {
      stopped = true;
      await Promise.all(clients);
    };
    return { versions, failures, health, stop };
  }

  const rank = (client: AdRankerClient, over: Parameters<typeof protoRequest>[1] = {}) =>
    call<object, RankResponse__Output>(client, 'Rank', protoRequest(smallConfig(), { candidateAdIds: candidates, k: 10, ...over }));

  it('under load: versions 2 and 3 (corrupt) arrive, zero failed calls, answers switch to 2, a pin to 1 answers from 1', async () => {
    shipVersion(repo, 1, bundles.one);
    const s = await start(2);
    const port = s.port;
    const admin = adminClient(`localhost:${port}`);
    const pinClient = connect(`localhost:${port}`);
    const v1Answer = await rank(pinClient);
    expect(v1Answer.model?.version).to.equal('1');

    const { versions, failures, health, stop } = underLoad(s);

    await until('calls on version 1', () => versions.every((v) => v.length >= 3));
    shipVersion(repo, 2, bundles.two);
    shipVersion(repo, 3, bundles.corrupt);
    const models = await until('2 READY and 3 FAILED', async () => {
      const m = await listModels(admin);
      const st = Object.fromEntries(m.models.map((x) => [x.version, x.state]));
      return st['2'] === 'READY' && st['3'] === 'FAILED' ? m : undefined;
    });
    await until('answers from version 2 on every client', () => versions.every((v) => v.includes('2')));
    const afterSwitch = versions.map((v) => v.length);
    await until('more calls after the switch', () => versions.every((v, i) => v.length >= afterSwitch[i] + 3));

    // a pin to version 1 still answers from version 1 while it is kept (keep 2); the same answer as before
    const pinned = await rank(pinClient, { modelVersion: '1' });
    expect(pinned.model?.version).to.equal('1');
    expect(pinned.winners).to.deep.equal(v1Answer.winners);
    const unpinned = await rank(pinClient);
    expect(unpinned.model?.version).to.equal('2');
    expect(unpinned.winners.map((w) => w.score)).to.not.deep.equal(v1Answer.winners.map((w) => w.score));
    for (const pin of ['3', '4', 'one']) {
      const e = await rank(pinClient, { modelVersion: pin }).then(() => undefined, (x: grpc.ServiceError) => x);
      expect(e?.code, `pin ${pin}`).to.equal(grpc.status.NOT_FOUND);
      expect(e?.details).to.include('loaded: 2, 1');
    }

    await stop();
    pinClient.close();
    admin.close();
    expect(failures, failures.slice(0, 5).join('\n')).to.deep.equal([]);
    expect([...health]).to.deep.equal(['SERVING']);
    // each client switched once, from 1 to 2, and never went back
    for (const seen of versions) {
      const first2 = seen.indexOf('2');
      expect(seen.slice(0, first2).every((v) => v === '1')).to.equal(true);
      expect(seen.slice(first2).every((v) => v === '2')).to.equal(true);
    }
    expect(models.defaultVersion).to.equal('2');
    const byVersion = Object.fromEntries(models.models.map((m) => [m.version, m]));
    expect(byVersion['2']).to.deep.include({ state: 'READY', isDefault: true, configVersion: 'two', reason: '' });
    expect(byVersion['2'].sha256).to.match(/^[0-9a-f]{64}$/);
    expect(byVersion['1']).to.deep.include({ state: 'READY', isDefault: false, configVersion: 'one' });
    expect(byVersion['3'].state).to.equal('FAILED');
    expect(byVersion['3'].reason).to.match(/\S/);
    const failed = log.events.find((e) => e.event === 'model_load_failed' && e.version === '3');
    expect(failed?.level).to.equal('error');
    expect(failed?.reason).to.equal(byVersion['3'].reason);
    expect(failed?.serving).to.be.oneOf(['1', '2']); // 3 may fail before or after 2 is ready
  });

  it('keep 1: the old version drains, then is freed; rollback by removing the directory; ReloadModels', async () => {
    shipVersion(repo, 1, bundles.one);
    const s = await start(1, 0); // no polling: ReloadModels and SIGHUP only
    const admin = adminClient(`localhost:${s.port}`);
    const client = connect(`localhost:${s.port}`);
    try {
      // requests in flight on version 1 while version 2 takes over and 1 is retired
      const load = underLoad(s);
      await until('calls on version 1', () => load.versions.every((v) => v.length >= 3));
      // and one request's hold on version 1 that we control (as execute() takes for each call)
      const held = s.models.acquire('');
      expect(held.version).to.equal('1');
      shipVersion(repo, 2, bundles.two);
      const r = await reloadModels(admin);
      expect(r.loaded).to.deep.equal(['2']);
      expect(r.defaultVersion).to.equal('2');
      // retired but not freed while held: UNLOADING, no new requests, its engine still usable
      expect(r.models.map((m) => [m.version, m.state])).to.deep.equal([['2', 'READY'], ['1', 'UNLOADING']]);
      await new Promise((res) => setTimeout(res, 200));
      expect(log.events.some((e) => e.event === 'model_version_unloaded' && e.version === '1')).to.equal(false);
      expect((await held.engine.rank({ ...engineRequest(smallConfig(), protoRequest(smallConfig(), { candidateAdIds: candidates }), 'rank') })).adIds.length).to.be.greaterThan(0);
      held.release();
      await until('version 1 freed', () => log.events.some((e) => e.event === 'model_version_unloaded' && e.version === '1'));
      await until('calls on version 2', () => load.versions.every((v) => v.includes('2')));
      await load.stop();
      expect(load.failures, load.failures.slice(0, 5).join('\n')).to.deep.equal([]);

      const ev = log.events.map((e) => `${e.event}:${e.version ?? ''}`);
      // drained (UNLOADING), then freed, only after 2 was READY
      expect(ev.indexOf('model_version_ready:2')).to.be.lessThan(ev.indexOf('model_version_unloading:1'));
      expect(ev.indexOf('model_version_unloading:1')).to.be.lessThan(ev.indexOf('model_version_unloaded:1'));
      expect((await listModels(admin)).models.map((m) => [m.version, m.state])).to.deep.equal([['2', 'READY']]);
      const pin = await rank(client, { modelVersion: '1' }).then(() => undefined, (x: grpc.ServiceError) => x);
      expect(pin?.code).to.equal(grpc.status.NOT_FOUND);

      // rollback: move version 2 away; the rescan loads 1 again before 2 is retired
      renameSync(join(repo, '2'), join(root, `moved-away-${Date.now()}`));
      const back = await reloadModels(admin);
      expect(back.loaded).to.deep.equal(['1']);
      expect(back.defaultVersion).to.equal('1');
      expect((await rank(client)).model?.version).to.equal('1');
      await until('version 2 freed', () => log.events.some((e) => e.event === 'model_version_unloaded' && e.version === '2'));
      expect(s.healthStatus).to.equal('SERVING');
    } finally {
      client.close();
      admin.close();
    }
  });

  it('a version shipped right before start loads, even when timers fire before Date.now() says they are due', async () => {
    shipVersion(repo, 1, bundles.one);
    // The event loop's clock can run a millisecond or two behind Date.now(): a timer of d ms then
    // fires when Date.now() has moved d - 1 or d - 2. Here every timer of 10 ms or more fires 3 ms
    // early, so the start scan's wait for settleMs (50) ends at 47 by Date.now().
    const real = globalThis.setTimeout;
    const early = ((fn: (...a: unknown[]) => void, ms?: number, ...args: unknown[]) =>
      real(fn, typeof ms === 'number' && ms >= 10 ? ms - 3 : ms, ...args)) as unknown as typeof setTimeout;
    globalThis.setTimeout = early;
    try {
      await start(1, 0);
    } finally {
      globalThis.setTimeout = real;
    }
    expect(server!.models.ready().map((v) => v.version)).to.deep.equal(['1']);
  });

  it('a version whose file is still being written is left alone until it stops changing', async () => {
    shipVersion(repo, 1, bundles.one);
    const s = await start(1, 0);
    const admin = adminClient(`localhost:${s.port}`);
    try {
      const whole = readFileSync(bundles.two);
      mkdirSync(join(repo, '2'));
      const file = join(repo, '2', 'model.safetensors');
      writeFileSync(file, whole.subarray(0, 1000));
      // keep appending every 10 ms while a rescan looks (it waits settleMs = 50 and sees a change)
      let off = 1000;
      const step = Math.ceil((whole.length - 1000) / 30);
      const writer = setInterval(() => {
        if (off < whole.length) appendFileSync(file, whole.subarray(off, (off += step)));
      }, 10);
      const during = await reloadModels(admin);
      expect(during.loaded).to.deep.equal([]);
      expect(during.failed).to.deep.equal([]);
      expect(log.events.some((e) => e.event === 'model_version_waiting' && e.version === '2')).to.equal(true);
      await until('the file complete', () => off >= whole.length);
      clearInterval(writer);
      const done = await reloadModels(admin);
      expect(done.loaded).to.deep.equal(['2']);
      expect(done.defaultVersion).to.equal('2');
    } finally {
      admin.close();
    }
  });

  it('live ad state follows ads by id into a new version (and is in place before it serves)', async () => {
    shipVersion(repo, 1, bundles.one);
    const s = await start(1, 0);
    const admin = adminClient(`localhost:${s.port}`);
    const client = connect(`localhost:${s.port}`);
    try {
      const top = (await rank(client)).winners[0].adId;
      await updateAdStates(admin, [{ adId: top, active: false, bid: 3 }]);
      expect((await rank(client)).winners.map((w) => w.adId)).to.not.include(top);
      shipVersion(repo, 2, bundles.two);
      await reloadModels(admin);
      const r = await rank(client);
      expect(r.model?.version).to.equal('2');
      expect(r.winners.map((w) => w.adId)).to.not.include(top);
      expect(r.counts?.inactive).to.equal(1);
      const st = (await getAdStates(admin, [top])).states[0];
      expect(st).to.deep.include({ known: true, active: false, bidOverride: 3, effectiveBid: 3 });
      expect((await getAdStates(admin, [top])).modelVersion).to.equal('2');
    } finally {
      client.close();
      admin.close();
    }
  });
});
