/**
 * The load generator (src/bench/) against a stand-in gRPC server (no addon): mixes parse or are
 * refused by name; a closed loop counts answers and errors by status and reports the server's
 * own stage timings; the open loop measures latency from each request's intended send time, so a
 * stall of the generator itself is charged to the requests it delayed (coordinated omission).
 */
import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs';
import { loadProto } from '../src/wire/proto.js';
import { runLoad } from '../src/bench/load.js';
import { parseMix, type EncodedRequest } from '../src/bench/requests.js';
import { latencyThroughputSvg } from '../src/bench/plot.js';

const identity = (b: Buffer) => b;

/** A server answering Rank with fixed timings; every `failEvery`-th call fails RESOURCE_EXHAUSTED. */
async function standIn(failEvery: number, delayMs = 0): Promise<{ server: grpc.Server; port: number; calls: () => number }> {
  const root = loadProto().root;
  const type = root.lookupType('adrank.v1.RankResponse');
  const reply = Buffer.from(
    type.encode(type.fromObject({ requestId: 'x', timings: { decodeUs: 11, validateUs: 7, engineTotalUs: 400, totalUs: 500 } }) as protobuf.Message).finish(),
  );
  let calls = 0;
  const server = new grpc.Server();
  server.addService(
    { Rank: { path: '/adrank.v1.AdRanker/Rank', requestStream: false, responseStream: false, requestSerialize: identity, requestDeserialize: identity, responseSerialize: identity, responseDeserialize: identity } },
    {
      Rank: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
        const n = ++calls;
        const answer = () => (n % failEvery === 0 ? cb({ code: grpc.status.RESOURCE_EXHAUSTED, details: 'busy' }) : cb(null, reply));
        if (delayMs > 0) setTimeout(answer, delayMs);
        else answer();
      },
    },
  );
  const port = await new Promise<number>((res, rej) => server.bindAsync('localhost:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
  return { server, port, calls: () => calls };
}

describe('62 load generator', function () {
  this.timeout(30_000);
  const pool: EncodedRequest[][] = [[{ entry: 0, rpc: 'rank', bytes: Buffer.alloc(0) }]];
  const mix = parseMix('rank:10');

  it('parses mixes and refuses bad ones by name', () => {
    expect(parseMix('rank:100=8, retrieve=1,retrieve-and-rank:200=1')).to.deep.equal([
      { rpc: 'rank', n: 100, weight: 8 },
      { rpc: 'retrieve', n: 0, weight: 1 },
      { rpc: 'retrieve-and-rank', n: 200, weight: 1 },
    ]);
    expect(parseMix('rank')).to.deep.equal([{ rpc: 'rank', n: 10, weight: 1 }]);
    expect(() => parseMix('rnak:10')).to.throw('expected rank[:N][=W], retrieve[=W] or retrieve-and-rank[:R][=W] for --mix, got "rnak:10"');
    expect(() => parseMix('rank:0')).to.throw(/1\.\.100000 candidates/);
    expect(() => parseMix('')).to.throw(/at least one entry/);
  });

  it('closed loop: counts answers and errors by status, and reports the server stage timings', async () => {
    const s = await standIn(4);
    const client = new grpc.Client(`localhost:${s.port}`, grpc.credentials.createInsecure());
    try {
      const r = await runLoad([client], loadProto().root, mix, pool, { concurrency: 4, durationS: 0.6, warmupS: 0.1, deadlineMs: 5000 });
      expect(r.mode).to.equal('closed');
      expect(r.requests).to.be.greaterThan(20);
      expect(r.ok + (r.errors.RESOURCE_EXHAUSTED ?? 0)).to.equal(r.requests);
      // every 4th call fails: a quarter of those measured, give or take the window's edges
      expect(r.errors.RESOURCE_EXHAUSTED / r.requests).to.be.within(0.15, 0.35);
      expect(r.throughput).to.be.closeTo(r.ok / 0.6, 1e-9);
      expect(r.stages.decodeUs).to.equal(11);
      expect(r.stages.validateUs).to.equal(7);
      expect(r.stages.totalUs).to.equal(500);
      expect(r.latency.p50).to.be.greaterThan(0);
      expect(r.latency.p50).to.be.at.most(r.latency.p99);
      expect(r.generatorCpuPct).to.be.greaterThan(0);
    } finally {
      client.close();
      s.server.forceShutdown();
    }
  });

  it('open loop: latency is measured from the intended send time (a generator stall is charged)', async () => {
    const s = await standIn(1_000_000);
    const client = new grpc.Client(`localhost:${s.port}`, grpc.credentials.createInsecure());
    try {
      // 200 requests/s for 1 s; 400 ms in, the generator's own event loop is blocked for 250 ms
      const stall = setTimeout(() => {
        const until = performance.now() + 250;
        while (performance.now() < until);
      }, 400);
      const r = await runLoad([client], loadProto().root, mix, pool, { concurrency: 1, rate: 200, durationS: 1, warmupS: 0, deadlineMs: 5000 });
      clearTimeout(stall);
      expect(r.mode).to.equal('open');
      // every due request was sent: about 200, none dropped
      expect(r.requests).to.be.within(190, 201);
      expect(r.ok).to.equal(r.requests);
      // ~50 requests were due during the stall and went out late: measured from their due time
      // their latencies reach ~250 ms (from the actual send they would be ~1 ms)
      expect(r.latency.max / 1000).to.be.greaterThan(200);
      expect(r.latency.p90 / 1000).to.be.greaterThan(20);
      expect(r.latency.p50 / 1000).to.be.below(r.latency.p90 / 1000);
    } finally {
      client.close();
      s.server.forceShutdown();
    }
  });

  it('draws the plot with one line per series and a point per measurement', () => {
    const svg = latencyThroughputSvg('t', [
      { name: 'Rank(10) off', group: 'Rank(10)', dashed: true, points: [{ x: 40, y: 50, label: 'C1' }, { x: 60, y: 400, label: 'C16' }] },
      { name: 'Rank(10) on', group: 'Rank(10)', points: [{ x: 45, y: 55, label: 'C1' }, { x: 120, y: 250, label: 'C16' }, { x: 0, y: 0, label: 'none' }] },
    ]);
    expect(svg.startsWith('<svg')).to.equal(true);
    expect(svg.match(/<polyline/g)).to.have.length(2);
    expect(svg.match(/<circle/g)).to.have.length(4); // the zero-throughput point is left out
    expect(svg).to.include('stroke-dasharray');
    expect(svg).to.include('>C16</text>');
  });
});
