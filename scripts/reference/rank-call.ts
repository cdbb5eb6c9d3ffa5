/**
 * Sends one Rank request (gRPC RankRequest as proto-loader JSON) to a running adrank server and
 * compares the served winners with PyTorch's answer (`python3 -m scripts.reference.cli example`
 * writes both files). The docs/export.md walk-through ends with this.
 *
 *   npx tsx scripts/reference/rank-call.ts --address localhost:50151 \
 *       --request DIR/rank-request.json --expected DIR/expected.json
 *
 * Exit status 0 when the winners are the same ads in the same order and every score, probability
 * and price is within 1e-4 relative (+1e-6 absolute) of PyTorch's; 1 otherwise.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { call, connect } from '../../src/cli/client.js';
import type { RankResponse__Output } from '../../src/generated/adrank/v1/RankResponse.js';

interface Expected {
  adIds: string[];
  scores: number[];
  probs: number[][];
  prices: number[];
}

const { values } = parseArgs({
  options: { address: { type: 'string', default: 'localhost:50151' }, request: { type: 'string' }, expected: { type: 'string' } },
});
if (!values.request || !values.expected) {
  console.error('usage: rank-call.ts --address HOST:PORT --request rank-request.json --expected expected.json');
  process.exit(2);
}
const request = JSON.parse(readFileSync(values.request, 'utf8')) as object;
const want = JSON.parse(readFileSync(values.expected, 'utf8')) as Expected;

const client = connect(values.address!);
const got = await call<object, RankResponse__Output>(client, 'Rank', request);
client.close();

/** |a − b| in units of the tolerance 1e-6 + 1e-4·|b| (≤ 1 passes; NaN when a value is missing) */
const err = (a: number, b: number) => Math.abs(a - b) / (1e-6 + 1e-4 * Math.abs(b));
let worst = 0;
let sameIds = got.winners.length === want.adIds.length;
console.log('#  ad_id                 served utility   PyTorch utility  served price  PyTorch price');
got.winners.forEach((w, i) => {
  sameIds &&= w.adId === want.adIds[i];
  worst = Math.max(worst, err(w.score, want.scores[i] ?? NaN), err(w.price ?? NaN, want.prices[i] ?? NaN));
  w.taskProbabilities.forEach((p, t) => (worst = Math.max(worst, err(p, want.probs[i]?.[t] ?? NaN))));
  console.log(
    `${String(i + 1).padEnd(3)}${w.adId.padEnd(22)}${w.score.toFixed(6).padStart(15)}${(want.scores[i] ?? NaN).toFixed(6).padStart(18)}` +
      `${(w.price ?? NaN).toFixed(6).padStart(14)}${(want.prices[i] ?? NaN).toFixed(6).padStart(15)}`,
  );
});
const ok = sameIds && worst <= 1;
console.log(`\nsame winners in the same order: ${sameIds}; worst difference / tolerance (scores, probabilities, prices): ${worst.toFixed(3)} → ${ok ? 'OK' : 'MISMATCH'}`);
process.exit(ok ? 0 : 1);
