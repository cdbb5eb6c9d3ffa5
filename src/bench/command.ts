/**
 * `adrank bench` (npm run bench:grpc): the gRPC load generator. Targets a running server
 * (--address) or starts its own servers (--server NAME=FLAGS, repeatable) so that
 * configurations are compared in one run, cell by cell, on the same machine state.
 *
 *   adrank bench --address localhost:50051 --mix rank:10 -c 16 --duration 10
 *   adrank bench --server off='--batch-max-delay-us 0' --server on='--batch-max-delay-us 200' \
 *       --candidates 10,100,1000 -c 1,4,16,64 --svg bench/load.svg --markdown bench/load-table.md
 *   adrank bench --address localhost:50051 --rate 200 --duration 20      (open loop)
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import * as grpc from '@grpc/grpc-js';
import { Command, InvalidArgumentError, Option } from 'commander';
import { connect, call } from '../cli/client.js';
import { sampleRetrieve } from '../handlers/sample.js';
import { loadProto } from '../wire/proto.js';
import type { GetModelResponse__Output } from '../generated/adrank/v1/GetModelResponse.js';
import type { RetrieveResponse__Output } from '../generated/adrank/v1/RetrieveResponse.js';
import { runLoad, STAGES, type LoadResult } from './load.js';
import { buildPool, mixLabel, parseMix, type MixEntry } from './requests.js';
import { latencyThroughputSvg, type PlotSeries } from './plot.js';
import { parseServerSpec, splitFlags, startServer, type ServerProc } from './server-proc.js';

interface BenchFlags {
  address: string;
  server?: string[];
  serverFlags: string;
  mix: string;
  candidates?: string;
  concurrency: string;
  rate?: number;
  duration: number;
  warmup: number;
  k: number;
  deadlineMs: number;
  channels: number;
  pool: number;
  repeat: number;
  fromJson?: string;
  json?: boolean;
  svg?: string;
  markdown?: string;
  progress: boolean;
}

function list(v: string): number[] {
  const out = v.split(',').map((s) => (/^\d+$/.test(s.trim()) ? Number(s.trim()) : NaN));
  if (out.length === 0 || out.some((n) => !Number.isInteger(n) || n < 1)) throw new InvalidArgumentError(`expected a comma-separated list of positive integers, got ${JSON.stringify(v)}`);
  return out;
}
function posNum(v: string): number {
  const n = Number(v);
  if (!/^\d+(\.\d+)?$/.test(v) || !(n > 0)) throw new InvalidArgumentError(`expected a positive number, got ${JSON.stringify(v)}`);
  return n;
}
function posInt(v: string): number {
  if (!/^\d+$/.test(v) || Number(v) < 1) throw new InvalidArgumentError(`expected a positive integer, got ${JSON.stringify(v)}`);
  return Number(v);
}

export interface CellResult extends LoadResult {
  server: string;
  mixLabel: string;
  /** server CPU ms per OK request (spawned servers only) */
  serverCpuMsPerReq?: number;
  /** with --repeat: throughput and p99 (µs) of every run of this cell, in run order */
  runs?: { throughput: number; p99: number }[];
}

/** The run with the median throughput (the lower middle one for an even count). */
function medianRun(runs: CellResult[]): CellResult {
  const sorted = [...runs].sort((a, b) => a.throughput - b.throughput);
  const m = sorted[(sorted.length - 1) >> 1];
  return runs.length > 1 ? { ...m, runs: runs.map((r) => ({ throughput: r.throughput, p99: r.latency.p99 })) } : m;
}

/** Registers `bench` on the adrank program. */
export function addBenchCommand(p: Command): void {
  p.command('bench')
    .description('gRPC load generator: closed loop (-c) or open loop (--rate), request mixes, HDR percentiles, server stage breakdown')
    .option('--address <host:port>', 'server to load (ignored when --server is given)', 'localhost:50051')
    .option('--server <name=flags>', "start a server child with these serve flags (repeatable; compared cell by cell), e.g. on='--batch-max-delay-us 200'", (v: string, prev: string[] = []) => [...prev, v])
    .option('--server-flags <flags>', 'serve flags every started server gets', '--demo')
    .option('--mix <spec>', 'request mix: rank[:N][=W], retrieve[=W], retrieve-and-rank[:R][=W], comma-separated', 'rank:10')
    .option('--candidates <list>', 'sweep Rank(N) for each N (replaces --mix), e.g. 10,100,1000')
    .option('-c, --concurrency <list>', 'closed loop: concurrent callers; a list sweeps', '16')
    .addOption(new Option('--rate <rps>', 'open loop at this many requests/s (latency from the intended send time)').argParser(posNum))
    .addOption(new Option('--duration <s>', 'measured seconds per cell').default(10).argParser(posNum))
    .addOption(new Option('--warmup <s>', 'unmeasured seconds before each cell').default(2).argParser(posNum))
    .addOption(new Option('--k <k>', 'winners per request').default(10).argParser(posInt))
    .addOption(new Option('--deadline-ms <ms>', 'per-call deadline').default(10_000).argParser(posInt))
    .addOption(new Option('--channels <n>', 'gRPC channels the calls spread over').default(1).argParser(posInt))
    .addOption(new Option('--pool <n>', 'distinct pre-encoded requests per mix entry').default(64).argParser(posInt))
    .addOption(new Option('--repeat <n>', 'runs per cell, servers alternating run by run; the run with the median throughput is reported (all runs in --json)').default(1).argParser(posInt))
    .option('--json', 'print the results as JSON (one array of cells)')
    .option('--from-json <file>', 'run nothing: write --markdown / --svg from the output of an earlier --json run')
    .option('--svg <file>', 'write the latency–throughput plot (p99 vs req/s, one line per server × mix)')
    .option('--markdown <file>', 'write the results table as Markdown')
    .option('--no-progress', 'no progress line (it is only drawn on a TTY anyway)')
    .action((f: BenchFlags) => bench(f));
}

/** The served model and up to 10,000 of its ad ids (a Retrieve of them), for request pools. */
export async function adIdsFrom(address: string, needed: number, k: number): Promise<{ model: GetModelResponse__Output; ids: string[] }> {
  const client = connect(address);
  try {
    const model = await call<object, GetModelResponse__Output>(client, 'GetModel', {});
    const want = Math.min(10_000, Math.max(needed, 1000));
    const r = await call<object, RetrieveResponse__Output>(client, 'Retrieve', { ...sampleRetrieve(model, Math.max(k, want)), perAdvertiserCap: 0 }, 60_000);
    return { model, ids: r.winners.map((w) => String(w.adId)) };
  } finally {
    client.close();
  }
}

const ms = (us: number) => (us / 1000).toFixed(2);

function cellLine(r: CellResult): string {
  const errs = Object.entries(r.errors).map(([k, v]) => `${k} ${v}`).join(', ') || '-';
  return [
    r.server.padEnd(8),
    r.mixLabel.padEnd(16),
    (r.mode === 'open' ? `rate ${r.rate}` : `c=${r.concurrency}`).padEnd(10),
    `${r.throughput.toFixed(1).padStart(8)} req/s`,
    `p50 ${ms(r.latency.p50).padStart(7)}`,
    `p90 ${ms(r.latency.p90).padStart(7)}`,
    `p99 ${ms(r.latency.p99).padStart(7)}`,
    `p99.9 ${ms(r.latency.p999).padStart(7)} ms`,
    `errors ${errs}`,
    `gen cpu ${r.generatorCpuPct.toFixed(0)}%`,
    r.serverCpuMsPerReq !== undefined ? `server cpu ${r.serverCpuMsPerReq.toFixed(2)} ms/req` : '',
  ].join('  ');
}

function stageLine(r: CellResult): string {
  const s = r.stages;
  const parts = STAGES.filter((k) => s[k] > 0).map((k) => `${k.replace(/Us$/, '')} ${s[k].toFixed(0)}`);
  const served = s.totalUs - s.engineTotalUs;
  return `           server medians µs: ${parts.join(', ')}; total−engine ${served.toFixed(0)}; client−server ${s.outsideServerUs.toFixed(0)}`;
}

export function markdownTable(cells: CellResult[]): string {
  const head = '| server | mix | load | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | errors | server µs total−engine | server CPU ms/req | generator CPU | all runs req/s |';
  const rows = cells.map((r) =>
    [
      r.server,
      r.mixLabel,
      r.mode === 'open' ? `${r.rate} req/s` : `C=${r.concurrency}`,
      r.throughput.toFixed(1),
      ms(r.latency.p50),
      ms(r.latency.p90),
      ms(r.latency.p99),
      ms(r.latency.p999),
      Object.entries(r.errors).map(([k, v]) => `${k} ${v}`).join(', ') || '0',
      (r.stages.totalUs - r.stages.engineTotalUs).toFixed(0),
      r.serverCpuMsPerReq !== undefined ? r.serverCpuMsPerReq.toFixed(2) : '-',
      `${r.generatorCpuPct.toFixed(0)}%`,
      r.runs ? r.runs.map((x) => x.throughput.toFixed(1)).join(', ') : '-',
    ].join(' | '),
  );
  return [head, '|' + ' --- |'.repeat(13), ...rows.map((r) => `| ${r} |`)].join('\n') + '\n';
}

export function plotOf(cells: CellResult[], subtitle: string): string {
  const series = new Map<string, PlotSeries>();
  const servers = [...new Set(cells.map((c) => c.server))];
  for (const c of cells) {
    const key = `${c.mixLabel} ${c.server}`;
    let s = series.get(key);
    if (!s) series.set(key, (s = { name: key, group: c.mixLabel, dashed: servers.length > 1 && servers.indexOf(c.server) === 0, points: [] }));
    s.points.push({ x: c.throughput, y: c.latency.p99 / 1000, label: c.mode === 'open' ? `${c.rate}/s` : `C${c.concurrency}` });
  }
  return latencyThroughputSvg('adrank: p99 latency vs throughput', [...series.values()], subtitle);
}

async function bench(f: BenchFlags): Promise<void> {
  if (f.fromJson) {
    const saved = JSON.parse(readFileSync(f.fromJson, 'utf8')) as { machine: string; cells: CellResult[] };
    if (f.markdown) writeFileSync(f.markdown, markdownTable(saved.cells));
    if (f.svg) writeFileSync(f.svg, plotOf(saved.cells, saved.machine));
    return;
  }
  const mixes: MixEntry[][] = f.candidates ? list(f.candidates).map((n) => [{ rpc: 'rank', n, weight: 1 }]) : [parseMix(f.mix)];
  const concurrencies = list(f.concurrency);
  const say = f.json ? (s: string) => process.stderr.write(s + '\n') : (s: string) => console.log(s);
  const servers: ServerProc[] = [];
  const targets: { name: string; address: string; proc?: ServerProc }[] = [];
  const stopAll = () => Promise.all(servers.map((s) => s.stop()));
  process.once('SIGINT', () => void stopAll().then(() => process.exit(130)));
  try {
    if (f.server?.length) {
      for (const spec of f.server) {
        const { name, flags } = parseServerSpec(spec);
        say(`starting server ${name}: serve ${[...splitFlags(f.serverFlags), ...flags].join(' ')}`);
        const proc = await startServer(name, flags, splitFlags(f.serverFlags));
        servers.push(proc);
        targets.push({ name, address: proc.address, proc });
      }
    } else targets.push({ name: 'server', address: f.address });

    const { root } = loadProto();
    const needed = Math.max(...mixes.flat().map((e) => (e.rpc === 'rank' ? e.n : 0)));
    const { model, ids } = await adIdsFrom(targets[0].address, needed, f.k);
    const subtitle = `${new Date().toISOString().slice(0, 16)}Z, ${cpus().length} cores (${cpus()[0]?.model ?? '?'}), load ${loadavg()[0].toFixed(2)}, backend ${model.backend}, ${model.numAds} ads`;
    say(`model ${model.name} v${model.version}, ${model.numAds} ads, backend ${model.backend} (${model.device}); ${ids.length} ad ids to rank from; ${subtitle}`);

    const clients = new Map(targets.map((t) => [t.name, Array.from({ length: f.channels }, (_, i) => new grpc.Client(t.address, grpc.credentials.createInsecure(), { 'grpc.channel_id': i } as grpc.ChannelOptions))]));
    const cells: CellResult[] = [];
    for (const mix of mixes) {
      const pool = buildPool(root, model, mix, ids, f.k, f.pool);
      const label = mixLabel(mix);
      const loads: { concurrency: number; rate?: number }[] = f.rate !== undefined ? [{ concurrency: concurrencies[0], rate: f.rate }] : concurrencies.map((c) => ({ concurrency: c }));
      for (const load of loads) {
        // servers alternate within each cell (and run by run with --repeat), so their numbers
        // share the machine's state
        const byServer = new Map<string, CellResult[]>(targets.map((t) => [t.name, []]));
        for (let rep = 0; rep < f.repeat; rep++) for (const t of targets) {
          const cpu0 = t.proc?.cpuSeconds();
          const r = await runLoad(clients.get(t.name)!, root, mix, pool, {
            concurrency: load.concurrency,
            rate: load.rate,
            durationS: f.duration,
            warmupS: f.warmup,
            deadlineMs: f.deadlineMs,
            progress: f.progress && !f.json,
            label: `${t.name} ${label} ${load.rate ? `${load.rate}/s` : `c=${load.concurrency}`}`,
          });
          const cpu1 = t.proc?.cpuSeconds();
          const cell: CellResult = { ...r, server: t.name, mixLabel: label };
          // the server's CPU over warm-up + measurement, per request sent in that window
          if (cpu0 !== undefined && cpu1 !== undefined && Number.isFinite(cpu0) && r.ok > 0)
            cell.serverCpuMsPerReq = ((cpu1 - cpu0) * 1000) / (r.ok * (1 + f.warmup / f.duration));
          byServer.get(t.name)!.push(cell);
          if (f.repeat > 1) say(`  run ${rep + 1}/${f.repeat}: ${cellLine(cell)}`);
        }
        for (const t of targets) {
          const cell = medianRun(byServer.get(t.name)!);
          cells.push(cell);
          say(cellLine(cell) + (cell.runs ? `  (median of ${cell.runs.length} runs by throughput: ${cell.runs.map((r) => r.throughput.toFixed(1)).join(', ')} req/s)` : ''));
          say(stageLine(cell));
        }
      }
    }
    for (const cs of clients.values()) for (const c of cs) c.close();
    if (f.json) console.log(JSON.stringify({ when: new Date().toISOString(), machine: subtitle, cells }, null, 2));
    if (f.markdown) writeFileSync(f.markdown, markdownTable(cells));
    if (f.svg) writeFileSync(f.svg, plotOf(cells, subtitle));
  } finally {
    await stopAll();
  }
}
