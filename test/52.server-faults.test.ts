/**
 * Server faults over real gRPC on localhost:0: the in-flight bound after many failing calls
 * (it must not leak capacity), and server options that must not stop the server from starting.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs';
import { Engine } from '../src/engine/index.js';
import { AdrankServer } from '../src/server/server.js';
import { silentLogger } from '../src/log.js';
import { loadProto } from '../src/wire/proto.js';
import { call, connect } from '../src/cli/client.js';
import type { RankResponse__Output } from '../src/generated/adrank/v1/RankResponse.js';
import type { ModelConfig } from '../src/model/config.js';
import { addonBuilt } from './support/index.js';
import { adIds, http2Call, protoRequest, rawClient, smallConfig, writeSmallBundle } from './50.server.helpers.js';

const DEVICE = process.env.ADRANK_TEST_DEVICE ?? 'cpu';

describe('52 server faults', function () {
  this.timeout(120_000);
  let dir: string;
  let bundlePath: string;
  let c: ModelConfig;
  let ids: string[];

  before(async function () {
    if (!addonBuilt()) this.skip();
    dir = mkdtempSync(join(tmpdir(), 'adrank-52-'));
    bundlePath = join(dir, 'small.safetensors');
    await writeSmallBundle(bundlePath, 2000);
    c = smallConfig();
    const e = await Engine.load(bundlePath, { device: DEVICE, threads: 1 });
    ids = adIds(e.bundle);
    e.dispose();
  });
  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  describe('in-flight bound after failures', () => {
    const MAX = 3;
    let server: AdrankServer;
    beforeEach(async () => {
      server = await AdrankServer.start({ port: 0, engine: () => Engine.load(bundlePath, { device: DEVICE, threads: 1 }), maxInflight: MAX, warmup: false, log: silentLogger });
      await server.ready;
    });
    afterEach(async () => {
      await server.shutdown('test end');
    });

    it('many failing and cancelled calls leave the bound at full capacity', async () => {
      const address = `localhost:${server.port}`;
      const client = connect(address);
      const raw = rawClient(address, 'Rank');
      try {
        const type = loadProto().root.lookupType('adrank.v1.RankRequest');
        const good = type.encode(type.fromObject(protoRequest(c, { candidateAdIds: ids })) as protobuf.Message).finish();
        for (let round = 0; round < 5; round++) {
          const failing: Promise<unknown>[] = [
            call(client, 'Rank', protoRequest(c, { k: 0 })), // INVALID_ARGUMENT
            call(client, 'Rank', protoRequest(c, { modelVersion: 'nope' })), // NOT_FOUND
            call(client, 'RetrieveAndRank', protoRequest(c, { k: 50, retrieveCount: 10 })), // INVALID_ARGUMENT
            call(client, 'Retrieve', protoRequest(c, { ranking: { mode: 'LOCAL', partitions: 2 } })), // INVALID_ARGUMENT
            raw.send(Buffer.from([0x7a, 0x05, 0x80, 0x80])), // INTERNAL (malformed)
            http2Call(server.port, 'Rank', good, '1n'), // DEADLINE_EXCEEDED
          ];
          // calls the client cancels while the engine works on them
          for (let i = 0; i < 2; i++) {
            const m = (client as unknown as Record<string, (r: object, cb: (e: unknown) => void) => grpc.ClientUnaryCall>).Rank.bind(client);
            const cancelled = new Promise<void>((resolve) => {
              const cc = m(protoRequest(c, { candidateAdIds: ids }), () => resolve());
              setTimeout(() => cc.cancel(), 1);
            });
            failing.push(cancelled);
          }
          await Promise.allSettled(failing);
        }
        // cancelled calls finish their engine work in the background
        for (let t = 0; t < 200 && server.inflight !== 0; t++) await new Promise((r) => setTimeout(r, 10));
        expect(server.inflight).to.equal(0);
        // all MAX concurrent calls are admitted
        const results = await Promise.allSettled(Array.from({ length: MAX }, () => call<object, RankResponse__Output>(client, 'Rank', protoRequest(c, { candidateAdIds: ids }))));
        expect(results.map((r) => (r.status === 'fulfilled' ? 'OK' : grpc.status[(r.reason as grpc.ServiceError).code]))).to.deep.equal(new Array(MAX).fill('OK'));
      } finally {
        raw.close();
        client.close();
      }
    });
  });

  describe('server options', () => {
    it('starts (warm-up included) with --max-candidates below the warm-up Rank size', async () => {
      const server = await AdrankServer.start({ port: 0, engine: () => Engine.load(bundlePath, { device: DEVICE, threads: 1 }), maxCandidates: 100, log: silentLogger });
      try {
        await server.ready;
        expect(server.healthStatus).to.equal('SERVING');
        const client = connect(`localhost:${server.port}`);
        try {
          const r = await call<object, RankResponse__Output>(client, 'Rank', protoRequest(c, { candidateAdIds: ids.slice(0, 100), k: 5 }));
          expect(r.winners).to.have.length(5);
        } finally {
          client.close();
        }
      } finally {
        await server.shutdown('test end');
      }
    });
  });
});
