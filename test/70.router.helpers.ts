/**
 * Helpers for the router tests: `adrank serve` child processes on loopback (shards and
 * replicas), random requests of every RPC and mode, and the comparison of two answers.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { connect as tcpConnect, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { expect } from 'chai';
import type { ModelConfig } from '../src/model/config.js';
import type { Rng } from '../src/model/random.js';
import type { RankRequest } from '../src/generated/adrank/v1/RankRequest.js';
import type { RetrieveAndRankRequest } from '../src/generated/adrank/v1/RetrieveAndRankRequest.js';

export const DEVICE = process.env.ADRANK_TEST_DEVICE ?? 'cpu';
const CLI = join(process.cwd(), 'src', 'cli', 'main.ts');

/** An `adrank serve` process; `port` once it listens, `serving` once it is warm. */
export class ServeProcess {
  readonly child: ChildProcess;
  readonly port: Promise<number>;
  readonly serving: Promise<void>;
  readonly exited: Promise<number | null>;

  constructor(bundle: string, port = 0, extra: string[] = []) {
    this.child = spawn(process.execPath, ['--import', 'tsx', CLI, 'serve', '--bundle', bundle, '--port', String(port), '--device', DEVICE, '--threads', '1', '--log-level', 'info', '--metrics-port', '0', ...extra], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let onPort: (p: number) => void;
    let onServing: () => void;
    this.port = new Promise((r) => (onPort = r));
    this.serving = new Promise((r) => (onServing = r));
    this.exited = new Promise((r) => this.child.on('exit', (code) => r(code)));
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      let e: { event?: string; address?: string };
      try {
        e = JSON.parse(line);
      } catch {
        return;
      }
      if (e.event === 'listening') onPort(Number(String(e.address).split(':').pop()));
      if (e.event === 'serving') onServing();
    });
  }

  /** Resolves when the process is serving, or fails after `ms`. */
  async ready(ms = 60_000): Promise<number> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`adrank serve not serving after ${ms} ms`)), ms)));
    try {
      await Promise.race([this.serving, timeout, this.exited.then((c) => Promise.reject(new Error(`adrank serve exited with ${c}`)))]);
      return await this.port;
    } finally {
      clearTimeout(timer);
    }
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
  }
}

/**
 * A TCP relay in front of a server that can be stalled: while stalled it forwards nothing either
 * way (bytes are held, in order, until `resume`), so the server behind it looks hung to its
 * clients while it stays up. A stalled shard made this way is deterministic; a shard stopped
 * with SIGSTOP once answered a call in CI all the same, a whole answer where a partial one was due.
 */
export class StallableRelay {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private held: [Socket, Buffer][] = [];
  private stalled = false;
  readonly port: Promise<number>;

  constructor(upstreamPort: number) {
    this.server = createServer((down) => {
      const up = tcpConnect({ host: 'localhost', port: upstreamPort });
      for (const [from, to] of [[down, up], [up, down]] as const) {
        this.sockets.add(from);
        from.on('data', (b: Buffer) => (this.stalled ? this.held.push([to, b]) : to.write(b)));
        from.on('error', () => {});
        from.on('close', () => {
          this.sockets.delete(from);
          to.destroy();
        });
      }
    });
    this.port = new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => resolve((this.server.address() as { port: number }).port));
    });
  }

  stall(): void {
    this.stalled = true;
  }

  resume(): void {
    this.stalled = false;
    for (const [to, b] of this.held) if (!to.destroyed) to.write(b);
    this.held = [];
  }

  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    return new Promise((r) => this.server.close(() => r()));
  }
}

export type AnyRequest = RankRequest & RetrieveAndRankRequest;
export type Rpc = 'Retrieve' | 'Rank' | 'RetrieveAndRank';

/**
 * A random valid request of `rpc`: random user, targeting (some unknown values), exclusions,
 * K (sometimes large), cap 0..3, task weights and reserve sometimes, local(P) for the ranking
 * RPCs half the time; Rank candidates with unknown ids and repeats.
 */
/** n candidate ids: ~5% unknown (negative), ~5% repeats of earlier ones, the rest from `ids`. */
function randomCandidates(rng: Rng, ids: string[], n: number): string[] {
  const cands: string[] = [];
  for (let i = 0; i < n; i++) {
    const x = rng.uniform();
    if (x < 0.05) cands.push(String(-rng.int(1, 1e6)));
    else if (x < 0.1 && cands.length > 0) cands.push(rng.pick(cands));
    else cands.push(rng.pick(ids));
  }
  return cands;
}

export function randomRequest(rng: Rng, c: ModelConfig, ids: string[], advertisers: string[], rpc: Rpc, n: number): AnyRequest {
  const f = () => Math.round((rng.uniform() * 4 - 2) * 1000) / 1000;
  const r: AnyRequest = {
    requestId: `rr-${n}-${rng.u32()}`,
    surface: rng.pick(c.surfaces),
    user: {
      dense: Array.from({ length: c.user_dense }, f),
      embedding: Array.from({ length: c.user_embedding_dim }, f),
      sparse: Object.fromEntries(c.user_sparse.filter(() => rng.uniform() < 0.7).map((s) => [s.name, { ids: Array.from({ length: rng.int(0, 3) }, () => String(rng.int(0, 500))) }])),
      sequence: (() => {
        const len = rng.int(0, c.sequence.max_len + 2);
        return { itemIds: Array.from({ length: len }, () => String(rng.int(0, 10_000))), actions: Array.from({ length: len }, () => rng.int(0, c.sequence.actions - 1)) };
      })(),
    },
    targeting: c.targeting_dims.map(() => (rng.uniform() < 0.15 ? 64 + rng.int(0, 9) : rng.int(0, 7))),
    k: rng.uniform() < 0.15 ? rng.int(50, 400) : rng.int(1, 30),
    perAdvertiserCap: rng.int(0, 3),
  };
  if (rng.uniform() < 0.3) r.exclusions = { adIds: Array.from({ length: rng.int(1, 20) }, () => rng.pick(ids)), advertiserIds: Array.from({ length: rng.int(0, 5) }, () => rng.pick(advertisers)) };
  if (rng.uniform() < 0.3) r.taskWeights = Object.fromEntries(c.tasks.map((t) => [t, rng.uniform() < 0.2 ? 0 : 0.1 + 2 * rng.uniform()]).concat([[c.tasks[0], 1]]));
  if (rng.uniform() < 0.3) r.reserve = Math.round(rng.uniform() * 100) / 1000;
  if (rpc !== 'Retrieve' && rng.uniform() < 0.5) r.ranking = { mode: 'LOCAL', partitions: rng.int(1, 8) };
  if (rpc === 'Rank') {
    const n = rng.int(0, 600);
    r.candidateAdIds = randomCandidates(rng, ids, n);
    r.price = rng.uniform() < 0.6;
  }
  if (rpc === 'RetrieveAndRank') {
    r.k = Math.min(r.k!, 200);
    r.retrieveCount = rng.uniform() < 0.3 ? 0 : rng.int(r.k!, Math.max(r.k!, 600));
    if (rng.uniform() < 0.5) {
      // blended: the caller's own candidates (unknown and repeated ids among them), a quota, and
      // sometimes a retrieve count below K
      r.candidateAdIds = randomCandidates(rng, ids, rng.int(1, 300));
      if (rng.uniform() < 0.5) r.candidateQuota = rng.int(1, 100);
      if (rng.uniform() < 0.3) r.retrieveCount = rng.int(1, r.k!);
    }
  }
  return r;
}

/** Everything in an answer but the timings (which are per server). */
export function comparable(a: Record<string, unknown>): Record<string, unknown> {
  const { timings: _t, ...rest } = a;
  return rest;
}

export function expectSameAnswer(got: Record<string, unknown>, want: Record<string, unknown>, what: string): void {
  expect(comparable(got), what).to.deep.equal(comparable(want));
}
