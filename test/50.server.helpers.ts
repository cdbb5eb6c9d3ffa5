/**
 * Helpers for the server tests (50.server*.test.ts): a small demo bundle, requests in proto
 * and engine form built from the same values, and clients that can send what a well-behaved
 * client would not (raw bytes, an expired deadline).
 */
import { connect as http2Connect } from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as protoLoader from '@grpc/proto-loader';
import { makeDemoConfig, writeDemoBundle } from '../src/model/demo.js';
import type { ModelConfig } from '../src/model/config.js';
import { RankingMode, type EngineRequest } from '../src/features/feature-bundle.js';
import type { RankRequest } from '../src/generated/adrank/v1/RankRequest.js';
import type { RetrieveAndRankRequest } from '../src/generated/adrank/v1/RetrieveAndRankRequest.js';
import type { LoadedBundle } from '../src/model/bundle.js';

/** The demo config's shape, scaled down so that CPU tests run in milliseconds. */
export function smallConfig(): ModelConfig {
  const c = makeDemoConfig();
  return {
    ...c,
    name: 'adrank-test',
    version: '7',
    sequence: { ...c.sequence, max_len: 6, dim: 16, heads: 2, ffn_dim: 32 },
    masknet: { blocks: 2, projection_ratio: 0.5, output_dim: 32 },
    dcn: { layers: 2, rank: 0 },
    mlp: [32, 16],
    retrieval: { dim: 16, hidden: [32] },
    reserve_price: 0.01,
  };
}

export async function writeSmallBundle(out: string, ads = 2000): Promise<void> {
  await writeDemoBundle({ ads, seed: 7, out, config: smallConfig() });
}

/** A valid request in proto form (every engine RPC accepts these fields). */
export function protoRequest(c: ModelConfig, over: Partial<RankRequest & RetrieveAndRankRequest> = {}): RankRequest & RetrieveAndRankRequest {
  let s = 1;
  const rnd = () => ((s = (s * 16807) % 2147483647) / 2147483647) * 2 - 1;
  return {
    requestId: 'req-1',
    surface: c.surfaces[1],
    user: {
      dense: Array.from({ length: c.user_dense }, rnd),
      embedding: Array.from({ length: c.user_embedding_dim }, rnd),
      sparse: { [c.user_sparse[0].name]: { ids: ['5', '77', '-3'] }, [c.user_sparse[2].name]: { ids: ['9'] } },
      // longer than max_len (6): the server keeps the 6 most recent
      sequence: { itemIds: ['11', '12', '13', '14', '15', '16', '17', '18'], actions: [0, 1, 2, 3, 0, 1, 2, 3] },
    },
    targeting: c.targeting_dims.map((_, i) => (i === 2 ? 99 : i)), // 99: unknown value
    k: 20,
    perAdvertiserCap: 2,
    ...over,
  };
}

/** The same request as the engine takes it (what validation must produce). */
export function engineRequest(c: ModelConfig, p: RankRequest & RetrieveAndRankRequest, kind: 'rank' | 'retrieve' | 'retrieveAndRank'): EngineRequest {
  const u = p.user!;
  const i64 = (xs: (string | number | unknown)[] = []) => BigInt64Array.from(xs.map((x) => BigInt(x as string)));
  const tw = p.taskWeights;
  return {
    requestId: p.requestId!,
    surface: c.surfaces.indexOf(p.surface!),
    k: p.k!,
    cap: p.perAdvertiserCap ?? 0,
    mode: p.ranking?.mode === 'LOCAL' ? RankingMode.Local : RankingMode.Global,
    partitions: p.ranking?.partitions ?? 0,
    taskWeights: tw ? Float32Array.from(c.tasks, (t) => Number(tw[t] ?? 0)) : undefined,
    price: kind === 'retrieveAndRank' || (kind === 'rank' && !!p.price),
    reserve: p.reserve !== undefined ? Number(p.reserve) : (c.reserve_price ?? 0),
    retrieveCount: kind === 'retrieveAndRank' ? (p.retrieveCount ?? 0) : 0,
    userDense: Float32Array.from(u.dense as number[]),
    userEmbedding: Float32Array.from(u.embedding as number[]),
    targeting: Uint32Array.from(p.targeting ?? []),
    userSparse: c.user_sparse.map((f) => i64(u.sparse?.[f.name]?.ids)),
    seqItems: i64(u.sequence?.itemIds?.slice(0, c.sequence.max_len)),
    seqActions: Uint32Array.from((u.sequence?.actions ?? []).slice(0, c.sequence.max_len)),
    // RetrieveAndRank: the caller's candidates (blended with retrieval) and their quota
    candidates: kind === 'retrieve' ? new BigInt64Array(0) : i64(p.candidateAdIds),
    ...(kind === 'retrieveAndRank' ? { candidateQuota: p.candidateQuota ?? 0 } : {}),
    excludedAdvertisers: i64(p.exclusions?.advertiserIds),
    excludedAds: i64(p.exclusions?.adIds),
  };
}

export function adIds(b: LoadedBundle): string[] {
  return Array.from(b.tensors['ads.id'] as BigInt64Array, String);
}

/** A client for one method that sends and receives raw bytes. */
export function rawClient(address: string, method: string) {
  const Ctor = grpc.makeGenericClientConstructor(
    {
      [method]: {
        path: `/adrank.v1.AdRanker/${method}`,
        requestStream: false,
        responseStream: false,
        requestSerialize: (b: Buffer) => b,
        requestDeserialize: (b: Buffer) => b,
        responseSerialize: (b: Buffer) => b,
        responseDeserialize: (b: Buffer) => b,
      },
    },
    'AdRanker',
  );
  const client = new Ctor(address, grpc.credentials.createInsecure());
  const send = (bytes: Buffer) =>
    new Promise<{ code: grpc.status; details: string }>((resolve) =>
      (client as unknown as Record<string, (b: Buffer, cb: (e: grpc.ServiceError | null) => void) => void>)[method](bytes, (e) =>
        resolve(e ? { code: e.code, details: e.details } : { code: grpc.status.OK, details: '' }),
      ),
    );
  return { send, close: () => client.close() };
}

/**
 * One gRPC call over plain HTTP/2 with a `grpc-timeout` header of our choosing (grpc-js
 * clients refuse to send a call whose deadline has passed, so an expired deadline cannot be
 * sent through them). Resolves to the grpc-status and grpc-message trailers.
 */
export function http2Call(port: number, method: string, message: Uint8Array, timeout: string): Promise<{ code: number; details: string }> {
  return new Promise((resolve, reject) => {
    const session = http2Connect(`http://localhost:${port}`);
    session.on('error', reject);
    const req = session.request({
      ':method': 'POST',
      ':path': `/adrank.v1.AdRanker/${method}`,
      'content-type': 'application/grpc',
      te: 'trailers',
      'grpc-timeout': timeout,
    });
    let headers: Record<string, unknown> = {};
    req.on('response', (h) => (headers = h));
    req.on('trailers', (t) => (headers = { ...headers, ...t }));
    req.on('data', () => {});
    req.on('end', () => {
      session.close();
      resolve({ code: Number(headers['grpc-status']), details: decodeURIComponent(String(headers['grpc-message'] ?? '')) });
    });
    req.on('error', reject);
    const frame = Buffer.alloc(5 + message.length);
    frame.writeUInt32BE(message.length, 1);
    frame.set(message, 5);
    req.end(frame);
  });
}

/** Asserts that `p` fails with gRPC status `code`, and a details text that includes or matches `detail`. */
export function expectStatus(p: Promise<unknown>, code: grpc.status, detail?: string | RegExp): Promise<void> {
  return p.then(
    () => expect.fail(`expected ${grpc.status[code]}, got OK`),
    (e: grpc.ServiceError) => {
      expect(grpc.status[e.code], e.details).to.equal(grpc.status[code]);
      if (typeof detail === 'string') expect(e.details).to.include(detail);
      else if (detail) expect(e.details).to.match(detail);
    },
  );
}

/** A grpc.reflection.v1 ServerReflection client (the proto shipped with @grpc/reflection). */
export function reflectionClient(address: string) {
  const require = createRequire(import.meta.url);
  const def = protoLoader.loadSync('grpc/reflection/v1/reflection.proto', {
    includeDirs: [join(dirname(require.resolve('@grpc/reflection/package.json')), 'build', 'proto')],
    keepCase: true,
    defaults: true,
    oneofs: true,
  });
  const Reflection = (grpc.loadPackageDefinition(def) as any).grpc.reflection.v1.ServerReflection;
  return new Reflection(address, grpc.credentials.createInsecure());
}
