/**
 * The engine RPCs' unary calls served on their HTTP/2 streams directly (docs/wire.md "The fast
 * path"), beside grpc-js: grpc-js keeps the connections (sessions, keepalive, max connection
 * age, TLS), every other method, and the requests it alone can read (compressed ones); the
 * hot methods skip its per-call stack (metadata objects, interceptor layers, the stream decoder,
 * the call wrappers), which cost more server CPU per call than the whole of the rest.
 *
 * What a call here does is what grpc-js does for it, checked by the same tests: the same auth
 * policy (src/auth/policy.ts), `grpc-timeout` deadlines with the same DEADLINE_EXCEEDED, the
 * size limit with grpc-js's message, cancellation, the drain (the call tracker), per-call metrics,
 * and the same status texts for a missing or second message. The handler is the one grpc-js would
 * run (src/handlers/engine-rpc.ts unaryHandler), given a call object with what it reads.
 */
import type { EventEmitter } from 'node:events';
import type { IncomingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import { Metadata, status, type sendUnaryData, type Server, type ServerUnaryCall } from '@grpc/grpc-js';
import { authorize, needsCheck, type AuthConfig } from '../auth/policy.js';
import type { Logger } from '../log.js';
import type { CallTracker } from './drain.js';

export type UnaryHandler = (call: ServerUnaryCall<Buffer, Buffer>, callback: sendUnaryData<Buffer>) => void;
type StreamListener = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number, rawHeaders: string[]) => void;

export interface FastUnaryOptions {
  /** largest request message; larger → RESOURCE_EXHAUSTED, as grpc-js's limit */
  maxReceiveBytes: number;
  tracker: CallTracker;
  auth: AuthConfig;
  log: Logger;
}

/** grpc-js's reading of grpc-timeout (server-interceptors.ts) */
const TIMEOUT = /(\d{1,8})\s*([HMSmun])/;
const UNIT_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 };
const OK_HEADERS = { ':status': 200, 'content-type': 'application/grpc+proto', 'grpc-accept-encoding': 'identity,deflate,gzip', 'grpc-encoding': 'identity' };
const OK_TRAILERS = { 'grpc-status': '0', 'grpc-message': 'OK' };
const noop = () => {};

export class FastUnary {
  private readonly handlers = new Map<string, UnaryHandler>();
  private readonly taken = new WeakSet<object>();
  /** calls served here so far */
  served = 0;

  constructor(private readonly o: FastUnaryOptions) {}

  /** Serves `path` here (a unary method whose request and response are the raw message bytes). */
  add(path: string, handler: UnaryHandler): void {
    this.handlers.set(path, handler);
  }

  /**
   * Takes over the `stream` event of each HTTP/2 server of `server` (bound ports and connection
   * injectors made so far): a stream of an added method that this path can read is served here,
   * every other stream goes to grpc-js's own listener. Returns how many servers it took; 0 when
   * this grpc-js does not keep its servers where this looks (everything then stays with grpc-js).
   */
  attach(server: Server): number {
    const servers = (server as unknown as { http2Servers?: unknown }).http2Servers;
    if (!(servers instanceof Map)) return 0;
    const opened = (server as unknown as { onStreamOpened?: (stream: ServerHttp2Stream) => void }).onStreamOpened?.bind(server);
    let n = 0;
    for (const h2 of servers.keys() as Iterable<EventEmitter>) {
      if (this.taken.has(h2)) continue;
      const theirs = h2.listeners('stream') as StreamListener[];
      if (theirs.length !== 1) continue; // not the shape this was written for: grpc-js keeps it
      const grpcJs = theirs[0];
      h2.removeListener('stream', grpcJs);
      h2.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number, raw: string[]) => {
        const path = headers[':path'];
        const handler = path === undefined ? undefined : this.handlers.get(path);
        if (handler === undefined || !readable(headers)) return grpcJs.call(h2, stream, headers, flags, raw);
        opened?.(stream); // grpc-js's idle-connection accounting
        this.served++;
        new FastCall(this.o, stream, headers, path!, handler);
      });
      this.taken.add(h2);
      n++;
    }
    return n;
  }
}

/** A request this path reads: gRPC, and its messages not compressed (grpc-js decompresses). */
function readable(headers: IncomingHttpHeaders): boolean {
  const type = headers['content-type'];
  if (typeof type !== 'string' || !type.startsWith('application/grpc')) return false;
  const encoding = headers['grpc-encoding'];
  return encoding === undefined || encoding === 'identity';
}

/** One call: reads its message, runs the handler, answers with the message and status. */
class FastCall {
  request: Buffer = Buffer.alloc(0);
  cancelled = false;
  private deadline = Infinity;
  private timer: NodeJS.Timeout | undefined;
  private chunks: Buffer[] = [];
  private bytes = 0;
  /** the first message's length, once its prefix is in */
  private first = -1;
  private done = false;
  private end: ((code: number) => boolean) | undefined;
  private onCancelled: (() => void)[] | undefined;
  private meta: Metadata | undefined;

  constructor(
    private readonly o: FastUnaryOptions,
    private readonly stream: ServerHttp2Stream,
    private readonly headers: IncomingHttpHeaders,
    private readonly path: string,
    private readonly handler: UnaryHandler,
  ) {
    stream.on('error', noop); // as grpc-js: a stream error is followed by its close, handled there
    stream.once('close', () => this.closed());
    this.end = o.tracker.begin(this, path, (code, details) => this.finish(code, details));
    if (needsCheck(o.auth, path)) {
      const refusal = authorize(o.auth, path, headers.authorization);
      if (refusal) {
        o.log.debug('auth_refused', { method: path, code: status[refusal.code], peer: this.getPeer() });
        this.finish(refusal.code, refusal.details);
        return;
      }
    }
    const timeout = headers['grpc-timeout'];
    if (timeout !== undefined) {
      const m = TIMEOUT.exec(String(timeout));
      if (!m) {
        this.finish(status.INTERNAL, `Invalid grpc-timeout value "${timeout}"`);
        return;
      }
      const ms = (+m[1] * UNIT_MS[m[2]]) | 0;
      this.deadline = Date.now() + ms;
      this.timer = setTimeout(() => this.expire(), ms);
    }
    stream.on('data', (chunk: Buffer) => this.data(chunk));
    stream.once('end', () => this.halfClosed());
  }

  // --- what the handler reads (ServerUnaryCall) ---
  get metadata(): Metadata {
    return (this.meta ??= Metadata.fromHttp2Headers(this.headers));
  }
  getDeadline(): number {
    return this.deadline;
  }
  getPath(): string {
    return this.path;
  }
  getPeer(): string {
    const socket = this.stream.session?.socket;
    if (!socket?.remoteAddress) return 'unknown';
    return socket.remotePort ? `${socket.remoteAddress}:${socket.remotePort}` : socket.remoteAddress;
  }
  once(event: string, fn: () => void): this {
    if (event === 'cancelled') (this.onCancelled ??= []).push(fn);
    return this;
  }

  private data(chunk: Buffer): void {
    if (this.done) return;
    this.chunks.push(chunk);
    this.bytes += chunk.length;
    if (this.first < 0) {
      if (this.bytes < 5) return;
      // the length prefix, read once: when the first 5 bytes are in
      this.first = (this.chunks.length === 1 ? chunk : this.joined()).readUInt32BE(1);
      if (this.first > this.o.maxReceiveBytes) return this.finish(status.RESOURCE_EXHAUSTED, `Received message larger than max (${this.first} vs ${this.o.maxReceiveBytes})`);
    }
    // bytes past the first message: a second one, answered as grpc-js does when it arrives
    // (its size checked first), so that a client cannot make this call buffer without bound
    const second = 5 + this.first;
    if (this.bytes < second + 5) return;
    const len = this.joined().readUInt32BE(second + 1);
    if (len > this.o.maxReceiveBytes) return this.finish(status.RESOURCE_EXHAUSTED, `Received message larger than max (${len} vs ${this.o.maxReceiveBytes})`);
    if (this.bytes >= second + 5 + len) this.finish(status.UNIMPLEMENTED, `Received a second request message for server streaming method ${this.path}`);
  }

  /** The bytes so far as one Buffer (kept as the only chunk). */
  private joined(): Buffer {
    if (this.chunks.length > 1) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0];
  }

  private halfClosed(): void {
    if (this.done) return;
    const body = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks);
    this.chunks = [];
    const len = body.length >= 5 ? body.readUInt32BE(1) : -1;
    if (len < 0 || body.length < 5 + len) {
      this.finish(status.UNIMPLEMENTED, `Received no request message for server streaming method ${this.path}`);
      return;
    }
    if (body.length > 5 + len) {
      this.finish(status.UNIMPLEMENTED, `Received a second request message for server streaming method ${this.path}`);
      return;
    }
    // a compressed flag under the identity encoding is read as it is, as grpc-js does
    this.request = body.subarray(5);
    try {
      this.handler(this as unknown as ServerUnaryCall<Buffer, Buffer>, (err, value) => (err ? this.fail(err) : this.answer(value!)));
    } catch (e) {
      this.finish(status.UNKNOWN, 'Unknown error');
      this.o.log.error('handler_threw', { method: this.path, error: e });
    }
  }

  /** The answer: the message, then the OK status in the trailers. */
  private answer(message: Buffer): void {
    if (this.done) return; // already answered: the deadline, a cut, a cancel
    this.done = true;
    clearTimeout(this.timer);
    const stream = this.stream;
    if (stream.destroyed || stream.closed) return;
    this.end?.(status.OK);
    const frame = Buffer.allocUnsafe(5 + message.length);
    frame[0] = 0;
    frame.writeUInt32BE(message.length, 1);
    message.copy(frame, 5);
    stream.respond(OK_HEADERS, { waitForTrailers: true });
    stream.once('wantTrailers', () => {
      stream.sendTrailers(OK_TRAILERS);
      this.o.tracker.statusSent(this.request);
    });
    stream.end(frame);
  }

  /** The handler's error as grpc-js turns it into a status (serverErrorToStatus). */
  private fail(err: { code?: number; details?: string; message?: string }): void {
    const code = typeof err.code === 'number' && Number.isInteger(err.code) ? err.code : status.UNKNOWN;
    this.finish(code, code === err.code && typeof err.details === 'string' ? err.details : (err.message ?? 'Unknown Error'));
  }

  /** A status without a message (trailers only). */
  private finish(code: number, details: string): void {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.timer);
    this.end?.(code);
    const stream = this.stream;
    if (!(stream.destroyed || stream.closed || stream.headersSent))
      stream.respond(
        { ':status': 200, 'content-type': 'application/grpc+proto', 'grpc-status': String(code), 'grpc-message': encodeURI(details) },
        { endStream: true },
      );
    this.o.tracker.statusSent(this.request);
  }

  private expire(): void {
    this.timer = undefined;
    if (this.done) return;
    this.finish(status.DEADLINE_EXCEEDED, 'Deadline exceeded');
    this.cancel();
  }

  /** The stream closed: a call not answered by then was cancelled by the client (or its deadline). */
  private closed(): void {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.timer);
    this.end?.(this.deadline <= Date.now() ? status.DEADLINE_EXCEEDED : status.CANCELLED);
    this.o.tracker.statusSent(this.request); // nothing more will be sent
    this.cancel();
  }

  private cancel(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    const fns = this.onCancelled;
    this.onCancelled = undefined;
    if (fns) for (const fn of fns) fn();
  }
}
