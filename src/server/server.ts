/**
 * The gRPC server's lifecycle: bind (plaintext, TLS or mTLS), report NOT_SERVING while the model
 * loads and warms up, SERVING after, and on shutdown NOT_SERVING → GOAWAY and drain → calls
 * still running at the end of the grace period answered UNAVAILABLE → engine dispose (bounded
 * wait). Every call passes the interceptors: call tracking for the drain and the metrics
 * (./drain.ts, src/metrics), then token auth (src/auth). Also grpc.health.v1.Health and, opt-in, reflection.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { HealthImplementation, protoPath as healthProtoPath, type ServingStatus } from 'grpc-health-check';
import { ReflectionService } from '@grpc/reflection';
import protobuf from 'protobufjs';
import { lookup } from 'node:dns/promises';
import { createServer, type ListenOptions, type Server as NetServer, type AddressInfo } from 'node:net';
import { Engine, type SharedEngine } from '../engine/index.js';
import { addAdminService, addForwardedAdminService, adminRunner, reflectionPackageDefinition } from '../admin/service.js';
import { InflightLimit, Stats, type HandlerContext } from '../handlers/context.js';
import { FALLBACK_ONLY_VERSION, fixedLeases, ModelRegistry } from '../lifecycle/registry.js';
import { DeviceFailover } from '../lifecycle/failover.js';
import { ModelRepository, type RepositoryOptions } from '../lifecycle/repository.js';
import { AdStateStore } from '../state/store.js';
import { execute, unaryHandler, type EngineRpc } from '../handlers/engine-rpc.js';
import { describeModel, getModelHandler } from '../handlers/get-model.js';
import { rank } from '../handlers/rank.js';
import { retrieve } from '../handlers/retrieve.js';
import { retrieveAndRank } from '../handlers/retrieve-and-rank.js';
import { sampleRank, sampleRetrieve, sampleRetrieveAndRank } from '../handlers/sample.js';
import { DEFAULT_MAX_CANDIDATES, MAX_CANDIDATES } from '../handlers/validate.js';
import { FeatureLog, type FeatureLogOptions } from '../featurelog/writer.js';
import { jsonLogger, type Logger } from '../log.js';
import { RecentLatency } from '../fallback/recent-latency.js';
import { batcherFor, type BatchingOptions, type BatcherStats } from '../batcher/index.js';
import { loadProto, SERVICE_NAME } from '../wire/proto.js';
import { CallTracker, ConnectionCloser } from './drain.js';
import { FastUnary, type UnaryHandler } from './fast-unary.js';
import { Metrics } from '../metrics/index.js';
import { serveMetrics, type MetricsEndpoint } from '../metrics/http.js';
import { checkSample, engineCallObserver } from '../metrics/observe.js';
import { authInterceptor } from '../auth/interceptor.js';
import type { AuthConfig } from '../auth/policy.js';
import { serverCredentials, type TlsFiles } from '../auth/tls.js';
import { checkShadowOptions, Shadow, type ShadowOptions } from '../shadow/shadow.js';
import { FrontEndThreads, reusePortSupported, type SharedVersion, type ThreadLink, type ThreadServerOptions } from './threads.js';

export interface ServerOptions {
  /** default 'localhost' */
  host?: string;
  /** default 50051; 0 = any free port (see AdrankServer.port) */
  port?: number;
  /** One bundle's engine, or a function that loads it (named by its config.version). Loading
   *  starts after the port is bound, so health answers NOT_SERVING meanwhile. */
  engine?: Engine | (() => Promise<Engine>);
  /** Instead of `engine`: serve the versions of a model repository (src/lifecycle/repository.ts). */
  repository?: Pick<RepositoryOptions, 'dir' | 'load' | 'keepVersions' | 'pollMs' | 'settleMs'>;
  /** --fallback-only: when no model version loads at start, serve fallback answers from the ad
   *  tables of the newest one (`bundle` for a single bundle; the repository's FAILED versions are
   *  tried newest first) until a version loads (docs/funnel.md "Fallback"). */
  fallbackOnly?: { load: (path: string) => Promise<Engine>; bundle?: string };
  /** The live ad state (opened, i.e. replayed, by the caller); default: in memory only. */
  adState?: AdStateStore;
  /** concurrent engine RPCs; more fail at once with RESOURCE_EXHAUSTED (default 256) */
  maxInflight?: number;
  /** engine runs expected to take at most this many µs run on the JS thread that received the
   *  call, not on a request thread (CPU backend; 0 = never; default DEFAULT_INLINE_MAX_US) */
  inlineMaxUs?: number;
  /** a CPU run expected to take at most this many µs of engine time runs on the thread that
   *  received it when that thread is idle (0 = never; default DEFAULT_INLINE_IDLE_MAX_US) */
  inlineIdleMaxUs?: number;
  /** serve the engine RPCs on their HTTP/2 streams directly, beside grpc-js (src/server/fast-unary.ts;
   *  default true; false: every call through grpc-js) */
  fastPath?: boolean;
  /** candidate ids per Rank, 1..100,000 (the engine's limit; default 100,000) */
  maxCandidates?: number;
  /** largest request message accepted; larger → RESOURCE_EXHAUSTED (default 8 MiB) */
  maxReceiveBytes?: number;
  /** drain time on shutdown before in-flight calls are cut (default 10 s) */
  shutdownGraceMs?: number;
  /** micro-batching of Rank / RetrieveAndRank (src/batcher/); defaults by backend */
  batching?: BatchingOptions;
  /** run one request of each RPC before reporting SERVING (default true) */
  warmup?: boolean;
  log?: Logger;
  /** TLS, or mTLS with `clientCa`; absent = plaintext */
  tls?: TlsFiles;
  /** bearer-token auth (src/auth/policy.ts); absent = data plane open, admin service refused */
  auth?: AuthConfig;
  /** grpc.reflection (default off) */
  reflection?: boolean;
  /** Prometheus endpoint GET /metrics on `host` (default: the gRPC host), port 0 = any free
   *  port; absent = no metrics */
  metrics?: { port: number; host?: string };
  /** fraction of engine calls written as `access` log lines, 0..1 (default 0) */
  accessLogSample?: number;
  /** GOAWAY each connection after this many ms so that load balancers can rebalance (default: never) */
  maxConnectionAgeMs?: number;
  /** feature logging of served calls (docs/feature-log.md); off when absent */
  featureLog?: Omit<FeatureLogOptions, 'log'>;
  /** shadow traffic to a version of the repository (docs/operations.md "Shadow traffic"); needs
   *  `repository`; off when absent */
  shadow?: ShadowOptions;
  /** --front-end-threads: JS threads serving the port, each with its own grpc-js server (default
   *  1; src/server/threads.ts). More than one needs Node >= 22.12 (reusePort); the feature log and
   *  shadow traffic run on one thread. Otherwise the server serves from one thread and logs why. */
  frontEndThreads?: number;
  /** Front-end threads keep crashing (src/server/threads.ts): default, log and shut down. */
  onFatal?: (error: Error) => void;
  /** @internal A front-end worker thread's link to the owner thread (src/server/thread-main.ts). */
  thread?: ThreadLink;
}

/** What start() builds around the grpc-js server and hands to the instance. */
interface Parts {
  /** with several front-end threads: this thread's listening sockets (reusePort) */
  listeners?: NetServer[];
  tracker: CallTracker;
  closer: ConnectionCloser;
  metrics?: Metrics;
  endpoint?: MetricsEndpoint;
}

export const DEFAULT_PORT = 50051;
export const DEFAULT_HOST = 'localhost';
export const DEFAULT_MAX_INFLIGHT = 256;
/** runs expected to take at most this many µs of engine time run on the receiving JS thread:
 *  about what a hand-off to a request thread and back costs here (docs/wire.md "Inline runs") */
export const DEFAULT_INLINE_MAX_US = 50;
/** Idle inline runs: up to 30 ms of engine time (a Rank of about 1,000 on the demo model, 2 cores),
 *  the longest the event loop of an idle thread is held (docs/wire.md "Inline runs"). */
export const DEFAULT_INLINE_IDLE_MAX_US = 30_000;
export const DEFAULT_MAX_RECEIVE_BYTES = 8 * 1024 * 1024;
export const DEFAULT_SHUTDOWN_GRACE_MS = 10_000;

/** The port could not be bound; `code` is the system error (EADDRINUSE, EACCES, ...) when known. */
export class BindError extends Error {
  constructor(
    message: string,
    readonly address: string,
    readonly code: string,
  ) {
    super(message);
    this.name = 'BindError';
  }

  /** grpc-js reports "No address added ... errors: [listen EADDRINUSE: ...]". */
  static from(err: Error, address: string): BindError {
    const code = /\b(E[A-Z]{4,})\b/.exec(err.message)?.[1] ?? 'UNKNOWN';
    const what = code === 'EADDRINUSE' ? `address ${address} is already in use` : `cannot listen on ${address}: ${err.message}`;
    return new BindError(what, address, code);
  }
}
/** After the calls cut at the end of the grace period: time for their statuses to be flushed
 *  before the remaining connections are destroyed. */
const CUT_FLUSH_MS = 250;
/** How long after the drain shutdown waits for native runs (which cannot be cut) before it
 *  stops waiting and leaves the engine to be disposed when they finish. */
const NATIVE_RUN_WAIT_MS = 2_000;
/** Shutdown takes at most --shutdown-grace-ms plus this (docs/operations.md "Shutdown"). */
export const SHUTDOWN_BOUND_MS = CUT_FLUSH_MS + NATIVE_RUN_WAIT_MS + 250;

/**
 * Listens on every address of `host` with reusePort, so that the other front-end threads can
 * listen on the same port, and hands each connection to the grpc-js server (its connection
 * injector: plaintext, TLS and mTLS alike). Port 0 = a free port, the same on every address.
 */
async function listenShared(server: grpc.Server, credentials: grpc.ServerCredentials, host: string, port: number, address: string, first: boolean): Promise<{ port: number; listeners: NetServer[] }> {
  const bare = host.replace(/^\[|\]$/g, '');
  const addresses = (await lookup(bare, { all: true }).catch(() => [{ address: bare }])).map((a) => a.address);
  const injector = server.createConnectionInjector(credentials);
  const listeners: NetServer[] = [];
  const listen = (l: NetServer, addr: string, reusePort: boolean) =>
    new Promise<void>((resolve, reject) => {
      l.once('error', reject);
      l.listen({ host: addr, port, reusePort } as ListenOptions & { reusePort: boolean }, () => resolve());
    });
  for (const [i, addr] of addresses.entries()) {
    const l = createServer((socket) => injector.injectConnection(socket));
    try {
      if (first) {
        // With reusePort another process could listen on the port too, and the kernel would split
        // the connections between the two: the first thread checks that the port is free first.
        const probe = createServer();
        await listen(probe, addr, false);
        port = (probe.address() as AddressInfo).port;
        await new Promise((resolve) => probe.close(resolve));
      }
      await listen(l, addr, true);
    } catch (e) {
      // like grpc-js: an address of the name that cannot be had (no IPv6) is skipped if another binds
      if (i < addresses.length - 1 || listeners.length > 0) continue;
      for (const b of listeners) b.close();
      throw BindError.from(e as Error, address);
    }
    port = (l.address() as AddressInfo).port;
    listeners.push(l);
  }
  return { port, listeners };
}

/** --front-end-threads as served: `requested`, or 1 with the reason. */
export function frontEndThreadsFor(requested: number, opts: Pick<ServerOptions, 'featureLog' | 'shadow'>, node = process.versions.node): { threads: number; why?: string } {
  if (!(Number.isInteger(requested) && requested >= 1 && requested <= 1024)) throw new Error(`expected an integer in 1..1024 for front end threads, got ${requested}`);
  if (requested === 1) return { threads: 1 };
  if (!reusePortSupported(node)) return { threads: 1, why: `Node ${node} cannot share a port between threads (reusePort needs Node >= 22.12)` };
  if (opts.featureLog) return { threads: 1, why: 'the feature log is written by one thread' };
  if (opts.shadow) return { threads: 1, why: "shadow traffic sheds by one thread's load" };
  return { threads: requested };
}

/** The three engine RPCs by their method names in the proto service. */
const ENGINE_RPCS = { Retrieve: retrieve, Rank: rank, RetrieveAndRank: retrieveAndRank } as const;

function serviceDefinition(): grpc.ServiceDefinition {
  const base = loadProto().grpcObject.adrank.v1.AdRanker.service as unknown as grpc.ServiceDefinition;
  const def: Record<string, grpc.MethodDefinition<unknown, unknown>> = { ...base };
  for (const [method, rpc] of Object.entries(ENGINE_RPCS)) {
    def[method] = {
      ...base[method],
      // the handlers take the request bytes (parsed natively, docs/wire.md) and return the response bytes
      requestDeserialize: (bytes: Buffer) => bytes,
      responseSerialize: (bytes: unknown) => bytes as Buffer,
    };
  }
  return def as grpc.ServiceDefinition;
}

export class AdrankServer {
  readonly stats = new Stats();
  /** the engine RPCs' fast path (src/server/fast-unary.ts), when on */
  private fast: FastUnary | undefined;
  /** whether the engine RPCs are served on the fast path */
  get fastPath(): boolean {
    return this.fast !== undefined;
  }
  /** calls this thread served on the fast path so far */
  get fastPathCalls(): number {
    return this.fast?.served ?? 0;
  }
  /** resolves once the model is loaded and warmed up and health says SERVING */
  readonly ready: Promise<void>;
  /** the model versions: leases for requests, the default, states */
  readonly models: ModelRegistry;
  readonly adState: AdStateStore;
  private repo: ModelRepository | undefined;
  /** replaces an engine after a sticky device error (src/lifecycle/failover.ts) */
  readonly failover: DeviceFailover;
  private loaded = false;
  private healthNow: ServingStatus = 'NOT_SERVING';
  private closing: Promise<void> | undefined;
  /** the versions in adrank_model_info */
  private modelInfo = new Map<string, { version: string; backend: string; device: string }>();
  /** the engines shutdown stopped waiting for (their runs outlasted NATIVE_RUN_WAIT_MS) */
  private leftBehind: Engine[] = [];
  private readonly health = new HealthImplementation({ '': 'NOT_SERVING', [SERVICE_NAME]: 'NOT_SERVING' });
  private readonly watches = new Set<grpc.ServerWritableStream<unknown, unknown>>();
  private readonly ctx: HandlerContext;
  /** shadow traffic (--shadow-version), when on; the handlers see it as ctx.shadow */
  private shadowTraffic: Shadow | undefined;
  /** the other front-end threads, on the owner thread (undefined with one thread) */
  private threads: FrontEndThreads | undefined;
  /** on a worker thread: the owner's health, and the shared engine key of each version served */
  private ownerHealth: ServingStatus = 'NOT_SERVING';
  private readonly sharedKeys = new Map<string, number>();
  private applying: Promise<void> = Promise.resolve();
  private firstModels: (() => void) | undefined;
  /** resolves once start() has started the other front-end threads (at once with one thread) */
  private threadsUp: Promise<void>;
  private threadsStarted!: () => void;
  /** each engine as shared with the other threads (the same key and bundle copy every time) */
  private readonly shared = new WeakMap<Engine, SharedEngine>();

  private constructor(
    private readonly server: grpc.Server,
    readonly host: string,
    readonly port: number,
    private readonly opts: ServerOptions,
    readonly log: Logger,
    inflight: InflightLimit,
    private readonly parts: Parts,
  ) {
    this.adState = opts.adState ?? AdStateStore.memory({ log });
    this.models = new ModelRegistry(
      log,
      {
        onRetire: (e) => this.adState.detach(e),
        onChange: () => this.modelsChanged(),
        onFailed: () => this.parts.metrics?.modelLoadFailures.inc(),
      },
      opts.shadow?.version,
    );
    this.ctx = {
      engine: () => this.models.defaultEngine(),
      models: this.models,
      limits: { maxCandidates: opts.maxCandidates ?? DEFAULT_MAX_CANDIDATES },
      inflight,
      inlineMaxUs: opts.inlineMaxUs ?? DEFAULT_INLINE_MAX_US,
      inlineIdleMaxUs: opts.inlineIdleMaxUs ?? DEFAULT_INLINE_IDLE_MAX_US,
      log,
      stats: this.stats,
      latency: new RecentLatency(),
      observe: engineCallObserver(parts.metrics, { sample: opts.accessLogSample ?? 0, log }),
      metrics: parts.metrics,
      featureLog: opts.featureLog && new FeatureLog({ ...opts.featureLog, log }),
      afterSent: (request, fn) => parts.tracker.afterSent(request, fn),
    };
    this.failover = new DeviceFailover({
      registry: this.models,
      log,
      metrics: parts.metrics,
      rebuild: async (failed, version) => {
        const next = Engine.fromBundle(failed.bundle, { device: 'cpu', precision: 'auto' });
        try {
          await this.prepare(next, version);
        } catch (e) {
          this.adState.detach(next);
          next.dispose();
          throw e;
        }
        return next;
      },
      serving: (ok) => {
        if (!this.closing) this.setHealth(ok ? 'SERVING' : 'NOT_SERVING');
      },
    });
    const link = opts.thread;
    this.ctx.deviceFailed = link
      ? (_engine, version, error) => link.post({ type: 'device-failed', version, message: error.message })
      : (engine, version, error) => this.failover.onStickyError(engine, version, error);
    link?.on((m) => {
      if (m.type === 'models') this.applying = this.applying.then(() => this.applyModels(m.seq, m.versions));
      else if (m.type === 'health') {
        this.ownerHealth = m.status;
        this.followHealth();
      } else if (m.type === 'metrics') void parts.metrics?.json().then((json) => link.post({ type: 'metrics-answer', id: m.id, json }));
    });
    if (opts.shadow) {
      const shadow = new Shadow(opts.shadow, {
        models: this.models,
        limits: this.ctx.limits,
        log,
        metrics: parts.metrics,
        featureLog: this.ctx.featureLog,
        primaryBusy: () => this.primaryBusy(),
        backend: () => {
          const b = this.models.defaultEngine()?.backend;
          return b === 'none' ? 'cpu' : b; // an ads-only stand-in: CPU defaults
        },
      });
      this.shadowTraffic = shadow;
      this.ctx.shadow = shadow;
      if (parts.metrics) parts.metrics.shadowInflight.read = () => shadow.inflight;
    }
    if (parts.metrics) {
      parts.metrics.inflight.read = () => this.ctx.inflight.current;
      // requests waiting for a micro-batch; with batching off, native runs of the default version
      parts.metrics.queueDepth.read = () => (this.ctx.batcher?.enabled ? this.ctx.batcher.stats().queueDepth : this.models.defaultEngine()?.inflight());
    }
    if (parts.metrics && !link) {
      // the shared engines' device counters: once, from the owner thread
      parts.metrics.inflight.read = () => this.ctx.inflight.current;
      // requests waiting for a micro-batch; with batching off, native runs of the default version
      parts.metrics.queueDepth.read = () => (this.ctx.batcher?.enabled ? this.ctx.batcher.stats().queueDepth : this.models.defaultEngine()?.inflight());
      const stats = () => this.models.defaultEngine()?.deviceStats();
      parts.metrics.deviceGraphs.read = () => stats()?.graphs;
      parts.metrics.deviceCaptureFailures.read = () => stats()?.captureFailures;
      parts.metrics.deviceLostStreams.read = () => stats()?.lostStreams;
      const m = parts.metrics;
      m.adStateWritable.read = () => (this.adState.writable ? 1 : 0);
      m.adStateWriteFailures.read = () => Array.from(this.adState.writeFailures, ([reason, n]) => [{ reason }, n]);
      const fl = this.ctx.featureLog;
      if (fl) {
        m.featureLogBytes.read = () => fl.diskBytes;
        m.featureLogFilesDeleted.read = () => [[{}, fl.filesDeleted]];
        m.featureLogDropped.read = () => Array.from(fl.droppedBy, ([reason, n]) => [{ reason }, n]);
      }
    }
    this.threadsUp = new Promise((resolve) => (this.threadsStarted = resolve));
    this.addServices();
    this.ready = this.load().catch((e: unknown) => {
      // a repository's failed versions are counted as they fail (ModelRegistry.markFailed)
      if (!this.closing && !opts.repository && !link) parts.metrics?.modelLoadFailures.inc();
      throw e;
    });
    this.ready.catch(() => {}); // the caller decides; an unhandled rejection must not kill the process
  }

  /** Binds (bindAsync) and starts loading the engine; await `ready` for SERVING. */
  static async start(opts: ServerOptions): Promise<AdrankServer> {
    const log = opts.log ?? jsonLogger();
    // check the options before binding, so that a refused option leaves no port bound
    const maxCandidates = opts.maxCandidates ?? DEFAULT_MAX_CANDIDATES;
    if (!Number.isInteger(maxCandidates) || maxCandidates < 1 || maxCandidates > MAX_CANDIDATES)
      throw new Error(`expected an integer in 1..${MAX_CANDIDATES} for max candidates, got ${maxCandidates}`);
    const inflight = new InflightLimit(opts.maxInflight ?? DEFAULT_MAX_INFLIGHT);
    const inlineMaxUs = opts.inlineMaxUs ?? DEFAULT_INLINE_MAX_US;
    if (!(Number.isFinite(inlineMaxUs) && inlineMaxUs >= 0)) throw new Error(`expected a number of µs >= 0 for inline max us, got ${inlineMaxUs}`);
    const inlineIdleMaxUs = opts.inlineIdleMaxUs ?? DEFAULT_INLINE_IDLE_MAX_US;
    if (!(Number.isFinite(inlineIdleMaxUs) && inlineIdleMaxUs >= 0)) throw new Error(`expected a number of µs >= 0 for inline idle max us, got ${inlineIdleMaxUs}`);
    checkSample(opts.accessLogSample ?? 0);
    const maxAge = opts.maxConnectionAgeMs;
    if (maxAge !== undefined && !(Number.isInteger(maxAge) && maxAge >= 1)) throw new Error(`expected an integer >= 1 for max connection age ms, got ${maxAge}`);
    const credentials = serverCredentials(opts.tls);
    if (opts.shadow) {
      checkShadowOptions(opts.shadow);
      if (!opts.repository) throw new Error('shadow traffic needs a model repository (--model-repository): the shadow version is one of its versions');
    }
    const sample = opts.featureLog?.sample ?? 0;
    if (!(sample >= 0 && sample <= 1)) throw new Error(`expected a rate in 0..1 for feature log sample, got ${sample}`);
    const host = opts.host ?? DEFAULT_HOST;
    const { threads, why: fewerThreads } = opts.thread ? { threads: 1 } : frontEndThreadsFor(opts.frontEndThreads ?? 1, opts);
    if (fewerThreads) log.warn('front_end_threads_reduced', { requested: opts.frontEndThreads, threads, why: fewerThreads });
    const maxReceive = opts.maxReceiveBytes ?? DEFAULT_MAX_RECEIVE_BYTES;
    // a worker thread keeps its own metrics, without the process-wide ones, for the owner's /metrics
    const metrics = opts.thread ? (opts.thread.metrics ? new Metrics({ defaults: false }) : undefined) : opts.metrics ? new Metrics() : undefined;
    const tracker = new CallTracker(metrics && ((path) => metrics.method(path)), opts.shadow !== undefined);
    const server = new grpc.Server({
      // channelz (grpc-js's per-call and per-session counters) is not served: do not keep it
      'grpc.enable_channelz': 0,
      // nearest the wire first: the tracker (drain, metrics) sees every status, auth refusals included
      interceptors: [tracker.interceptor, authInterceptor(opts.auth ?? {}, log)],
      ...(maxAge !== undefined ? { 'grpc.max_connection_age_ms': maxAge } : {}),
      'grpc.max_receive_message_length': maxReceive,
      // ping idle clients so dead connections are noticed; tolerate client pings every 10 s
      'grpc.keepalive_time_ms': 60_000,
      'grpc.keepalive_timeout_ms': 20_000,
      'grpc.http2.min_ping_interval_without_data_ms': 10_000,
      'grpc.keepalive_permit_without_calls': 1,
    });
    const address = host.includes(':') && !host.startsWith('[') ? `[${host}]:${opts.port ?? DEFAULT_PORT}` : `${host}:${opts.port ?? DEFAULT_PORT}`;
    let port: number;
    let listeners: NetServer[] | undefined;
    if (threads > 1 || opts.thread) ({ port, listeners } = await listenShared(server, credentials, host, opts.port ?? DEFAULT_PORT, address, !opts.thread));
    else port = await new Promise<number>((resolve, reject) => server.bindAsync(address, credentials, (err, p) => (err ? reject(BindError.from(err, address)) : resolve(p))));
    const closer = new ConnectionCloser(server);
    let endpoint: MetricsEndpoint | undefined;
    if (metrics && !opts.thread) {
      try {
        endpoint = await serveMetrics(metrics, opts.metrics?.host ?? host, opts.metrics!.port);
      } catch (e) {
        server.forceShutdown();
        for (const l of listeners ?? []) l.close();
        throw e;
      }
    }
    const s = new AdrankServer(server, host, port, opts, log, inflight, { listeners, tracker, closer, metrics, endpoint });
    if (threads > 1) {
      s.threads = new FrontEndThreads(threads - 1, port, threadOptions(opts, host), s.threadOwner());
      try {
        await s.threads.start();
      } catch (e) {
        await s.shutdown('a front-end thread failed to start');
        throw e instanceof BindError || !(e as { code?: string }).code ? e : BindError.from(e as Error, address);
      }
      if (metrics) metrics.peers = () => s.threads!.metricsJson();
    }
    s.threadsStarted();
    log.info(opts.thread ? 'thread_listening' : 'listening', {
      address: `${host}:${port}`,
      tls: opts.tls ? (opts.tls.clientCa ? 'mtls' : 'tls') : 'off',
      auth: { data: opts.auth?.dataTokens ? 'token' : 'open', admin: opts.auth?.adminTokens ? 'token' : opts.auth?.adminInsecure ? 'insecure' : 'off' },
      reflection: opts.reflection ?? false,
      metricsPort: endpoint?.port ?? null,
      maxReceiveBytes: maxReceive,
      maxInflight: s.ctx.inflight.max,
      inlineMaxUs: s.ctx.inlineMaxUs,
      inlineIdleMaxUs: s.ctx.inlineIdleMaxUs,
      grpcFastPath: s.fastPath,
      maxCandidates: s.ctx.limits.maxCandidates,
      frontEndThreads: threads,
    });
    if (!closer.available) log.warn('idle_close_unavailable', { reason: 'this grpc-js does not expose its HTTP/2 servers; idle connections close when clients close them' });
    return s;
  }

  /** The metrics (undefined when the server was started without `metrics`). */
  get metrics(): Metrics | undefined {
    return this.parts.metrics;
  }

  /** The port GET /metrics is served on (undefined without metrics). */
  get metricsPort(): number | undefined {
    return this.parts.endpoint?.port;
  }

  get healthStatus(): ServingStatus {
    return this.healthNow;
  }

  /** The default version's engine (undefined while loading or after shutdown). */
  get engine(): Engine | undefined {
    return this.models.defaultEngine();
  }

  /** The model repository, when serving one (SIGHUP → repository.rescan). */
  get repository(): ModelRepository | undefined {
    return this.repo;
  }

  get inflight(): number {
    return this.ctx.inflight.current;
  }

  /** The other front-end threads (undefined with one thread, and on a worker thread). */
  get frontEndThreads(): FrontEndThreads | undefined {
    return this.threads;
  }

  /** Shadow traffic (undefined when off). */
  get shadow(): Shadow | undefined {
    return this.shadowTraffic;
  }

  /**
   * The shadow's shedding policy: is primary work in flight or waiting? On the CPU backend the
   * shadow competes for the same cores and libuv threads, so any primary request admitted and not
   * yet answered counts. On CUDA, with micro-batching on, only requests waiting for a batch count
   * (the device overlaps runs; a full queue is the sign that it is saturated).
   */
  private primaryBusy(): boolean {
    const b = this.ctx.batcher;
    if (this.models.defaultEngine()?.backend === 'cuda' && b?.enabled) return b.stats().queueDepth > 0;
    return this.ctx.inflight.current > 0;
  }

  /** The micro-batcher's numbers (queueDepth, lastBatchCandidates, ...) for metrics; undefined
   *  until the model is loaded. */
  batchStats(): Readonly<BatcherStats> | undefined {
    return this.ctx.batcher?.stats();
  }

  private setHealth(s: ServingStatus): void {
    this.healthNow = s;
    this.health.setStatus('', s);
    this.health.setStatus(SERVICE_NAME, s);
    this.threads?.publishHealth(s);
  }

  /** A worker thread: SERVING when the owner is and this thread has the default version. */
  private followHealth(): void {
    if (!this.loaded || this.closing) return;
    this.setHealth(this.ownerHealth === 'SERVING' && this.models.defaultEngine() ? 'SERVING' : 'NOT_SERVING');
  }

  /** What the supervisor of the other front-end threads needs from the owner thread. */
  private threadOwner() {
    const admin = adminRunner(this.adminContext(), this.ctx);
    return {
      log: this.log,
      versions: (): SharedVersion[] => this.models.ready().map((v) => ({ version: v.version, path: v.path, shared: this.share(v.engine!) })),
      health: () => this.healthNow,
      admin,
      deviceFailed: (version: string, message: string) => {
        const engine = this.models.get(version)?.engine;
        if (engine) this.failover.onStickyError(engine, version, new Error(message));
      },
      fatal: (e: Error) => {
        this.log.error('front_end_threads_failed', { error: e });
        if (this.opts.onFatal) this.opts.onFatal(e);
        else void this.shutdown('front-end threads failing');
      },
    };
  }

  private share(engine: Engine): SharedEngine {
    let s = this.shared.get(engine);
    if (!s) this.shared.set(engine, (s = engine.share()));
    return s;
  }

  private adminContext() {
    return {
      models: this.models,
      state: this.adState,
      repository: () => this.repo,
      log: this.log,
      stats: this.stats,
      metrics: this.parts.metrics,
      threadsSynced: () => this.threads?.synced() ?? Promise.resolve(),
    };
  }

  /**
   * A worker thread: serve the versions the owner published (attached to its engines, warmed up
   * on this thread) and retire the ones it no longer serves; then acknowledge `seq`.
   */
  private async applyModels(seq: number, versions: SharedVersion[]): Promise<void> {
    for (const sv of versions) {
      if (this.closing) return;
      const have = this.models.get(sv.version);
      if (have?.state === 'READY' && this.sharedKeys.get(sv.version) === sv.shared.key) continue;
      let engine: Engine;
      try {
        engine = Engine.attach(sv.shared);
        await this.prepareServing(engine, sv.version);
      } catch (e) {
        // the owner retired it meanwhile: the next message says so
        this.log.warn('thread_attach_failed', { version: sv.version, error: e });
        continue;
      }
      this.sharedKeys.set(sv.version, sv.shared.key);
      if (have?.state === 'READY') {
        const old = this.models.replaceEngine(have, engine);
        if (old) disposeWhenIdle(old);
      } else {
        this.models.markReady(this.models.loading(sv.version, sv.path), engine, 0);
      }
    }
    const keep = new Set(versions.map((v) => v.version));
    for (const v of this.models.ready()) {
      if (keep.has(v.version)) continue;
      this.sharedKeys.delete(v.version);
      void this.models.retire(v, 'retired by the owner thread');
    }
    if (this.models.defaultEngine()) this.firstModels?.();
    this.opts.thread?.post({ type: 'synced', seq });
  }

  private addServices(): void {
    const service = serviceDefinition();
    const engineRpcs = { Retrieve: unaryHandler(this.ctx, retrieve), Rank: unaryHandler(this.ctx, rank), RetrieveAndRank: unaryHandler(this.ctx, retrieveAndRank) };
    this.server.addService(service, { ...engineRpcs, GetModel: getModelHandler(this.ctx) });
    // the same handlers on the fast path, for the streams it can read (src/server/fast-unary.ts)
    if (this.opts.fastPath ?? true) {
      const fast = new FastUnary({ maxReceiveBytes: this.opts.maxReceiveBytes ?? DEFAULT_MAX_RECEIVE_BYTES, tracker: this.parts.tracker, auth: this.opts.auth ?? {}, log: this.log });
      for (const [name, handler] of Object.entries(engineRpcs)) fast.add(service[name].path, handler as UnaryHandler);
      if (fast.attach(this.server) > 0) this.fast = fast;
      else this.log.warn('fast_path_unavailable', { reason: "this grpc-js does not keep its HTTP/2 servers where adrank looks; every call goes through grpc-js" });
    }
    // Health, with Watch streams tracked so that shutdown can end them (they would hold the drain).
    this.health.addToServer({
      addService: (svc, impl) =>
        this.server.addService(svc as grpc.ServiceDefinition, {
          ...impl,
          watch: (call: grpc.ServerWritableStream<unknown, unknown>) => {
            this.watches.add(call);
            call.on('cancelled', () => this.watches.delete(call));
            (impl.watch as (c: unknown) => void)(call);
          },
        } as grpc.UntypedServiceImplementation),
    });
    const link = this.opts.thread;
    if (link) addForwardedAdminService(this.server, (method, request) => link.admin(method, request));
    else addAdminService(this.server, this.adminContext(), this.ctx);
    if (this.opts.reflection) {
      const healthDefinition = protoLoader.loadSync(healthProtoPath, { keepCase: true });
      new ReflectionService({ ...reflectionPackageDefinition(), ...healthDefinition }).addToServer(this.server);
    }
  }

  private async load(): Promise<void> {
    if (this.opts.thread) {
      // the owner loads; this thread serves what it publishes
      await new Promise<void>((resolve) => (this.firstModels = resolve));
      if (this.closing) return;
      this.loaded = true;
      this.followHealth();
      this.log.info('thread_serving', { address: `${this.host}:${this.port}`, default: this.models.defaultVersion() });
      return;
    }
    if (this.opts.repository) {
      this.repo = new ModelRepository({
        ...this.opts.repository,
        registry: this.models,
        log: this.log,
        prepare: (engine, version) => this.prepare(engine, version),
        discard: (engine) => this.adState.detach(engine),
        shadowVersion: this.opts.shadow?.version,
      });
      try {
        await this.repo.start();
      } catch (e) {
        if (!this.opts.fallbackOnly) throw e;
        await this.startFallbackOnly(e as Error, this.models.all().filter((v) => v.state === 'FAILED').map((v) => v.path));
        this.repo.startPolling();
      }
    } else {
      if (!this.opts.engine) throw new Error('expected an engine or a model repository in the server options');
      try {
        if (!(await this.loadBundle(this.opts.engine))) return;
      } catch (e) {
        if (!this.opts.fallbackOnly?.bundle) throw e;
        await this.startFallbackOnly(e as Error, [this.opts.fallbackOnly.bundle]);
      }
    }
    // every front-end thread serves the loaded versions before health says SERVING
    await this.threadsUp;
    await this.threads?.synced();
    if (this.closing) return;
    this.loaded = true;
    this.setHealth('SERVING');
    this.log.info('serving', { address: `${this.host}:${this.port}`, default: this.models.defaultVersion() });
    const sh = this.shadowTraffic;
    if (sh) this.log.info('shadow', { version: sh.version, state: this.models.get(sh.version)?.state ?? 'missing', sample: sh.sample, maxInflight: sh.maxInflight, idleGapFactor: sh.idleGapFactor });
    void this.adState.compact('start');
  }

  /** The single bundle (`engine` option): load, prepare, READY. False when shutdown began meanwhile. */
  private async loadBundle(source: Engine | (() => Promise<Engine>)): Promise<boolean> {
    const t0 = performance.now();
    const engine = typeof source === 'function' ? await source() : source;
    if (this.closing) {
      if (engine.inflight() === 0) engine.dispose();
      throw new Error('server shut down while the model was loading');
    }
    const c = engine.config;
    this.log.info('model_loaded', {
      model: c.name,
      version: c.version,
      ads: engine.numAds,
      backend: engine.backend,
      device: engine.description,
      deviceReason: engine.deviceReason,
      bundle: engine.bundle.path,
      loadMs: Math.round(performance.now() - t0),
    });
    if (engine.deviceDetail) this.log.debug('device_detail', { cuda: engine.deviceDetail });
    const v = this.models.loading(c.version, engine.bundle.path);
    await this.prepare(engine, c.version);
    if (this.closing) {
      // shutdown began during the warm-up and has already retired the READY versions
      this.adState.detach(engine);
      if (engine.inflight() === 0) engine.dispose();
      return false;
    }
    this.models.markReady(v, engine, Math.round(performance.now() - t0));
    return true;
  }

  /**
   * --fallback-only: no version loaded (`cause`). The first of `paths` whose ad tables read becomes
   * the stand-in version "fallback-only": every answer comes from the fallback (reason NO_MODEL)
   * until a model version loads, which then takes over and retires it. Throws `cause` when none reads.
   */
  private async startFallbackOnly(cause: Error, paths: string[]): Promise<void> {
    const fo = this.opts.fallbackOnly!;
    const t0 = performance.now();
    for (const path of paths) {
      let engine: Engine;
      try {
        engine = await fo.load(path);
      } catch (e) {
        this.log.error('fallback_only_unreadable', { path, error: e });
        continue;
      }
      const v = this.models.loading(FALLBACK_ONLY_VERSION, path);
      await this.prepare(engine, FALLBACK_ONLY_VERSION);
      this.models.markReady(v, engine, Math.round(performance.now() - t0));
      this.log.error('serving_fallback_only', { path, ads: engine.numAds, why: cause.message });
      return;
    }
    throw cause;
  }

  /** Before a version serves: the live ad state, the fallback plan, then the warm-up (on its own device). */
  private async prepare(engine: Engine, version: string): Promise<void> {
    const ads = this.adState.attach(engine);
    this.log.info('ad_state_applied', { version, ads, stateFile: this.adState.path ?? null });
    const fallback = await engine.prepareFallback();
    this.log.info('fallback_ready', { version, surfaces: fallback.map((f) => ({ surface: f.surface, listed: f.listed, value: Number(f.value.toFixed(4)) })) });
    await this.prepareServing(engine, version);
    // the file's sha256, hashed on a worker thread meanwhile (EngineOptions.hashLater): a version
    // serves with its identity known
    await engine.bundle.hashed;
  }

  /** This thread's part of preparing a version: the batcher (from the first version) and the warm-up. */
  private async prepareServing(engine: Engine, version: string): Promise<void> {
    if (engine.adsOnly) return; // no model runs: no batcher defaults from it, no warm-up
    if (!this.ctx.batcher) {
      // one batcher for the server, its defaults set by the first version's backend; it never mixes
      // versions in a batch
      this.ctx.batcher = batcherFor(this.opts.batching ?? {}, engine);
      const metrics = this.parts.metrics;
      if (metrics) this.ctx.batcher.onBatch = (b) => metrics.batchCandidates.observe(b.candidates);
      this.log.info('batching', { ...this.ctx.batcher.options, enabled: this.ctx.batcher.enabled });
    }
    if (this.opts.warmup ?? true) await this.warmup(engine, version);
  }

  /** Health follows the READY versions once the first load is done; state compaction drops ads
   *  no loaded version has. */
  private modelsChanged(): void {
    if (this.opts.thread) return this.followHealth(); // the owner keeps adrank_model_info and the state file
    this.syncModelInfo();
    this.threads?.publishModels();
    if (!this.loaded || this.closing) return;
    this.setHealth(this.models.defaultEngine() ? 'SERVING' : 'NOT_SERVING');
    void this.adState.compact('model versions changed');
  }

  /** adrank_model_info follows the READY versions. */
  private syncModelInfo(): void {
    const m = this.parts.metrics;
    if (!m) return;
    const ready = new Map(this.models.ready().map((v) => [v.version, { version: v.version, backend: v.engine!.backend, device: v.engine!.description }]));
    for (const [version, info] of this.modelInfo) if (!ready.has(version)) m.modelUnloaded(info);
    for (const [version, info] of ready) if (!this.modelInfo.has(version)) m.modelLoaded(info);
    this.modelInfo = ready;
  }

  /** One request of each RPC through the whole path (decode → validate → engine → encode). */
  private async warmup(engine: Engine, version: string): Promise<void> {
    const t0 = performance.now();
    const ctx: HandlerContext = { ...this.ctx, engine: () => engine, models: fixedLeases(engine, version) };
    const { root } = loadProto();
    const shape = describeModel(engine);
    const ids = engine.bundle.tensors['ads.id'] as BigInt64Array;
    // no more candidates than the server accepts (--max-candidates may be below 1000)
    const candidates = Array.from(ids.subarray(0, Math.min(1000, this.ctx.limits.maxCandidates)), String);
    const send = <R>(rpc: EngineRpc<R>, req: object) => {
      const type = root.lookupType(`adrank.v1.${rpc.name}Request`);
      return execute(ctx, rpc as EngineRpc<R & { requestId: string }>, Buffer.from(type.encode(type.fromObject(req) as protobuf.Message).finish()));
    };
    await send(retrieve, sampleRetrieve(shape));
    await send(rank, sampleRank(shape, candidates));
    await send(retrieveAndRank, sampleRetrieveAndRank(shape));
    this.log.info('warmed_up', { version, ms: Math.round(performance.now() - t0) });
  }

  /**
   * Graceful shutdown (docs/operations.md "Shutdown"): health NOT_SERVING (watchers are told,
   * then their streams end); GOAWAY to every connection and no new calls (tryShutdown), each
   * connection closed as soon as its calls are answered; at the end of the grace period the
   * calls still running are answered UNAVAILABLE; then the engine is disposed once no native
   * run is in flight (waiting at most NATIVE_RUN_WAIT_MS). Resolves within the grace period
   * plus SHUTDOWN_BOUND_MS.
   */
  shutdown(reason = 'shutdown'): Promise<void> {
    this.closing ??= (async () => {
      const grace = this.opts.shutdownGraceMs ?? DEFAULT_SHUTDOWN_GRACE_MS;
      const { tracker, closer } = this.parts;
      this.log.info('shutting_down', { reason, inflight: this.ctx.inflight.current, graceMs: grace });
      this.setHealth('NOT_SERVING');
      // no new shadow runs; the running ones hold leases on the shadow version, which the retiring
      // below waits for (bounded)
      void this.shadowTraffic?.close();
      for (const w of this.watches) w.end();
      this.watches.clear();
      // every front-end thread drains at the same time as this one
      const threadsStopped = this.threads?.shutdown(reason, grace + SHUTDOWN_BOUND_MS);
      for (const l of this.parts.listeners ?? []) l.close();
      const shut = new Promise<true>((resolve) => this.server.tryShutdown(() => resolve(true)));
      // injected connections (front-end threads): closed once their sockets are
      const closed = this.parts.listeners ? shut.then(() => closer.whenAllClosed()).then(() => true as const) : shut;
      closer.closeWhenDone();
      const drained = await within(closed, grace);
      if (!drained) {
        const cut = tracker.cutAll('the server is shutting down: the call was cut at the end of the grace period; retry on another replica');
        this.log.warn('drain_timeout', { inflight: this.ctx.inflight.current, cut, graceMs: grace });
        if (!(await within(closed, CUT_FLUSH_MS))) {
          this.server.forceShutdown();
          closer.destroyAll();
        }
      }
      // Native runs cannot be cut: each version is disposed once its runs have ended, waiting at
      // most NATIVE_RUN_WAIT_MS here; a version whose runs outlast that is disposed when they end
      // (a CLI process exits before that, see nativeRunsLeft).
      await this.repo?.stop();
      this.leftBehind = await this.models.close(NATIVE_RUN_WAIT_MS);
      await threadsStopped;
      try {
        // Closing the file is a libuv thread-pool job, queued behind native runs still left: skip it
        // then (every acknowledged update is already fsync'd; the process is about to exit).
        if (this.nativeRunsLeft === 0) await this.adState.close();
        else this.log.info('state_file_close_skipped', { why: 'native runs still hold the thread pool' });
      } catch (e) {
        this.log.error('state_file_close_failed', { error: e });
      }
      await this.ctx.featureLog?.close();
      await this.parts.endpoint?.close();
      this.log.info('stopped', { drained });
    })();
    return this.closing;
  }

  /** Native runs still in flight after shutdown resolved (past its bound). A process exiting
   *  now should not wait for them: the CLI then ends with the addon's exitNow. */
  get nativeRunsLeft(): number {
    return this.leftBehind.reduce((n, e) => n + e.inflight(), 0) + (this.threads?.nativeRunsLeft ?? 0);
  }

  private dispose(engine: Engine): void {
    try {
      engine.dispose();
    } catch (e) {
      this.log.error('dispose_failed', { error: e });
    }
  }
}

/** The options a front-end worker thread starts with: this server's, files by path. */
function threadOptions(opts: ServerOptions, host: string): ThreadServerOptions {
  return {
    host,
    maxInflight: opts.maxInflight,
    inlineMaxUs: opts.inlineMaxUs,
    inlineIdleMaxUs: opts.inlineIdleMaxUs,
    fastPath: opts.fastPath,
    maxCandidates: opts.maxCandidates,
    maxReceiveBytes: opts.maxReceiveBytes,
    shutdownGraceMs: opts.shutdownGraceMs,
    batching: opts.batching,
    warmup: opts.warmup,
    tls: opts.tls,
    auth: opts.auth && { dataTokenFile: opts.auth.dataTokens?.path, adminTokenFile: opts.auth.adminTokens?.path, adminInsecure: opts.auth.adminInsecure },
    reflection: opts.reflection,
    metrics: !!opts.metrics,
    accessLogSample: opts.accessLogSample,
    maxConnectionAgeMs: opts.maxConnectionAgeMs,
  };
}

/** Disposes an engine wrapper once no native run of this thread is left on it. */
function disposeWhenIdle(engine: Engine): void {
  const poll = setInterval(() => {
    if (engine.inflight() > 0) return;
    clearInterval(poll);
    engine.dispose();
  }, 20);
  poll.unref();
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** true if `p` resolves within `ms`, else false (the timer does not outlive the answer). */
function within(p: Promise<true>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}
