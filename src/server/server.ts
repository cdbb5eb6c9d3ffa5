/**
 * The gRPC server's lifecycle (DESIGN §7): bind, report NOT_SERVING while the model loads and
 * warms up, SERVING after, and on shutdown NOT_SERVING → drain (tryShutdown) → forceShutdown
 * after a grace period → engine dispose. Also grpc.health.v1.Health and server reflection.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { HealthImplementation, protoPath as healthProtoPath, type ServingStatus } from 'grpc-health-check';
import { ReflectionService } from '@grpc/reflection';
import protobuf from 'protobufjs';
import type { Engine } from '../engine/index.js';
import { InflightLimit, Stats, type HandlerContext } from '../handlers/context.js';
import { execute, unaryHandler, type EngineRpc } from '../handlers/engine-rpc.js';
import { describeModel, getModelHandler } from '../handlers/get-model.js';
import { rank } from '../handlers/rank.js';
import { retrieve } from '../handlers/retrieve.js';
import { retrieveAndRank } from '../handlers/retrieve-and-rank.js';
import { sampleRank, sampleRetrieve, sampleRetrieveAndRank } from '../handlers/sample.js';
import { DEFAULT_MAX_CANDIDATES, MAX_CANDIDATES } from '../handlers/validate.js';
import { addAdminService, loadAdminProto } from '../admin/service.js';
import { FeatureLog, type FeatureLogOptions } from '../featurelog/writer.js';
import { jsonLogger, type Logger } from './log.js';
import { loadProto, SERVICE_NAME } from './proto.js';

export interface ServerOptions {
  /** default 'localhost' */
  host?: string;
  /** default 50051; 0 = any free port (see AdrankServer.port) */
  port?: number;
  /** The engine, or a function that loads it. Loading starts after the port is bound, so
   *  health answers NOT_SERVING meanwhile. */
  engine: Engine | (() => Promise<Engine>);
  /** concurrent engine RPCs; more fail at once with RESOURCE_EXHAUSTED (default 256) */
  maxInflight?: number;
  /** candidate ids per Rank, 1..100,000 (the engine's limit; default 100,000) */
  maxCandidates?: number;
  /** largest request message accepted; larger → RESOURCE_EXHAUSTED (default 8 MiB) */
  maxReceiveBytes?: number;
  /** drain time on shutdown before in-flight calls are cut (default 10 s) */
  shutdownGraceMs?: number;
  /** run one request of each RPC before reporting SERVING (default true) */
  warmup?: boolean;
  log?: Logger;
  /** feature logging of served calls (docs/feature-log.md); off when absent */
  featureLog?: Omit<FeatureLogOptions, 'log'>;
}

export const DEFAULT_PORT = 50051;
export const DEFAULT_HOST = 'localhost';
export const DEFAULT_MAX_INFLIGHT = 256;
export const DEFAULT_MAX_RECEIVE_BYTES = 8 * 1024 * 1024;
export const DEFAULT_SHUTDOWN_GRACE_MS = 10_000;
/** How long past the grace period shutdown waits for native runs before giving up on dispose. */
const NATIVE_RUN_WAIT_MS = 60_000;

/** The three engine RPCs by their method names in the proto service. */
const ENGINE_RPCS = { Retrieve: retrieve, Rank: rank, RetrieveAndRank: retrieveAndRank } as const;

function serviceDefinition(): grpc.ServiceDefinition {
  const base = loadProto().grpcObject.adrank.v1.AdRanker.service as unknown as grpc.ServiceDefinition;
  const def: Record<string, grpc.MethodDefinition<unknown, unknown>> = { ...base };
  for (const [method, rpc] of Object.entries(ENGINE_RPCS)) {
    def[method] = {
      ...base[method],
      // fast request decoding (BigInt64Array id lists); handlers return encoded bytes
      requestDeserialize: (rpc as EngineRpc<unknown>).decode,
      responseSerialize: (bytes: unknown) => bytes as Buffer,
    };
  }
  return def as grpc.ServiceDefinition;
}

export class AdrankServer {
  readonly stats = new Stats();
  /** resolves once the model is loaded and warmed up and health says SERVING */
  readonly ready: Promise<void>;
  private engineNow: Engine | undefined;
  private healthNow: ServingStatus = 'NOT_SERVING';
  private closing: Promise<void> | undefined;
  private readonly health = new HealthImplementation({ '': 'NOT_SERVING', [SERVICE_NAME]: 'NOT_SERVING' });
  private readonly watches = new Set<grpc.ServerWritableStream<unknown, unknown>>();
  private readonly ctx: HandlerContext;

  private constructor(
    private readonly server: grpc.Server,
    readonly host: string,
    readonly port: number,
    private readonly opts: ServerOptions,
    readonly log: Logger,
    inflight: InflightLimit,
  ) {
    this.ctx = {
      engine: () => this.engineNow,
      limits: { maxCandidates: opts.maxCandidates ?? DEFAULT_MAX_CANDIDATES },
      inflight,
      log,
      stats: this.stats,
      featureLog: opts.featureLog && new FeatureLog({ ...opts.featureLog, log }),
    };
    this.addServices();
    this.ready = this.load();
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
    const sample = opts.featureLog?.sample ?? 0;
    if (!(sample >= 0 && sample <= 1)) throw new Error(`expected a rate in 0..1 for feature log sample, got ${sample}`);
    const host = opts.host ?? DEFAULT_HOST;
    const maxReceive = opts.maxReceiveBytes ?? DEFAULT_MAX_RECEIVE_BYTES;
    const server = new grpc.Server({
      'grpc.max_receive_message_length': maxReceive,
      // ping idle clients so dead connections are noticed; tolerate client pings every 10 s
      'grpc.keepalive_time_ms': 60_000,
      'grpc.keepalive_timeout_ms': 20_000,
      'grpc.http2.min_ping_interval_without_data_ms': 10_000,
      'grpc.keepalive_permit_without_calls': 1,
    });
    const address = host.includes(':') && !host.startsWith('[') ? `[${host}]:${opts.port ?? DEFAULT_PORT}` : `${host}:${opts.port ?? DEFAULT_PORT}`;
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    const s = new AdrankServer(server, host, port, opts, log, inflight);
    log.info('listening', { address: `${host}:${port}`, maxReceiveBytes: maxReceive, maxInflight: s.ctx.inflight.max, maxCandidates: s.ctx.limits.maxCandidates });
    return s;
  }

  get healthStatus(): ServingStatus {
    return this.healthNow;
  }

  /** The engine now serving (undefined while loading or after shutdown). */
  get engine(): Engine | undefined {
    return this.engineNow;
  }

  get inflight(): number {
    return this.ctx.inflight.current;
  }

  private setHealth(s: ServingStatus): void {
    this.healthNow = s;
    this.health.setStatus('', s);
    this.health.setStatus(SERVICE_NAME, s);
  }

  private addServices(): void {
    const { packageDefinition } = loadProto();
    this.server.addService(serviceDefinition(), {
      Retrieve: unaryHandler(this.ctx, retrieve),
      Rank: unaryHandler(this.ctx, rank),
      RetrieveAndRank: unaryHandler(this.ctx, retrieveAndRank),
      GetModel: getModelHandler(this.ctx),
    });
    addAdminService(this.server, this.ctx);
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
    const healthDefinition = protoLoader.loadSync(healthProtoPath, { keepCase: true });
    new ReflectionService({ ...packageDefinition, ...loadAdminProto().packageDefinition, ...healthDefinition }).addToServer(this.server);
  }

  private async load(): Promise<void> {
    const t0 = performance.now();
    const engine = typeof this.opts.engine === 'function' ? await this.opts.engine() : this.opts.engine;
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
      sha256: engine.bundle.sha256,
      loadMs: Math.round(performance.now() - t0),
    });
    this.engineNow = engine;
    if (this.opts.warmup ?? true) await this.warmup(engine);
    if (this.closing) return;
    this.setHealth('SERVING');
    this.log.info('serving', { address: `${this.host}:${this.port}` });
  }

  /** One request of each RPC through the whole path (decode → validate → engine → encode). */
  private async warmup(engine: Engine): Promise<void> {
    const t0 = performance.now();
    const { root } = loadProto();
    const shape = describeModel(engine);
    const ids = engine.bundle.tensors['ads.id'] as BigInt64Array;
    // no more candidates than the server accepts (--max-candidates may be below 1000)
    const candidates = Array.from(ids.subarray(0, Math.min(1000, this.ctx.limits.maxCandidates)), String);
    const send = <R>(rpc: EngineRpc<R>, req: object) => {
      const type = root.lookupType(`adrank.v1.${rpc.name}Request`);
      return execute(this.ctx, rpc as EngineRpc<R & { requestId: string }>, rpc.decode(Buffer.from(type.encode(type.fromObject(req) as protobuf.Message).finish())) as R & { requestId: string });
    };
    await send(retrieve, sampleRetrieve(shape));
    await send(rank, sampleRank(shape, candidates));
    await send(retrieveAndRank, sampleRetrieveAndRank(shape));
    this.log.info('warmed_up', { ms: Math.round(performance.now() - t0) });
  }

  /**
   * Graceful shutdown: health NOT_SERVING (watchers are told, then their streams end), stop
   * accepting calls and let in-flight ones finish (tryShutdown), cut them after the grace
   * period (forceShutdown), then dispose the engine once no native run is in flight.
   */
  shutdown(reason = 'shutdown'): Promise<void> {
    this.closing ??= (async () => {
      const grace = this.opts.shutdownGraceMs ?? DEFAULT_SHUTDOWN_GRACE_MS;
      this.log.info('shutting_down', { reason, inflight: this.ctx.inflight.current, graceMs: grace });
      this.setHealth('NOT_SERVING');
      for (const w of this.watches) w.end();
      this.watches.clear();
      const drained = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => {
          this.server.forceShutdown();
          resolve(false);
        }, grace);
        this.server.tryShutdown(() => {
          clearTimeout(timer);
          resolve(true);
        });
      });
      if (!drained) this.log.warn('drain_timeout', { inflight: this.ctx.inflight.current, graceMs: grace });
      const engine = this.engineNow;
      this.engineNow = undefined;
      if (engine) {
        // Native runs cannot be cut: after the grace period, keep waiting (bounded) so the engine's
        // memory is freed rather than leaked by a failed dispose.
        const until = Date.now() + grace + NATIVE_RUN_WAIT_MS;
        if (engine.inflight() > 0) this.log.info('waiting_for_native_runs', { inflight: engine.inflight() });
        while (engine.inflight() > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
        try {
          engine.dispose();
        } catch (e) {
          this.log.error('dispose_failed', { error: e });
        }
      }
      await this.ctx.featureLog?.close();
      this.log.info('stopped', { drained });
    })();
    return this.closing;
  }
}
