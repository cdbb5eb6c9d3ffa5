#!/usr/bin/env node
// The engine side of scripts/gpu-check.sh's before/after table: whole requests through the addon on
// cuda:0, one at a time, from the compiled dist/. The switches of docs/cuda.md "Settings" are read
// from the environment when the engine is built, and the GEMM tile policy once per process, so
// gpu-check runs this script once per path (old, new) in separate processes.
//
//   node scripts/gpu-bench.mjs --path NAME --dir DIR [--reps 200] [--rank-ads 100000]
//                              [--retrieve-ads 1000000,10000000] [--write] [--device cuda:0]
//
// --write makes the bundles and requests first (DIR/rank.safetensors, DIR/retrieve-N.safetensors,
// DIR/requests.json: EngineRequest JSON, the form scripts/reference reads), so the PyTorch peer
// (scripts/gpu-peer-rank.py) runs the same bundle on the same inputs; without it they are read.
// Prints one "RESULT {json}" line per size: the median GPU time of the request from its start to
// its end event (timings.device), the median wall time of the call, the median stage times, and a
// digest of every answer (ids, scores to 1e-4, prices, counts) that must match between paths.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Engine } from '../dist/src/engine/index.js';
import { makeDemoBundle } from '../dist/src/model/demo.js';
import { bundleMetadata, parseBundle } from '../dist/src/model/bundle.js';
import { encodeSafetensors } from '../dist/src/model/safetensors.js';
import { Rng } from '../dist/src/model/random.js';
import { randomRequest } from '../dist/src/features/random-request.js';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
};
const path = arg('path', 'old');
const dir = arg('dir', '/tmp/adrank-gpu-bench');
const reps = Number(arg('reps', '200'));
const rankAds = Number(arg('rank-ads', '100000'));
const retrieveAds = arg('retrieve-ads', '1000000').split(',').filter(Boolean).map(Number);
const write = process.argv.includes('--write');
const device = arg('device', 'cuda:0');  // cpu: a dry run of this script where there is no GPU
const RANK_SIZES = [100, 1000, 10000];
mkdirSync(dir, { recursive: true });

// EngineRequest → JSON: int64 as decimal strings, typed arrays as plain arrays.
const toJson = (v) => {
  if (typeof v === 'bigint') return v.toString();
  if (v instanceof BigInt64Array || v instanceof BigUint64Array) return Array.from(v, (x) => x.toString());
  if (ArrayBuffer.isView(v)) return Array.from(v);
  if (Array.isArray(v)) return v.map(toJson);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, toJson(x)]));
  return v;
};
const fromJson = (j, like) => {
  const out = {};
  for (const [k, v] of Object.entries(j)) {
    const t = like[k];
    if (t instanceof BigInt64Array) out[k] = BigInt64Array.from(v, (x) => BigInt(x));
    else if (Array.isArray(t) && t.length && t[0] instanceof BigInt64Array) out[k] = v.map((a) => BigInt64Array.from(a, (x) => BigInt(x)));
    else if (t instanceof Float32Array) out[k] = Float32Array.from(v);
    else if (ArrayBuffer.isView(t)) out[k] = new t.constructor(v);
    else out[k] = v;
  }
  return out;
};

function bundleFile(name, make) {
  const file = join(dir, name);
  if (write || !existsSync(file)) {
    const demo = make();
    writeFileSync(file, encodeSafetensors(demo.tensors, bundleMetadata(demo.config)));
  }
  return parseBundle(readFileSync(file), name);
}

const t0 = Date.now();
const rankBundle = bundleFile('rank.safetensors', () => makeDemoBundle({ ads: rankAds, seed: 11 }));
// The requests: drawn once (--write), stored as JSON, read back by every path and by the peer.
const reqFile = join(dir, 'requests.json');
let requests;
const rng = new Rng(5);
const templates = {};
for (const n of RANK_SIZES) templates[`rank-${n}`] = randomRequest(rng, rankBundle, { candidates: n, k: 100, cap: 0, seqLen: 20 });
templates['rank-1000-cap2'] = randomRequest(rng, rankBundle, { candidates: 1000, k: 100, cap: 2, seqLen: 20 });
templates.retrieve = { ...randomRequest(rng, rankBundle, { candidates: 1, k: 1000, cap: 0, seqLen: 20 }), candidates: new BigInt64Array(0) };
if (write || !existsSync(reqFile)) {
  requests = templates;
  writeFileSync(reqFile, JSON.stringify(Object.fromEntries(Object.entries(requests).map(([k, r]) => [k, toJson(r)]))));
} else {
  const j = JSON.parse(readFileSync(reqFile, 'utf8'));
  requests = Object.fromEntries(Object.entries(j).map(([k, r]) => [k, fromJson(r, templates[k])]));
}
console.log(`bundles and requests ready in ${((Date.now() - t0) / 1000).toFixed(1)} s (${dir})`);

const median = (a) => {
  const s = [...a].sort((x, y) => x - y);
  return s.length ? s[s.length >> 1] : NaN;
};
const digest = (r) => {
  const h = createHash('sha256');
  h.update(Array.from(r.adIds, String).join(','));
  h.update(Array.from(r.scores ?? [], (x) => x.toPrecision(4)).join(','));
  h.update(Array.from(r.prices ?? [], (x) => x.toPrecision(4)).join(','));
  h.update(JSON.stringify(r.counts ?? {}));
  return h.digest('hex').slice(0, 16);
};

async function measure(engine, name, call, extra) {
  for (let i = 0; i < 5; i++) await call(); // eager, capture, replays
  const dev = [], wall = [], stages = {};
  let d = null, same = true;
  for (let i = 0; i < reps; i++) {
    const a = process.hrtime.bigint();
    const r = await call();
    wall.push(Number(process.hrtime.bigint() - a) / 1e3);
    dev.push(r.timings?.device ?? NaN);
    for (const [k, v] of Object.entries(r.timings ?? {})) (stages[k] ??= []).push(v);
    const g = digest(r);
    if (d !== null && g !== d) same = false;
    d = g;
  }
  const st = Object.fromEntries(Object.entries(stages).map(([k, v]) => [k, Math.round(median(v) * 10) / 10]));
  console.log('RESULT ' + JSON.stringify({ name, path, ...extra, device_us: Math.round(median(dev) * 10) / 10,
    wall_us: Math.round(median(wall) * 10) / 10, reps, digest: d, repeatable: same, stages: st }));
}

async function run() {
  const engine = Engine.fromBundle(rankBundle, { device });
  console.log(`path ${path}: ${engine.backend}: ${engine.description}`);
  try {
    for (const n of RANK_SIZES) await measure(engine, 'rank', () => engine.rank(requests[`rank-${n}`]), { n, k: 100 });
    await measure(engine, 'rank_cap2', () => engine.rank(requests['rank-1000-cap2']), { n: 1000, k: 100, cap: 2 });
  } finally {
    engine.dispose();
  }
  for (const N of retrieveAds) {
    let b;
    try {
      b = bundleFile(`retrieve-${N}.safetensors`, () => makeDemoBundle({ ads: N, seed: 12, retrievalDtype: 'BF16' }));
    } catch (e) {
      console.log(`retrieve N=${N}: no bundle (${e.message})`);
      continue;
    }
    const e = Engine.fromBundle(b, { device });
    try {
      await measure(e, 'retrieve', () => e.retrieve(requests.retrieve), { N, k: 1000 });
    } finally {
      e.dispose();
    }
  }
}
await run();
