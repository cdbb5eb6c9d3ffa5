/**
 * Batching efficiency at the engine, without gRPC or the front end: CPU time (process.cpuUsage,
 * all threads) and wall time of one batch of 16 Rank(10) (Engine.runBatch) against one Rank(160)
 * and 16 separate Rank(10), on the demo bundle, interleaved round by round.
 *
 *   node --import tsx bench/batch-engine.ts [bundle] [rounds]     (results: bench/load.md)
 *   PRECISION=bf16 (environment) runs the bf16 GEMMs; default fp32
 */
import { Engine } from '../src/engine/index.js';
import { randomRequest } from '../src/features/random-request.js';
import { Rng } from '../src/model/random.js';

const path = process.argv[2] ?? 'demo/adrank-demo.safetensors';
const rounds = Number(process.argv[3] ?? 5);
const REPS = 10;

const engine = await Engine.load(path, { device: 'cpu', precision: (process.env.PRECISION as 'fp32' | 'bf16' | undefined) ?? 'fp32' });
const rng = new Rng(5);
const mk = (n: number) => engine.pack({ ...randomRequest(rng, engine.bundle, { candidates: n, seqLen: 8 }), k: 10 });
const small = Array.from({ length: 16 }, () => mk(10));
const big = mk(160);
const ops = new Uint8Array(16);

async function measure(fn: () => Promise<unknown>): Promise<{ cpuMs: number; wallMs: number }> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < REPS; i++) await fn();
  const c = process.cpuUsage(c0);
  return { cpuMs: (c.user + c.system) / 1000 / REPS, wallMs: (performance.now() - t0) / REPS };
}

console.log(`${engine.description}; ${rounds} rounds of ${REPS} runs each; ms per run`);
console.log('| round | batch of 16 × Rank(10): wall / CPU | Rank(160): wall / CPU | 16 × Rank(10) one by one: CPU | CPU of Rank(160) / batch | CPU of 16 alone / batch |');
console.log('| ---: | ---: | ---: | ---: | ---: | ---: |');
for (let round = 1; round <= rounds; round++) {
  const b = await measure(() => engine.runBatch(ops, small));
  const r160 = await measure(() => engine.runBatch(new Uint8Array(1), [big])); // a batch of one = a request alone
  const r10 = await measure(async () => {
    for (const s of small) await engine.runBatch(new Uint8Array(1), [s]);
  });
  console.log(`| ${round} | ${b.wallMs.toFixed(1)} / ${b.cpuMs.toFixed(1)} | ${r160.wallMs.toFixed(1)} / ${r160.cpuMs.toFixed(1)} | ${r10.cpuMs.toFixed(1)} | ${(r160.cpuMs / b.cpuMs).toFixed(2)} | ${(r10.cpuMs / b.cpuMs).toFixed(2)} |`);
}
engine.dispose();
