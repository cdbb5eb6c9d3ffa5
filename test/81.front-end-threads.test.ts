/**
 * --front-end-threads (src/server/threads.ts): several JS threads accept connections on one port
 * and serve one shared native engine per model version. Each client here opens its own
 * connection (a local subchannel pool), so the kernel spreads them over the threads; the owner's
 * own metrics against the summed /metrics show that every thread served. Checked: correct answers
 * under load on 2 threads (against the engine called in process); an ad-state update on one
 * connection seen by the next request on every connection; a reload under load with zero failed
 * calls and every connection on the new version once ReloadModels answers; a thread that dies is
 * reported and replaced; SIGTERM drains every thread of the CLI server. Needs Node >= 22.12
 * (reusePort); skipped, saying so, on an older Node.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs';
import { binding } from '../src/engine/binding.js';
import { Engine } from '../src/engine/index.js';
import { AdrankServer, BindError, frontEndThreadsFor } from '../src/server/server.js';
import { MAX_RESTARTS, reusePortSupported } from '../src/server/threads.js';
import { call } from '../src/cli/client.js';
import { loadProto } from '../src/wire/proto.js';
import { loadBundle, type LoadedBundle } from '../src/model/bundle.js';
import { writeDemoBundle } from '../src/model/demo.js';
import type { AdRankerClient } from '../src/generated/adrank/v1/AdRanker.js';
import type { RankResponse__Output } from '../src/generated/adrank/v1/RankResponse.js';
import { addonBuilt } from './support/index.js';
import { haveOpenssl, makeCerts, pem } from './support/certs.js';
import { repoRoot } from './support/python.js';
import { adminClient, reloadModels, updateAdStates } from './support/admin.js';
import { recordingLogger, shiftHeadBias, until, writeVariant } from './support/server.js';
import { adIds, engineRequest, protoRequest, smallConfig, writeSmallBundle } from './50.server.helpers.js';

const c = smallConfig();
/** connections per check: with two threads, all of them on one thread has odds 2 / 2^16 */
const CONNECTIONS = 16;

/** A client on its own connection (grpc-js otherwise shares one per address). */
function ownConnection(address: string): AdRankerClient {
  const { grpcObject } = loadProto();
  return new grpcObject.adrank.v1.AdRanker(address, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 });
}

/** adrank_requests_total{rpc, code="OK"} in a Prometheus text or JSON scrape. */
function okCount(text: string, rpc: string): number {
  const m = new RegExp(`^adrank_requests_total\\{rpc="${rpc}",code="OK"\\} (\\d+)`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}
function okCountJson(json: object[], rpc: string): number {
  const m = (json as { name: string; values: { labels: Record<string, string>; value: number }[] }[]).find((x) => x.name === 'adrank_requests_total');
  return m?.values.find((v) => v.labels.rpc === rpc && v.labels.code === 'OK')?.value ?? 0;
}

describe('81 front-end threads: the count served', function () {
  this.timeout(60_000);

  it('one thread, saying why, on a Node without reusePort, with the feature log or shadow traffic', () => {
    expect(frontEndThreadsFor(4, {}, '20.20.2')).to.deep.include({ threads: 1 }).and.to.have.property('why').that.matches(/22\.12/);
    expect(frontEndThreadsFor(4, {}, '22.11.0').threads).to.equal(1);
    expect(frontEndThreadsFor(4, {}, '22.12.0')).to.deep.equal({ threads: 4 });
    expect(frontEndThreadsFor(4, {}, '24.1.0')).to.deep.equal({ threads: 4 });
    expect(frontEndThreadsFor(4, { featureLog: { dir: '/tmp/x', sample: 1 } }, '24.1.0').why).to.match(/feature log/);
    expect(frontEndThreadsFor(1, {}, '20.20.2')).to.deep.equal({ threads: 1 });
    expect(() => frontEndThreadsFor(0, {})).to.throw(/front end threads/);
  });

  it('this Node: the server logs the reduction, or serves every thread asked for', async function () {
    if (!addonBuilt()) this.skip();
    const dir = mkdtempSync(join(tmpdir(), 'adrank-57a-'));
    const path = join(dir, 'small.safetensors');
    await writeSmallBundle(path, 300);
    const log = recordingLogger();
    const server = await AdrankServer.start({ port: 0, engine: () => Engine.load(path, { device: 'cpu', threads: 1 }), frontEndThreads: 2, warmup: false, log });
    try {
      await server.ready;
      const reduced = log.events.find((e) => e.event === 'front_end_threads_reduced');
      if (reusePortSupported()) {
        expect(reduced).to.equal(undefined);
        expect(server.frontEndThreads?.live).to.equal(1);
      } else {
        expect(reduced).to.include({ level: 'warn', threads: 1 });
        expect(String(reduced!.why)).to.match(/reusePort needs Node >= 22\.12/);
        expect(server.frontEndThreads).to.equal(undefined);
      }
      expect(log.events.find((e) => e.event === 'listening')?.frontEndThreads).to.equal(reusePortSupported() ? 2 : 1);
    } finally {
      await server.shutdown('test');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('81 front-end threads', function () {
  this.timeout(180_000);
  let dir: string;
  let path: string;
  let bundle: LoadedBundle;
  let reference: Engine;
  const cleanups: (() => unknown)[] = [];

  before(async function () {
    if (!reusePortSupported()) {
      console.log(`    (skipped: Node ${process.versions.node} has no reusePort; the front-end threads need Node >= 22.12)`);
      this.skip();
    }
    if (!addonBuilt()) this.skip();
    dir = mkdtempSync(join(tmpdir(), 'adrank-57-'));
    path = join(dir, 'small.safetensors');
    await writeSmallBundle(path, 2000);
    bundle = await loadBundle(path);
    reference = Engine.fromBundle(bundle, { device: 'cpu', threads: 1 });
  });
  afterEach(async () => {
    for (const f of cleanups.splice(0).reverse()) await f();
  });
  after(() => {
    reference?.dispose();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function start(over: Partial<Parameters<typeof AdrankServer.start>[0]> = {}) {
    const log = recordingLogger();
    const server = await AdrankServer.start({
      port: 0,
      engine: () => Engine.load(path, { device: 'cpu', threads: 1 }),
      frontEndThreads: 2,
      metrics: { port: 0 },
      warmup: false,
      log,
      ...over,
    });
    cleanups.push(() => server.shutdown('test'));
    await server.ready;
    const clients = Array.from({ length: CONNECTIONS }, () => ownConnection(`localhost:${server.port}`));
    cleanups.push(() => clients.forEach((cl) => cl.close()));
    return { server, log, clients };
  }

  /** Every thread answered calls of `rpc`: the owner's own count is above 0 and below the sum. */
  async function expectEveryThreadServed(server: AdrankServer, rpc: string): Promise<void> {
    const own = okCountJson(await server.metrics!.json(), rpc);
    const all = okCount(await (await fetch(`http://localhost:${server.metricsPort}/metrics`)).text(), rpc);
    expect(server.frontEndThreads?.live, 'worker threads').to.equal(1);
    expect(own, `${rpc} calls the owner thread answered (of ${all})`).to.be.greaterThan(0);
    expect(all - own, `${rpc} calls the worker thread answered (of ${all})`).to.be.greaterThan(0);
  }

  it('one native engine serves every thread: shared, then freed when the last thread lets go', async () => {
    const sharedBefore = binding().sharedEngines();
    const { server } = await start();
    expect(binding().sharedEngines()).to.equal(sharedBefore + 1);
    // what the other threads get besides the key: the ad tables in shared memory (one copy for all)
    const shared = server.engine!.share();
    expect(shared.bundle.tensors['ads.id'].buffer).to.be.instanceOf(SharedArrayBuffer);
    expect(Array.from(shared.bundle.tensors['ads.id'] as BigInt64Array)).to.deep.equal(Array.from(bundle.tensors['ads.id'] as BigInt64Array));
    await server.shutdown('test');
    await until('the shared engine freed', () => binding().sharedEngines() === sharedBefore, 10_000);
  });

  it('a second server on the same port is refused (EADDRINUSE), not let in to share the connections', async () => {
    const { server } = await start();
    const err = await AdrankServer.start({ port: server.port, engine: () => Engine.load(path, { device: 'cpu', threads: 1 }), frontEndThreads: 2, warmup: false, log: recordingLogger() }).then(
      async (s) => {
        await s.shutdown('test');
        return undefined;
      },
      (e: Error) => e,
    );
    expect(err).to.be.instanceOf(BindError);
    expect((err as BindError).code).to.equal('EADDRINUSE');
  });

  it('2 threads give the answers of the engine under load', async () => {
    const { server, clients } = await start();
    const ids = adIds(bundle);
    // 16 connections × 8 concurrent calls, each with its own candidates, K and surface
    const requests = Array.from({ length: CONNECTIONS * 8 }, (_, i) =>
      protoRequest(c, { requestId: `r${i}`, candidateAdIds: ids.slice((i * 37) % 1500, ((i * 37) % 1500) + 300), k: 5 + (i % 20), surface: c.surfaces[i % c.surfaces.length] }),
    );
    const answers = await Promise.all(requests.map((r, i) => call<object, RankResponse__Output>(clients[i % CONNECTIONS], 'Rank', r, 60_000)));
    for (const [i, a] of answers.entries()) {
      const want = await reference.rank(engineRequest(c, requests[i], 'rank'));
      expect(a.winners.map((w) => w.adId), `winners of ${requests[i].requestId}`).to.deep.equal(Array.from(want.adIds, String));
      for (const [j, w] of a.winners.entries()) expect(w.score, `score ${j} of ${requests[i].requestId}`).to.be.closeTo(want.scores[j], 1e-5 * Math.max(1, Math.abs(want.scores[j])));
    }
    await expectEveryThreadServed(server, 'Rank');
  });

  it("health on every thread's connections follows the owner: SERVING", async () => {
    const { server, clients } = await start();
    const def = protoLoader.loadSync('health/v1/health.proto', { includeDirs: [join(dirname(createRequire(import.meta.url).resolve('grpc-health-check/package.json')), 'proto')], enums: String, defaults: true });
    const Health = (grpc.loadPackageDefinition(def) as any).grpc.health.v1.Health;
    const req = protoRequest(c, { candidateAdIds: adIds(bundle).slice(0, 50), k: 5 });
    await Promise.all(clients.map((cl) => call(cl, 'Rank', req, 60_000)));
    // on each Rank connection (so on both threads: see below) a health check
    const statuses = await Promise.all(
      clients.map((cl) => {
        const h = new Health(`localhost:${server.port}`, grpc.credentials.createInsecure(), { channelOverride: cl.getChannel() });
        return new Promise<string>((resolve, reject) => h.Check({ service: 'adrank.v1.AdRanker' }, (e: Error | null, r: { status: string }) => (e ? reject(e) : resolve(r.status))));
      }),
    );
    expect(statuses).to.deep.equal(new Array(CONNECTIONS).fill('SERVING'));
    await expectEveryThreadServed(server, 'Rank');
  });

  it('an ad-state update on one connection is seen by the next request on every connection', async () => {
    const { server, clients } = await start({ auth: { adminInsecure: true } });
    const req = protoRequest(c, { candidateAdIds: adIds(bundle).slice(0, 400), k: 10, perAdvertiserCap: 0 });
    const before = await Promise.all(clients.map((cl) => call<object, RankResponse__Output>(cl, 'Rank', req, 60_000)));
    const top = before[0].winners[0].adId;
    for (const a of before) expect(a.winners[0].adId).to.equal(top);
    const admin = adminClient(`localhost:${server.port}`);
    cleanups.push(() => admin.close());
    expect((await updateAdStates(admin, [{ adId: top, active: false }])).applied).to.equal(1);
    const after = await Promise.all(clients.map((cl) => call<object, RankResponse__Output>(cl, 'Rank', req, 60_000)));
    for (const [i, a] of after.entries()) {
      expect(a.winners.map((w) => w.adId), `connection ${i}`).not.to.include(top);
      expect(a.counts?.inactive, `connection ${i}: inactive candidates`).to.equal(1);
    }
    await expectEveryThreadServed(server, 'Rank');
  });

  it('a reload under load across threads: zero failed calls, every thread on the new version once ReloadModels answers', async () => {
    const repo = join(dir, 'repo');
    mkdirSync(join(repo, '1'), { recursive: true });
    copyFileSync(path, join(repo, '1', 'model.safetensors'));
    const { server, clients } = await start({
      engine: undefined,
      repository: { dir: repo, load: (p: string) => Engine.load(p, { device: 'cpu', threads: 1 }), pollMs: 0, keepVersions: 1 },
      auth: { adminInsecure: true },
    });
    const req = protoRequest(c, { candidateAdIds: adIds(bundle).slice(0, 200), k: 10 });
    let stop = false;
    const failures: string[] = [];
    let calls = 0;
    const loops = clients.map(async (cl) => {
      while (!stop) {
        try {
          await call(cl, 'Rank', req, 60_000);
          calls++;
        } catch (e) {
          failures.push((e as grpc.ServiceError).details ?? String(e));
        }
      }
    });
    await until('calls under way', () => calls >= 50, 60_000);
    await writeVariant(bundle, join(dir, 'v2.safetensors'), { ...c, version: '2' }, shiftHeadBias);
    mkdirSync(join(repo, '.incoming-2'));
    copyFileSync(join(dir, 'v2.safetensors'), join(repo, '.incoming-2', 'model.safetensors'));
    const { renameSync } = await import('node:fs');
    renameSync(join(repo, '.incoming-2'), join(repo, '2'));
    const admin = adminClient(`localhost:${server.port}`);
    cleanups.push(() => admin.close());
    const r = await reloadModels(admin);
    expect(r.defaultVersion).to.equal('2');
    // acknowledged: the next call on every connection (either thread) runs version 2
    const next = await Promise.all(clients.map((cl) => call<object, RankResponse__Output>(cl, 'Rank', req, 60_000)));
    for (const [i, a] of next.entries()) expect(a.model?.version, `connection ${i}`).to.equal('2');
    const at = calls;
    await until('calls after the reload', () => calls >= at + 50, 60_000);
    stop = true;
    await Promise.all(loops);
    expect(failures, 'failed calls').to.deep.equal([]);
    await expectEveryThreadServed(server, 'Rank');
  });

  it('mTLS on every thread: clients with a certificate of the CA are served by both threads; one without is refused', async function () {
    if (!haveOpenssl()) {
      console.log('    (skipped: openssl not found, no certificates to test with)');
      this.skip();
    }
    const certs = makeCerts(mkdtempSync(join(dir, 'certs-')));
    const { server } = await start({ tls: { cert: certs.serverCert, key: certs.serverKey, clientCa: certs.caCert } });
    const { grpcObject } = loadProto();
    const creds = (withCert: boolean) =>
      withCert ? grpc.credentials.createSsl(pem(certs.caCert), pem(certs.clientKey), pem(certs.clientCert)) : grpc.credentials.createSsl(pem(certs.caCert));
    const open = (withCert: boolean) => new grpcObject.adrank.v1.AdRanker(`localhost:${server.port}`, creds(withCert), { 'grpc.use_local_subchannel_pool': 1 });
    const good = Array.from({ length: CONNECTIONS }, () => open(true));
    const bad = Array.from({ length: 4 }, () => open(false));
    cleanups.push(() => [...good, ...bad].forEach((cl) => cl.close()));
    const req = protoRequest(c, { candidateAdIds: adIds(bundle).slice(0, 100), k: 5 });
    await Promise.all(good.map((cl) => call(cl, 'Rank', req, 60_000)));
    for (const cl of bad) {
      const err = await call(cl, 'Rank', req, 5_000).then(() => undefined, (e: grpc.ServiceError) => e);
      expect(err?.code, 'a client without a certificate').to.equal(grpc.status.UNAVAILABLE);
    }
    await expectEveryThreadServed(server, 'Rank');
  });

  it('a thread that dies is reported and replaced; every connection is then served', async () => {
    const { server, log, clients } = await start();
    const threads = server.frontEndThreads!;
    await threads.workerThreads[0].terminate();
    await until('the thread replaced', () => threads.replaced === 1 && threads.live === 1, 60_000);
    expect(log.events.find((e) => e.event === 'front_end_thread_exited')).to.include({ level: 'error', thread: 1 });
    expect(log.events.some((e) => e.event === 'front_end_thread_replaced')).to.equal(true);
    // the replacement serves: new connections land on both threads
    const fresh = Array.from({ length: CONNECTIONS }, () => ownConnection(`localhost:${server.port}`));
    cleanups.push(() => fresh.forEach((cl) => cl.close()));
    const req = protoRequest(c, { candidateAdIds: adIds(bundle).slice(0, 100), k: 5 });
    await Promise.all(fresh.map((cl) => call(cl, 'Rank', req, 60_000)));
    await expectEveryThreadServed(server, 'Rank');
    expect(clients.length).to.equal(CONNECTIONS);
  });

  it(`threads that keep dying: after ${MAX_RESTARTS} replacements within the window the server gives up (onFatal), it does not hang`, async () => {
    let fatal: Error | undefined;
    const { server, log } = await start({ onFatal: (e) => (fatal = e) });
    const threads = server.frontEndThreads!;
    for (let i = 0; i < MAX_RESTARTS; i++) {
      await threads.workerThreads[0].terminate();
      await until(`replacement ${i + 1}`, () => threads.replaced === i + 1 && threads.live === 1, 60_000);
    }
    expect(fatal).to.equal(undefined);
    await threads.workerThreads[0].terminate();
    await until('onFatal', () => fatal, 10_000);
    expect(fatal!.message).to.match(/keep failing/);
    expect(threads.live).to.equal(0);
    expect(log.events.filter((e) => e.event === 'front_end_thread_exited')).to.have.length(MAX_RESTARTS + 1);
    expect(log.events.some((e) => e.event === 'front_end_threads_failed')).to.equal(true);
  });

  const PER_CONNECTION = 10;
  it('SIGTERM drains every thread of the CLI server: calls in flight on each thread answered, exit 0', async () => {
    const cli = join(repoRoot, 'src', 'cli', 'main.ts');
    // a heavier model, so that calls are still queued on both threads when SIGTERM arrives
    const heavy = { ...c, masknet: { blocks: 2, projection_ratio: 1, output_dim: 256 }, dcn: { layers: 3, rank: 0 } };
    const heavyPath = join(dir, 'heavy.safetensors');
    await writeDemoBundle({ ads: 4000, seed: 3, out: heavyPath, config: heavy });
    // every engine call logged (access lines carry the thread), so each thread's calls can be told apart
    const args = ['serve', '--bundle', heavyPath, '--port', '0', '--device', 'cpu', '--threads', '1', '--metrics-port', '0', '--front-end-threads', '2', '--shutdown-grace-ms', '20000', '--access-log-sample', '1'];
    const child = spawn(process.execPath, ['--import', 'tsx', cli, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    cleanups.push(() => child.exitCode === null && child.kill('SIGKILL'));
    const events: Record<string, any>[] = [];
    createInterface({ input: child.stdout! }).on('line', (line) => events.push(JSON.parse(line)));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    const serving = await until('serving', () => events.find((e) => e.event === 'serving'), 120_000);
    // raw clients with the request encoded once: the test process only sends bytes
    const raw = (b: Buffer) => b;
    const clients = Array.from({ length: CONNECTIONS }, () => new grpc.Client(String(serving.address), grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 }));
    cleanups.push(() => clients.forEach((cl) => cl.close()));
    const { root } = loadProto();
    const type = root.lookupType('adrank.v1.RankRequest');
    const ids = Array.from((await loadBundle(heavyPath)).tensors['ads.id'] as BigInt64Array, String);
    const bytes = Buffer.from(type.encode(type.fromObject(protoRequest(heavy, { candidateAdIds: ids, k: 10 })) as protobuf.Message).finish());
    const rank = (cl: grpc.Client) =>
      new Promise<string>((resolve) => cl.makeUnaryRequest('/adrank.v1.AdRanker/Rank', raw, raw, bytes, { deadline: Date.now() + 120_000 }, (e) => resolve(e ? `${grpc.status[e.code]}: ${e.details}` : 'OK')));
    const inflight = clients.flatMap((cl) => Array.from({ length: PER_CONNECTION }, () => rank(cl)));
    const access = (t: number) => events.filter((e) => e.event === 'access' && (e.thread ?? 0) === t).length;
    // both threads are answering (so both have connections and calls queued): SIGTERM
    await until('answers from both threads', () => access(0) > 0 && access(1) > 0, 60_000);
    child.kill('SIGTERM');
    const outcomes = await Promise.all(inflight);
    expect(await exited, 'exit code').to.equal(0);
    expect(outcomes.filter((o) => o !== 'OK'), 'calls not answered OK').to.deep.equal([]);
    for (const thread of [0, 1]) {
      const mine = (e: Record<string, any>) => (e.thread ?? 0) === thread;
      const from = events.findIndex((e) => e.event === 'shutting_down' && mine(e));
      expect(from, `thread ${thread} began its drain`).to.be.greaterThan(-1);
      expect(events[from].inflight, `calls in flight on thread ${thread} at SIGTERM (answered: ${access(0)}, ${access(1)})`).to.be.greaterThan(0);
      expect(events.slice(from).filter((e) => e.event === 'access' && mine(e)).length, `calls thread ${thread} answered while draining`).to.be.greaterThan(0);
      expect(events.slice(from).find((e) => e.event === 'stopped' && mine(e))?.drained, `thread ${thread} drained`).to.equal(true);
    }
    expect(access(0) + access(1), 'access lines: one per Rank').to.equal(CONNECTIONS * PER_CONNECTION);
  });
});
