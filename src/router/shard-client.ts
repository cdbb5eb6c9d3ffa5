/**
 * The router's connection to one shard (docs/deploy.md "Balancing"). A shard is a gRPC target:
 * - one name (`dns:///adrank-shard-0.adrank:50051`, `host:port`, `ipv4:a:p`): one grpc-js
 *   channel with the round_robin policy over every address the name resolves to (a headless
 *   Kubernetes Service lists only ready pods), and UNAVAILABLE retried by the channel;
 * - a static list of replicas, `host:port,host:port` or an address list `ipv4:a:p,b:p` /
 *   `ipv6:[a]:p,[b]:p`: one channel per replica, each watched with grpc.health.v1 Watch, calls
 *   spread round robin over the SERVING ones (health checking that grpc-js does not do itself),
 *   an UNAVAILABLE call retried once on the next SERVING replica.
 * Why address lists are not left to grpc-js's round_robin: it has no health checking, so a
 * replica that restarts is picked as soon as its new process listens, while it still loads and
 * warms up (`adrank serve` binds first, to answer health NOT_SERVING) and answers every call
 * UNAVAILABLE. The channel's retry does not move such a call elsewhere: each attempt takes the
 * next pick of the one picker that every call shares, and the calls that failed together retry
 * together, so half of their retries land on the same replica again and now and then a call
 * spends all its attempts there (the intermittent failures of test/71's ipv4: case). A DNS name
 * has no such window where readiness takes a pod out of DNS (a headless Service).
 * The engine RPCs are read-only, so a retry cannot apply a request twice.
 */
import * as grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs';

const SERVICE = 'adrank.v1.AdRanker';
/** Shard channels may carry large candidate lists and listings. */
const MAX_MESSAGE = 64 * 1024 * 1024;

const channelOptions = (serviceConfig?: object): grpc.ChannelOptions => ({
  'grpc.max_receive_message_length': MAX_MESSAGE,
  'grpc.max_send_message_length': MAX_MESSAGE,
  'grpc.keepalive_time_ms': 30_000,
  'grpc.keepalive_timeout_ms': 10_000,
  'grpc.initial_reconnect_backoff_ms': 100,
  // The router reconnects to a restarted replica within about this long (±20% jitter) of its
  // new process listening. With a cap of seconds it could still be backing off from a replica
  // that had said SERVING a second before, and a restart of the next replica then left it one
  // draining replica and one it could not reach, so every call failed (test/71). Trying a shard
  // address four times a second while it is down costs next to nothing.
  'grpc.max_reconnect_backoff_ms': 250,
  ...(serviceConfig ? { 'grpc.service_config': JSON.stringify(serviceConfig) } : {}),
});

/** round_robin, and UNAVAILABLE retried up to twice (each retry takes the shared picker's next
 *  pick, which under concurrent calls may be the same address again: no replacement for health
 *  checking, see above). */
const ROUND_ROBIN = {
  loadBalancingConfig: [{ round_robin: {} }],
  methodConfig: [
    {
      name: [{ service: SERVICE }],
      retryPolicy: { maxAttempts: 3, initialBackoff: '0.005s', maxBackoff: '0.05s', backoffMultiplier: 2, retryableStatusCodes: ['UNAVAILABLE'] },
    },
  ],
};

const pass = (b: Buffer) => b;

/** grpc.health.v1 HealthCheckRequest / HealthCheckResponse, enough for Watch. */
const healthRoot = protobuf.Root.fromJSON({
  nested: {
    HealthCheckRequest: { fields: { service: { type: 'string', id: 1 } } },
    HealthCheckResponse: { fields: { status: { type: 'int32', id: 1 } } },
  },
});
const HealthReq = healthRoot.lookupType('HealthCheckRequest');
const HealthRes = healthRoot.lookupType('HealthCheckResponse');
const SERVING = 1;

export interface ShardCallError extends Error {
  code: grpc.status;
  details: string;
}

function unary(client: grpc.Client, method: string, req: Buffer, deadline: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(`/${SERVICE}/${method}`, pass, pass, req, new grpc.Metadata(), { deadline }, (err, res) => (err ? reject(err) : resolve(res!)));
  });
}

/** One replica of a static list, with its health watched. */
class Replica {
  readonly client: grpc.Client;
  serving = false;
  private stream: grpc.ClientReadableStream<Buffer> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(readonly address: string) {
    this.client = new grpc.Client(address, grpc.credentials.createInsecure(), channelOptions());
    this.watch();
  }

  private watch(): void {
    if (this.closed) return;
    const req = Buffer.from(HealthReq.encode({ service: SERVICE }).finish());
    // wait for ready: while the replica is unreachable the watch waits for the next connection
    // (and reports the replica's health as soon as it is up) instead of failing at once
    const stream = this.client.makeServerStreamRequest('/grpc.health.v1.Health/Watch', pass, pass, req, new grpc.Metadata({ waitForReady: true }), {});
    this.stream = stream;
    stream.on('data', (b: Buffer) => {
      this.serving = (HealthRes.decode(b) as unknown as { status: number }).status === SERVING;
    });
    const again = () => {
      if (this.stream !== stream) return;
      this.serving = false;
      this.stream = undefined;
      if (!this.closed) this.timer = setTimeout(() => this.watch(), 200);
    };
    stream.on('error', again);
    stream.on('end', again);
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.stream?.cancel();
    this.client.close();
  }
}

/**
 * The replicas of a --shard target: `host:port,host:port` → each entry; an address list
 * `ipv4:a:p,b:p` (or `ipv6:`, with an optional `//authority/`) → one single-address target of
 * the same scheme per address (`ipv4:a:p`, `ipv4:b:p`), so that grpc-js still parses each one
 * (its default port, IPv6 forms); any other target → itself alone.
 */
export function replicaTargets(target: string): string[] {
  const ip = /^(ipv4|ipv6):(\/\/[^/]*\/)?(.*)$/.exec(target.trim());
  if (ip) return ip[3].split(',').map((a) => (a.trim() === '' ? '' : `${ip[1]}:${ip[2] ?? ''}${a.trim()}`));
  return target.split(',').map((s) => s.trim());
}

/** The router's handle on shard `index`. */
export class ShardClient {
  private readonly client: grpc.Client | undefined;
  private readonly replicas: Replica[] = [];
  private next = 0;

  constructor(
    readonly index: number,
    readonly target: string,
  ) {
    const list = replicaTargets(target);
    if (list.some((s) => s === '')) throw new Error(`expected a gRPC target or a comma-separated list of host:port for --shard, got ${JSON.stringify(target)}`);
    if (list.length > 1) this.replicas = list.map((a) => new Replica(a));
    else this.client = new grpc.Client(target, grpc.credentials.createInsecure(), channelOptions(ROUND_ROBIN));
  }

  /** Replicas reporting SERVING (static lists), for logs and tests. */
  get servingReplicas(): string[] {
    return this.replicas.filter((r) => r.serving).map((r) => r.address);
  }

  /** Round robin over the SERVING replicas (all of them when none says SERVING yet). */
  private pick(skip?: Replica): Replica {
    const others = this.replicas.filter((r) => r !== skip);
    const candidates = others.length > 0 ? others : this.replicas;
    const serving = candidates.filter((r) => r.serving);
    const pool = serving.length > 0 ? serving : candidates;
    return pool[this.next++ % pool.length];
  }

  /** One unary call of an AdRanker method with encoded request bytes; resolves to response bytes. */
  async call(method: string, req: Buffer, deadline: number): Promise<Buffer> {
    if (this.client) return unary(this.client, method, req, deadline);
    const first = this.pick();
    try {
      return await unary(first.client, method, req, deadline);
    } catch (e) {
      if ((e as ShardCallError).code !== grpc.status.UNAVAILABLE || this.replicas.length < 2 || Date.now() >= deadline) throw e;
      return unary(this.pick(first).client, method, req, deadline);
    }
  }

  close(): void {
    this.client?.close();
    for (const r of this.replicas) r.close();
  }
}
