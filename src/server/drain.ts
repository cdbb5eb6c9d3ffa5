/**
 * What shutdown needs beyond grpc-js's tryShutdown/forceShutdown:
 *
 * - `CallTracker` (a server interceptor, nearest the wire) knows the calls in flight, so that
 *   the calls still running at the end of the grace period are answered UNAVAILABLE ("the
 *   server is shutting down; retry elsewhere"), which clients and routers retry, instead of
 *   being reset with RST_STREAM CANCEL by forceShutdown, which they do not. As it sees every
 *   status sent (answers, auth refusals, cuts, cancels), it also times and records each call
 *   for the metrics, without a second wrapper per call.
 * - `ConnectionCloser` closes each connection as soon as it has nothing left to send. After
 *   tryShutdown's GOAWAY, Node's HTTP/2 session ends its side of the socket and then waits for
 *   the client to close its side; a client that keeps an idle connection open (Python grpcio
 *   does for seconds, a half-open socket forever) would hold the drain to the end of the grace
 *   period.
 */
import type { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { Server as TlsServer } from 'node:tls';
import { ServerInterceptingCall, status, type Server, type ServerInterceptor } from '@grpc/grpc-js';

/** Records how each call ended (src/metrics: adrank_requests_total and the duration histogram). */
export interface CallRecorder {
  finished(code: number, seconds: number): void;
}

export class CallTracker {
  /** each call in flight (its wire-side call, or its fast-path call) → how to end it with a status */
  private readonly calls = new Map<object, { end: (code: number) => boolean; send: (code: number, details: string) => void }>();
  private idle: (() => void)[] = [];
  /** by request message: what runs once that call's status has been sent (see afterSent) */
  private readonly pendingAfter = new WeakMap<object, () => void>();
  /** request messages whose call's status has been sent */
  private readonly sent = new WeakSet<object>();

  /** `recorderFor` (optional) gives the recorder for a method path, or null for none: this
   *  interceptor sees every status sent, so it is also where per-call metrics are taken.
   *  `trackSent`: keep what afterSent needs (each call's request and whether its status went);
   *  off where nothing calls afterSent (no shadow traffic), which saves a weak-set entry per call. */
  constructor(
    private readonly recorderFor?: (path: string) => CallRecorder | null,
    private readonly trackSent = true,
  ) {}

  /** Tracks a call from now on: `send` answers it with a status (cutAll). Returns `end(code)`,
   *  to call when its status is sent or it ends without one; true the first time. */
  begin(key: object, path: string, send: (code: number, details: string) => void): (code: number) => boolean {
    const rec = this.recorderFor?.(path) ?? null;
    const t0 = rec ? performance.now() : 0;
    let live = true;
    const end = (code: number): boolean => {
      if (!live) return false;
      live = false;
      this.calls.delete(key);
      if (rec) rec.finished(code, (performance.now() - t0) / 1000);
      if (this.calls.size === 0 && this.idle.length > 0) for (const f of this.idle.splice(0)) f();
      return true;
    };
    this.calls.set(key, { end, send });
    return end;
  }

  readonly interceptor: ServerInterceptor = (method, call) => {
    let request: object | undefined;
    const end = this.begin(call, method.path, (code, details) => call.sendStatus({ code, details }));
    return new ServerInterceptingCall(call, {
      // ended without a status through the interceptors: a client cancel, or the deadline
      start: (next) =>
        next({
          onReceiveMessage: this.trackSent
            ? (m, nextMessage) => {
                if (m !== null && typeof m === 'object') request = m as object;
                nextMessage(m);
              }
            : undefined,
          onCancel: () => {
            end(Number(call.getDeadline()) <= Date.now() ? status.DEADLINE_EXCEEDED : status.CANCELLED);
            if (request) this.statusSent(request); // nothing more will be sent
          },
        }),
      sendStatus: (s, next) => {
        if (end(s.code)) next(s); // else already answered (cut at the end of the grace period)
        if (request) this.statusSent(request);
      },
    });
  };

  get size(): number {
    return this.calls.size;
  }

  /** Runs `fn` once the status of the call whose (decoded) request message is `request` has been
   *  handed to the wire: at once if it has been, or if the call is not one this tracker saw.
   *  (grpc-js sends a unary answer's status only after its message is written, a turn or more
   *  after the handler's callback.) One `fn` per call. */
  afterSent(request: object, fn: () => void): void {
    if (this.sent.has(request)) return fn();
    this.pendingAfter.set(request, fn);
  }

  /** The status of the call whose request message is `request` has been handed to the wire. */
  statusSent(request: object): void {
    if (!this.trackSent) return;
    this.sent.add(request);
    const fn = this.pendingAfter.get(request);
    if (!fn) return;
    this.pendingAfter.delete(request);
    fn();
  }

  /** Resolves when no call is in flight. */
  whenIdle(): Promise<void> {
    return this.calls.size === 0 ? Promise.resolve() : new Promise((resolve) => this.idle.push(resolve));
  }

  /** Answers every call in flight with `code`; their handlers' later answers are dropped. */
  cutAll(details: string, code: status = status.UNAVAILABLE): number {
    const n = this.calls.size;
    for (const { end, send } of [...this.calls.values()]) {
      end(code);
      send(code, details);
    }
    return n;
  }
}

export class ConnectionCloser {
  private readonly sockets = new Set<Socket>();
  private closing = false;
  private allClosed: (() => void)[] = [];
  /** false when this grpc-js version does not expose its HTTP/2 servers (then the drain waits
   *  for clients to close, as grpc-js alone does) */
  readonly available: boolean;

  /** Call right after bindAsync: watches the connections of the server's listeners. */
  constructor(server: Server) {
    // grpc-js keeps its node:http2 servers in a private map; this is the one place that reads it
    const listeners = (server as unknown as { http2Servers?: unknown }).http2Servers;
    this.available = listeners instanceof Map;
    if (!this.available) return;
    for (const s of (listeners as Map<EventEmitter, unknown>).keys()) {
      // TLS: the TLS socket is the one the HTTP/2 session ends; plaintext: the TCP socket
      s.on(s instanceof TlsServer ? 'secureConnection' : 'connection', (socket: Socket) => this.add(socket));
    }
  }

  get open(): number {
    return this.sockets.size;
  }

  private add(socket: Socket): void {
    this.sockets.add(socket);
    socket.once('close', () => {
      this.sockets.delete(socket);
      if (this.sockets.size === 0) for (const f of this.allClosed.splice(0)) f();
    });
    if (this.closing) this.arm(socket);
  }

  /** From now on, destroy each connection once its side is finished (all sent, FIN written). */
  closeWhenDone(): void {
    this.closing = true;
    for (const s of this.sockets) this.arm(s);
  }

  private arm(socket: Socket): void {
    // a moment after the FIN, so that the last bytes are read before the socket goes away
    const destroy = () => setTimeout(() => socket.destroy(), 20);
    if (socket.writableFinished) destroy();
    else socket.once('finish', destroy);
  }

  /** Resolves once no connection is open. grpc-js's tryShutdown does not wait for the sessions
   *  of connections handed to it by a connection injector (the front-end threads); this does. */
  whenAllClosed(): Promise<void> {
    return this.sockets.size === 0 ? Promise.resolve() : new Promise((resolve) => this.allClosed.push(resolve));
  }

  /** Destroys every connection now. */
  destroyAll(): void {
    for (const s of this.sockets) s.destroy();
  }
}
