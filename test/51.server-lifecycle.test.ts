/**
 * The server's lifecycle: health NOT_SERVING while the model loads → SERVING once warmed →
 * NOT_SERVING on shutdown; server reflection; and the CLI server under SIGTERM with calls in
 * flight (they all complete OK and the process exits 0).
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { Engine } from '../src/engine/index.js';
import { AdrankServer } from '../src/server/server.js';
import { silentLogger } from '../src/log.js';
import { call, connect } from '../src/cli/client.js';
import type { RankResponse__Output } from '../src/generated/adrank/v1/RankResponse.js';
import type { ModelConfig } from '../src/model/config.js';
import { addonBuilt } from './support/index.js';
import { portOf, serveCli } from './support/cli-server.js';
import { adIds, protoRequest, reflectionClient, smallConfig, writeSmallBundle } from './50.server.helpers.js';
import { loadBundle } from '../src/model/bundle.js';
import { writeDemoBundle } from '../src/model/demo.js';

const DEVICE = process.env.ADRANK_TEST_DEVICE ?? 'cpu';
const require = createRequire(import.meta.url);

function healthClient(address: string) {
  const def = protoLoader.loadSync('health/v1/health.proto', {
    includeDirs: [join(dirname(require.resolve('grpc-health-check/package.json')), 'proto')],
    enums: String,
    defaults: true,
  });
  const Health = (grpc.loadPackageDefinition(def) as any).grpc.health.v1.Health;
  return new Health(address, grpc.credentials.createInsecure());
}

function check(client: any, service = ''): Promise<string> {
  return new Promise((resolve, reject) => client.Check({ service }, (e: Error | null, r: { status: string }) => (e ? reject(e) : resolve(r.status))));
}

describe('51 server lifecycle', function () {
  this.timeout(120_000);
  let dir: string;
  let bundlePath: string;

  before(async function () {
    if (!addonBuilt()) this.skip();
    dir = mkdtempSync(join(tmpdir(), 'adrank-50l-'));
    bundlePath = join(dir, 'small.safetensors');
    await writeSmallBundle(bundlePath, 2000);
  });
  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  describe('in process', () => {
    let server: AdrankServer;
    let release: () => void;
    let health: any;

    beforeEach(async () => {
      // the model load waits for `release`, so the server is bound but not ready
      const gate = new Promise<void>((r) => (release = r));
      server = await AdrankServer.start({
        port: 0,
        engine: async () => {
          await gate;
          return Engine.load(bundlePath, { device: DEVICE, threads: 1 });
        },
        log: silentLogger,
        reflection: true,
      });
      health = healthClient(`localhost:${server.port}`);
    });
    afterEach(async () => {
      release();
      health.close();
      await server.ready.catch(() => {});
      await server.shutdown('test end');
    });

    it('health: NOT_SERVING while loading → SERVING when warmed → NOT_SERVING on shutdown', async () => {
      expect(await check(health)).to.equal('NOT_SERVING');
      expect(await check(health, 'adrank.v1.AdRanker')).to.equal('NOT_SERVING');
      const client = connect(`localhost:${server.port}`);
      try {
        const c = smallConfig();
        const err = await call(client, 'Rank', protoRequest(c, { candidateAdIds: ['1'] })).catch((e: grpc.ServiceError) => e);
        expect(grpc.status[(err as grpc.ServiceError).code]).to.equal('UNAVAILABLE');

        release();
        await server.ready;
        expect(await check(health)).to.equal('SERVING');
        expect(await check(health, 'adrank.v1.AdRanker')).to.equal('SERVING');
        // warm-up ran one request of each engine RPC
        expect(server.stats.engineCalls).to.deep.equal({ Retrieve: 1, Rank: 1, RetrieveAndRank: 1 });
      } finally {
        client.close();
      }

      // a watcher sees NOT_SERVING, then its stream ends so that the drain can finish
      const seen: string[] = [];
      const watch = health.Watch({ service: 'adrank.v1.AdRanker' });
      const ended = new Promise<void>((resolve) => {
        watch.on('data', (m: { status: string }) => {
          seen.push(m.status);
          if (m.status === 'SERVING') server.shutdown('test');
        });
        watch.on('end', resolve);
        watch.on('error', () => resolve());
      });
      await ended;
      await server.shutdown();
      expect(seen).to.deep.equal(['SERVING', 'NOT_SERVING']);
      expect(server.healthStatus).to.equal('NOT_SERVING');
      expect(server.engine).to.equal(undefined); // disposed
    });

    it('server reflection (--reflection) lists adrank.v1.AdRanker and the health service', async () => {
      release();
      await server.ready;
      const r = reflectionClient(`localhost:${server.port}`);
      try {
        const names = await new Promise<string[]>((resolve, reject) => {
          const s = r.ServerReflectionInfo();
          s.on('data', (m: any) => {
            resolve(m.list_services_response.service.map((x: { name: string }) => x.name));
            s.end();
          });
          s.on('error', reject);
          s.write({ list_services: '' });
        });
        expect(names).to.include.members(['adrank.v1.AdRanker', 'adrank.v1.AdRankerAdmin', 'grpc.health.v1.Health']);
      } finally {
        r.close();
      }
    });
  });

  describe('CLI server under SIGTERM', () => {
    let child: ChildProcess;
    afterEach(() => {
      if (child && child.exitCode === null) child.kill('SIGKILL');
    });

    it('in-flight calls complete OK, health goes NOT_SERVING, the process exits 0', async () => {
      // a heavier model than the other tests', so that each call takes a noticeable time
      const heavyPath = join(dir, 'heavy.safetensors');
      const c: ModelConfig = { ...smallConfig(), masknet: { blocks: 2, projection_ratio: 1, output_dim: 256 }, dcn: { layers: 3, rank: 0 } };
      await writeDemoBundle({ ads: 2000, seed: 3, out: heavyPath, config: c });
      const server = serveCli(['--bundle', heavyPath, '--port', '0', '--device', DEVICE, '--threads', '1', '--metrics-port', '0']);
      child = server.proc;
      const { events, event, exited } = server;

      const listening = await event('listening');
      const port = portOf(listening);
      await event('serving');

      const client = connect(`localhost:${port}`);
      const ids = adIds(await loadBundle(heavyPath));
      const loaded = await call<object, { numAds: string }>(client, 'GetModel', {});
      expect(loaded.numAds).to.equal('2000');
      const calls = Array.from({ length: 6 }, (_, i) => call<object, RankResponse__Output>(client, 'Rank', protoRequest(c, { requestId: `r${i}`, candidateAdIds: ids }), 60_000));
      // SIGTERM as soon as the first answer is back: the rest are still in flight
      await Promise.race(calls);
      child.kill('SIGTERM');
      const results = await Promise.allSettled(calls);
      client.close();
      expect(results.map((r) => r.status)).to.deep.equal(new Array(6).fill('fulfilled'));
      expect(await exited).to.equal(0);
      // one line per front-end thread (the connection is on one of them)
      const shutting = events.filter((e) => e.event === 'shutting_down');
      expect(shutting.map((e) => e.reason)).to.include('SIGTERM');
      expect(shutting.reduce((n, e) => n + e.inflight, 0), 'calls in flight at SIGTERM').to.be.greaterThan(0);
      const stopped = events.filter((e) => e.event === 'stopped');
      expect(stopped).to.not.be.empty;
      expect(stopped.map((e) => e.drained)).to.not.include(false);
    });
  });
});
