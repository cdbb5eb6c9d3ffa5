/**
 * The native engine against hostile input: feature bundles and model tensors crafted to break the
 * engine's size arithmetic or its funnel limits. Every case must end in a clear error or a correct
 * result, never a crash.
 */
import { expect } from 'chai';
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { binding, type NativeModelInit } from '../src/engine/binding.js';
import { nativeInit } from '../src/engine/index.js';
import type { ModelConfig } from '../src/model/config.js';
import { adId, config, N, pack, randomBundle } from './support/tiny-model.js';
const header = (u8: Uint8Array, word: number, v: number) => new DataView(u8.buffer, u8.byteOffset).setUint32(word * 4, v, true);

describe('26 engine against hostile input', () => {
  const native = binding();

  describe('model dims whose tensor sizes overflow 64 bits', () => {
    // cardinality · dim = 2^52 · 4096 = 2^64 ≡ 0: an empty table must not pass for [2^52, 4096].
    it('refuses a user sparse table whose element count wraps around', () => {
      // A consistent model with a [1, 4096] table, then the cardinality claimed to be 2^52.
      const wide: ModelConfig = { ...config, user_sparse: [{ name: 'topics', cardinality: 1, dim: 4096 }] };
      const b = randomBundle(7, wide);
      const ok: NativeModelInit = nativeInit(b, 'cpu', 1);
      new native.Engine(ok).dispose();
      const init: NativeModelInit = nativeInit(b, 'cpu', 1);
      init.dims.userSparseCardinality = [2 ** 52];
      init.tensors = { ...b.tensors, 'features.user_sparse.topics': new Float32Array(0) };
      expect(() => new native.Engine(init)).to.throw(/features\.user_sparse\.topics/);
    });

    it('refuses sequence.item when item_buckets · d_s wraps around', () => {
      const b = randomBundle();
      const init: NativeModelInit = nativeInit(b, 'cpu', 1);
      init.dims.seqItemBuckets = 2 ** 61; // · d_s = 8 → 2^64 ≡ 0
      init.tensors['sequence.item'] = new Float32Array(0);
      expect(() => new native.Engine(init)).to.throw(/sequence\.item|seqItemBuckets/);
    });

    it('refuses a non-integer or out-of-range seqItemBuckets', () => {
      const init: NativeModelInit = nativeInit(randomBundle(), 'cpu', 1);
      init.dims.seqItemBuckets = 13.5;
      expect(() => new native.Engine(init)).to.throw(/seqItemBuckets/);
      init.dims.seqItemBuckets = 1e300;
      expect(() => new native.Engine(init)).to.throw(/seqItemBuckets/);
    });
  });

  describe('feature bundles', () => {
    it('local mode with 2^32 - 1 partitions keeps ⌈K/P⌉ = 1 per partition (no 32-bit wrap)', async () => {
      const engine = new native.Engine(nativeInit(randomBundle(), 'cpu', 2));
      try {
        const global = await engine.rank(pack({ k: 5 }));
        const u8 = pack({ k: 5, mode: 1, partitions: 1 });
        header(u8, 6, 0xffffffff);
        const local = await engine.rank(u8);
        // Every candidate id is below P, so each sits alone in its partition: local = global.
        expect(Array.from(local.adIds)).to.deep.equal(Array.from(global.adIds));
        const u8b = pack({ k: 5, mode: 1, partitions: 1 });
        header(u8b, 6, 0x80000000);
        expect(Array.from((await engine.rank(u8b)).adIds)).to.deep.equal(Array.from(global.adIds));
      } finally {
        engine.dispose();
      }
    });
  });
  describe('environment teardown', () => {
    // A worker thread terminated with runs in flight tears its env down while napi calls fail;
    // that must never abort the process (docs/design.md §9: native exceptions never abort).
    it('survives worker.terminate() with rank calls in flight', async function () {
      this.timeout(120000);
      const addon = process.env.ADRANK_ADDON ?? fileURLToPath(new URL('../build/Release/adrank.node', import.meta.url));
      const src = `
        const { workerData, parentPort } = require('node:worker_threads');
        const native = require(workerData.addon);
        const e = new native.Engine(workerData.init);
        for (let i = 0; i < 30; i++) e.rank(workerData.big).catch(() => {});
        parentPort.postMessage('go');
        for (let i = 0; i < 3000; i++) e.rank(workerData.small).catch(() => {});
      `;
      const init = nativeInit(randomBundle(), 'cpu', 2);
      const big = pack({ candidates: BigInt64Array.from({ length: 20000 }, (_, i) => adId(i % N)) });
      const small = pack();
      for (let round = 0; round < 4; round++) {
        const w = new Worker(src, { eval: true, workerData: { addon, init, big, small } });
        await new Promise<void>((res, rej) => {
          w.once('message', () => res());
          w.once('error', rej);
        });
        await new Promise((r) => setTimeout(r, 4 * round));
        await w.terminate();
      }
    });
  });
});
