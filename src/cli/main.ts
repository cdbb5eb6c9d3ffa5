#!/usr/bin/env node
/**
 * The adrank command line: serve, demo-bundle, inspect, client. Every serve flag has an
 * ADRANK_* environment equivalent (flags win); see README.md "Configuration".
 */
import { existsSync, mkdirSync, renameSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { Engine } from '../engine/index.js';
import { loadBundle } from '../model/bundle.js';
import { writeDemoBundle } from '../model/demo.js';
import {
  AdrankServer,
  DEFAULT_HOST,
  DEFAULT_MAX_INFLIGHT,
  DEFAULT_MAX_RECEIVE_BYTES,
  DEFAULT_PORT,
  DEFAULT_SHUTDOWN_GRACE_MS,
} from '../server/server.js';
import { jsonLogger, parseLevel, type Logger } from '../server/log.js';
import { DEFAULT_MAX_CANDIDATES, MAX_CANDIDATES } from '../handlers/validate.js';
import { runClient, type ClientRpc } from './client.js';
import { formatBytes, table } from './table.js';

const DEMO_BUNDLE = 'demo/adrank-demo.safetensors';
const DEMO_ADS = 100_000;

function int(min: number, max = Number.MAX_SAFE_INTEGER) {
  return (v: string): number => {
    // digits only: Number() would also take '' and ' ' (as 0), '0x10', '1e3'
    const n = /^\d+$/.test(v) ? Number(v) : NaN;
    if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`expected an integer in ${min}..${max}, got ${JSON.stringify(v)}`);
    return n;
  };
}

function device(v: string): string {
  if (!/^(auto|cpu|cuda(:\d+)?)$/.test(v)) throw new InvalidArgumentError(`expected auto, cpu, cuda or cuda:N, got ${JSON.stringify(v)}`);
  return v;
}

function precision(v: string): string {
  if (!/^(auto|fp32|bf16)$/.test(v)) throw new InvalidArgumentError(`expected auto, fp32 or bf16, got ${JSON.stringify(v)}`);
  return v;
}

/** Writes the demo bundle to `out` unless it exists (via a temporary file, so a crash leaves none). */
async function ensureDemoBundle(out: string, ads: number, log: Logger): Promise<void> {
  if (existsSync(out)) return;
  mkdirSync(dirname(out), { recursive: true });
  const t0 = performance.now();
  const tmp = `${out}.tmp-${process.pid}`;
  const r = await writeDemoBundle({ ads, seed: 1, out: tmp });
  renameSync(tmp, out);
  log.info('demo_bundle_written', { path: out, ads, bytes: r.size, sha256: r.sha256, ms: Math.round(performance.now() - t0) });
}

interface ServeFlags {
  bundle?: string;
  demo?: boolean;
  demoAds: number;
  host: string;
  port: number;
  device: string;
  precision: string;
  threads: number;
  maxInflight: number;
  maxCandidates: number;
  maxMessageBytes: number;
  shutdownGraceMs: number;
  logLevel: string;
}

/** `bundleSource` is commander's source of --bundle: 'cli', 'env' (ADRANK_BUNDLE) or undefined. */
async function serve(f: ServeFlags, bundleSource?: string): Promise<void> {
  const log = jsonLogger(parseLevel(f.logLevel));
  let bundle = f.bundle;
  if (f.demo) {
    // A flag wins over the environment: --demo overrides ADRANK_BUNDLE, not --bundle.
    if (bundle && bundleSource === 'cli') throw new InvalidArgumentError('give either --bundle or --demo, not both');
    bundle = resolve(DEMO_BUNDLE);
    await ensureDemoBundle(bundle, f.demoAds, log);
  }
  if (!bundle) throw new InvalidArgumentError('expected a bundle: --bundle FILE (or ADRANK_BUNDLE), or --demo');
  const path = bundle;
  const server = await AdrankServer.start({
    host: f.host,
    port: f.port,
    engine: () => Engine.load(path, { device: f.device, threads: f.threads, precision: f.precision }),
    maxInflight: f.maxInflight,
    maxCandidates: f.maxCandidates,
    maxReceiveBytes: f.maxMessageBytes,
    shutdownGraceMs: f.shutdownGraceMs,
    log,
  });
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    if (++signals > 1) {
      log.warn('forced_exit', { signal: sig });
      process.exit(1);
    }
    server.shutdown(sig).then(
      () => process.exit(0),
      (e) => {
        log.error('shutdown_failed', { error: e });
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  try {
    await server.ready;
  } catch (e) {
    log.error('model_load_failed', { bundle: path, error: e });
    await server.shutdown('model load failed');
    process.exit(1);
  }
}

async function inspect(path: string): Promise<void> {
  const b = await loadBundle(path);
  const out = console.log;
  out(`bundle   ${b.path}`);
  out(`size     ${formatBytes(b.fileSize)} (${b.fileSize} bytes)`);
  out(`sha256   ${b.sha256}`);
  out(`model    ${b.config.name} version ${b.config.version}`);
  out(`ads      ${b.numAds}`);
  out(`config   ${JSON.stringify(b.config, null, 2).replace(/\n/g, '\n         ')}`);
  const names = Object.keys(b.tensors).sort();
  const rows = names.map((n) => [n, b.dtypes[n], `[${b.shapes[n].join(', ')}]`, b.tensors[n].byteLength]);
  out('');
  out(table(['tensor', 'dtype', 'shape', 'bytes'], rows));
  out(`${names.length} tensors, ${formatBytes(rows.reduce((s, r) => s + (r[3] as number), 0))}`);
}

function program(): Command {
  const p = new Command('adrank').description('GPU/CPU inference server for ad retrieval and ranking').showHelpAfterError();

  p.command('serve')
    .description('serve a model bundle over gRPC (adrank.v1.AdRanker, health, reflection)')
    .addOption(new Option('--bundle <file>', 'model bundle (.safetensors)').env('ADRANK_BUNDLE'))
    .addOption(new Option('--demo', `serve ./${DEMO_BUNDLE}, writing it on first start`))
    .addOption(new Option('--demo-ads <n>', 'ads in the demo bundle when it is written').default(DEMO_ADS).argParser(int(1)))
    .addOption(new Option('--host <host>', 'interface to listen on (0.0.0.0 for all)').env('ADRANK_HOST').default(DEFAULT_HOST))
    .addOption(new Option('--port <port>', 'port (0 = any free port)').env('ADRANK_PORT').default(DEFAULT_PORT).argParser(int(0, 65535)))
    .addOption(new Option('--device <device>', 'auto | cpu | cuda | cuda:N').env('ADRANK_DEVICE').default('auto').argParser(device))
    .addOption(new Option('--precision <p>', 'CPU GEMMs: auto (bf16 where the CPU has AVX512-BF16) | fp32 | bf16').env('ADRANK_PRECISION').default('auto').argParser(precision))
    .addOption(new Option('--threads <n>', 'CPU backend threads (0 = all cores)').env('ADRANK_THREADS').default(0).argParser(int(0, 1024)))
    .addOption(new Option('--max-inflight <n>', 'concurrent engine requests; beyond → RESOURCE_EXHAUSTED').env('ADRANK_MAX_INFLIGHT').default(DEFAULT_MAX_INFLIGHT).argParser(int(1)))
    .addOption(new Option('--max-candidates <n>', 'candidate ids per Rank request').env('ADRANK_MAX_CANDIDATES').default(DEFAULT_MAX_CANDIDATES).argParser(int(1, MAX_CANDIDATES)))
    .addOption(new Option('--max-message-bytes <n>', 'largest request accepted; beyond → RESOURCE_EXHAUSTED').env('ADRANK_MAX_MESSAGE_BYTES').default(DEFAULT_MAX_RECEIVE_BYTES).argParser(int(1024)))
    .addOption(new Option('--shutdown-grace-ms <ms>', 'drain time on SIGTERM before calls are cut').env('ADRANK_SHUTDOWN_GRACE_MS').default(DEFAULT_SHUTDOWN_GRACE_MS).argParser(int(0)))
    .addOption(new Option('--log-level <level>', 'debug | info | warn | error').env('ADRANK_LOG_LEVEL').default('info'))
    .action((f: ServeFlags, cmd: Command) => serve(f, cmd.getOptionValueSource('bundle')));

  p.command('demo-bundle')
    .description('write a synthetic bundle with the demo config (DESIGN §4)')
    .addOption(new Option('--ads <n>', 'ad count').default(DEMO_ADS).argParser(int(1)))
    .addOption(new Option('--seed <s>', 'random seed').default(1).argParser(int(0)))
    .requiredOption('--out <file>', 'output .safetensors file')
    .action(async (f: { ads: number; seed: number; out: string }) => {
      const r = await writeDemoBundle({ ads: f.ads, seed: f.seed, out: f.out });
      console.log(`wrote ${f.out}: ${f.ads} ads, ${formatBytes(r.size)}, sha256 ${r.sha256}`);
    });

  p.command('inspect')
    .description('validate a bundle and print its config, tensors, ad count and sha256')
    .argument('<bundle>', 'bundle file')
    .action((path: string) => inspect(path));

  p.command('client')
    .description('send a sample request of each RPC to a server and print the winners')
    .option('--address <host:port>', 'server address', `localhost:${DEFAULT_PORT}`)
    .addOption(new Option('--rpc <rpc>', 'which RPC').choices(['all', 'rank', 'retrieve', 'retrieve-and-rank', 'get-model']).default('all'))
    .addOption(new Option('--k <k>', 'winners per request').default(10).argParser(int(1, 10_000)))
    .action((f: { address: string; rpc: ClientRpc; k: number }) => runClient(f.address, f.rpc, f.k));

  return p;
}

program()
  .parseAsync(process.argv)
  .catch((e: Error) => {
    console.error(`adrank: ${e.message}`);
    process.exit(1);
  });
