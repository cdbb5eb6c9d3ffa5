/**
 * Ranks 1,000 candidates of a random request through the addon and prints the top 10 with their
 * calibrated probabilities and GSP prices, then the median time of 20 rank calls.
 *
 *   npx adrank demo-bundle --out demo/adrank-demo.safetensors
 *   npx tsx scripts/rank-demo.ts demo/adrank-demo.safetensors [--device cpu] [--candidates 1000]
 */
import { Engine } from '../src/engine/index.js';
import { randomRequest } from '../src/features/random-request.js';
import { Rng } from '../src/model/random.js';

const args = process.argv.slice(2);
const flag = (name: string, dflt: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const path = args.find((a, i) => !a.startsWith('--') && !(i > 0 && args[i - 1].startsWith('--'))) ?? 'demo/adrank-demo.safetensors';
const engine = await Engine.load(path, { device: flag('device', 'auto') });
const c = engine.config;
console.log(`model ${c.name} v${c.version}, ${engine.numAds} ads, backend ${engine.description} (${engine.deviceReason})`);

const rng = new Rng(Number(flag('seed', '7')));
const request = {
  ...randomRequest(rng, engine.bundle, { candidates: Number(flag('candidates', '1000')), k: 10, cap: 2, seqLen: 16, sparseLen: 3 }),
  // an all-known targeting context, so targeting drops only what is targeted elsewhere
  targeting: Uint32Array.from(c.targeting_dims, () => 0),
  surface: 0,
};
const result = await engine.rank(request);

const pad = (s: string, n: number) => s.padStart(n);
console.log(`\n${pad('#', 3)} ${pad('ad id', 20)} ${pad('advertiser', 20)} ${pad('utility', 10)} ${c.tasks.map((t) => pad(t, 11)).join(' ')} ${pad('price', 9)}`);
for (let i = 0; i < result.adIds.length; i++) {
  const probs = Array.from(result.probs.subarray(i * c.tasks.length, (i + 1) * c.tasks.length), (p) => pad(p.toFixed(4), 11));
  console.log(`${pad(String(i + 1), 3)} ${pad(String(result.adIds[i]), 20)} ${pad(String(result.advertisers[i]), 20)} ${pad(result.scores[i].toFixed(5), 10)} ${probs.join(' ')} ${pad(result.prices[i].toFixed(5), 9)}`);
}
const k = result.counts;
console.log(`\ncounts: received ${k.received}, unknown ${k.unknown}, duplicate ${k.duplicate}, targeting ${k.targeting}, eligible ${k.eligible}, capped ${k.capped}`);

const times: number[] = [];
for (let i = 0; i < 20; i++) {
  const t0 = process.hrtime.bigint();
  await engine.rank(request);
  times.push(Number(process.hrtime.bigint() - t0) / 1e6);
}
times.sort((a, b) => a - b);
console.log(`rank of ${request.candidates.length} candidates: median ${((times[9] + times[10]) / 2).toFixed(2)} ms over 20 calls (min ${times[0].toFixed(2)}, max ${times[19].toFixed(2)})`);
engine.dispose();
