/**
 * Front-end threads benchmark (docs/operations.md "Front-end threads"): calls/s of a tiny model on
 * the CPU backend served with --front-end-threads 1, 2, 4, … N, the load coming from separate
 * client processes (each a closed loop over its own connections, so that the kernel spreads them
 * over the server's threads). The engine work per call is small, so the front end is what is
 * measured. Target: 8 threads ≥ 5× the calls/s of 1 thread on a machine with ≥ 8 cores.
 *
 *   npm run bench:frontend -- --threads                     (1, 2, 4, … up to the cores)
 *   npm run bench:frontend -- --threads 1,2,4,8 --duration 20 --clients 8 --connections 4 --concurrency 32 --json
 *
 * Each server child runs with --threads 1 (one engine thread per run: no oversubscription) and
 * UV_THREADPOOL_SIZE = the cores (the engine runs on libuv's pool, shared by the threads).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs';
import { writeDemoBundle, makeDemoConfig } from '../src/model/demo.js';
import { loadBundle } from '../src/model/bundle.js';
import { loadProto } from '../src/wire/proto.js';
import { modelShape, sampleRank } from '../src/handlers/sample.js';
import { startServer } from '../src/bench/server-proc.js';
import type { ModelConfig } from '../src/model/config.js';

/** The tiny model: every layer narrow, 5,000 ads; a Rank of 10 candidates. */
function tinyConfig(): ModelConfig {
  const c = makeDemoConfig();
  return {
    ...c,
    name: 'adrank-tiny',
    version: '1',
    sequence: { ...c.sequence, max_len: 4, dim: 8, heads: 1, ffn_dim: 16, layers: 1 },
    masknet: { blocks: 1, projection_ratio: 0.25, output_dim: 16 },
    dcn: { layers: 1, rank: 0 },
    mlp: [16],
    retrieval: { dim: 8, hidden: [16] },
  };
}

const RANK_PATH = '/adrank.v1.AdRanker/Rank';
const raw = (b: Buffer) => b;

interface ClientJob {
  address: string;
  request: string; // base64 RankRequest
  connections: number;
  concurrency: number;
  warmupS: number;
  durationS: number;
}

interface ClientReport {
  ok: number;
  errors: Record<string, number>;
  p50Us: number;
}

/** One client process: `connections` connections, `concurrency` callers spread over them. */
async function client(job: ClientJob): Promise<ClientReport> {
  const request = Buffer.from(job.request, 'base64');
  const clients = Array.from(
    { length: job.connections },
    () => new grpc.Client(job.address, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 }),
  );
  const once = (c: grpc.Client) =>
    new Promise<grpc.status>((resolve) =>
      c.makeUnaryRequest(RANK_PATH, raw, raw, request, { deadline: Date.now() + 10_000 }, (e) => resolve(e ? e.code : grpc.status.OK)),
    );
  const start = performance.now();
  const measureFrom = start + job.warmupS * 1000;
  const end = measureFrom + job.durationS * 1000;
  let ok = 0;
  const errors: Record<string, number> = {};
  const lat: number[] = [];
  await Promise.all(
    Array.from({ length: job.concurrency }, async (_, i) => {
      const c = clients[i % clients.length];
      for (;;) {
        const t0 = performance.now();
        if (t0 >= end) return;
        const code = await once(c);
        const t1 = performance.now();
        if (t0 < measureFrom || t1 > end) continue;
        if (code === grpc.status.OK) {
          ok++;
          if (lat.length < 200_000) lat.push(t1 - t0);
        } else errors[grpc.status[code]] = (errors[grpc.status[code]] ?? 0) + 1;
      }
    }),
  );
  for (const c of clients) c.close();
  lat.sort((a, b) => a - b);
  return { ok, errors, p50Us: lat.length ? lat[lat.length >> 1] * 1000 : NaN };
}

function runClient(job: ClientJob): Promise<ClientReport> {
  const self = fileURLToPath(import.meta.url);
  const child = spawn(process.execPath, [...process.execArgv, self, '--client', JSON.stringify(job)], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    let report: ClientReport | undefined;
    createInterface({ input: child.stdout! }).on('line', (l) => {
      try {
        report = JSON.parse(l) as ClientReport;
      } catch {
        /* not the report */
      }
    });
    child.on('exit', (code) => (report && code === 0 ? resolve(report) : reject(new Error(`bench client exited with ${code}`))));
  });
}

function threadCounts(spec: string | boolean | undefined, cores: number): number[] {
  if (typeof spec === 'string' && spec !== '') {
    const list = spec.split(',').map((s) => Number(s.trim()));
    for (const n of list) if (!(Number.isInteger(n) && n >= 1 && n <= 1024)) throw new Error(`expected thread counts in 1..1024 for --threads, got ${JSON.stringify(spec)}`);
    return list;
  }
  const out: number[] = [];
  for (let n = 1; n < cores; n *= 2) out.push(n);
  out.push(cores);
  return out;
}

export async function main(argv: string[]): Promise<void> {
  // a bare --threads: every count up to the cores
  const args = argv.map((a, i) => (a === '--threads' && (i === argv.length - 1 || argv[i + 1].startsWith('--')) ? '--threads=' : a));
  const { values } = parseArgs({
    args,
    options: {
      threads: { type: 'string', default: '' },
      clients: { type: 'string' },
      connections: { type: 'string', default: '4' },
      concurrency: { type: 'string', default: '16' },
      duration: { type: 'string', default: '10' },
      warmup: { type: 'string', default: '3' },
      json: { type: 'boolean', default: false },
      client: { type: 'string' },
    },
    strict: true,
  });
  if (values.client) {
    console.log(JSON.stringify(await client(JSON.parse(values.client) as ClientJob)));
    return;
  }
  const cores = availableParallelism();
  const counts = threadCounts(values.threads, cores);
  const clients = Number(values.clients ?? Math.max(...counts));
  const connections = Number(values.connections);
  const concurrency = Number(values.concurrency);
  const durationS = Number(values.duration);
  const warmupS = Number(values.warmup);
  process.env.UV_THREADPOOL_SIZE ??= String(Math.max(4, cores));

  const dir = mkdtempSync(join(tmpdir(), 'adrank-bench-threads-'));
  try {
    const bundlePath = join(dir, 'tiny.safetensors');
    const config = tinyConfig();
    await writeDemoBundle({ ads: 5000, seed: 11, out: bundlePath, config });
    const b = await loadBundle(bundlePath);
    const ids = Array.from(b.tensors['ads.id'] as BigInt64Array, String);
    const { root } = loadProto();
    const type = root.lookupType('adrank.v1.RankRequest');
    const req = { ...sampleRank(modelShape(config), ids.slice(0, 10)), k: 5 };
    const request = Buffer.from(type.encode(type.fromObject(req) as protobuf.Message).finish()).toString('base64');

    const rows: { threads: number; callsPerS: number; ratio: number; p50Ms: number; errors: Record<string, number> }[] = [];
    for (const n of counts) {
      const server = await startServer(`t${n}`, ['--bundle', bundlePath, '--device', 'cpu', '--threads', '1', '--precision', 'fp32', '--front-end-threads', String(n)], []);
      try {
        const reports = await Promise.all(Array.from({ length: clients }, () => runClient({ address: server.address, request, connections, concurrency, warmupS, durationS })));
        const ok = reports.reduce((s, r) => s + r.ok, 0);
        const errors: Record<string, number> = {};
        for (const r of reports) for (const [k, v] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + v;
        const callsPerS = ok / durationS;
        const p50s = reports.map((r) => r.p50Us).sort((a, b) => a - b);
        rows.push({ threads: n, callsPerS, ratio: rows.length ? callsPerS / rows[0].callsPerS : 1, p50Ms: p50s[p50s.length >> 1] / 1000, errors });
        if (!values.json) console.error(`threads ${n}: ${callsPerS.toFixed(0)} calls/s`);
      } finally {
        await server.stop();
      }
    }
    if (values.json) {
      console.log(JSON.stringify({ cores, cpu: cpus()[0]?.model, node: process.versions.node, clients, connections, concurrency, durationS, rows }, null, 2));
      return;
    }
    console.log(`front-end threads, tiny model Rank(10) on the CPU backend; ${cores} cores (${cpus()[0]?.model}), node ${process.versions.node}`);
    console.log(`${clients} client processes × ${connections} connections × ${concurrency} callers, ${durationS} s per row (+${warmupS} s warm-up)`);
    console.log('| front-end threads | calls/s | × 1 thread | p50 ms (median client) | errors |');
    console.log('| ---: | ---: | ---: | ---: | --- |');
    for (const r of rows)
      console.log(`| ${r.threads} | ${r.callsPerS.toFixed(0)} | ${r.ratio.toFixed(2)} | ${r.p50Ms.toFixed(2)} | ${Object.entries(r.errors).map(([k, v]) => `${k} ${v}`).join(', ') || '-'} |`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) await main(process.argv.slice(2));
