#!/usr/bin/env node
// One Rank, one Retrieve and one RetrieveAndRank on the CUDA backend, from the compiled dist/:
// what scripts/gpu-check.sh runs under compute-sanitizer (memcheck) to check the addon's own
// launches, copies and ad-state upload. Prints the winners' counts; exit 1 on any error.
//   node scripts/gpu-one-request.mjs [device]      (default cuda:0)
import { Engine } from '../dist/src/engine/index.js';
import { makeDemoBundle } from '../dist/src/model/demo.js';
import { bundleMetadata, parseBundle } from '../dist/src/model/bundle.js';
import { encodeSafetensors } from '../dist/src/model/safetensors.js';
import { Rng } from '../dist/src/model/random.js';
import { randomRequest } from '../dist/src/features/random-request.js';

const device = process.argv[2] ?? 'cuda:0';
const demo = makeDemoBundle({ ads: 20000, seed: 3 });
const b = parseBundle(encodeSafetensors(demo.tensors, bundleMetadata(demo.config)), '<gpu-one-request>');
const engine = Engine.fromBundle(b, { device });
try {
  const ids = b.tensors['ads.id'];
  const pick = ids.slice(0, 500);
  engine.setAdState(pick, new Uint8Array(500).fill(1), new Uint8Array(500).fill(1), new Float32Array(500).fill(0.5));
  const rng = new Rng(1);
  const req = randomRequest(rng, b, { candidates: 1000, k: 100, cap: 1 });
  const r = await engine.rank(req);
  const rt = await engine.retrieve({ ...req, candidates: new BigInt64Array(0), k: 200 });
  const rr = await engine.retrieveAndRank({ ...req, candidates: new BigInt64Array(0), k: 20, retrieveCount: 1000 });
  console.log(JSON.stringify({ backend: engine.backend, rank: r.adIds.length, capped: r.counts.capped, retrieve: rt.adIds.length, retrieveAndRank: rr.adIds.length }));
} finally {
  engine.dispose();
}
