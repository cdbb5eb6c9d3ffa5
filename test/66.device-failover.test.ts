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

describe('66 device failover', function () {
  this.timeout(120_000);

  it('classifies sticky CUDA errors (the context is poisoned) apart from others', () => {
    expect(new EngineError('CUDA error cudaErrorIllegalAddress: an illegal memory access was encountered', 'DEVICE').sticky).to.equal(true);
    expect(new EngineError('x.cu:12: cudaMemcpyAsync failed: cudaErrorECCUncorrectable (uncorrectable ECC error)', 'DEVICE').sticky).to.equal(true);
    expect(new EngineError('x.cu:9: cudaMalloc failed: cudaErrorMemoryAllocation (out of memory)', 'DEVICE').sticky).to.equal(false);
    expect(new EngineError('cudaErrorIllegalAddress', 'INTERNAL').sticky).to.equal(false);
    // the CUDA backend's watchdog: the hung work still holds its stream and buffers
    expect(new EngineError('CUDA stream hung: cuda:0 did not finish a request within 10000 ms (ADRANK_CUDA_WATCHDOG_MS); its stream is abandoned and the device treated as failed', 'DEVICE').sticky).to.equal(true);
    expect(new EngineError('x.cu:3: kernel failed: the CUDA stream hung once', 'DEVICE').sticky).to.equal(false);
  });

  describe('the CUDA completion wait and its watchdog (native engine/completion.h, test-hooks build)', () => {
    const wait = (signalAfterMs: number, limitMs: number, pollFaultAfterMs = -1) => {
      const hooks = loadBinding(hooksAddon);
      if (!hooks.completionWait) throw new Error('the test-hooks addon has no completionWait');
      return hooks.completionWait(signalAfterMs, limitMs, pollFaultAfterMs);
    };
    beforeEach(function () {
      if (!existsSync(hooksAddon)) {
        console.log('      [66.device-failover] skipped: no test-hooks addon (build-test/); run `npm run build:test-hooks` (CI does)');
        this.skip();
      }
    });

    it('returns when the work finishes, well before the limit', () => {
      const r = wait(30, 5_000);
      expect(r.outcome).to.equal('finished');
      expect(r.waitedMs).to.be.at.least(25).and.below(1_000);
      expect(r.released).to.equal(true);
    });

    it('gives up at the limit when the work never finishes (a hung stream)', () => {
      const r = wait(-1, 80);
      expect(r.outcome).to.equal('hung');
      expect(r.waitedMs).to.be.at.least(78).and.below(1_000);
    });

    it('a signal after the waiter gave up lands on live state, which is then freed once', () => {
      const r = wait(250, 40);
      expect(r.outcome).to.equal('hung');
      expect(r.waitedMs).to.be.below(240);
      expect(r.released, 'the late signaller held the last reference and freed it').to.equal(true);
    });

    it('a device fault seen by the poll ends the wait with that error, not a hang', () => {
      const r = wait(-1, 60_000, 40);
      expect(r.outcome).to.equal('error');
      expect(r.error).to.match(/cudaErrorIllegalAddress/);
      expect(r.waitedMs).to.be.below(2_000);
    });

    it('backend faults are the CUDA backend\'s own: the CPU backend refuses them by name, and reports no device counters', () => {
      const engine = Engine.fromBundle(demoLoaded({ ads: 50, seed: 4, config: smallConfig() }), { device: 'cpu', threads: 1, binding: loadBinding(hooksAddon) });
      try {
        expect(() => engine.injectBackendFault('capture', 1)).to.throw(/the cpu backend has no fault "capture" to inject/);
        expect(engine.deviceStats()).to.deep.equal({ graphs: 0, captureFailures: 0, eagerOnlyKeys: 0, lostStreams: 0, streams: 0 });
      } finally {
        engine.dispose();
      }
    });

    it('no limit (ADRANK_CUDA_WATCHDOG_MS=0) waits for the work however long it takes', () => {
      const r = wait(150, 0);
      expect(r.outcome).to.equal('finished');
      expect(r.waitedMs).to.be.at.least(140);
    });
  });

  for (const kind of ['illegal-address', 'hung'] as const) {
    it(`a sticky error (${kind}): NOT_SERVING, rebuilt on the CPU backend once, then served from the new engine`, async function () {
      if (!existsSync(hooksAddon)) {
        console.log('      [66.device-failover] skipped: no test-hooks addon (build-test/); run `npm run build:test-hooks` (CI does)');
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
        hooked.injectDeviceErrors(3, kind);
        const watch = setInterval(() => health.push(server.healthStatus), 1);
        const hit = await Promise.all([0, 1, 2].map((i) => call<object, RankResponse__Output>(client, 'Rank', req(i))));
        for (const r of hit) expect([r.fallback, r.fallbackReason]).to.deep.equal([true, 'ENGINE_ERROR']);
        await server.failover.settled();
        clearInterval(watch);

        expect(health, 'out of rotation while rebuilding').to.include('NOT_SERVING');
        expect(server.healthStatus).to.equal('SERVING');
        const failed = log.events.filter((e) => e.event === 'device_failed');
        expect(failed, 'one rebuild per failed engine').to.have.length(1);
        expect((failed[0].error as Error).message).to.match(kind === 'hung' ? /^CUDA stream hung: / : /cudaErrorIllegalAddress/);
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
  }
});
