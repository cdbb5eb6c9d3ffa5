/**
 * `adrank route`: serves adrank.v1.AdRanker over S shard servers (docs/deploy.md). Each request
 * fans out to the shards under the caller's deadline and the answers are merged so that they
 * equal a single server's on the unsharded bundle (docs/funnel.md "Sharded serving"). Shards
 * that fail or miss the deadline are left out, named in `missing_shards`, with `partial = true`,
 * and counted.
 *
 * It also answers grpc.health.v1 and server reflection, like `adrank serve`.
 *
 * The router learns the model from the shards' GetModel: every shard must be shard i of S (in
 * --shard order) of the same source bundle, with the same config. It reports SERVING once it
 * has seen all of them, re-reads them every `refreshMs`, and pins every shard request to one
 * model version (the one all shards last agreed on), so one answer never mixes versions.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation, protoPath as healthProtoPath, type ServingStatus } from 'grpc-health-check';
import protobuf from 'protobufjs';
import { validateConfig } from '../model/bundle.js';
import type { ModelConfig } from '../model/config.js';
import { DEFAULT_MAX_CANDIDATES } from '../handlers/validate.js';
import { serviceError } from '../handlers/engine-rpc.js';
import { jsonLogger, type Logger } from '../log.js';
import { loadProto, SERVICE_NAME } from '../wire/proto.js';
import type { GetModelResponse, GetModelResponse__Output } from '../generated/adrank/v1/GetModelResponse.js';
import { ShardClient } from './shard-client.js';
import { routeHandler, type RouteContext, type RouteRpc } from './route-rpc.js';
import { routeRetrieve } from './retrieve.js';
import { routeRank } from './rank.js';
import { routeRetrieveAndRank } from './retrieve-and-rank.js';

export interface RouterOptions {
  /** one gRPC target per shard, shard i first (see ShardClient for the forms) */
  shards: string[];
  host?: string;
  port?: number;
  /** shard deadline when the caller sets none (default 1000 ms) */
  shardTimeoutMs?: number;
  /** how often the shards' GetModel is re-read (default 5000 ms) */
  refreshMs?: number;
  shutdownGraceMs?: number;
  maxReceiveBytes?: number;
  log?: Logger;
}

const RPCS = { Retrieve: routeRetrieve, Rank: routeRank, RetrieveAndRank: routeRetrieveAndRank } as const;

interface View {
  ctx: RouteContext;
  models: (GetModelResponse__Output | undefined)[];
}

export class RouterServer {
  /** shard failures by shard index, and answers by "rpc code" / "rpc partial" */
  readonly shardFailures: number[];
  readonly outcomes: Record<string, number> = {};
  /** shard calls made, by RPC (more than one per shard: second phases and pages) */
  readonly shardCalls: Record<string, number> = {};
  readonly ready: Promise<void>;
  private view: View | undefined;
  private readonly clients: ShardClient[];
  private readonly health = new HealthImplementation({ '': 'NOT_SERVING', [SERVICE_NAME]: 'NOT_SERVING' });
  private healthNow: ServingStatus = 'NOT_SERVING';
  private readonly watches = new Set<grpc.ServerWritableStream<unknown, unknown>>();
  private timer: NodeJS.Timeout | undefined;
  private closing: Promise<void> | undefined;
  private readonly getModelType: protobuf.Type;

  private constructor(
    private readonly server: grpc.Server,
    readonly port: number,
    private readonly opts: RouterOptions,
    readonly log: Logger,
  ) {
    this.clients = opts.shards.map((t, i) => new ShardClient(i, t));
    this.shardFailures = opts.shards.map(() => 0);
    this.getModelType = loadProto().root.lookupType('adrank.v1.GetModelResponse');
    this.addServices();
    this.ready = this.discover();
    this.ready.catch(() => {});
  }

  static async start(opts: RouterOptions): Promise<RouterServer> {
    if (opts.shards.length === 0) throw new Error('expected at least one --shard');
    const log = opts.log ?? jsonLogger();
    const server = new grpc.Server({ 'grpc.max_receive_message_length': opts.maxReceiveBytes ?? 8 * 1024 * 1024 });
    const host = opts.host ?? 'localhost';
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(`${host}:${opts.port ?? 50051}`, grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
    );
    log.info('router_listening', { address: `${host}:${port}`, shards: opts.shards });
    return new RouterServer(server, port, opts, log);
  }

  get healthStatus(): ServingStatus {
    return this.healthNow;
  }

  private setHealth(s: ServingStatus): void {
    this.healthNow = s;
    this.health.setStatus('', s);
    this.health.setStatus(SERVICE_NAME, s);
  }

  private addServices(): void {
    const base = loadProto().grpcObject.adrank.v1.AdRanker.service as unknown as grpc.ServiceDefinition;
    const def: Record<string, grpc.MethodDefinition<unknown, unknown>> = { ...base };
    const hooks = {
      ctx: () => this.view?.ctx,
      log: this.log,
      defaultShardTimeoutMs: this.opts.shardTimeoutMs ?? 1000,
      onShardFailure: (shard: number, code: grpc.status, details: string) => {
        this.shardFailures[shard]++;
        this.log.warn('shard_failed', { shard, target: this.opts.shards[shard], code: grpc.status[code], details });
        if (code === grpc.status.NOT_FOUND) void this.refresh();
      },
      onShardCalls: (rpc: string, calls: number) => {
        this.shardCalls[rpc] = (this.shardCalls[rpc] ?? 0) + calls;
      },
      onOutcome: (rpc: string, code: string, partial: boolean) => {
        const key = `${rpc} ${code}${partial ? ' partial' : ''}`;
        this.outcomes[key] = (this.outcomes[key] ?? 0) + 1;
      },
    };
    const impl: grpc.UntypedServiceImplementation = { GetModel: (call: unknown, cb: grpc.sendUnaryData<GetModelResponse>) => this.getModel(cb) };
    for (const [method, rpc] of Object.entries(RPCS)) {
      const r = rpc as RouteRpc<{ requestId: string }>;
      def[method] = { ...base[method], requestDeserialize: (b: Buffer) => ({ raw: b, req: r.decode(b) }), responseSerialize: (b: unknown) => b as Buffer };
      impl[method] = routeHandler(hooks, r) as grpc.handleUnaryCall<unknown, unknown>;
    }
    this.server.addService(def as grpc.ServiceDefinition, impl);
    // Health, with Watch streams tracked so that shutdown can end them (they would hold the drain).
    this.health.addToServer({
      addService: (svc, hImpl) =>
        this.server.addService(svc as grpc.ServiceDefinition, {
          ...hImpl,
          watch: (call: grpc.ServerWritableStream<unknown, unknown>) => {
            this.watches.add(call);
            call.on('cancelled', () => this.watches.delete(call));
            (hImpl.watch as (c: unknown) => void)(call);
          },
        } as grpc.UntypedServiceImplementation),
    });
    const healthDefinition = protoLoader.loadSync(healthProtoPath, { keepCase: true });
    new ReflectionService({ ...loadProto().packageDefinition, ...healthDefinition }).addToServer(this.server);
  }

  /** Reads every shard's GetModel until all have answered consistently, then SERVING. */
  private async discover(): Promise<void> {
    for (;;) {
      if (this.closing) throw new Error('router shut down before every shard answered');
      await this.refresh();
      if (this.view && this.view.models.every((m) => m)) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    this.setHealth('SERVING');
    this.log.info('router_serving', { shards: this.clients.length, version: this.view!.ctx.version, ads: this.numAds() });
    this.timer = setInterval(() => void this.refresh(), this.opts.refreshMs ?? 5000);
    this.timer.unref();
  }

  private numAds(): number {
    return (this.view?.models ?? []).reduce((s, m) => s + Number(m?.numAds ?? 0), 0);
  }

  private fetchModel(c: ShardClient): Promise<GetModelResponse__Output> {
    return c.call('GetModel', Buffer.alloc(0), Date.now() + 2000).then(
      (b) => this.getModelType.toObject(this.getModelType.decode(b), { longs: String, enums: String, defaults: true, oneofs: true }) as GetModelResponse__Output,
    );
  }

  /** Re-reads the shards' models; keeps the last answer of a shard that does not answer. */
  async refresh(): Promise<void> {
    const got = await Promise.allSettled(this.clients.map((c) => this.fetchModel(c)));
    const S = this.clients.length;
    const models = got.map((g, i) => {
      if (g.status === 'rejected') return this.view?.models[i];
      const m = g.value;
      const problem =
        !m.shard ? 'serves an unsharded bundle'
        : m.shard.count !== S ? `is shard ${m.shard.index} of ${m.shard.count}, not of ${S}`
        : m.shard.index !== i ? `is shard ${m.shard.index}, but was given as --shard number ${i} (shard i goes i-th)`
        : undefined;
      if (problem) {
        this.log.error('shard_mismatch', { shard: i, target: this.opts.shards[i], problem });
        return undefined;
      }
      return m;
    });
    const seen = models.filter((m): m is GetModelResponse__Output => !!m);
    if (seen.length === 0) return;
    const sources = new Set(seen.map((m) => m.shard!.sourceSha256));
    const versions = new Set(seen.map((m) => m.version));
    if (sources.size > 1 && this.view) this.log.warn('shard_sources_differ', { sources: [...sources] });
    let ctx = this.view?.ctx;
    // pin the version every shard serves; while they differ (a rollout), keep the old pin
    if (!ctx || (versions.size === 1 && !versions.has(ctx.version))) {
      const m = seen[0];
      let config: ModelConfig;
      try {
        config = validateConfig(JSON.parse(m.configJson));
      } catch (e) {
        this.log.error('shard_config_invalid', { error: e });
        return;
      }
      if (ctx) this.log.info('router_version_changed', { from: ctx.version, to: m.version });
      ctx = { shards: this.clients, config, version: m.version, limits: { maxCandidates: DEFAULT_MAX_CANDIDATES } };
    } else if (versions.size > 1) this.log.warn('shard_versions_differ', { versions: seen.map((m) => m.version), pinned: ctx.version });
    this.view = { ctx, models };
  }

  private getModel(cb: grpc.sendUnaryData<GetModelResponse>): void {
    const v = this.view;
    const first = v?.models.find((m) => m);
    if (!v || !first) return cb(serviceError(grpc.status.UNAVAILABLE, 'the router has not yet seen every shard (health: NOT_SERVING)'));
    cb(null, {
      ...first,
      version: v.ctx.version,
      device: `router over ${this.clients.length} shards (${first.device})`,
      numAds: String(this.numAds()),
      bundleSha256: first.shard?.sourceSha256 ?? '',
      shard: null,
      shardVersions: v.models.map((m) => m?.version ?? ''),
    });
  }

  /** NOT_SERVING, drain for the grace period, then cut; closes the shard channels. */
  shutdown(reason = 'shutdown'): Promise<void> {
    this.closing ??= (async () => {
      const grace = this.opts.shutdownGraceMs ?? 10_000;
      this.log.info('router_shutting_down', { reason, graceMs: grace });
      clearInterval(this.timer);
      this.setHealth('NOT_SERVING');
      for (const w of this.watches) w.end();
      this.watches.clear();
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          this.server.forceShutdown();
          resolve();
        }, grace);
        this.server.tryShutdown(() => {
          clearTimeout(t);
          resolve();
        });
      });
      for (const c of this.clients) c.close();
      this.log.info('router_stopped', {});
    })();
    return this.closing;
  }
}
