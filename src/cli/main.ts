#!/usr/bin/env node
/**
 * The adrank command line: serve, demo-bundle, inspect, client, explain, replay, compare-modes.
 * Every serve flag has an
 * ADRANK_* environment equivalent (flags win); see README.md "Configuration".
 */
import { existsSync, mkdirSync, readFileSync, renameSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { format } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { Command, InvalidArgumentError, Option } from 'commander';
import { capabilities, Engine, resolveDevice } from '../engine/index.js';
import { binding } from '../engine/binding.js';
import { checkBundleFile, loadBundle } from '../model/bundle.js';
import { writeDemoBundle } from '../model/demo.js';
import { readSafetensorsHeaderFile } from '../model/safetensors.js';
import {
  AdrankServer,
  BindError,
  DEFAULT_HOST,
  DEFAULT_MAX_INFLIGHT,
  DEFAULT_INLINE_MAX_US,
  DEFAULT_INLINE_IDLE_MAX_US,
  DEFAULT_MAX_RECEIVE_BYTES,
  DEFAULT_PORT,
  DEFAULT_SHUTDOWN_GRACE_MS,
  SHUTDOWN_BOUND_MS,
} from '../server/server.js';
import { DEFAULT_METRICS_PORT } from '../metrics/index.js';
import { defaultFrontEndThreads } from '../server/threads.js';
import { TokenFile } from '../auth/tokens.js';
import { jsonLogger, parseLevel, type Logger } from '../log.js';
import { DEFAULT_KEEP_VERSIONS, DEFAULT_POLL_MS } from '../lifecycle/repository.js';
import { AdStateStore } from '../state/store.js';
import { DEFAULT_MAX_CANDIDATES, MAX_CANDIDATES } from '../handlers/validate.js';
import { runClient, type ClientRpc } from './client.js';
import { addBenchCommand } from '../bench/command.js';
import { DEFAULT_BATCH_MAX_QUEUE } from '../batcher/index.js';
import { shardBundleFile, shardMeta, MAX_SHARDS } from '../model/shard.js';
import { RouterServer } from '../router/router.js';
import { formatBytes, table } from './table.js';
import { decimal, fraction, int, intList, trueFalse } from './args.js';
import { runExplain, type ExplainFlags } from './explain.js';
import { printReplay, replay, type ReplayFlags } from './replay.js';
import { compareModes, printCompareModes, type CompareModesFlags } from './compare-modes.js';
import { DEFAULT_FEATURE_LOG_MAX_AGE_MS, DEFAULT_FEATURE_LOG_MAX_BYTES, DEFAULT_FEATURE_LOG_MAX_TOTAL_BYTES, DEFAULT_FEATURE_LOG_MIN_FREE_BYTES, DEFAULT_FEATURE_LOG_QUEUE } from '../featurelog/writer.js';

const DEMO_BUNDLE = 'demo/adrank-demo.safetensors';
const DEMO_ADS = 100_000;

function device(v: string): string {
  if (!/^(auto|cpu|cuda(:\d+)?)$/.test(v)) throw new InvalidArgumentError(`expected auto, cpu, cuda or cuda:N, got ${JSON.stringify(v)}`);
  return v;
}

function retrievalScan(v: string): string {
  if (!/^(fp32|bf16)$/.test(v)) throw new InvalidArgumentError(`expected fp32 or bf16, got ${JSON.stringify(v)}`);
  return v;
}

function precision(v: string): string {
  if (!/^(auto|fp32|bf16)$/.test(v)) throw new InvalidArgumentError(`expected auto, fp32 or bf16, got ${JSON.stringify(v)}`);
  return v;
}

/** The ad count of an existing bundle file, from its header alone (undefined if unreadable). */
async function bundleAdCount(path: string): Promise<number | undefined> {
  try {
    const shape = (await readSafetensorsHeaderFile(path)).entries.find((e) => e.name === 'ads.id')?.shape;
    return shape?.[0];
  } catch {
    return undefined;
  }
}

/**
 * Writes the demo bundle to `out` (via a temporary file, so a crash leaves none) unless it exists.
 * An existing file with another ad count is rewritten when --demo-ads was given, and kept (saying
 * so, and how to rewrite it) when the count is only the default.
 */
async function ensureDemoBundle(out: string, ads: number, adsGiven: boolean, log: Logger): Promise<void> {
  if (existsSync(out)) {
    const have = await bundleAdCount(out);
    if (have === ads) return;
    if (!adsGiven) {
      log.info('demo_bundle_kept', { path: out, ads: have, hint: `the existing demo bundle has ${have ?? 'an unknown number of'} ads; pass --demo-ads N to rewrite it with N ads` });
      return;
    }
    log.info('demo_bundle_rewriting', { path: out, had: have ?? null, ads });
  }
  mkdirSync(dirname(out), { recursive: true });
  const t0 = performance.now();
  const tmp = `${out}.tmp-${process.pid}`;
  const r = await writeDemoBundle({ ads, seed: 1, out: tmp });
  renameSync(tmp, out);
  log.info('demo_bundle_written', { path: out, ads, bytes: r.size, sha256: r.sha256, ms: Math.round(performance.now() - t0) });
}

/** A progress bar on a terminal (redrawn at most 10 times a second), one line per 10% otherwise. */
function progressBar(out: NodeJS.WriteStream, t0: number): (done: number, total: number, last?: boolean) => void {
  let shown = -1;
  let drawn = 0;
  return (done, total, last = false) => {
    const frac = total > 0 ? done / total : 1;
    const s = (performance.now() - t0) / 1000;
    const text = `${(100 * frac).toFixed(0).padStart(3)}% ${formatBytes(done)} of ${formatBytes(total)}, ${s.toFixed(1)} s`;
    if (out.isTTY) {
      if (!last && performance.now() - drawn < 100) return;
      drawn = performance.now();
      const width = 30;
      const fill = Math.round(width * frac);
      out.write(`\r[${'#'.repeat(fill)}${' '.repeat(width - fill)}] ${text}${last ? '\n' : ''}`);
    } else if (Math.floor(10 * frac) > shown) {
      shown = Math.floor(10 * frac);
      out.write(`${text}\n`);
    }
  };
}

/** grpc-js's own log lines go into the JSON log at debug level, so a failure is reported once, by us. */
function routeGrpcLogs(log: Logger): void {
  const line = (...args: unknown[]) => log.debug('grpc_js', { message: format(...args) });
  grpc.setLogger({ error: line, info: line, debug: line } as unknown as Partial<Console>);
}

interface ServeFlags {
  bundle?: string;
  modelRepository?: string;
  repositoryPollMs: number;
  keepVersions: number;
  fallbackOnly?: boolean;
  stateFile?: string;
  demo?: boolean;
  demoAds: number;
  host: string;
  port: number;
  device: string;
  precision: string;
  retrievalScan: 'fp32' | 'bf16';
  threads: number;
  cpuSpinUs?: number;
  frontEndThreads: number;
  maxInflight: number;
  inlineMaxUs: number;
  inlineIdleMaxUs: number;
  maxCandidates: number;
  maxMessageBytes: number;
  shutdownGraceMs: number;
  logLevel: string;
  batchMaxCandidates?: number;
  batchMaxDelayUs?: number;
  batchMaxQueue: number;
  batchMaxInflightBatches?: number;
  batchDispatchWhenIdle: boolean;
  grpcFastPath: boolean;
  metricsPort: number;
  accessLogSample: number;
  tlsCert?: string;
  tlsKey?: string;
  tlsClientCa?: string;
  authTokenFile?: string;
  adminTokenFile?: string;
  adminInsecure?: boolean;
  reflection?: boolean;
  maxConnectionAgeMs?: number;
  featureLog?: string;
  featureLogSample: number;
  featureLogMaxBytes: number;
  featureLogMaxAgeS: number;
  featureLogQueue: number;
  featureLogMaxTotalBytes: number;
  featureLogMinFreeBytes: number;
  shadowVersion?: number;
  shadowSample: number;
  shadowMaxInflight?: number;
  shadowIdleGap?: number;
}

/** TLS files from the flags: both of --tls-cert and --tls-key, or neither. */
function tlsOf(f: ServeFlags) {
  if (!f.tlsCert !== !f.tlsKey) throw new InvalidArgumentError('give both --tls-cert and --tls-key, or neither');
  if (f.tlsClientCa && !f.tlsCert) throw new InvalidArgumentError('--tls-client-ca needs TLS: give --tls-cert and --tls-key too');
  return f.tlsCert && f.tlsKey ? { cert: f.tlsCert, key: f.tlsKey, clientCa: f.tlsClientCa } : undefined;
}

/** Flag problems are reported the way commander reports its own (`error: ...`, then the help hint). */
async function serve(f: ServeFlags, cmd: Command): Promise<void> {
  const log = jsonLogger(parseLevel(f.logLevel));
  routeGrpcLogs(log);
  let bundle = f.bundle;
  const repository = f.modelRepository;
  if (repository && (f.demo || (bundle && cmd.getOptionValueSource('bundle') === 'cli'))) cmd.error('error: give one of --bundle, --demo or --model-repository');
  if (f.demo) {
    // A flag wins over the environment: --demo overrides ADRANK_BUNDLE, not --bundle.
    if (bundle && cmd.getOptionValueSource('bundle') === 'cli') cmd.error('error: give either --bundle or --demo, not both');
    bundle = resolve(DEMO_BUNDLE);
    await ensureDemoBundle(bundle, f.demoAds, cmd.getOptionValueSource('demoAds') === 'cli', log);
  }
  if (repository) bundle = undefined; // --model-repository wins over ADRANK_BUNDLE
  if (!bundle && !repository) cmd.error('error: expected a model: --bundle FILE (or ADRANK_BUNDLE), --model-repository DIR, or --demo');
  if (f.shadowVersion !== undefined && !repository) cmd.error('error: --shadow-version needs --model-repository DIR: the shadow version is one of its versions (DIR/<V>/model.safetensors)');
  for (const flag of ['shadowSample', 'shadowMaxInflight', 'shadowIdleGap'] as const) {
    const source = cmd.getOptionValueSource(flag);
    if (f.shadowVersion === undefined && (source === 'cli' || source === 'env'))
      cmd.error(`error: --${{ shadowSample: 'shadow-sample', shadowMaxInflight: 'shadow-max-inflight', shadowIdleGap: 'shadow-idle-gap' }[flag]} needs --shadow-version V`);
  }
  const path = bundle;
  // the sha256 is hashed while the version is built and warmed (the server awaits it before serving)
  const load = (file: string) => Engine.load(file, { device: f.device, threads: f.threads, precision: f.precision, retrievalScan: f.retrievalScan, cpuSpinUs: f.cpuSpinUs, hashLater: true });
  // A device that cannot be had, a missing, unreadable or foreign bundle, or a corrupt state file
  // fails here, before the port is bound.
  try {
    resolveDevice(f.device);
  } catch (e) {
    log.error('device_unavailable', { device: f.device, error: e });
    log.debug('device_detail', { cuda: capabilities().cuda.reason });
    process.exit(1);
  }
  if (path) {
    try {
      await checkBundleFile(path);
    } catch (e) {
      log.error('model_load_failed', { bundle: path, error: e });
      process.exit(1);
    }
  }
  // The live ad state is replayed before the port is bound: a corrupt state file refuses to start.
  const stateFile = resolve(f.stateFile ?? defaultStateFile(repository, path!));
  let adState: AdStateStore;
  try {
    adState = await AdStateStore.open(stateFile, { log });
  } catch (e) {
    log.error('state_file_refused', { path: stateFile, error: e });
    process.exit(1);
  }
  let tls: ReturnType<typeof tlsOf>;
  try {
    tls = tlsOf(f);
  } catch (e) {
    cmd.error(`error: ${(e as Error).message}`);
  }
  const tokenFiles = { data: f.authTokenFile ? new TokenFile(f.authTokenFile) : undefined, admin: f.adminTokenFile ? new TokenFile(f.adminTokenFile) : undefined };
  let server: AdrankServer;
  try {
    server = await AdrankServer.start({
      host: f.host,
      port: f.port,
      ...(repository
        ? { repository: { dir: repository, load, keepVersions: f.keepVersions, pollMs: f.repositoryPollMs } }
        : { engine: () => load(path!) }),
      fallbackOnly: f.fallbackOnly ? { load: (file: string) => Engine.load(file, { adsOnly: true, hashLater: true }), bundle: path } : undefined,
      adState,
      maxInflight: f.maxInflight,
      inlineMaxUs: f.inlineMaxUs,
      inlineIdleMaxUs: f.inlineIdleMaxUs,
      fastPath: f.grpcFastPath,
      maxCandidates: f.maxCandidates,
      maxReceiveBytes: f.maxMessageBytes,
      frontEndThreads: f.frontEndThreads,
      // crashed front-end threads keep failing: stop serving and exit non-zero
      onFatal: () => {
        setTimeout(() => binding().exitNow(1), f.shutdownGraceMs + SHUTDOWN_BOUND_MS + 2_000).unref();
        server.shutdown('front-end threads failing').finally(() => exit(1));
      },
      shutdownGraceMs: f.shutdownGraceMs,
      batching: {
        maxCandidates: f.batchMaxCandidates,
        maxDelayUs: f.batchMaxDelayUs,
        maxQueue: f.batchMaxQueue,
        maxInflightBatches: f.batchMaxInflightBatches,
        dispatchWhenIdle: f.batchDispatchWhenIdle,
      },
      log,
      tls,
      auth: { dataTokens: tokenFiles.data, adminTokens: tokenFiles.admin, adminInsecure: f.adminInsecure },
      reflection: f.reflection,
      metrics: f.metricsPort > 0 ? { port: f.metricsPort } : undefined,
      accessLogSample: f.accessLogSample,
      maxConnectionAgeMs: f.maxConnectionAgeMs,
      featureLog: f.featureLog
        ? { dir: resolve(f.featureLog), sample: f.featureLogSample, maxBytes: f.featureLogMaxBytes, maxAgeMs: 1000 * f.featureLogMaxAgeS, queueMax: f.featureLogQueue, maxTotalBytes: f.featureLogMaxTotalBytes, minFreeBytes: f.featureLogMinFreeBytes }
        : undefined,
      shadow: f.shadowVersion !== undefined ? { version: String(f.shadowVersion), sample: f.shadowSample, maxInflight: f.shadowMaxInflight, idleGapFactor: f.shadowIdleGap } : undefined,
    });
  } catch (e) {
    if (!(e instanceof BindError)) throw e;
    const hint = e.code === 'EADDRINUSE' ? 'another process is listening on it; choose another with --port N (0 = any free port)' : 'check --host and --port';
    log.error(e.code === 'EADDRINUSE' ? 'port_in_use' : 'bind_failed', { address: e.address, port: f.port, error: e.message, hint });
    process.exit(1);
  }
  // SIGHUP: reread the token files (a file that cannot be read keeps its old tokens), on every thread
  process.on('SIGHUP', () => {
    server.frontEndThreads?.reloadAuth();
    for (const t of [tokenFiles.data, tokenFiles.admin]) {
      if (!t) continue;
      try {
        log.info('auth_reloaded', { file: t.path, tokens: t.reload() });
      } catch (e) {
        log.error('auth_reload_failed', { file: t.path, error: e, tokensKept: t.size });
      }
    }
  });
  // process.exit() would first finish every native run still queued (libuv joins its thread
  // pool at exit); with runs left after the shutdown bound, end the process at once instead.
  const exit = (code: number): never => (server.nativeRunsLeft > 0 ? binding().exitNow(code) : process.exit(code));
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    if (++signals > 1) {
      log.warn('forced_exit', { signal: sig });
      binding().exitNow(1);
    }
    // a backstop: shutdown resolves within the grace period plus SHUTDOWN_BOUND_MS
    setTimeout(() => {
      log.error('forced_exit', { signal: sig, reason: 'shutdown overran its bound' });
      binding().exitNow(1);
    }, f.shutdownGraceMs + SHUTDOWN_BOUND_MS + 2_000).unref();
    server.shutdown(sig).then(
      () => exit(0),
      (e) => {
        log.error('shutdown_failed', { error: e });
        exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  process.on('SIGHUP', () => {
    const repo = server.repository;
    if (!repo) return log.warn('sighup_ignored', { why: 'no --model-repository' });
    log.info('sighup', { action: 'rescanning the model repository' });
    repo.rescan('SIGHUP').catch((e) => log.error('repository_scan_failed', { error: e }));
  });
  try {
    await server.ready;
  } catch (e) {
    log.error('model_load_failed', { bundle: path, repository, error: e });
    await server.shutdown('model load failed');
    process.exit(1);
  }
}

/** The state file's default place: beside the bundle (FILE.adstate) or the repository (DIR.adstate). */
function defaultStateFile(repository: string | undefined, bundle: string): string {
  return `${resolve(repository ?? bundle).replace(/\/+$/, '')}.adstate`;
}

interface RouteFlags {
  shard: string[];
  host: string;
  port: number;
  shardTimeoutMs: number;
  refreshMs: number;
  maxMessageBytes: number;
  shutdownGraceMs: number;
  logLevel: string;
}

async function route(f: RouteFlags): Promise<void> {
  const log = jsonLogger(parseLevel(f.logLevel));
  const router = await RouterServer.start({
    shards: f.shard,
    host: f.host,
    port: f.port,
    shardTimeoutMs: f.shardTimeoutMs,
    refreshMs: f.refreshMs,
    maxReceiveBytes: f.maxMessageBytes,
    shutdownGraceMs: f.shutdownGraceMs,
    log,
  });
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    if (++signals > 1) process.exit(1);
    router.shutdown(sig).then(() => process.exit(0));
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}

async function inspect(path: string): Promise<void> {
  const b = await loadBundle(path);
  const out = console.log;
  out(`bundle   ${b.path}`);
  out(`size     ${formatBytes(b.fileSize)} (${b.fileSize} bytes)`);
  out(`sha256   ${b.sha256}`);
  out(`model    ${b.config.name} version ${b.config.version}`);
  out(`ads      ${b.numAds}`);
  const shard = shardMeta(b);
  if (shard) out(`shard    ${shard.index} of ${shard.count} (source sha256 ${shard.source_sha256})`);
  out(`config   ${JSON.stringify(b.config, null, 2).replace(/\n/g, '\n         ')}`);
  const names = Object.keys(b.tensors).sort();
  const rows = names.map((n) => [n, b.dtypes[n], `[${b.shapes[n].join(', ')}]`, b.tensors[n].byteLength]);
  out('');
  out(table(['tensor', 'dtype', 'shape', 'bytes'], rows));
  out(`${names.length} tensors, ${formatBytes(rows.reduce((s, r) => s + (r[3] as number), 0))}`);
}

/** The version in package.json (two levels above src/cli in both the source and dist trees). */
function packageVersion(): string {
  for (const up of ['../..', '../../..']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(`${up}/package.json`, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'adrank' && pkg.version) return pkg.version;
    } catch {
      // try the next level
    }
  }
  return 'unknown';
}

function program(): Command {
  const p = new Command('adrank')
    .description('GPU/CPU inference server for ad retrieval and ranking')
    .version(packageVersion(), '-V, --version', 'print the adrank version')
    .showHelpAfterError();

  p.command('serve')
    .description('serve a model bundle over gRPC (adrank.v1.AdRanker, health, opt-in reflection) with Prometheus metrics')
    .addOption(new Option('--bundle <file>', 'model bundle (.safetensors); one of --bundle, --demo or --model-repository is required').env('ADRANK_BUNDLE'))
    .addOption(new Option('--model-repository <dir>', 'serve the numbered versions <dir>/<N>/model.safetensors, with hot reload').env('ADRANK_MODEL_REPOSITORY'))
    .addOption(new Option('--repository-poll-ms <ms>', 'rescan the repository this often (0 = only on SIGHUP and ReloadModels)').env('ADRANK_REPOSITORY_POLL_MS').default(DEFAULT_POLL_MS).argParser(int(0)))
    .addOption(
      new Option('--fallback-only', 'when no model version loads at start, serve fallback answers (fallback_reason NO_MODEL) from the ad tables of the newest one until a version loads')
        .env('ADRANK_FALLBACK_ONLY'),
    )
    .addOption(new Option('--keep-versions <n>', 'the n highest versions that load stay loaded (pinnable); the highest is the default').env('ADRANK_KEEP_VERSIONS').default(DEFAULT_KEEP_VERSIONS).argParser(int(1, 64)))
    .addOption(new Option('--state-file <file>', 'durable live ad state (default: beside the bundle or repository, <path>.adstate)').env('ADRANK_STATE_FILE'))
    .addOption(new Option('--demo', `serve ./${DEMO_BUNDLE}, writing it on first start`))
    .addOption(new Option('--demo-ads <n>', 'ads in the demo bundle when it is written').default(DEMO_ADS).argParser(int(1)))
    .addOption(new Option('--host <host>', 'interface to listen on (0.0.0.0 for all)').env('ADRANK_HOST').default(DEFAULT_HOST))
    .addOption(new Option('--port <port>', 'port (0 = any free port)').env('ADRANK_PORT').default(DEFAULT_PORT).argParser(int(0, 65535)))
    .addOption(new Option('--device <device>', 'auto | cpu | cuda | cuda:N').env('ADRANK_DEVICE').default('auto').argParser(device))
    .addOption(new Option('--precision <p>', 'CPU GEMMs: auto (bf16 on any CPU with AVX2 or AVX-512, fp32 on others) | fp32 | bf16').env('ADRANK_PRECISION').default('auto').argParser(precision))
    .addOption(new Option('--retrieval-scan <p>', 'CPU retrieval scan: fp32 | bf16 (a bf16 copy of the table, half the bytes read, exact fp32 rescoring of the near-top; docs/funnel.md)').env('ADRANK_RETRIEVAL_SCAN').default('fp32').argParser(retrievalScan))
    .addOption(new Option('--threads <n>', 'CPU backend threads (0 = all cores)').env('ADRANK_THREADS').default(0).argParser(int(0, 1024)))
    .addOption(new Option('--cpu-spin-us <us>', 'CPU threads: how long an idle thread spins for the next step of a request before sleeping (0 = never; default: 50 on the CPU backend, 0 on a GPU)').env('ADRANK_CPU_SPIN_US').argParser(int(0, 10000)))
    .addOption(
      new Option('--front-end-threads <n>', 'JS threads accepting gRPC connections on the port, sharing one engine per model version (1 on Node < 22.12)')
        .env('ADRANK_FRONT_END_THREADS')
        .default(defaultFrontEndThreads(), 'the number of cores')
        .argParser(int(1, 1024)),
    )
    .addOption(new Option('--max-inflight <n>', 'concurrent engine requests per front-end thread; beyond → RESOURCE_EXHAUSTED').env('ADRANK_MAX_INFLIGHT').default(DEFAULT_MAX_INFLIGHT).argParser(int(1)))
    .addOption(
      new Option('--inline-max-us <us>', 'a CPU run expected to take at most this many µs of engine time runs on the JS thread that received it, not on a request thread (0 = never)')
        .env('ADRANK_INLINE_MAX_US')
        .default(DEFAULT_INLINE_MAX_US)
        .argParser(int(0, 1_000_000)),
    )
    .addOption(
      new Option('--inline-idle-max-us <us>', 'a CPU run expected to take at most this many µs runs on the JS thread that received it while that thread\'s calls do not overlap (light load; 0 = never)')
        .env('ADRANK_INLINE_IDLE_MAX_US')
        .default(DEFAULT_INLINE_IDLE_MAX_US)
        .argParser(int(0, 10_000_000)),
    )
    .addOption(new Option('--max-candidates <n>', 'candidate ids per Rank request').env('ADRANK_MAX_CANDIDATES').default(DEFAULT_MAX_CANDIDATES).argParser(int(1, MAX_CANDIDATES)))
    .addOption(new Option('--max-message-bytes <n>', 'largest request accepted; beyond → RESOURCE_EXHAUSTED').env('ADRANK_MAX_MESSAGE_BYTES').default(DEFAULT_MAX_RECEIVE_BYTES).argParser(int(1024)))
    .addOption(new Option('--shutdown-grace-ms <ms>', 'drain time on SIGTERM before calls are cut').env('ADRANK_SHUTDOWN_GRACE_MS').default(DEFAULT_SHUTDOWN_GRACE_MS).argParser(int(0)))
    .addOption(new Option('--batch-max-candidates <n>', 'candidates per micro-batch (default: cpu 1024, cuda 4096)').env('ADRANK_BATCH_MAX_CANDIDATES').argParser(int(1, MAX_CANDIDATES)))
    .addOption(new Option('--batch-max-delay-us <us>', 'longest wait for a micro-batch to fill; 0 = off (default: cpu 0, cuda 200)').env('ADRANK_BATCH_MAX_DELAY_US').argParser(int(0, 1_000_000)))
    .addOption(new Option('--batch-max-queue <n>', 'requests waiting for a batch; beyond → RESOURCE_EXHAUSTED').env('ADRANK_BATCH_MAX_QUEUE').default(DEFAULT_BATCH_MAX_QUEUE).argParser(int(1)))
    .addOption(new Option('--batch-max-inflight-batches <n>', 'micro-batches running at once (default: cpu 1, cuda one per stream, ADRANK_CUDA_STREAMS)').env('ADRANK_BATCH_MAX_INFLIGHT_BATCHES').argParser(int(1, 64)))
    .addOption(new Option('--batch-dispatch-when-idle <bool>', 'a free batch slot takes the queue at once (true) or waits up to --batch-max-delay-us for company (false)').env('ADRANK_BATCH_DISPATCH_WHEN_IDLE').default(true).argParser(trueFalse))
    .addOption(new Option('--grpc-fast-path <bool>', 'serve Rank, Retrieve and RetrieveAndRank on their HTTP/2 streams directly, beside grpc-js (false: every call through grpc-js)').env('ADRANK_GRPC_FAST_PATH').default(true).argParser(trueFalse))
    .addOption(new Option('--log-level <level>', 'debug | info | warn | error').env('ADRANK_LOG_LEVEL').default('info'))
    .addOption(new Option('--access-log-sample <fraction>', 'fraction of engine calls logged as "access" lines (0..1)').env('ADRANK_ACCESS_LOG_SAMPLE').default(0).argParser(fraction))
    .addOption(new Option('--metrics-port <port>', 'Prometheus GET /metrics on --host (0 = off)').env('ADRANK_METRICS_PORT').default(DEFAULT_METRICS_PORT).argParser(int(0, 65535)))
    .addOption(new Option('--tls-cert <file>', 'PEM certificate chain: serve TLS (with --tls-key)').env('ADRANK_TLS_CERT'))
    .addOption(new Option('--tls-key <file>', 'PEM private key for --tls-cert').env('ADRANK_TLS_KEY'))
    .addOption(new Option('--tls-client-ca <file>', 'mTLS: clients must present a certificate signed by this CA').env('ADRANK_TLS_CLIENT_CA'))
    .addOption(new Option('--auth-token-file <file>', 'data RPCs need "authorization: Bearer <token>", one token a line; reread on SIGHUP').env('ADRANK_AUTH_TOKEN_FILE'))
    .addOption(new Option('--admin-token-file <file>', 'the admin service needs an admin token; reread on SIGHUP').env('ADRANK_ADMIN_TOKEN_FILE'))
    .addOption(new Option('--admin-insecure', 'the admin service without a token (trusted networks only)').env('ADRANK_ADMIN_INSECURE'))
    .addOption(new Option('--reflection', 'serve gRPC server reflection').env('ADRANK_REFLECTION'))
    .addOption(new Option('--max-connection-age-ms <ms>', 'GOAWAY connections after this age so load balancers rebalance (default: never)').env('ADRANK_MAX_CONNECTION_AGE_MS').argParser(int(1)))
    .addOption(new Option('--feature-log <dir>', 'log sampled served calls to DIR (gzip JSON lines; docs/feature-log.md)').env('ADRANK_FEATURE_LOG'))
    .addOption(new Option('--feature-log-sample <r>', 'fraction of requests logged, 0..1, by request id').env('ADRANK_FEATURE_LOG_SAMPLE').default(1).argParser(fraction))
    .addOption(new Option('--feature-log-max-bytes <n>', 'rotate a log file at this size').env('ADRANK_FEATURE_LOG_MAX_BYTES').default(DEFAULT_FEATURE_LOG_MAX_BYTES).argParser(int(1)))
    .addOption(new Option('--feature-log-max-age-s <s>', 'rotate a log file at this age').env('ADRANK_FEATURE_LOG_MAX_AGE_S').default(DEFAULT_FEATURE_LOG_MAX_AGE_MS / 1000).argParser(int(1)))
    .addOption(new Option('--feature-log-queue <n>', 'records waiting to be written at most; beyond → dropped and counted').env('ADRANK_FEATURE_LOG_QUEUE').default(DEFAULT_FEATURE_LOG_QUEUE).argParser(int(1)))
    .addOption(new Option('--feature-log-max-total-bytes <n>', 'delete the oldest complete log files while they total more than this').env('ADRANK_FEATURE_LOG_MAX_TOTAL_BYTES').default(DEFAULT_FEATURE_LOG_MAX_TOTAL_BYTES).argParser(int(1)))
    .addOption(new Option('--feature-log-min-free-bytes <n>', 'drop records (counted) instead of writing them while less than this is free on the log\'s file system (0 = no floor)').env('ADRANK_FEATURE_LOG_MIN_FREE_BYTES').default(DEFAULT_FEATURE_LOG_MIN_FREE_BYTES).argParser(int(0)))
    .addOption(new Option('--shadow-version <v>', 'also run a sampled copy of each Rank / RetrieveAndRank on repository version V after answering, and compare (needs --model-repository)').env('ADRANK_SHADOW_VERSION').argParser(int(1)))
    .addOption(new Option('--shadow-sample <r>', 'fraction of requests copied to the shadow version, 0..1, by request id').env('ADRANK_SHADOW_SAMPLE').default(1).argParser(fraction))
    .addOption(
      new Option('--shadow-idle-gap <x>', 'a copy starts only if the next call is expected later than x times a shadow run; 0 = no such check (default: cpu 2, cuda 0)')
        .env('ADRANK_SHADOW_IDLE_GAP')
        .argParser(decimal()),
    )
    .addOption(new Option('--shadow-max-inflight <n>', 'shadow runs in flight at most; beyond, copies are dropped and counted (default: cpu 1, cuda 4)').env('ADRANK_SHADOW_MAX_INFLIGHT').argParser(int(1, 1024)))
    .action((f: ServeFlags, cmd: Command) => serve(f, cmd));

  p.command('demo-bundle')
    .description('write a synthetic bundle with the demo config (docs/design.md §4)')
    .addOption(new Option('--ads <n>', 'ad count').default(DEMO_ADS).argParser(int(1)))
    .addOption(new Option('--seed <s>', 'random seed').default(1).argParser(int(0)))
    .requiredOption('--out <file>', 'output .safetensors file (required)')
    .action(async (f: { ads: number; seed: number; out: string }) => {
      const t0 = performance.now();
      const bar = progressBar(process.stderr, t0);
      const r = await writeDemoBundle({ ads: f.ads, seed: f.seed, out: f.out, onProgress: bar });
      bar(r.size, r.size, true);
      console.log(`wrote ${f.out}: ${f.ads} ads, ${formatBytes(r.size)}, sha256 ${r.sha256}, ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    });

  p.command('inspect')
    .description('validate a bundle and print its config, tensors, ad count and sha256')
    .argument('<bundle>', 'bundle file')
    .action((path: string) => inspect(path));

  p.command('shard')
    .description('split a bundle into S shard bundles DIR/shard-<i>.safetensors (ads by splitmix64(ad_id) mod S)')
    .argument('<bundle>', 'bundle file')
    .requiredOption('--shards <n>', 'number of shards', int(1, MAX_SHARDS))
    .requiredOption('--out <dir>', 'output directory')
    .action(async (path: string, f: { shards: number; out: string }) => {
      for (const s of await shardBundleFile(path, f.shards, f.out)) console.log(`wrote ${s.path}: ${s.ads} ads, ${formatBytes(s.size)}, sha256 ${s.sha256}`);
    });

  p.command('route')
    .description('serve adrank.v1.AdRanker over shard servers, merging their answers exactly (docs/deploy.md)')
    .requiredOption('--shard <target>', 'shard i\'s gRPC target, i-th (repeat): host:port, dns:///name:port, or replicas host:port,host:port / ipv4:a:p,b:p', (v: string, prev: string[] = []) => [...prev, v])
    .addOption(new Option('--host <host>', 'interface to listen on (0.0.0.0 for all)').env('ADRANK_HOST').default(DEFAULT_HOST))
    .addOption(new Option('--port <port>', 'port (0 = any free port)').env('ADRANK_PORT').default(DEFAULT_PORT).argParser(int(0, 65535)))
    .addOption(new Option('--shard-timeout-ms <ms>', 'shard deadline when the caller sets none').env('ADRANK_SHARD_TIMEOUT_MS').default(1000).argParser(int(1)))
    .addOption(new Option('--refresh-ms <ms>', 'how often the shards\' models are re-read').env('ADRANK_REFRESH_MS').default(5000).argParser(int(100)))
    .addOption(new Option('--max-message-bytes <n>', 'largest request accepted').env('ADRANK_MAX_MESSAGE_BYTES').default(DEFAULT_MAX_RECEIVE_BYTES).argParser(int(1024)))
    .addOption(new Option('--shutdown-grace-ms <ms>', 'drain time on SIGTERM before calls are cut').env('ADRANK_SHUTDOWN_GRACE_MS').default(DEFAULT_SHUTDOWN_GRACE_MS).argParser(int(0)))
    .addOption(new Option('--log-level <level>', 'debug | info | warn | error').env('ADRANK_LOG_LEVEL').default('info'))
    .action(route);

  p.command('client')
    .description('send a sample request of each RPC to a server and print the winners')
    .option('--address <host:port>', 'server address', `localhost:${DEFAULT_PORT}`)
    .addOption(new Option('--rpc <rpc>', 'which RPC').choices(['all', 'rank', 'retrieve', 'retrieve-and-rank', 'get-model']).default('all'))
    .addOption(new Option('--k <k>', 'winners per request').default(10).argParser(int(1, 10_000)))
    .action((f: { address: string; rpc: ClientRpc; k: number }) => runClient(f.address, f.rpc, f.k));

  addBenchCommand(p);
  p.command('explain')
    .description('ask AdRankerAdmin.Explain where and why each ad left the funnel, as a table (docs/explain.md)')
    .option('--address <host:port>', 'server address', `localhost:${DEFAULT_PORT}`)
    .addOption(new Option('--rpc <rpc>', 'which request').choices(['rank', 'retrieve', 'retrieve-and-rank']).default('rank'))
    .option('--request <file>', 'the request as JSON (proto3 JSON field names), or one feature-log record; default: a sample request')
    .option('--ads <ids>', 'comma-separated ad ids to explain (Rank: default every candidate)')
    .addOption(new Option('--k <k>', 'winners per sample request').default(10).argParser(int(1, 10_000)))
    .option('--json', 'print the ExplainResponse as JSON')
    .action((f: ExplainFlags) => runExplain(f));

  p.command('replay')
    .description('re-send the requests of a feature log and compare the answers with the logged ones (docs/feature-log.md)')
    .argument('<file>', 'feature-log file or directory')
    .option('--address <host:port>', 'server address', `localhost:${DEFAULT_PORT}`)
    .option('--model-version <v>', 'pin every request to this model version (default: the served model)')
    .addOption(new Option('--rate <r>', 'requests per second (0 = as fast as answers come)').default(0).argParser(decimal()))
    .addOption(new Option('--max-divergence <d>', 'exit 1 when 1 - mean overlap@K is above this').argParser(fraction))
    .addOption(new Option('--k <k>', 'compare the top K winners only (default all)').argParser(int(1, 10_000)))
    .addOption(new Option('--advertisers <n>', 'advertisers listed in the entered/left table').default(20).argParser(int(0)))
    .option('--json', 'print the summary as JSON')
    .action(async (file: string, f: ReplayFlags) => {
      const s = await replay(file, f);
      if (f.json) console.log(JSON.stringify(s, null, 2));
      else printReplay(s, f.advertisers, console.log);
      if (!s.pass) process.exitCode = 1;
    });

  p.command('compare-modes')
    .description('run the same requests in GLOBAL and LOCAL(P) ranking and report the shift, with an SVG plot (docs/funnel.md)')
    .option('--address <host:port>', 'server address', `localhost:${DEFAULT_PORT}`)
    .option('--log <file>', 'take the Rank and RetrieveAndRank requests of a feature log (file or directory)')
    .addOption(new Option('--generate <n>', 'generate N RetrieveAndRank requests on the served model (default 100 without --log)').argParser(int(1, 100_000)))
    .addOption(new Option('--partitions <list>', 'P values for LOCAL(P), comma-separated').default([2, 4, 8]).argParser(intList(1, 1024)))
    .addOption(new Option('--k <k>', 'winners per generated request').default(10).argParser(int(1, 10_000)))
    .addOption(new Option('--retrieve-count <r>', 'R of generated requests').default(1000).argParser(int(1, 10_000)))
    .addOption(new Option('--cap <m>', 'per-advertiser cap of generated requests').default(2).argParser(int(0)))
    .option('--bundle <file>', 'bundle for ads per advertiser (default ./demo/adrank-demo.safetensors when present)')
    .option('--plot <file>', 'SVG output', 'compare-modes.svg')
    .option('--json', 'print the report as JSON')
    .action(async (f: CompareModesFlags) => {
      if (f.log && f.generate) throw new InvalidArgumentError('give either --log or --generate, not both');
      const r = await compareModes(f);
      if (f.json) console.log(JSON.stringify(r, null, 2));
      else printCompareModes(r, console.log);
    });

  return p;
}

program()
  .parseAsync(process.argv)
  .catch((e: Error) => {
    console.error(`adrank: ${e.message}`);
    process.exit(1);
  });
