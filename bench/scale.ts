/**
 * Scale (bench/scale.md): one server per ad count of the demo config, CPU backend, measuring
 *   - the bundle's file size (and how long `demo-bundle` took to write it, when it had to);
 *   - time from start to SERVING; resident memory when serving; peak resident memory during a swap
 *     to a second version (VmHWM, reset just before the swap);
 *   - Retrieve(K = 100) median and p99 (sequential calls);
 *   - UpdateAdStates latency for batches of 1, 1,000 and 100,000 ads (fsync included), and the
 *     server's own apply and append-with-fsync times of the same batches (its log lines);
 *   - Rank traffic's p99 with no updates, then with an update loop running, and the updates/s that
 *     loop sustains: --rank-pairs such pairs, alternating; the pair with the median ratio is shown,
 *     every ratio after it.
 *
 *   npm run bench:scale -- [--ads 100000,1000000,10000000] [--dir /tmp/adrank-scale] [--threads 0]
 *        [--retrieves 200] [--rank-seconds 15] [--rank-concurrency 4] [--rank-candidates 100]
 *        [--rank-pairs 3] [--update-batch 1000] [--update-rate 5000] [--delete]
 *        [--device cpu|cuda] [--load-only]
 *
 * --device cuda serves on the GPU (scripts/gpu-check.sh runs it at 10M ads); --load-only stops after
 * the Retrieve calls: file size, time to SERVING, the server's own load time and device line
 * (`model_loaded`: loadMs, deviceReason, which on the GPU says how long the upload took), resident
 * memory, Retrieve p50 / p99; no updates, no Rank traffic, no swap (and no second bundle).
 *
 * Bundles are written once into --dir (version 1 with seed 1, version 2 with seed 2) and reused by
 * later runs; --delete removes them at the end. Run on a quiet machine: every figure is a latency.
 */
import * as grpc from '@grpc/grpc-js';
import { existsSync, linkSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { adminPackageDefinition } from '../src/admin/service.js';
import { startServer, type ServerProc } from '../src/bench/server-proc.js';
import { call, connect } from '../src/cli/client.js';
import { formatBytes } from '../src/cli/table.js';
import type { ProtoGrpcType } from '../src/generated/admin.js';
import type { AdRankerAdminClient } from '../src/generated/adrank/v1/AdRankerAdmin.js';
import type { GetModelResponse__Output } from '../src/generated/adrank/v1/GetModelResponse.js';
import { modelShape, sampleRank, sampleRetrieve } from '../src/handlers/sample.js';
import { binding } from '../src/engine/binding.js';
import { loadBundle } from '../src/model/bundle.js';
import { makeDemoConfig, writeDemoBundle } from '../src/model/demo.js';
import { Rng } from '../src/model/random.js';

function flag(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1] : def;
}
const sizes = flag('ads', '100000,1000000').split(',').map(Number);
const dir = flag('dir', join(tmpdir(), 'adrank-scale'));
const threads = flag('threads', '0');
const retrieves = Number(flag('retrieves', '200'));
const rankSeconds = Number(flag('rank-seconds', '15'));
const rankConcurrency = Number(flag('rank-concurrency', '4'));
const rankPairs = Number(flag('rank-pairs', '3'));
const rankCandidates = Number(flag('rank-candidates', '100'));
const updateBatch = Number(flag('update-batch', '1000'));
const updateRate = Number(flag('update-rate', '5000')); // ads/s the loop aims at during Rank traffic; 0 = back to back
const remove = process.argv.includes('--delete');
const device = flag('device', 'cpu');
const loadOnly = process.argv.includes('--load-only');
if (device !== 'cpu' && device !== 'cuda') throw new Error(`expected --device cpu or cuda, got ${JSON.stringify(device)}`);

const ms = (t0: number) => performance.now() - t0;
const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] : NaN;
};
const fmt = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));

function procStatus(pid: number, key: 'VmRSS' | 'VmHWM'): number {
  const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

function adminClient(address: string): AdRankerAdminClient {
  const proto = grpc.loadPackageDefinition(adminPackageDefinition()) as unknown as ProtoGrpcType;
  return new proto.adrank.v1.AdRankerAdmin(address, grpc.credentials.createInsecure());
}
function admin<Res>(c: AdRankerAdminClient, method: string, req: unknown, timeoutMs = 600_000): Promise<Res> {
  const fn = (c as unknown as Record<string, (r: unknown, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r?: unknown) => void) => void>)[method].bind(c);
  return new Promise((resolve, reject) => fn(req, { deadline: Date.now() + timeoutMs }, (e, r) => (e ? reject(e) : resolve(r as Res))));
}

async function ensureBundle(path: string, ads: number, seed: number): Promise<number | undefined> {
  if (existsSync(path)) return undefined;
  mkdirSync(join(path, '..'), { recursive: true });
  const t0 = performance.now();
  await writeDemoBundle({ ads, seed, out: `${path}.tmp` });
  const { renameSync } = await import('node:fs');
  renameSync(`${path}.tmp`, path);
  return ms(t0) / 1000;
}

interface Row {
  ads: number;
  fileBytes: number;
  writeS?: number;
  servingS: number;
  /** the server's `model_loaded` line: its own load time, and where the model runs and why */
  loadMs: number;
  deviceReason: string;
  rss: number;
  swapPeak: number;
  retrieveP50: number;
  retrieveP99: number;
  tableReadMs: number;
  update: Record<number, { p50: number; p99: number }>;
  /** of the same batches, from the server's ad_states_updated lines: the apply alone, and the append with its fsync (p50 ms) */
  apply: Record<number, { apply: number; write: number }>;
  rankP99Off: number;
  rankP99On: number;
  /** on / off of every pair, in order */
  rankRatios: number[];
  updatesPerS: number;
}

async function rankLoad(address: string, model: GetModelResponse__Output, ids: BigInt64Array, seconds: number, concurrency: number, rng: Rng): Promise<number[]> {
  const shape = modelShape(JSON.parse(model.configJson));
  const lat: number[] = [];
  const until = performance.now() + seconds * 1000;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      const client = connect(address);
      try {
        while (performance.now() < until) {
          const cands = Array.from({ length: rankCandidates }, () => String(ids[rng.int(0, ids.length - 1)]));
          const t0 = performance.now();
          await call(client, 'Rank', sampleRank(shape, cands, 10, rng.u32()), 60_000);
          lat.push(ms(t0));
        }
      } finally {
        client.close();
      }
    }),
  );
  return lat;
}

async function measure(ads: number): Promise<Row> {
  const repo = join(dir, String(ads));
  const v1 = join(repo, '1', 'model.safetensors');
  const v2src = join(dir, `${ads}-v2.safetensors`);
  const writeS = await ensureBundle(v1, ads, 1);
  if (!loadOnly) await ensureBundle(v2src, ads, 2);
  rmSync(join(repo, '2'), { recursive: true, force: true });
  const stateFile = join(dir, `${ads}.adstate`);
  rmSync(stateFile, { force: true });
  const fileBytes = statSync(v1).size;

  const t0 = performance.now();
  // load only: the bundle itself (its model_loaded line says where it runs and why); else the
  // repository that the swap adds a version to
  const source = loadOnly ? ['--bundle', v1] : ['--model-repository', repo, '--keep-versions', '1', '--repository-poll-ms', '0', '--admin-insecure', '--state-file', stateFile];
  const srv: ServerProc = await startServer(`scale-${ads}`, [...source, '--device', device, '--threads', threads], [], 900_000);
  const servingS = ms(t0) / 1000;
  const loaded = srv.lastEvent('model_loaded') ?? {};
  const pid = srv.child.pid!;
  const client = connect(srv.address);
  const adm = adminClient(srv.address);
  try {
    const model = await call<object, GetModelResponse__Output>(client, 'GetModel', {});
    const shape = modelShape(JSON.parse(model.configJson));
    const mapped = await loadBundle(v1);
    const ids = mapped.tensors['ads.id'] as BigInt64Array; // mapped: no copy of the ids
    // the reference for the scan: one parallel pass over the retrieval table (all hardware threads,
    // the pages already mapped: the best of 5 after a first touch)
    const table = mapped.tensors['ads.retrieval'] as Float32Array;
    let tableReadMs = Infinity;
    for (let i = 0; i < (device === 'cpu' ? 6 : 0); i++) {
      const t = performance.now();
      binding().firstNonFinite(table);
      if (i > 0) tableReadMs = Math.min(tableReadMs, ms(t));
    }
    const rng = new Rng(ads);

    // Retrieve(K = 100)
    const rlat: number[] = [];
    for (let i = 0; i < retrieves + 5; i++) {
      const t = performance.now();
      await call(client, 'Retrieve', sampleRetrieve(shape, 100, i + 1), 60_000);
      if (i >= 5) rlat.push(ms(t));
    }
    const rss = procStatus(pid, 'VmRSS');
    const base = {
      ads,
      fileBytes,
      writeS,
      servingS,
      loadMs: Number(loaded.loadMs ?? NaN),
      deviceReason: `${String(loaded.device ?? '?')}: ${String(loaded.deviceReason ?? '')}`,
      rss,
      retrieveP50: pct(rlat, 50),
      retrieveP99: pct(rlat, 99),
      tableReadMs,
    };
    if (loadOnly) return { ...base, swapPeak: NaN, update: {}, apply: {}, rankP99Off: NaN, rankP99On: NaN, rankRatios: [], updatesPerS: NaN };

    // UpdateAdStates of 1, 1,000, 100,000 ads
    const update: Row['update'] = {};
    const apply: Row['apply'] = {};
    let applied: { applyMs: number; writeMs: number }[] = [];
    srv.onEvent('ad_states_updated', (f) => applied.push({ applyMs: Number(f.applyMs), writeMs: Number(f.writeMs) }));
    for (const [n, reps] of [
      [1, 50],
      [1000, 30],
      [100_000, 5],
    ]) {
      if (n > ids.length) continue;
      const lat: number[] = [];
      applied = [];
      for (let r = 0; r < reps; r++) {
        const off = rng.int(0, ids.length - n);
        const updates = Array.from({ length: n }, (_, i) => ({ adId: String(ids[off + i]), pacingRate: 0.5 + 0.5 * rng.uniform() }));
        const t = performance.now();
        await admin(adm, 'UpdateAdStates', { updates });
        lat.push(ms(t));
      }
      update[n] = { p50: pct(lat, 50), p99: pct(lat, 99) };
      apply[n] = { apply: pct(applied.map((a) => a.applyMs), 50), write: pct(applied.map((a) => a.writeMs), 50) };
    }

    // Rank traffic without, then with, an update loop: --rank-pairs pairs, alternating, so that the
    // machine's drift between runs does not read as the updates' effect; the median pair is shown
    const pairs: { off: number; on: number; perS: number }[] = [];
    for (let pair = 0; pair < rankPairs; pair++) {
      const rankOff = await rankLoad(srv.address, model, ids, rankSeconds, rankConcurrency, rng);
      let updated = 0;
      let stop = false;
      const loop = (async () => {
        const start = performance.now();
        while (!stop) {
          const updates = Array.from({ length: updateBatch }, () => ({ adId: String(ids[rng.int(0, ids.length - 1)]), inBudget: rng.uniform() < 0.9 }));
          await admin(adm, 'UpdateAdStates', { updates });
          updated += updateBatch;
          // paced at --update-rate: the next batch is due when the rate allows it
          const due = updateRate > 0 ? start + (updated / updateRate) * 1000 : 0;
          if (due > performance.now()) await new Promise((r) => setTimeout(r, due - performance.now()));
        }
      })();
      const tOn = performance.now();
      const rankOn = await rankLoad(srv.address, model, ids, rankSeconds, rankConcurrency, rng);
      const onS = ms(tOn) / 1000;
      const done = updated;
      stop = true;
      await loop;
      pairs.push({ off: pct(rankOff, 99), on: pct(rankOn, 99), perS: done / onS });
      console.error(`scale: ${ads} ads, pair ${pair + 1}: Rank p99 ${fmt(pairs.at(-1)!.off)} → ${fmt(pairs.at(-1)!.on)} ms with ${Math.round(done / onS)} updates/s`);
    }
    const mid = [...pairs].sort((a, b) => a.on / a.off - b.on / b.off)[(pairs.length - 1) >> 1];

    // swap to version 2: the peak resident memory while both are loaded
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    mkdirSync(join(repo, '2'), { recursive: true });
    linkSync(v2src, join(repo, '2', 'model.safetensors'));
    await admin(adm, 'ReloadModels', {});
    for (let i = 0; i < 600; i++) {
      const l = await admin<{ defaultVersion: string }>(adm, 'ListModels', {});
      if (l.defaultVersion === '2') break;
      await new Promise((r) => setTimeout(r, 500));
    }
    await new Promise((r) => setTimeout(r, 2000)); // the old version is released
    const swapPeak = procStatus(pid, 'VmHWM');
    return {
      ...base,
      swapPeak,
      update,
      apply,
      rankP99Off: mid.off,
      rankP99On: mid.on,
      rankRatios: pairs.map((x) => x.on / x.off),
      updatesPerS: mid.perS,
    };
  } finally {
    client.close();
    adm.close();
    await srv.stop();
    rmSync(join(repo, '2'), { recursive: true, force: true });
    rmSync(stateFile, { force: true });
    if (remove) rmSync(repo, { recursive: true, force: true }), rmSync(v2src, { force: true });
  }
}

const cfg = makeDemoConfig();
console.log(`bench:scale: demo config ${cfg.name}, ${device === 'cpu' ? 'CPU' : 'CUDA'} backend, threads ${threads === '0' ? 'all' : threads}${loadOnly ? ', load only' : ''}; bundles in ${dir}`);
const rows: Row[] = [];
for (const n of sizes) {
  console.error(`scale: ${n} ads ...`);
  rows.push(await measure(n));
}
if (loadOnly) {
  console.log('| ads | bundle file | start → SERVING s | model_loaded loadMs | RSS serving (× file) | Retrieve K=100 p50 / p99 ms | device |');
  console.log('| ---: | ---: | ---: | ---: | ---: | ---: | --- |');
  for (const r of rows)
    console.log(
      `| ${r.ads.toLocaleString('en-US')} | ${formatBytes(r.fileBytes)}${r.writeS !== undefined ? ` (written in ${r.writeS.toFixed(1)} s)` : ''} | ${r.servingS.toFixed(1)} | ${fmt(r.loadMs)} | ${formatBytes(r.rss)} (${(r.rss / r.fileBytes).toFixed(2)}×) | ${fmt(r.retrieveP50)} / ${fmt(r.retrieveP99)} | ${r.deviceReason} |`,
    );
  process.exit(0);
}
const u = (r: Row, n: number) => (r.update[n] ? `${fmt(r.update[n].p50)} / ${fmt(r.update[n].p99)}` : '-');
console.log('| ads | bundle file | RSS serving (× file) | swap peak (× RSS) | start → SERVING s | Retrieve K=100 p50 / p99 ms (p50 / one read of the table) | UpdateAdStates 1 / 1,000 / 100,000: p50 / p99 ms | Rank p99 ms, updates off → on | updates/s during Rank (aimed at) |');
console.log('| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
const a = (r: Row, n: number) => (r.apply[n] ? `${fmt(r.apply[n].apply)} (${fmt(r.apply[n].write)})` : '-');
const printApply = () => {
  console.log('');
  console.log('| ads | UpdateAdStates 1 / 1,000 / 100,000: the apply alone, p50 ms (the append with its fsync, p50 ms) |');
  console.log('| ---: | ---: |');
  for (const r of rows) console.log(`| ${r.ads.toLocaleString('en-US')} | ${a(r, 1)}; ${a(r, 1000)}; ${a(r, 100_000)} |`);
};
for (const r of rows)
  console.log(
    `| ${r.ads.toLocaleString('en-US')} | ${formatBytes(r.fileBytes)}${r.writeS !== undefined ? ` (written in ${r.writeS.toFixed(1)} s)` : ''} | ${formatBytes(r.rss)} (${(r.rss / r.fileBytes).toFixed(2)}×) | ${formatBytes(r.swapPeak)} (${(r.swapPeak / r.rss).toFixed(2)}×) | ${r.servingS.toFixed(1)} | ${fmt(r.retrieveP50)} / ${fmt(r.retrieveP99)} (${(r.retrieveP50 / r.tableReadMs).toFixed(1)}× ${fmt(r.tableReadMs)} ms) | ${u(r, 1)}; ${u(r, 1000)}; ${u(r, 100_000)} | ${fmt(r.rankP99Off)} → ${fmt(r.rankP99On)} (${(r.rankP99On / r.rankP99Off).toFixed(2)}×; all pairs ${r.rankRatios.map((x) => x.toFixed(2)).join(', ')}) | ${Math.round(r.updatesPerS).toLocaleString('en-US')} (${updateRate > 0 ? updateRate.toLocaleString('en-US') : 'flat out'}) |`,
  );
printApply();
