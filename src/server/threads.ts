/**
 * The front-end threads (--front-end-threads N, docs/operations.md "Front-end threads"): the main
 * thread and N − 1 worker threads each run a grpc-js server accepting connections on the same
 * port (SO_REUSEPORT: the kernel spreads the connections over the threads), and all of them serve
 * the same native engines (one per model version, shared through the addon; one copy of the model,
 * one CUDA context).
 *
 * The main thread owns the shared state: the state file and UpdateAdStates, the model registry,
 * ReloadModels and SIGHUP, health, and /metrics. A worker thread mirrors the model versions the
 * owner publishes (attaching to their engines), mirrors health, forwards every admin call to the
 * owner, and sends its metrics when the owner is scraped. An ad-state update is applied to the
 * shared engines before it is acknowledged, so every thread's next request sees it; ReloadModels
 * answers once every thread serves the new versions.
 *
 * The supervisor (FrontEndThreads, on the main thread) starts the workers, reports a thread that
 * exits unasked and starts another in its place (at most MAX_RESTARTS in RESTART_WINDOW_MS, after
 * which the server gives up: `onFatal`), and on shutdown drains every thread.
 */
import { availableParallelism } from 'node:os';
import { Worker, type MessagePort } from 'node:worker_threads';
import type { ServingStatus } from 'grpc-health-check';
import type { SharedEngine } from '../engine/index.js';
import type { AdminAnswer } from '../admin/service.js';
import type { ServerOptions } from './server.js';
import type { Logger, Level } from '../log.js';

/** Node ≥ 22.12: net.Server.listen({ reusePort }) (SO_REUSEPORT) is what lets the threads share a port. */
export const REUSE_PORT_NODE = [22, 12] as const;

export function reusePortSupported(version = process.versions.node): boolean {
  const [major, minor] = version.split('.').map(Number);
  return major > REUSE_PORT_NODE[0] || (major === REUSE_PORT_NODE[0] && minor >= REUSE_PORT_NODE[1]);
}

/** --front-end-threads default: one per core. */
export function defaultFrontEndThreads(): number {
  return availableParallelism();
}

/** Restarts of crashed threads allowed within RESTART_WINDOW_MS before the server gives up. */
export const MAX_RESTARTS = 5;
export const RESTART_WINDOW_MS = 60_000;
/** How long /metrics waits for a thread's numbers before it leaves that thread out. */
const METRICS_WAIT_MS = 2_000;

/** A model version as the owner publishes it to the other threads. */
export interface SharedVersion {
  version: string;
  path: string;
  shared: SharedEngine;
}

/** The server options a worker thread starts with (structured-clonable: token files by path). */
export type ThreadServerOptions = Pick<
  ServerOptions,
  'maxInflight' | 'inlineMaxUs' | 'inlineIdleMaxUs' | 'fastPath' | 'maxCandidates' | 'maxReceiveBytes' | 'shutdownGraceMs' | 'batching' | 'warmup' | 'tls' | 'reflection' | 'accessLogSample' | 'maxConnectionAgeMs'
> & {
  host: string;
  auth?: { dataTokenFile?: string; adminTokenFile?: string; adminInsecure?: boolean };
  /** the owner serves /metrics: this thread keeps its own for it */
  metrics: boolean;
};

export interface ThreadData {
  index: number;
  port: number;
  options: ThreadServerOptions;
}

/** owner → thread */
export type ToThread =
  | { type: 'models'; seq: number; versions: SharedVersion[] }
  | { type: 'health'; status: ServingStatus }
  | { type: 'admin-answer'; id: number; answer: AdminAnswer }
  | { type: 'metrics'; id: number }
  | { type: 'reload-auth' }
  | { type: 'shutdown'; reason: string };

/** thread → owner */
export type FromThread =
  | { type: 'listening' }
  | { type: 'failed'; message: string; code?: string }
  | { type: 'ready' }
  | { type: 'synced'; seq: number }
  | { type: 'admin'; id: number; method: string; request: unknown }
  | { type: 'metrics-answer'; id: number; json: object[] }
  | { type: 'log'; level: Level; event: string; fields?: Record<string, unknown> }
  | { type: 'device-failed'; version: string; message: string }
  | { type: 'stopped'; nativeRunsLeft: number };

/** What the owner server gives the supervisor. */
export interface ThreadOwner {
  log: Logger;
  /** the READY versions, shared */
  versions(): SharedVersion[];
  health(): ServingStatus;
  admin(method: string, request: unknown): Promise<AdminAnswer>;
  deviceFailed(version: string, message: string): void;
  /** crashed threads keep failing: the server cannot serve as asked */
  fatal(error: Error): void;
}

/** The worker module: ./thread-main.ts under tsx (tests, benches), ./thread-main.js when compiled. */
function entry(): URL {
  return new URL(import.meta.url.endsWith('.ts') ? './thread-main.ts' : './thread-main.js', import.meta.url);
}

interface Thread {
  index: number;
  worker: Worker;
  /** the last models message this thread acknowledged */
  synced: number;
  stopping: boolean;
  exited: Promise<number>;
  /** resolves when the thread has stopped serving (its 'stopped' message) or exited */
  stopped: Promise<void>;
  /** native runs still in flight on its engines when it stopped */
  nativeRunsLeft: number;
}

export class FrontEndThreads {
  private readonly threads = new Map<number, Thread>();
  private seq = 0;
  private waiters: (() => void)[] = [];
  private nextId = 1;
  private readonly metricsWaits = new Map<number, (json: object[]) => void>();
  private restarts: number[] = [];
  private closing = false;
  /** threads started after a crash, for tests and logs */
  replaced = 0;

  constructor(
    /** worker threads (the main thread is the other one) */
    readonly workers: number,
    private readonly port: number,
    private readonly options: ThreadServerOptions,
    private readonly owner: ThreadOwner,
  ) {}

  /** Starts every worker thread; resolves once each has bound the port. */
  async start(): Promise<void> {
    await Promise.all(Array.from({ length: this.workers }, (_, i) => this.spawn(i + 1)));
  }

  /** Live worker threads. */
  get live(): number {
    return this.threads.size;
  }

  /** The worker thread objects (tests: a thread that dies is replaced). */
  get workerThreads(): Worker[] {
    return [...this.threads.values()].map((t) => t.worker);
  }

  private spawn(index: number): Promise<void> {
    const data: ThreadData = { index, port: this.port, options: this.options };
    const worker = new Worker(entry(), { workerData: data, stdout: false, stderr: false });
    let exitedResolve!: (code: number) => void;
    let stoppedResolve!: () => void;
    const t: Thread = {
      index,
      worker,
      synced: -1,
      stopping: false,
      exited: new Promise((r) => (exitedResolve = r)),
      stopped: new Promise((r) => (stoppedResolve = r)),
      nativeRunsLeft: 0,
    };
    void t.exited.then(() => stoppedResolve());
    this.threads.set(index, t);
    return new Promise<void>((resolve, reject) => {
      let bound = false;
      worker.on('message', (m: FromThread) => {
        if (m.type === 'listening') {
          bound = true;
          this.publishTo(t);
          resolve();
        } else if (m.type === 'stopped') {
          t.nativeRunsLeft = m.nativeRunsLeft;
          stoppedResolve();
        } else if (m.type === 'failed' && !bound) {
          reject(Object.assign(new Error(m.message), { code: m.code }));
        } else {
          this.onMessage(t, m);
        }
      });
      worker.on('error', (e) => {
        this.owner.log.error('front_end_thread_error', { thread: index, error: e });
        if (!bound) reject(e);
      });
      worker.on('exit', (code) => {
        this.threads.delete(index);
        exitedResolve(code);
        this.wake();
        if (!bound) return reject(new Error(`front-end thread ${index} exited (code ${code}) before it was listening`));
        if (t.stopping || this.closing) return;
        this.crashed(index, code);
      });
    });
  }

  /** A thread ended unasked: report it, and start another unless they keep failing. */
  private crashed(index: number, code: number): void {
    const now = Date.now();
    this.restarts = this.restarts.filter((at) => now - at < RESTART_WINDOW_MS);
    this.owner.log.error('front_end_thread_exited', { thread: index, code, restartsInWindow: this.restarts.length, windowMs: RESTART_WINDOW_MS });
    if (this.restarts.length >= MAX_RESTARTS) {
      this.owner.fatal(new Error(`front-end threads keep failing: ${MAX_RESTARTS + 1} exits within ${RESTART_WINDOW_MS / 1000} s`));
      return;
    }
    this.restarts.push(now);
    this.spawn(index).then(
      () => {
        this.replaced++;
        this.owner.log.warn('front_end_thread_replaced', { thread: index });
      },
      (e: Error) => {
        this.owner.log.error('front_end_thread_restart_failed', { thread: index, error: e });
        if (!this.closing) this.owner.fatal(e);
      },
    );
  }

  private onMessage(t: Thread, m: FromThread): void {
    switch (m.type) {
      case 'log':
        this.owner.log[m.level](m.event, { ...m.fields, thread: t.index });
        return;
      case 'synced':
        t.synced = m.seq;
        this.wake();
        return;
      case 'admin':
        void this.owner.admin(m.method, m.request).then((answer) => this.post(t, { type: 'admin-answer', id: m.id, answer }));
        return;
      case 'metrics-answer':
        this.metricsWaits.get(m.id)?.(m.json);
        return;
      case 'device-failed':
        this.owner.deviceFailed(m.version, m.message);
        return;
      default:
        return;
    }
  }

  private post(t: Thread, m: ToThread): void {
    try {
      t.worker.postMessage(m);
    } catch (e) {
      this.owner.log.error('front_end_thread_message_failed', { thread: t.index, type: m.type, error: e });
    }
  }

  private publishTo(t: Thread): void {
    this.post(t, { type: 'models', seq: this.seq, versions: this.owner.versions() });
    this.post(t, { type: 'health', status: this.owner.health() });
  }

  /** The READY versions changed: every thread attaches to the new ones and retires the old. */
  publishModels(): void {
    this.seq++;
    const versions = this.owner.versions();
    for (const t of this.threads.values()) this.post(t, { type: 'models', seq: this.seq, versions });
  }

  publishHealth(status: ServingStatus): void {
    for (const t of this.threads.values()) this.post(t, { type: 'health', status });
  }

  /** Resolves once every live thread serves the versions published last. */
  synced(): Promise<void> {
    const target = this.seq;
    const done = () => [...this.threads.values()].every((t) => t.synced >= target);
    if (done()) return Promise.resolve();
    return new Promise((resolve) => {
      const check = () => {
        if (done()) resolve();
        else this.waiters.push(check);
      };
      this.waiters.push(check);
    });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Each worker thread's metrics (as JSON), for the owner's /metrics; a thread that does not
   *  answer within METRICS_WAIT_MS is left out of this scrape. */
  metricsJson(): Promise<object[][]> {
    return Promise.all(
      [...this.threads.values()].map(
        (t) =>
          new Promise<object[]>((resolve) => {
            const id = this.nextId++;
            const timer = setTimeout(() => {
              this.metricsWaits.delete(id);
              this.owner.log.warn('front_end_thread_metrics_missing', { thread: t.index, waitedMs: METRICS_WAIT_MS });
              resolve([]);
            }, METRICS_WAIT_MS);
            this.metricsWaits.set(id, (json) => {
              clearTimeout(timer);
              this.metricsWaits.delete(id);
              resolve(json);
            });
            this.post(t, { type: 'metrics', id });
          }),
      ),
    );
  }

  /** SIGHUP: every thread rereads its token files. */
  reloadAuth(): void {
    for (const t of this.threads.values()) this.post(t, { type: 'reload-auth' });
  }

  /** Native runs the stopped threads left in flight (a process exiting then should not wait for them). */
  get nativeRunsLeft(): number {
    return this.stoppedThreads.reduce((n, t) => n + t.nativeRunsLeft, 0);
  }
  private stoppedThreads: Thread[] = [];

  /** Drains every worker thread (each runs the server's graceful shutdown) and waits until each
   *  has stopped; one still running after `boundMs` is terminated (without waiting for it). */
  async shutdown(reason: string, boundMs: number): Promise<void> {
    this.closing = true;
    const all = [...this.threads.values()];
    this.stoppedThreads = all;
    for (const t of all) {
      t.stopping = true;
      this.post(t, { type: 'shutdown', reason });
    }
    await Promise.all(
      all.map(async (t) => {
        let timer: NodeJS.Timeout | undefined;
        const late = new Promise<'late'>((r) => (timer = setTimeout(() => r('late'), boundMs)));
        const r = await Promise.race([t.stopped, late]);
        clearTimeout(timer);
        if (r === 'late') {
          this.owner.log.error('front_end_thread_stop_overran', { thread: t.index, boundMs });
          void t.worker.terminate();
        }
      }),
    );
  }
}

/** A worker thread's side of the link to the owner: messages both ways, admin calls forwarded,
 *  and a logger whose lines the owner writes (one writer, each line with its `thread`). */
export class ThreadLink {
  private readonly handlers: ((m: ToThread) => void)[] = [];
  private readonly pending = new Map<number, (a: AdminAnswer) => void>();
  private nextId = 1;
  readonly log: Logger;

  constructor(
    private readonly port: MessagePort,
    readonly index: number,
    /** whether the owner serves /metrics (this thread then keeps its own, without the process metrics) */
    readonly metrics: boolean,
  ) {
    port.on('message', (m: ToThread) => {
      if (m.type === 'admin-answer') {
        this.pending.get(m.id)?.(m.answer);
        this.pending.delete(m.id);
      } else {
        for (const h of this.handlers) h(m);
      }
    });
    const line = (level: Level) => (event: string, fields?: Record<string, unknown>) => this.post({ type: 'log', level, event, fields });
    this.log = { debug: line('debug'), info: line('info'), warn: line('warn'), error: line('error') };
  }

  on(handler: (m: ToThread) => void): void {
    this.handlers.push(handler);
  }

  post(m: FromThread): void {
    try {
      this.port.postMessage(m);
    } catch (e) {
      // a log field that cannot be cloned (a function, a socket): send its text instead
      if (m.type !== 'log') throw e;
      this.port.postMessage({ ...m, fields: Object.fromEntries(Object.entries(m.fields ?? {}).map(([k, v]) => [k, String(v)])) });
    }
  }

  /** An admin call, answered by the owner thread. */
  admin(method: string, request: unknown): Promise<AdminAnswer> {
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.pending.set(id, resolve);
      this.post({ type: 'admin', id, method, request });
    });
  }
}
