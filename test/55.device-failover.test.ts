/**
 * Device failover (docs/cuda.md "Errors"): a sticky device error (cudaErrorIllegalAddress, injected
 * through the test-hooks build of the addon) takes the server out of rotation, rebuilds the version
 * on the CPU backend from the bundle in memory, and serves from the new engine; one rebuild per
 * failed engine, however many requests hit the error.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'chai';
import { EngineError, Engine } from '../src/engine/index.js';
import { loadBinding } from '../src/engine/binding.js';
import { AdrankServer } from '../src/server/server.js';
import { call, connect } from '../src/cli/client.js';
import type { RankResponse__Output } from '../src/generated/adrank/v1/RankResponse.js';
import { demoLoaded } from './support/index.js';
import { protoRequest, smallConfig } from './50.server.helpers.js';
import { recordingLogger } from './support/server.js';

const hooksAddon = join(process.cwd(), 'build-test', 'Release', 'adrank.node');

describe('55 device failover', function () {
  this.timeout(120_000);

  it('classifies sticky CUDA errors (the context is poisoned) apart from others', () => {
    expect(new EngineError('CUDA error cudaErrorIllegalAddress: an illegal memory access was encountered', 'DEVICE').sticky).to.equal(true);
    expect(new EngineError('x.cu:12: cudaMemcpyAsync failed: cudaErrorECCUncorrectable (uncorrectable ECC error)', 'DEVICE').sticky).to.equal(true);
    expect(new EngineError('x.cu:9: cudaMalloc failed: cudaErrorMemoryAllocation (out of memory)', 'DEVICE').sticky).to.equal(false);
    expect(new EngineError('cudaErrorIllegalAddress', 'INTERNAL').sticky).to.equal(false);
  });

  it('a sticky error: NOT_SERVING, rebuilt on the CPU backend once, then served from the new engine', async function () {
    if (!existsSync(hooksAddon)) {
      console.log('      [55.device-failover] skipped: no test-hooks addon (build-test/); run `npm run build:test-hooks` (CI does)');
      this.skip();
    }
    const c = smallConfig();
    const hooked = Engine.fromBundle(demoLoaded({ ads: 300, seed: 3, config: c }), { device: 'cpu', threads: 1, binding: loadBinding(hooksAddon) });
    const log = recordingLogger();
    const server = await AdrankServer.start({ port: 0, engine: hooked, log, warmup: false });
    await server.ready;
    const health: string[] = [];
    const client = connect(`localhost:${server.port}`);
    try {
      const original = server.engine;
      expect(original).to.equal(hooked);
      const candidates = Array.from(hooked.bundle.tensors['ads.id'] as BigInt64Array, String).slice(0, 50);
      const req = (i: number) => ({ ...protoRequest(c, { requestId: `r${i}`, k: 5 }), candidateAdIds: candidates });

      // three requests hit the poisoned context at once: each is answered from the fallback
      hooked.injectDeviceErrors(3);
      const watch = setInterval(() => health.push(server.healthStatus), 1);
      const hit = await Promise.all([0, 1, 2].map((i) => call<object, RankResponse__Output>(client, 'Rank', req(i))));
      for (const r of hit) expect([r.fallback, r.fallbackReason]).to.deep.equal([true, 'ENGINE_ERROR']);
      await server.failover.settled();
      clearInterval(watch);

      expect(health, 'out of rotation while rebuilding').to.include('NOT_SERVING');
      expect(server.healthStatus).to.equal('SERVING');
      expect(log.events.filter((e) => e.event === 'device_failed'), 'one rebuild per failed engine').to.have.length(1);
      expect(log.events.some((e) => e.event === 'device_failover_done')).to.equal(true);
      const next = server.engine!;
      expect(next).to.not.equal(hooked);
      expect(next.backend).to.equal('cpu');

      // the failed engine is out of the path: errors injected into it no longer reach requests
      hooked.injectDeviceErrors(5);
      const after = await call<object, RankResponse__Output>(client, 'Rank', req(9));
      expect(after.fallback).to.equal(false);
      expect(after.winners).to.have.length(5);
      expect(after.winners[0].taskProbabilities).to.have.length(c.tasks.length);
    } finally {
      client.close();
      await server.shutdown();
    }
  });
});
