/**
 * Front-end micro-benchmark (docs/design.md §8: decode + validate + bundle + encode ≤ 100 µs for a Rank
 * of 1,000 ids). No engine and no network: the request bytes go through the server's own
 * decoder, validator, feature-bundle packer and response encoder, with a synthetic engine
 * result of K winners. Also compares ways of decoding the candidate id list.
 *
 *   npm run bench:frontend            (results: bench/RESULTS.md)
 *   npm run bench:frontend -- --served   (served, from a separate client process: bench/served.ts)
 */
import { cpus, platform, release } from 'node:os';
import protobuf from 'protobufjs';
import { loadProto } from '../src/wire/proto.js';
import { requestDecoder } from '../src/wire/codec.js';
import { rank } from '../src/handlers/rank.js';
import { responseOf, emptyResult } from '../src/handlers/engine-rpc.js';
import { modelShape, sampleRank } from '../src/handlers/sample.js';
import { packFeatureBundle } from '../src/features/feature-bundle.js';
import { makeDemoConfig } from '../src/model/demo.js';
import type { ModelConfig } from '../src/model/config.js';
import type { NativeResult } from '../src/engine/index.js';
import type { ServerTimings } from '../src/generated/adrank/v1/ServerTimings.js';
import { Metadata, status, type ServerInterceptingCallInterface, type ServerMethodDefinition } from '@grpc/grpc-js';
import { Metrics } from '../src/metrics/index.js';
import { CallTracker } from '../src/server/drain.js';
import { engineCallObserver } from '../src/metrics/observe.js';
import { silentLogger } from '../src/log.js';
import type { CallState } from '../src/handlers/engine-rpc.js';

// --threads: calls/s by front-end thread count, a separate benchmark (bench/frontend-threads.ts)
if (process.argv.includes('--threads')) {
  const { main } = await import('./frontend-threads.js');
  await main(process.argv.slice(2));
  process.exit(0);
}
// --served: the served figures from a separate client process (bench/served.ts) instead
if (process.argv.includes('--served')) {
  await (await import('./served.js')).main();
  process.exit(0);
}

const ITER = Number(process.env.ITER ?? 3000);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1];
}

/** Median µs of `fn` over ITER runs after ITER/4 warm-up runs. */
function time(fn: () => unknown): number {
  for (let i = 0; i < ITER / 4; i++) fn();
  const t: number[] = [];
  for (let i = 0; i < ITER; i++) {
    const t0 = performance.now();
    fn();
    t.push((performance.now() - t0) * 1000);
  }
  return median(t);
}


/** Demo-like ad ids: up to 2^43 (7-byte varints). */
function adIds(n: number): string[] {
  let s = 12345;
  return Array.from({ length: n }, () => {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    return String(BigInt(s) * 4099n + 1n);
  });
}

function fakeResult(candidates: BigInt64Array, k: number, tasks: number): NativeResult {
  const r = emptyResult();
  const n = Math.min(k, candidates.length);
  r.adIds = candidates.slice(0, n);
  r.advertisers = candidates.slice(0, n).map((x) => x % 1000n);
  r.rows = new Int32Array(n);
  r.scores = Float32Array.from({ length: n }, (_, i) => 1 - i / n);
  r.probs = Float32Array.from({ length: n * tasks }, (_, i) => (i % 97) / 100);
  r.prices = Float32Array.from({ length: n }, (_, i) => 0.5 + i / 1000);
  r.counts = { ...r.counts, received: candidates.length, eligible: candidates.length };
  return r;
}

const config = makeDemoConfig();
const { packageDefinition, root } = loadProto();
const rankType = root.lookupType('adrank.v1.RankRequest');
const protoLoaderDecode = packageDefinition['adrank.v1.AdRanker'] as unknown as Record<string, { requestDeserialize(b: Buffer): { candidateAdIds: string[] } }>;
const fast = requestDecoder<{ candidateAdIds: BigInt64Array }>('adrank.v1.RankRequest', ['candidateAdIds']);
const longsAsNumber = (buf: Buffer) => rankType.toObject(rankType.decode(buf), { longs: Number, enums: String, defaults: true, oneofs: true });

const lines: string[] = [];
const out = (s: string) => {
  lines.push(s);
  console.log(s);
};

out(`machine: ${cpus()[0]?.model ?? 'unknown cpu'}, ${cpus().length} cores, ${platform()} ${release()}, node ${process.version}`);
out(`date: ${new Date().toISOString()}; command: npm run bench:frontend (ITER=${ITER}); median µs per request`);
out('');
out('Decoding a RankRequest with N candidate ids (demo-like ids < 2^43, 7-byte varints) into a BigInt64Array:');
out('');
out('| N | proto-loader (longs: String) + BigInt64Array | longs: Number (lossy > 2^53) | packed varints → BigInt64Array (used) |');
out('| ---: | ---: | ---: | ---: |');
for (const n of [1000, 10000]) {
  const bytes = Buffer.from(rankType.encode(rankType.fromObject(sampleRank(modelShape(config), adIds(n), 100)) as protobuf.Message).finish());
  const viaStrings = time(() => {
    const o = protoLoaderDecode.Rank.requestDeserialize(bytes);
    const ids = new BigInt64Array(o.candidateAdIds.length);
    for (let i = 0; i < ids.length; i++) ids[i] = BigInt(o.candidateAdIds[i]);
    return ids;
  });
  const viaNumbers = time(() => longsAsNumber(bytes));
  const viaFast = time(() => fast(bytes));
  out(`| ${n.toLocaleString('en-US')} (${(bytes.length / 1024).toFixed(1)} KiB) | ${viaStrings.toFixed(1)} | ${viaNumbers.toFixed(1)} | ${viaFast.toFixed(1)} |`);
}

out('');
out('Front end of a Rank (decode + validate + bundle + encode), K winners with 4 task probabilities and prices:');
out('');
out('| candidates | K | decode | validate | bundle | encode | total |');
out('| ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
for (const [n, k] of [
  [1000, 10],
  [1000, 100],
  [10000, 100],
] as const) {
  const bytes = Buffer.from(rankType.encode(rankType.fromObject(sampleRank(modelShape(config), adIds(n), k)) as protobuf.Message).finish());
  const decoded = rank.decode(bytes);
  const er = rank.validate(decoded, config, { maxCandidates: 100_000 });
  const result = fakeResult(er.candidates as BigInt64Array, k, config.tasks.length);
  const timings = (): ServerTimings => ({});
  const d = time(() => rank.decode(bytes));
  const v = time(() => rank.validate(decoded, config, { maxCandidates: 100_000 }));
  const b = time(() => packFeatureBundle(config, er));
  const e = time(() => rank.encode(responseOf('x', result, config), timings(), performance.now()));
  const all = time(() => {
    const r = rank.decode(bytes);
    const q = rank.validate(r, config, { maxCandidates: 100_000 });
    packFeatureBundle(config, q);
    return rank.encode(responseOf(r.requestId, result, config), timings(), performance.now());
  });
  out(`| ${n.toLocaleString('en-US')} | ${k} | ${d.toFixed(1)} | ${v.toFixed(1)} | ${b.toFixed(1)} | ${e.toFixed(1)} | ${all.toFixed(1)} |`);
}

out('');
out('Metrics on vs off, per Rank call (1,000 candidates, K = 100): the front end above, inside the');
out("server's call interceptor (src/server/drain.ts: wrapper built, started, status sent; always on, for");
out('the shutdown drain). Metrics on adds what the server records per call: the call timed into');
out('adrank_requests_total and adrank_request_duration_seconds, and the engine-call observer (12 funnel');
out('counters, 11 stage histograms, K x 4 prediction observations). Rounds alternate; median of the');
out('per-round medians. "no interceptor" is the front end alone (the interceptor\'s own cost).');
out('');
{
  const [n, k] = [1000, 100];
  const bytes = Buffer.from(rankType.encode(rankType.fromObject(sampleRank(modelShape(config), adIds(n), k)) as protobuf.Message).finish());
  const er0 = rank.validate(rank.decode(bytes), config, { maxCandidates: 100_000 });
  const result = fakeResult(er0.candidates as BigInt64Array, k, config.tasks.length);
  const metrics = new Metrics();
  const trackerOff = new CallTracker();
  const trackerOn = new CallTracker((path) => metrics.method(path));
  const observe = engineCallObserver(metrics, { sample: 0, log: silentLogger })!;
  const method = { path: '/adrank.v1.AdRanker/Rank' } as ServerMethodDefinition<unknown, unknown>;
  // the wire-side call grpc-js hands the interceptors
  const inner = { start() {}, sendStatus() {}, getDeadline: () => Infinity } as unknown as ServerInterceptingCallInterface;
  const listener = { onReceiveMetadata() {}, onReceiveMessage() {}, onReceiveHalfClose() {}, onCancel() {} };
  const call = { request: { requestId: 'x' }, metadata: new Metadata(), getPeer: () => 'peer' } as unknown as Parameters<typeof observe>[2];
  const frontEnd = () => {
    const r = rank.decode(bytes);
    const q = rank.validate(r, config, { maxCandidates: 100_000 });
    packFeatureBundle(config, q);
    const timings: ServerTimings = { decodeUs: 3, validateUs: 5, queueUs: 1, userUs: 20, gatherUs: 4, masknetUs: 30, dcnUs: 10, mlpUs: 8, selectUs: 2 };
    return { q, timings, bytes: rank.encode(responseOf(r.requestId, result, config), timings, performance.now()) };
  };
  const served = (tracker: CallTracker, record: boolean) => () => {
    const c = tracker.interceptor(method, inner);
    c.start(listener);
    const { q, timings } = frontEnd();
    // the handler's call state, filled by execute whether or not anything records it
    const state: CallState = { deadline: Infinity, cancelled: () => false, done: { result, timings, config, surface: q.surface } };
    if (record) observe('Rank', status.OK, call, state);
    c.sendStatus({ code: status.OK, details: '' });
  };
  // the recording alone (what metrics on adds), timed without the front end around it
  const rec = metrics.method(method.path)!;
  const done = { result, timings: frontEnd().timings, config, surface: 1 };
  const recordOnly = () => {
    const t0 = performance.now();
    observe('Rank', status.OK, call, { deadline: Infinity, cancelled: () => false, done });
    rec.finished(status.OK, (performance.now() - t0) / 1000);
  };
  const runs: Record<'bare' | 'off' | 'on' | 'rec', number[]> = { bare: [], off: [], on: [], rec: [] };
  for (let round = 0; round < 9; round++) {
    runs.bare.push(time(frontEnd));
    runs.off.push(time(served(trackerOff, false)));
    runs.on.push(time(served(trackerOn, true)));
    runs.rec.push(time(recordOnly));
  }
  const m = (xs: number[]) => median(xs).toFixed(1);
  out('| no interceptor | metrics off | metrics on | on − off | the recording alone |');
  out('| ---: | ---: | ---: | ---: | ---: |');
  out(`| ${m(runs.bare)} | ${m(runs.off)} | ${m(runs.on)} | ${(median(runs.on) - median(runs.off)).toFixed(2)} | ${median(runs.rec).toFixed(2)} |`);
  for (const [name, xs] of Object.entries(runs)) out(`(rounds, ${name}: ${xs.map((x) => x.toFixed(1)).join(', ')})`);
}
