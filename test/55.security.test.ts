/**
 * Security: TLS (plaintext refused), mTLS (a client certificate from the configured CA accepted;
 * none, or one from another CA, refused), bearer tokens for the data plane and the admin
 * service from the Node client and from Python grpcio, health open, tokens reread on SIGHUP,
 * reflection off unless asked for. Certificates are made with openssl at test time.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs';
import { Engine } from '../src/engine/index.js';
import { AdrankServer, type ServerOptions } from '../src/server/server.js';
import { silentLogger } from '../src/log.js';
import { loadProto } from '../src/wire/proto.js';
import { loadBundle } from '../src/model/bundle.js';
import { TokenFile, parseTokens } from '../src/auth/tokens.js';
import { accessOf, type AuthConfig } from '../src/auth/policy.js';
import { addonBuilt } from './support/index.js';
import { haveOpenssl, makeCerts, pem, type TestCerts } from './support/certs.js';
import { repoRoot } from './support/python.js';
import { portOf, serveCli } from './support/cli-server.js';
import { adIds, protoRequest, smallConfig, writeSmallBundle } from './50.server.helpers.js';

const PYTHON = process.env.ADRANK_PYTHON ?? '/usr/bin/python3';

type Outcome = string; // a status name: 'OK', 'UNAUTHENTICATED', ...

/** A client sending raw bytes to any method path, with optional credentials and metadata. */
function rawCall(address: string, path: string, bytes: Uint8Array, creds = grpc.credentials.createInsecure(), authorization?: string, timeoutMs = 10_000): Promise<{ code: Outcome; details: string }> {
  const client = new grpc.Client(address, creds);
  const md = new grpc.Metadata();
  if (authorization !== undefined) md.set('authorization', authorization);
  return new Promise((resolve) => {
    client.makeUnaryRequest(
      path,
      (b: Buffer) => b,
      (b: Buffer) => b,
      Buffer.from(bytes),
      md,
      { deadline: Date.now() + timeoutMs },
      (e) => {
        client.close();
        resolve(e ? { code: grpc.status[e.code], details: e.details } : { code: 'OK', details: '' });
      },
    );
  });
}

function encodeRequest(type: string, obj: object): Uint8Array {
  const t = loadProto().root.lookupType(type);
  return t.encode(t.fromObject(obj) as protobuf.Message).finish();
}

/** HealthCheckRequest{service: ''}: proto3 writes nothing for a default field. */
const healthCheckBytes = () => new Uint8Array(0);

function grpcioAvailable(): string | undefined {
  const r = spawnSync(PYTHON, ['-c', 'import grpc; print(grpc.__version__)'], { encoding: 'utf8', timeout: 30_000 });
  return r.status === 0 ? undefined : `Python grpcio is not available at ${PYTHON} (apt-get install python3-grpcio): ${(r.stderr ?? r.error?.message ?? '').trim().split('\n').pop()}`;
}

/** The status names of `calls` made from Python grpcio (asynchronously: the server under test
 *  may live in this process, so its event loop must keep running). */
function grpcioCalls(address: string, calls: { method: string; bytes: Uint8Array; authorization?: string }[]): Promise<Outcome[]> {
  const input = JSON.stringify({ address, calls: calls.map((c) => ({ method: c.method, request_hex: Buffer.from(c.bytes).toString('hex'), authorization: c.authorization ?? null })) });
  const child = spawn(PYTHON, [join(repoRoot, 'test', 'support', 'grpcio_calls.py')], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  child.stdin.end(input);
  return new Promise((resolve, reject) =>
    child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as Outcome[]) : reject(new Error(`grpcio_calls.py exited ${code}: ${err}`)))),
  );
}

describe('55 security', function () {
  this.timeout(120_000);
  let dir: string;
  let bundlePath: string;
  let rankBytes: Uint8Array;
  let certs: TestCerts | undefined;
  const servers: AdrankServer[] = [];

  const start = async (opts: Partial<ServerOptions>) => {
    const s = await AdrankServer.start({ port: 0, engine: () => Engine.load(bundlePath, { device: 'cpu', threads: 1 }), log: silentLogger, warmup: false, ...opts });
    servers.push(s);
    await s.ready;
    return s;
  };

  before(async function () {
    if (!addonBuilt()) this.skip();
    dir = mkdtempSync(join(tmpdir(), 'adrank-54-'));
    bundlePath = join(dir, 'small.safetensors');
    await writeSmallBundle(bundlePath, 2000);
    const ids = adIds(await loadBundle(bundlePath)).slice(0, 50);
    rankBytes = encodeRequest('adrank.v1.RankRequest', protoRequest(smallConfig(), { candidateAdIds: ids }));
    if (haveOpenssl()) certs = makeCerts(dir);
  });
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => s.shutdown('test end')));
  });
  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const RANK = '/adrank.v1.AdRanker/Rank';
  const GET_MODEL = '/adrank.v1.AdRanker/GetModel';
  const HEALTH = '/grpc.health.v1.Health/Check';

  describe('TLS and mTLS', () => {
    beforeEach(function () {
      if (!certs) this.skip(); // openssl not found
    });

    it('TLS: a client trusting the CA is served; a plaintext client is refused', async () => {
      const s = await start({ tls: { cert: certs!.serverCert, key: certs!.serverKey } });
      const address = `localhost:${s.port}`;
      const tls = grpc.credentials.createSsl(pem(certs!.caCert));
      expect((await rawCall(address, RANK, rankBytes, tls)).code).to.equal('OK');
      const plain = await rawCall(address, RANK, rankBytes, grpc.credentials.createInsecure(), undefined, 3000);
      expect(plain.code).to.equal('UNAVAILABLE');
      // a client that does not trust the server's CA is refused too
      const untrusting = await rawCall(address, RANK, rankBytes, grpc.credentials.createSsl(pem(certs!.otherCaCert)), undefined, 3000);
      expect(untrusting.code).to.equal('UNAVAILABLE');
    });

    it('mTLS: a client certificate signed by --tls-client-ca is accepted; none, or one from another CA, is refused', async () => {
      const s = await start({ tls: { cert: certs!.serverCert, key: certs!.serverKey, clientCa: certs!.caCert } });
      const address = `localhost:${s.port}`;
      const ca = pem(certs!.caCert);
      const good = grpc.credentials.createSsl(ca, pem(certs!.clientKey), pem(certs!.clientCert));
      const none = grpc.credentials.createSsl(ca);
      const other = grpc.credentials.createSsl(ca, pem(certs!.otherClientKey), pem(certs!.otherClientCert));
      expect((await rawCall(address, RANK, rankBytes, good)).code).to.equal('OK');
      expect((await rawCall(address, RANK, rankBytes, none, undefined, 3000)).code).to.equal('UNAVAILABLE');
      expect((await rawCall(address, RANK, rankBytes, other, undefined, 3000)).code).to.equal('UNAVAILABLE');
      // health is behind the same handshake: mTLS protects the whole port
      expect((await rawCall(address, HEALTH, healthCheckBytes(), none, undefined, 3000)).code).to.equal('UNAVAILABLE');
    });

    it('refuses to start with an unreadable certificate, naming the flag and file', async () => {
      const err = await AdrankServer.start({ port: 0, engine: () => Engine.load(bundlePath, { device: 'cpu' }), log: silentLogger, tls: { cert: join(dir, 'missing.crt'), key: certs!.serverKey } }).catch((e: Error) => e);
      expect(String(err)).to.match(/cannot read --tls-cert .*missing\.crt: ENOENT/);
    });
  });

  describe('bearer tokens', () => {
    let dataFile: string;
    let adminFile: string;
    beforeEach(() => {
      dataFile = join(dir, 'data-tokens');
      adminFile = join(dir, 'admin-tokens');
      writeFileSync(dataFile, '# data plane\n data-token-1 \n\ndata-token-2\n');
      writeFileSync(adminFile, 'admin-token-1\n');
    });

    /** Every case for the data plane and health: [method, bytes, authorization, expected]. */
    const dataCases = (): [string, Uint8Array, string | undefined, Outcome][] => [
      [RANK, rankBytes, undefined, 'UNAUTHENTICATED'],
      [RANK, rankBytes, 'Bearer wrong-token', 'UNAUTHENTICATED'],
      [RANK, rankBytes, 'Bearer data-token-1x', 'UNAUTHENTICATED'], // a prefix match is not a match
      [RANK, rankBytes, 'data-token-1', 'UNAUTHENTICATED'], // no scheme
      [RANK, rankBytes, 'Basic data-token-1', 'UNAUTHENTICATED'],
      [RANK, rankBytes, 'Bearer data-token-1', 'OK'],
      [RANK, rankBytes, 'bearer data-token-2', 'OK'], // the scheme is case-insensitive (RFC 7235)
      [RANK, rankBytes, 'Bearer admin-token-1', 'OK'], // an admin token also passes the data plane
      [GET_MODEL, new Uint8Array(0), undefined, 'UNAUTHENTICATED'],
      [GET_MODEL, new Uint8Array(0), 'Bearer data-token-2', 'OK'],
      [HEALTH, healthCheckBytes(), undefined, 'OK'], // probes need no token
    ];

    it('--auth-token-file: the data RPCs need a listed bearer token (Node client); health stays open', async () => {
      const s = await start({ auth: { dataTokens: new TokenFile(dataFile), adminTokens: new TokenFile(adminFile) } });
      const got: Outcome[] = [];
      for (const [method, bytes, auth] of dataCases()) got.push((await rawCall(`localhost:${s.port}`, method, bytes, undefined, auth)).code);
      expect(got).to.deep.equal(dataCases().map((c) => c[3]));
      const refusal = await rawCall(`localhost:${s.port}`, RANK, rankBytes);
      expect(refusal.details).to.equal('expected authorization: Bearer <token> for /adrank.v1.AdRanker/Rank, got no authorization metadata');
      // a refused call never reached the engine
      expect(s.stats.engineCalls.Rank).to.equal(3);
    });

    it('the same cases from Python grpcio', async function () {
      const why = grpcioAvailable();
      if (why) {
        console.log(`      skipped: ${why}`);
        this.skip();
      }
      const s = await start({ auth: { dataTokens: new TokenFile(dataFile), adminTokens: new TokenFile(adminFile) } });
      const got = await grpcioCalls(`localhost:${s.port}`, dataCases().map(([method, bytes, authorization]) => ({ method, bytes, authorization })));
      expect(got).to.deep.equal(dataCases().map((c) => c[3]));
    });

    it('without token files the data plane is open (npm start as before)', async () => {
      const s = await start({});
      expect((await rawCall(`localhost:${s.port}`, RANK, rankBytes)).code).to.equal('OK');
      expect((await rawCall(`localhost:${s.port}`, RANK, rankBytes, undefined, 'Bearer anything')).code).to.equal('OK');
    });

    describe('admin service policy (the real adrank.v1.AdRankerAdmin)', () => {
      const ADMIN = '/adrank.v1.AdRankerAdmin/GetAdStates';

      const adminCases: [string, AuthConfig | 'files', string | undefined, Outcome][] = [
        ['admin token', 'files', 'Bearer admin-token-1', 'OK'],
        ['data token', 'files', 'Bearer data-token-1', 'PERMISSION_DENIED'],
        ['no token', 'files', undefined, 'UNAUTHENTICATED'],
        ['unknown token', 'files', 'Bearer nope', 'UNAUTHENTICATED'],
        ['no admin token file', {}, 'Bearer admin-token-1', 'PERMISSION_DENIED'],
        ['no admin token file, --admin-insecure', { adminInsecure: true }, undefined, 'OK'],
      ];

      it('admin token OK; data token PERMISSION_DENIED; none or unknown UNAUTHENTICATED; no admin file: refused unless --admin-insecure (Node and grpcio)', async function () {
        const files = (): AuthConfig => ({ dataTokens: new TokenFile(dataFile), adminTokens: new TokenFile(adminFile) });
        const python = grpcioAvailable() === undefined;
        for (const [name, cfg, auth, want] of adminCases) {
          const s = await start({ auth: cfg === 'files' ? files() : cfg });
          const address = `localhost:${s.port}`;
          // an empty GetAdStatesRequest is valid: OK with no states, when allowed
          expect((await rawCall(address, ADMIN, new Uint8Array(0), undefined, auth)).code, `${name} (Node)`).to.equal(want);
          if (python) expect(await grpcioCalls(address, [{ method: ADMIN, bytes: new Uint8Array(0), authorization: auth }]), `${name} (grpcio)`).to.deep.equal([want]);
          await Promise.all(servers.splice(0).map((x) => x.shutdown('next case')));
        }
        if (!python) console.log(`      (grpcio part skipped: ${grpcioAvailable()})`);
      });

      it('classifies methods by path: health open, AdRankerAdmin admin, everything else data', () => {
        expect(accessOf('/grpc.health.v1.Health/Check')).to.equal('open');
        expect(accessOf('/grpc.health.v1.Health/Watch')).to.equal('open');
        expect(accessOf('/adrank.v1.AdRankerAdmin/UpdateAdStates')).to.equal('admin');
        expect(accessOf('/adrank.v1.AdRanker/Rank')).to.equal('data');
        expect(accessOf('/adrank.v1.AdRankerAdminX/Foo')).to.equal('data');
        expect(accessOf('/grpc.reflection.v1.ServerReflection/ServerReflectionInfo')).to.equal('data');
      });
    });

    it('token files: comments and blank lines skipped; an empty file is refused; a failed reread keeps the old tokens', () => {
      expect(parseTokens('# c\n\n a \r\nb\n', 'f')).to.deep.equal(['a', 'b']);
      expect(() => parseTokens('# only a comment\n', 'tokens.txt')).to.throw('expected at least one token (one a line) in tokens.txt, got none');
      const f = join(dir, 'reread');
      writeFileSync(f, 'one\ntwo\n');
      const t = new TokenFile(f);
      expect([t.has('one'), t.has('two'), t.has('three'), t.has(''), t.has('on')]).to.deep.equal([true, true, false, false, false]);
      writeFileSync(f, '\n');
      expect(() => t.reload()).to.throw(/no(ne)?/);
      expect(t.has('one')).to.equal(true);
      rmSync(f);
      expect(() => t.reload()).to.throw(`cannot read token file ${f}: ENOENT`);
      expect(t.size).to.equal(2);
    });
  });

  it('reflection is off unless asked for (UNIMPLEMENTED)', async () => {
    const s = await start({});
    const info = await rawCall(`localhost:${s.port}`, '/grpc.reflection.v1.ServerReflection/ServerReflectionInfo', new Uint8Array(0));
    expect(info.code).to.equal('UNIMPLEMENTED');
  });

  describe('CLI', () => {
    let child: ChildProcess | undefined;
    afterEach(() => {
      if (child && child.exitCode === null) child.kill('SIGKILL');
    });

    it('SIGHUP rereads --auth-token-file: a removed token is refused, a new one accepted', async () => {
      const tokens = join(dir, 'hup-tokens');
      writeFileSync(tokens, 'first\n');
      const server = serveCli(['--bundle', bundlePath, '--port', '0', '--device', 'cpu', '--threads', '1', '--metrics-port', '0', '--auth-token-file', tokens]);
      child = server.proc;
      const { event, exited } = server;
      const listening = await event('listening');
      expect(listening.auth).to.deep.equal({ data: 'token', admin: 'off' });
      const address = `localhost:${portOf(listening)}`;
      await event('serving');
      expect((await rawCall(address, RANK, rankBytes, undefined, 'Bearer first')).code).to.equal('OK');
      expect((await rawCall(address, RANK, rankBytes, undefined, 'Bearer second')).code).to.equal('UNAUTHENTICATED');
      writeFileSync(tokens, 'second\n');
      child.kill('SIGHUP');
      const reloaded = await event('auth_reloaded');
      expect(reloaded).to.include({ file: tokens, tokens: 1 });
      expect((await rawCall(address, RANK, rankBytes, undefined, 'Bearer first')).code).to.equal('UNAUTHENTICATED');
      expect((await rawCall(address, RANK, rankBytes, undefined, 'Bearer second')).code).to.equal('OK');
      child.kill('SIGTERM');
      expect(await exited).to.equal(0);
    });
  });
});
