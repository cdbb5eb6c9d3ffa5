/**
 * The fast path (src/server/fast-unary.ts): Rank, Retrieve and RetrieveAndRank served on their
 * HTTP/2 streams beside grpc-js must answer exactly as grpc-js does. Two servers on the same
 * bundle, one with the fast path and one without, get the same calls: well-formed ones, and raw
 * HTTP/2 requests no grpc-js client sends (no message, two messages, a compressed flag without an
 * encoding, an oversized message, a malformed or expired grpc-timeout); each answer (status, details,
 * message) must be the same from both. Calls the fast path cannot read (compressed ones) must
 * reach grpc-js and be answered the same too.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { connect as http2Connect } from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import { Engine } from '../src/engine/index.js';
import { binding } from '../src/engine/binding.js';
import { AdrankServer } from '../src/server/server.js';
import { OVERLAP_WINDOW_MS } from '../src/handlers/context.js';
import { silentLogger } from '../src/log.js';
import { loadProto } from '../src/wire/proto.js';
import { addonBuilt } from './support/index.js';
import { adIds, protoRequest, smallConfig, writeSmallBundle } from './50.server.helpers.js';

interface Answer {
  code: number;
  details: string;
  message?: Buffer;
}

/** One call over plain HTTP/2: `body` is sent as is (framing included); `headers` added; `end`
 *  false leaves the request stream open (the server must answer without it). */
function h2(port: number, method: string, body: Buffer, headers: Record<string, string> = {}, end = true): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const session = http2Connect(`http://localhost:${port}`);
    session.on('error', reject);
    const req = session.request({ ':method': 'POST', ':path': `/adrank.v1.AdRanker/${method}`, 'content-type': 'application/grpc', te: 'trailers', ...headers });
    let h: Record<string, unknown> = {};
    const data: Buffer[] = [];
    req.on('response', (x) => (h = { ...x }));
    req.on('trailers', (t) => (h = { ...h, ...t }));
    req.on('data', (d: Buffer) => data.push(d));
    req.on('end', () => {
      session.close();
      const all = Buffer.concat(data);
      resolve({ code: Number(h['grpc-status']), details: decodeURIComponent(String(h['grpc-message'] ?? '')), message: all.length >= 5 ? all.subarray(5) : undefined });
    });
    req.on('error', reject);
    if (end) req.end(body);
    else req.write(body);
  });
}

function frame(message: Uint8Array, compressed = false): Buffer {
  const f = Buffer.alloc(5 + message.length);
  f[0] = compressed ? 1 : 0;
  f.writeUInt32BE(message.length, 1);
  f.set(message, 5);
  return f;
}

/** A raw-bytes client for `method`, with client options (e.g. compression). */
function call(address: string, method: string, bytes: Buffer, options: grpc.ClientOptions = {}): Promise<Answer> {
  const c = new grpc.Client(address, grpc.credentials.createInsecure(), options);
  const id = (b: Buffer) => b;
  return new Promise((resolve) =>
    c.makeUnaryRequest(`/adrank.v1.AdRanker/${method}`, id, id, bytes, (e, r) => {
      c.close();
      resolve(e ? { code: e.code, details: e.details } : { code: grpc.status.OK, details: '', message: r });
    }),
  );
}

describe('83 fast path: the engine RPCs beside grpc-js', function () {
  this.timeout(120_000);
  let dir: string;
  let fast: AdrankServer;
  let slow: AdrankServer;
  const { root } = loadProto();
  const RankRequest = root.lookupType('adrank.v1.RankRequest');
  const RankResponse = root.lookupType('adrank.v1.RankResponse');
  const RetrieveRequest = root.lookupType('adrank.v1.RetrieveRequest');
  const c = smallConfig();
  let rankBytes: Buffer;
  let retrieveBytes: Buffer;

  before(async function () {
    if (!addonBuilt()) this.skip();
    dir = mkdtempSync(join(tmpdir(), 'adrank-fast-'));
    const bundle = join(dir, 'b.safetensors');
    await writeSmallBundle(bundle);
    const start = (fastPath: boolean) =>
      AdrankServer.start({ port: 0, engine: () => Engine.load(bundle, { threads: 1 }), fastPath, maxReceiveBytes: 64 * 1024, log: silentLogger });
    fast = await start(true);
    slow = await start(false);
    await Promise.all([fast.ready, slow.ready]);
    const e = await Engine.load(bundle, { threads: 1 });
    const ids = adIds(e.bundle).slice(0, 50);
    e.dispose();
    rankBytes = Buffer.from(RankRequest.encode(RankRequest.fromObject(protoRequest(c, { candidateAdIds: ids }))).finish());
    retrieveBytes = Buffer.from(RetrieveRequest.encode(RetrieveRequest.fromObject(protoRequest(c))).finish());
  });

  after(async function () {
    await fast?.shutdown('test over');
    await slow?.shutdown('test over');
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** The answer less its timings (which differ from call to call). */
  const winnersOf = (a: Answer) => {
    expect(a.code, a.details).to.equal(grpc.status.OK);
    const o = RankResponse.toObject(RankResponse.decode(a.message!), { longs: String, defaults: true }) as Record<string, unknown>;
    delete o.timings;
    return o;
  };

  it('is on where asked, and serves the engine RPCs there (GetModel stays with grpc-js)', async () => {
    expect(fast.fastPath).to.equal(true);
    expect(slow.fastPath).to.equal(false);
    const before = fast.fastPathCalls;
    const a = await call(`localhost:${fast.port}`, 'Rank', rankBytes);
    expect(a.code, a.details).to.equal(grpc.status.OK);
    const r = await call(`localhost:${fast.port}`, 'Retrieve', retrieveBytes);
    expect(r.code, r.details).to.equal(grpc.status.OK);
    expect(fast.fastPathCalls - before).to.equal(2);
    expect(slow.fastPathCalls).to.equal(0);
  });

  it('answers a Rank as grpc-js does: the same winners, scores, counts and model', async () => {
    const [a, b] = await Promise.all([call(`localhost:${fast.port}`, 'Rank', rankBytes), call(`localhost:${slow.port}`, 'Rank', rankBytes)]);
    const wa = winnersOf(a);
    expect((wa.winners as unknown[]).length).to.be.greaterThan(0);
    expect(wa).to.deep.equal(winnersOf(b));
  });

  it('releases every request it parsed when the call ends, answered or refused, on either path', async () => {
    const bad = Buffer.from(RankRequest.encode(RankRequest.fromObject(protoRequest(c, { k: 0, candidateAdIds: ['1'] }))).finish());
    const before = binding().wireRequests();
    const answers: Answer[] = [];
    for (const port of [fast.port, slow.port]) {
      answers.push(await call(`localhost:${port}`, 'Rank', rankBytes), await call(`localhost:${port}`, 'Retrieve', retrieveBytes), await call(`localhost:${port}`, 'Rank', bad));
      answers.push(...(await Promise.all(Array.from({ length: 4 }, () => call(`localhost:${port}`, 'Rank', rankBytes)))));
    }
    expect(answers.map((a) => grpc.status[a.code])).to.deep.equal([...['OK', 'OK', 'INVALID_ARGUMENT', 'OK', 'OK', 'OK', 'OK'], ...['OK', 'OK', 'INVALID_ARGUMENT', 'OK', 'OK', 'OK', 'OK']]);
    const after = binding().wireRequests();
    expect(after.made - before.made).to.equal(14);
    expect(after.released - before.released, 'released when their calls ended').to.equal(14);
  });

  it('leaves a compressed call to grpc-js, which answers it the same', async () => {
    const before = fast.fastPathCalls;
    const gzip = { 'grpc.default_compression_algorithm': 2 } as grpc.ClientOptions;
    const a = await call(`localhost:${fast.port}`, 'Rank', rankBytes, gzip);
    expect(fast.fastPathCalls).to.equal(before);
    expect(winnersOf(a)).to.deep.equal(winnersOf(await call(`localhost:${slow.port}`, 'Rank', rankBytes)));
  });

  it('refuses a bad request with the same status and field as grpc-js', async () => {
    const bad = Buffer.from(RankRequest.encode(RankRequest.fromObject(protoRequest(c, { k: 0, candidateAdIds: ['1'] }))).finish());
    const [a, b] = await Promise.all([call(`localhost:${fast.port}`, 'Rank', bad), call(`localhost:${slow.port}`, 'Rank', bad)]);
    expect(a.code).to.equal(grpc.status.INVALID_ARGUMENT);
    expect(a.details).to.include('k');
    expect(a).to.deep.equal(b);
  });

  const prefix = (len: number) => Buffer.from([0, len >>> 24, (len >>> 16) & 255, (len >>> 8) & 255, len & 255]);
  const raw: [string, () => Buffer, Record<string, string>, grpc.status, boolean?][] = [
    ['no message', () => Buffer.alloc(0), {}, grpc.status.UNIMPLEMENTED],
    ['a truncated message', () => frame(rankBytes).subarray(0, 20), {}, grpc.status.UNIMPLEMENTED],
    ['two messages', () => Buffer.concat([frame(rankBytes), frame(rankBytes)]), {}, grpc.status.UNIMPLEMENTED],
    ['a compressed flag without grpc-encoding (read as it is)', () => frame(rankBytes, true), {}, grpc.status.OK],
    ['a message over the size limit', () => frame(Buffer.alloc(70 * 1024, 1)), {}, grpc.status.RESOURCE_EXHAUSTED],
    // the stream left open: the answer must come when the second message (or its prefix) is in
    ['a second message, the stream left open', () => Buffer.concat([frame(rankBytes), frame(rankBytes)]), {}, grpc.status.UNIMPLEMENTED, false],
    ['a second message over the size limit, the stream left open', () => Buffer.concat([frame(rankBytes), prefix(70 * 1024), Buffer.alloc(100)]), {}, grpc.status.RESOURCE_EXHAUSTED, false],
    ['a malformed grpc-timeout', () => frame(rankBytes), { 'grpc-timeout': 'soon' }, grpc.status.INTERNAL],
    ['an expired grpc-timeout', () => frame(rankBytes), { 'grpc-timeout': '0n' }, grpc.status.DEADLINE_EXCEEDED],
  ];
  for (const [what, body, headers, code, end] of raw)
    it(`answers ${what} as grpc-js does (${grpc.status[code]})`, async () => {
      const before = fast.fastPathCalls;
      const a = await h2(fast.port, 'Rank', body(), headers, end ?? true);
      const b = await h2(slow.port, 'Rank', body(), headers, end ?? true);
      expect(fast.fastPathCalls - before).to.equal(1);
      expect(grpc.status[a.code], a.details).to.equal(grpc.status[code]);
      expect({ code: a.code, details: a.details }).to.deep.equal({ code: b.code, details: b.details });
    });

  it('runs a request cheaper than a thread hand-off on the receiving thread, with the same answer', async () => {
    // one server that runs every request inline once it has seen one run, one that never does
    const start = (inlineMaxUs: number) => AdrankServer.start({ port: 0, engine: () => Engine.load(join(dir, 'b.safetensors'), { threads: 1 }), inlineMaxUs, inlineIdleMaxUs: 0, warmup: false, log: silentLogger });
    const [here, there] = await Promise.all([start(1e6), start(0)]);
    try {
      await Promise.all([here.ready, there.ready]);
      const a: Answer[] = [];
      const b: Answer[] = [];
      for (let i = 0; i < 3; i++) {
        a.push(await call(`localhost:${here.port}`, 'Rank', rankBytes));
        b.push(await call(`localhost:${there.port}`, 'Rank', rankBytes));
      }
      expect(here.stats.inlineRuns).to.equal(2); // the first run (no estimate yet) on a request thread
      expect(there.stats.inlineRuns).to.equal(0);
      for (let i = 0; i < 3; i++) expect(winnersOf(a[i])).to.deep.equal(winnersOf(b[i]));
    } finally {
      await Promise.all([here.shutdown('test over'), there.shutdown('test over')]);
    }
  });

  it('runs a request on the receiving thread when that thread is idle (--inline-idle-max-us), not when calls come back to back', async () => {
    const idle = await AdrankServer.start({ port: 0, engine: () => Engine.load(join(dir, 'b.safetensors'), { threads: 1 }), inlineMaxUs: 0, inlineIdleMaxUs: 1e6, warmup: false, log: silentLogger });
    try {
      await idle.ready;
      const address = `localhost:${idle.port}`;
      const want = winnersOf(await call(`localhost:${slow.port}`, 'Rank', rankBytes));
      // one at a time, with gaps: after the first (no estimate yet) each runs where it arrived
      for (let i = 0; i < 4; i++) {
        expect(winnersOf(await call(address, 'Rank', rankBytes))).to.deep.equal(want);
        await new Promise((r) => setTimeout(r, 5));
      }
      expect(idle.stats.inlineRuns).to.equal(3);
      // a burst on one connection, of a size not run before (so the first goes to an engine thread,
      // which has no estimate) and long (a Rank of every ad): the others arrive while it runs, the
      // calls overlap, and none of them runs on the receiving thread
      const e = await Engine.load(join(dir, 'b.safetensors'), { threads: 1 });
      const all = adIds(e.bundle);
      e.dispose();
      const bigBytes = Buffer.from(RankRequest.encode(RankRequest.fromObject(protoRequest(c, { candidateAdIds: all }))).finish());
      const bigWant = winnersOf(await call(`localhost:${slow.port}`, 'Rank', bigBytes));
      const before = idle.stats.inlineRuns;
      const client = new grpc.Client(address, grpc.credentials.createInsecure());
      const id = (b: Buffer) => b;
      await new Promise<void>((resolve, reject) => client.waitForReady(Date.now() + 5000, (err) => (err ? reject(err) : resolve())));
      const burst = await Promise.all(
        Array.from({ length: 12 }, () => new Promise<Buffer>((resolve, reject) => client.makeUnaryRequest('/adrank.v1.AdRanker/Rank', id, id, bigBytes, (err, r) => (err ? reject(err) : resolve(r!))))),
      );
      client.close();
      for (const b of burst) expect(winnersOf({ code: grpc.status.OK, details: '', message: b })).to.deep.equal(bigWant);
      expect(idle.stats.inlineRuns - before).to.equal(0);
      // calls overlapped: for OVERLAP_WINDOW_MS after, even spaced calls go to the engine threads
      const afterBurst = idle.stats.inlineRuns;
      for (let i = 0; i < 3; i++) {
        await call(address, 'Rank', rankBytes);
        await new Promise((r) => setTimeout(r, 5));
      }
      expect(idle.stats.inlineRuns).to.equal(afterBurst);
      await new Promise((r) => setTimeout(r, OVERLAP_WINDOW_MS + 50));
      await call(address, 'Rank', rankBytes);
      expect(idle.stats.inlineRuns).to.equal(afterBurst + 1);
    } finally {
      await idle.shutdown('test over');
    }
  });

  it('answers a well-formed raw call with the message grpc-js sends', async () => {
    const a = await h2(fast.port, 'Rank', frame(rankBytes), { 'grpc-timeout': '10S' });
    const b = await h2(slow.port, 'Rank', frame(rankBytes), { 'grpc-timeout': '10S' });
    expect(winnersOf(a)).to.deep.equal(winnersOf(b));
  });
});
