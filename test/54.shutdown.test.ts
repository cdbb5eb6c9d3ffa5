/**
 * Shutdown as an independent client sees it (the server is a CLI child process): calls still
 * running at the end of the grace period get UNAVAILABLE (not CANCELLED), the process exits
 * within --shutdown-grace-ms plus the documented bound even with native runs in flight, idle
 * connections (including one whose client never closes it) do not hold the exit, and
 * --max-connection-age-ms sends GOAWAY to old connections. Also: no security flags = plaintext
 * on localhost, as before.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { connect as http2Connect } from 'node:http2';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import { Engine } from '../src/engine/index.js';
import { AdrankServer, SHUTDOWN_BOUND_MS } from '../src/server/server.js';
import { silentLogger } from '../src/log.js';
import { call, connect } from '../src/cli/client.js';
import { loadBundle } from '../src/model/bundle.js';
import { writeDemoBundle } from '../src/model/demo.js';
import type { ModelConfig } from '../src/model/config.js';
import { addonBuilt } from './support/index.js';
import { repoRoot } from './support/python.js';
import { haveOpenssl, makeCerts, pem } from './support/certs.js';
import { adIds, protoRequest, smallConfig, writeSmallBundle } from './50.server.helpers.js';

const PYTHON = process.env.ADRANK_PYTHON ?? '/usr/bin/python3';

/** The CLI server as a child process, with its JSON log events. */
class CliServer {
  readonly child: ChildProcess;
  readonly events: Record<string, any>[] = [];
  private waiters: [string, (e: Record<string, any>) => void][] = [];
  readonly exited: Promise<{ code: number | null; at: number }>;

  constructor(args: string[]) {
    this.child = spawn(process.execPath, ['--import', 'tsx', join(repoRoot, 'src', 'cli', 'main.ts'), 'serve', ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      const e = JSON.parse(line);
      this.events.push(e);
      for (const [name, fn] of this.waiters) if (e.event === name) fn(e);
    });
    this.exited = new Promise((resolve) => this.child.on('exit', (code) => resolve({ code, at: performance.now() })));
  }

  event(name: string): Promise<Record<string, any>> {
    return new Promise((resolve) => {
      const found = this.events.find((e) => e.event === name);
      if (found) resolve(found);
      else this.waiters.push([name, resolve]);
    });
  }

  async address(): Promise<string> {
    const listening = await this.event('listening');
    await this.event('serving');
    return `localhost:${Number(String(listening.address).split(':').pop())}`;
  }

  kill(): void {
    if (this.child.exitCode === null) this.child.kill('SIGKILL');
  }
}

describe('54 shutdown', function () {
  this.timeout(120_000);
  let dir: string;
  let smallPath: string;
  const cleanups: (() => void)[] = [];

  before(async function () {
    if (!addonBuilt()) this.skip();
    dir = mkdtempSync(join(tmpdir(), 'adrank-55-'));
    smallPath = join(dir, 'small.safetensors');
    await writeSmallBundle(smallPath, 2000);
  });
  afterEach(() => {
    for (const f of cleanups.splice(0)) f();
  });
  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('calls still running at the end of the grace period get UNAVAILABLE; the exit is bounded with native runs in flight', async () => {
    // heavy enough that the queued native work (one CPU thread) outlasts grace + bound
    const heavyPath = join(dir, 'heavy.safetensors');
    const c: ModelConfig = { ...smallConfig(), masknet: { blocks: 3, projection_ratio: 1, output_dim: 512 }, dcn: { layers: 3, rank: 0 }, mlp: [256, 128] };
    await writeDemoBundle({ ads: 20_000, seed: 3, out: heavyPath, config: c });
    const ids = adIds(await loadBundle(heavyPath));
    const graceMs = 300;
    const server = new CliServer(['--bundle', heavyPath, '--port', '0', '--device', 'cpu', '--threads', '1', '--metrics-port', '0', '--shutdown-grace-ms', String(graceMs)]);
    cleanups.push(() => server.kill());
    const client = connect(await server.address());
    cleanups.push(() => client.close());

    const t = performance.now();
    await call(client, 'Rank', protoRequest(c, { requestId: 'probe', candidateAdIds: ids }), 60_000);
    const oneCallMs = performance.now() - t;

    // enough calls queued that the native work left after the grace period exceeds the bound
    const n = Math.max(4, Math.ceil((graceMs + 2 * SHUTDOWN_BOUND_MS) / oneCallMs) + 1);
    const calls = Array.from({ length: n }, (_, i) =>
      call(client, 'Rank', protoRequest(c, { requestId: `r${i}`, candidateAdIds: ids }), 60_000).then(
        () => ({ code: 'OK', details: '' }),
        (e: grpc.ServiceError) => ({ code: grpc.status[e.code], details: e.details }),
      ),
    );
    await new Promise((r) => setTimeout(r, 50)); // the calls reach the server
    const killedAt = performance.now();
    server.child.kill('SIGTERM');
    const results = await Promise.all(calls);
    const exit = await server.exited;

    const codes = results.map((r) => r.code);
    expect(codes.filter((x) => x !== 'OK' && x !== 'UNAVAILABLE'), `codes: ${codes}`).to.deep.equal([]);
    expect(codes.filter((x) => x === 'UNAVAILABLE').length, `codes: ${codes}`).to.be.greaterThan(0);
    expect(results.find((r) => r.code === 'UNAVAILABLE')!.details).to.match(/shutting down.*grace period/);
    expect(exit.code).to.equal(0);
    const exitMs = exit.at - killedAt;
    expect(exitMs, `exit after SIGTERM (one call ${oneCallMs.toFixed(0)} ms, ${n} calls)`).to.be.below(graceMs + SHUTDOWN_BOUND_MS + 1500);
    const timeout = server.events.find((e) => e.event === 'drain_timeout');
    expect(timeout?.cut).to.equal(codes.filter((x) => x === 'UNAVAILABLE').length);
    expect(server.events.find((e) => e.event === 'dispose_deferred')?.inflight, 'native runs outlived the bound').to.be.greaterThan(0);
    expect(server.events.at(-1)?.event).to.equal('stopped');
  });

  it('idle connections do not hold the exit: GOAWAY, then closed at once (grpc-js, a client that never closes, Python grpcio)', async () => {
    const server = new CliServer(['--bundle', smallPath, '--port', '0', '--device', 'cpu', '--threads', '1', '--metrics-port', '0']); // default grace: 10 s
    cleanups.push(() => server.kill());
    const address = await server.address();
    const port = Number(address.split(':')[1]);

    // a grpc-js client that made a call and stays connected
    const client = connect(address);
    cleanups.push(() => client.close());
    await call(client, 'GetModel', {});
    // a client that speaks HTTP/2 and never closes its side (half-open: it ignores our FIN)
    const raw: Socket = netConnect({ port, host: 'localhost', allowHalfOpen: true });
    cleanups.push(() => raw.destroy());
    await new Promise((r) => raw.once('connect', r));
    raw.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])]));
    raw.on('data', () => {});
    // Python grpcio (when installed) keeps an idle connection open for seconds after GOAWAY
    const py = spawn(PYTHON, ['-c', `import grpc, sys, time\nch = grpc.insecure_channel('${address}')\nch.unary_unary('/adrank.v1.AdRanker/GetModel')(b'', timeout=10)\nprint('ready', flush=True)\ntime.sleep(60)\n`], { stdio: ['ignore', 'pipe', 'ignore'] });
    cleanups.push(() => py.kill('SIGKILL'));
    const pyReady = await Promise.race([new Promise((r) => py.stdout.once('data', () => r(true))), new Promise((r) => py.once('exit', () => r(false)))]);
    if (!pyReady) console.log(`      (no Python grpcio client: ${PYTHON} cannot import grpc; apt-get install python3-grpcio)`);
    await new Promise((r) => setTimeout(r, 200));

    const killedAt = performance.now();
    server.child.kill('SIGTERM');
    const exit = await server.exited;
    expect(exit.code).to.equal(0);
    expect(exit.at - killedAt, 'exit after SIGTERM with idle connections (grace 10 s)').to.be.below(1500);
    expect(server.events.find((e) => e.event === 'stopped')?.drained).to.equal(true);
  });

  it('TLS: an idle connection whose client never closes it does not hold the drain either', async function () {
    if (!haveOpenssl()) this.skip();
    const certs = makeCerts(mkdtempSync(join(dir, 'certs-')));
    const s = await AdrankServer.start({ port: 0, engine: () => Engine.load(smallPath, { device: 'cpu', threads: 1 }), log: silentLogger, warmup: false, tls: { cert: certs.serverCert, key: certs.serverKey } });
    await s.ready;
    const raw = netConnect({ port: s.port, host: 'localhost', allowHalfOpen: true });
    const sock = tlsConnect({ socket: raw, servername: 'localhost', ca: pem(certs.caCert), ALPNProtocols: ['h2'] });
    raw.on('end', () => {}); // half-open: the client never ends its side
    cleanups.push(() => raw.destroy());
    await new Promise((r) => sock.once('secureConnect', r));
    sock.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])]));
    sock.on('data', () => {});
    sock.on('error', () => {});
    await new Promise((r) => setTimeout(r, 100));
    const t0 = performance.now();
    await s.shutdown(); // default grace: 10 s
    expect(performance.now() - t0, 'shutdown with an idle half-open TLS connection').to.be.below(1000);
  });

  it('--max-connection-age-ms: a connection gets GOAWAY once it is that old', async () => {
    const goawayWithin = async (maxConnectionAgeMs: number | undefined, waitMs: number) => {
      const s = await AdrankServer.start({ port: 0, engine: () => Engine.load(smallPath, { device: 'cpu', threads: 1 }), log: silentLogger, warmup: false, maxConnectionAgeMs });
      try {
        await s.ready;
        const session = http2Connect(`http://localhost:${s.port}`);
        session.on('error', () => {});
        const t0 = performance.now();
        const got = await new Promise<number | null>((resolve) => {
          session.once('goaway', () => resolve(performance.now() - t0));
          setTimeout(() => resolve(null), waitMs);
        });
        session.destroy();
        return got;
      } finally {
        await s.shutdown();
      }
    };
    const aged = await goawayWithin(300, 3000);
    expect(aged, 'GOAWAY after ~300 ms').to.be.a('number').within(200, 2500);
    expect(await goawayWithin(undefined, 1000), 'no GOAWAY without the option').to.equal(null);
  });

  it('no security flags: plaintext on localhost, data plane open, admin off, reflection off (as npm start)', async () => {
    const server = new CliServer(['--bundle', smallPath, '--port', '0', '--device', 'cpu', '--threads', '1', '--metrics-port', '0']);
    cleanups.push(() => server.kill());
    const address = await server.address();
    const listening = await server.event('listening');
    expect(listening).to.deep.include({ tls: 'off', reflection: false, auth: { data: 'open', admin: 'off' } });
    expect(String(listening.address)).to.match(/^localhost:\d+$/);
    const client = connect(address);
    cleanups.push(() => client.close());
    const model = await call<object, { numAds: string }>(client, 'GetModel', {});
    expect(model.numAds).to.equal('2000');
    server.child.kill('SIGTERM');
    expect((await server.exited).code).to.equal(0);
  });
});
