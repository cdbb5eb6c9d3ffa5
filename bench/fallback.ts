/**
 * Fallback answer cost (docs/funnel.md "Fallback": ≤ 1 ms on the CPU for K = 100): the engine's
 * fallback for Rank, Retrieve and RetrieveAndRank on a demo bundle, K = 100, cap 2, measured as the
 * handler sees it (feature-bundle packing included), median and p99 over ITER calls.
 *
 *   npm run bench:fallback [-- --ads N]      (results: bench/RESULTS.md)
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Engine, type FallbackOp } from '../src/engine/index.js';
import { writeDemoBundle } from '../src/model/demo.js';
import { randomRequest } from '../src/features/random-request.js';
import { Rng } from '../src/model/random.js';

const ITER = Number(process.env.ITER ?? 2000);
const adsArg = process.argv.indexOf('--ads');
const ADS = adsArg > 0 ? Number(process.argv[adsArg + 1]) : 100_000;

const dir = mkdtempSync(join(tmpdir(), 'adrank-bench-fallback-'));
try {
  const path = join(dir, 'demo.safetensors');
  await writeDemoBundle({ ads: ADS, seed: 1, out: path });
  const engine = await Engine.load(path, { device: 'cpu', threads: 2 });
  await engine.prepareFallback();
  const rng = new Rng(7);
  console.log(`fallback answers, demo bundle of ${ADS} ads, K = 100, cap 2; ${cpus()[0]?.model ?? 'cpu'}; node ${process.version}; ${new Date().toISOString()}`);
  console.log('| op | candidates | median µs | p99 µs | winners |');
  console.log('| --- | ---: | ---: | ---: | ---: |');
  for (const [op, candidates] of [['rank', 1000], ['rank', 10000], ['retrieve', 0], ['retrieveAndRank', 0]] as [FallbackOp, number][]) {
    const r = randomRequest(rng, engine.bundle, { candidates: Math.max(candidates, 1) });
    Object.assign(r, { k: 100, cap: 2, price: op !== 'retrieve', retrieveCount: op === 'retrieveAndRank' ? 1000 : 0 });
    if (op !== 'rank') r.candidates = new BigInt64Array(0);
    const t: number[] = [];
    let winners = 0;
    for (let i = 0; i < ITER + ITER / 4; i++) {
      const t0 = performance.now();
      winners = engine.fallback(op, r).adIds.length;
      if (i >= ITER / 4) t.push((performance.now() - t0) * 1000);
    }
    t.sort((a, b) => a - b);
    console.log(`| ${op} | ${candidates || '—'} | ${t[t.length >> 1].toFixed(1)} | ${t[Math.floor(t.length * 0.99)].toFixed(1)} | ${winners} |`);
  }
  engine.dispose();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
