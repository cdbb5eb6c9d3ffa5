/**
 * `npm run bench:frontend -- --served`: the front end as served, from this process as the client
 * and the servers as child processes (never sharing an event loop with the client):
 *
 *  1. server CPU per call, Rank(10) on a tiny model (engine ≤ 20 µs), against a bare grpc-js
 *     server answering the same methods with fixed bytes (bench/bare-server.ts; the bytes are an
 *     answer of the adrank server) and, as the floor under it, a bare node:http2 server doing the
 *     same (bench/bare-http2.ts); same client, same run, alternating run by run;
 *     target: adrank ≤ 1.3× the bare grpc-js server;
 *  2. served overhead (total_us − engine_total_us, the server's own timings), concurrency 1,
 *     Rank(10) and Rank(1,000) on the demo bundle; target ≤ 100 µs;
 *  3. Rank(10) at concurrency 16 on the demo bundle, batching on (--batch-max-delay-us 200) and off
 *     (0), alternating; target: on ≥ 1.6× off.
 *
 * DURATION (s, default 10), WARMUP (s, default 2), REPEAT (runs per cell, default 3), ADS (demo
 * bundle ads, default 100,000), SERVE_FLAGS (added to every adrank server, e.g. "--threads 2"),
 * PARTS (which of 1, 2, 3 to run, e.g. "1" or "2,3"; default all).
 * The lines it prints are the figures for bench/load.md.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { extname, join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { writeDemoBundle, makeDemoConfig } from '../src/model/demo.js';
import type { ModelConfig } from '../src/model/config.js';
import { loadProto } from '../src/wire/proto.js';
import { runLoad, type LoadResult } from '../src/bench/load.js';
import { buildPool, type MixEntry } from '../src/bench/requests.js';
import { adIdsFrom } from '../src/bench/command.js';
import { splitFlags, startProcess, startServer, type ServerProc } from '../src/bench/server-proc.js';

const DURATION = Number(process.env.DURATION ?? 10);
const WARMUP = Number(process.env.WARMUP ?? 2);
const REPEAT = Number(process.env.REPEAT ?? 3);
const ADS = Number(process.env.ADS ?? 100_000);
const SERVE_FLAGS = splitFlags(process.env.SERVE_FLAGS ?? '');
const PARTS = new Set((process.env.PARTS ?? '1,2,3').split(',').map(Number));

/** A model whose Rank(10) takes the engine well under 20 µs: the demo's shape, every width small. */
function tinyConfig(): ModelConfig {
  const c = makeDemoConfig();
  return {
    ...c,
    name: 'adrank-tiny',
    user_sparse: c.user_sparse.slice(0, 1).map((f) => ({ ...f, dim: 4 })),
    ad_sparse: c.ad_sparse.slice(0, 1).map((f) => ({ ...f, dim: 4 })),
    user_embedding_dim: 8,
    ad_embedding_dim: 8,
    surface_dim: 4,
    sequence: { ...c.sequence, max_len: 4, dim: 8, heads: 2, ffn_dim: 16, layers: 1 },
    masknet: { blocks: 1, projection_ratio: 0.5, output_dim: 8 },
    dcn: { layers: 1, rank: 0 },
    mlp: [8],
    retrieval: { dim: 8, hidden: [8] },
  };
}

interface Target {
  name: string;
  proc: ServerProc;
  clients: grpc.Client[];
}

function clientsFor(address: string): grpc.Client[] {
  return [new grpc.Client(address, grpc.credentials.createInsecure())];
}

/** One measured run; the server's CPU over warm-up + measurement per OK call, in µs. */
async function run(t: Target, mix: MixEntry[], pool: Parameters<typeof runLoad>[3], concurrency: number): Promise<LoadResult & { cpuUsPerCall: number }> {
  const { root } = loadProto();
  const cpu0 = t.proc.cpuSeconds();
  const r = await runLoad(t.clients, root, mix, pool, { concurrency, durationS: DURATION, warmupS: WARMUP, deadlineMs: 10_000, label: t.name });
  const cpu1 = t.proc.cpuSeconds();
  const errors = Object.entries(r.errors);
  if (errors.length) throw new Error(`${t.name}: calls failed: ${errors.map(([k, v]) => `${k} ${v}`).join(', ')}`);
  return { ...r, cpuUsPerCall: ((cpu1 - cpu0) * 1e6) / (r.ok * (1 + WARMUP / DURATION)) };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[(xs.length - 1) >> 1];

/** The raw answer of `address` to one encoded request (the bare server's fixed bytes). */
function rawCall(address: string, path: string, bytes: Uint8Array): Promise<Buffer> {
  const c = new grpc.Client(address, grpc.credentials.createInsecure());
  const id = (b: Buffer) => b;
  return new Promise<Buffer>((resolve, reject) =>
    c.makeUnaryRequest(path, id, id, Buffer.from(bytes), (e, r) => {
      c.close();
      if (e) reject(e);
      else resolve(r!);
    }),
  );
}

export async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'adrank-served-'));
  const procs: ServerProc[] = [];
  const start = async (name: string, flags: string[]) => {
    const p = await startServer(name, [...SERVE_FLAGS, ...flags], []);
    procs.push(p);
    return p;
  };
  const say = (s: string) => console.log(s);
  try {
    say(`# served front end, ${new Date().toISOString().slice(0, 16)}Z, ${cpus().length} cores (${cpus()[0]?.model ?? '?'}), load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
    say(`# ${DURATION} s per run after ${WARMUP} s warm-up, median of ${REPEAT} runs per cell`);
    const { root } = loadProto();
    const rank10: MixEntry[] = [{ rpc: 'rank', n: 10, weight: 1 }];
    const rank1000: MixEntry[] = [{ rpc: 'rank', n: 1000, weight: 1 }];

    // 1. server CPU per call: adrank (tiny model) against a bare grpc-js server
    if (PARTS.has(1)) {
    const tiny = join(dir, 'tiny.safetensors');
    await writeDemoBundle({ ads: 2000, seed: 7, out: tiny, config: tinyConfig() });
    const adrank = await start('adrank-tiny', ['--bundle', tiny]);
    const { model: tinyModel, ids: tinyIds } = await adIdsFrom(adrank.address, 10, 10);
    const pool10 = buildPool(root, tinyModel, rank10, tinyIds, 10, 64);
    const fixed = join(dir, 'rank-response.bin');
    writeFileSync(fixed, await rawCall(adrank.address, '/adrank.v1.AdRanker/Rank', pool10[0][0].bytes));
    const bare = await startProcess('bare-grpc-js', [join(import.meta.dirname, `bare-server${extname(import.meta.filename)}`), fixed]);
    procs.push(bare);
    const http2 = await startProcess('bare-http2', [join(import.meta.dirname, `bare-http2${extname(import.meta.filename)}`), fixed]);
    procs.push(http2);
    const targets: Target[] = [
      { name: 'adrank', proc: adrank, clients: clientsFor(adrank.address) },
      { name: 'bare', proc: bare, clients: clientsFor(bare.address) },
      { name: 'http2', proc: http2, clients: clientsFor(http2.address) },
    ];
    const cpu: Record<string, number[]> = { adrank: [], bare: [], http2: [] };
    const engine: number[] = [];
    for (let rep = 0; rep < REPEAT; rep++)
      for (const t of targets) {
        const r = await run(t, rank10, pool10, 1);
        cpu[t.name].push(r.cpuUsPerCall);
        if (t.name === 'adrank') engine.push(r.stages.engineTotalUs);
        say(`  run ${rep + 1}: ${t.name} Rank(10) c=1: server CPU ${r.cpuUsPerCall.toFixed(0)} µs/call, ${r.throughput.toFixed(0)} req/s`);
      }
    const a = median(cpu.adrank);
    const b = median(cpu.bare);
    say(`server CPU per call, Rank(10), tiny model (engine median ${median(engine).toFixed(1)} µs): adrank ${a.toFixed(0)} µs, bare grpc-js ${b.toFixed(0)} µs, ratio ${(a / b).toFixed(2)} (target ≤ 1.30); bare node:http2 ${median(cpu.http2).toFixed(0)} µs`);
    for (const t of targets) for (const c of t.clients) c.close();
    await Promise.all([adrank.stop(), bare.stop(), http2.stop()]);
    }
    if (!PARTS.has(2) && !PARTS.has(3)) return;

    // 2. served overhead at concurrency 1 on the demo bundle
    const demo = join(dir, 'demo.safetensors');
    await writeDemoBundle({ ads: ADS, seed: 1, out: demo });
    const off = await start('batch-off', ['--bundle', demo, '--batch-max-delay-us', '0']);
    const { model, ids } = await adIdsFrom(off.address, 1000, 10);
    const offT: Target = { name: 'batch-off', proc: off, clients: clientsFor(off.address) };
    for (const [label, mix] of PARTS.has(2) ? ([['Rank(10)', rank10], ['Rank(1,000)', rank1000]] as const) : []) {
      const pool = buildPool(root, model, [...mix], ids, 10, 32);
      const served: number[] = [];
      for (let rep = 0; rep < REPEAT; rep++) {
        const r = await run(offT, [...mix], pool, 1);
        served.push(r.stages.totalUs - r.stages.engineTotalUs);
        say(`  run ${rep + 1}: ${label} c=1: total−engine ${served.at(-1)!.toFixed(0)} µs (decode ${r.stages.decodeUs.toFixed(0)}, validate ${r.stages.validateUs.toFixed(0)}, queue ${r.stages.queueUs.toFixed(0)}, encode ${r.stages.encodeUs.toFixed(0)}), client−server ${r.stages.outsideServerUs.toFixed(0)} µs`);
      }
      say(`served overhead (total_us − engine_total_us), ${label}, demo bundle, c=1: ${median(served).toFixed(0)} µs (target ≤ 100)`);
    }

    // 3. batching on / off, Rank(10) at concurrency 16
    if (!PARTS.has(3)) return;
    const on = await start('batch-on', ['--bundle', demo, '--batch-max-delay-us', '200']);
    const both: Target[] = [offT, { name: 'batch-on', proc: on, clients: clientsFor(on.address) }];
    const pool = buildPool(root, model, rank10, ids, 10, 64);
    const tput: Record<string, number[]> = { 'batch-off': [], 'batch-on': [] };
    for (let rep = 0; rep < REPEAT; rep++)
      for (const t of both) {
        const r = await run(t, rank10, pool, 16);
        tput[t.name].push(r.throughput);
        say(`  run ${rep + 1}: ${t.name} Rank(10) c=16: ${r.throughput.toFixed(0)} req/s, p99 ${(r.latency.p99 / 1000).toFixed(2)} ms, batch wait ${r.stages.batchWaitUs.toFixed(0)} µs`);
      }
    const tOn = median(tput['batch-on']);
    const tOff = median(tput['batch-off']);
    say(`batching, Rank(10) c=16, demo bundle: on ${tOn.toFixed(0)} req/s, off ${tOff.toFixed(0)} req/s, ratio ${(tOn / tOff).toFixed(2)} (target ≥ 1.60)`);
    for (const t of both) for (const c of t.clients) c.close();
  } finally {
    await Promise.all(procs.map((p) => p.stop()));
    rmSync(dir, { recursive: true, force: true });
  }
}
