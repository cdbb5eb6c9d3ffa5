/**
 * Feature logging's cost on the serving thread (target, docs/feature-log.md: "the front end with
 * logging at sample 1.0 stays within 10% of logging off"). The front end of a Rank (decode + validate + bundle +
 * encode, as in bench/frontend.ts, with a synthetic engine result) runs in rounds, alternating
 * logging off and logging at sample 1.0 (FeatureLog.record on every request, a real writer
 * thread and real files). The event loop turns every BURST requests, so batches reach the writer.
 * Two offered loads:
 * - back to back: far more than the writer can write, so the bounded queue fills and drops;
 * - paced: BURST requests every PACE_MS ms, which the writer keeps up with (the accept path).
 * Reports, as median µs per request:
 * - the serving thread's time with logging off and at 1.0 (requests plus batch posts; wall-clock
 *   time, so it also feels the writer thread competing for cores) and their ratio;
 * - the part spent in FeatureLog.record and the batch posts, logging's own cost, measured
 *   directly and so less noisy than the difference of two medians;
 * - what the writer wrote or dropped.
 *
 *   npm run bench:feature-log            (results: bench/RESULTS.md)
 */
import { cpus, platform, release, tmpdir } from 'node:os';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import protobuf from 'protobufjs';
import { loadProto } from '../src/wire/proto.js';
import { WIRE } from '../src/wire/codec.js';
import { rank } from '../src/handlers/rank.js';
import { emptyResult, responseOf } from '../src/handlers/engine-rpc.js';
import { modelShape, sampleRank } from '../src/handlers/sample.js';
import { packFeatureBundle } from '../src/features/feature-bundle.js';
import { makeDemoConfig } from '../src/model/demo.js';
import { FeatureLog } from '../src/featurelog/writer.js';
import { silentLogger } from '../src/log.js';
import type { NativeResult } from '../src/engine/index.js';

const ROUNDS = Number(process.env.ROUNDS ?? 15);
const PER_ROUND = Number(process.env.PER_ROUND ?? 1000);
const BURST = 20;
/** the paced run: BURST requests, then this many ms idle (the writer keeps up) */
const PACE_MS = Number(process.env.PACE_MS ?? 10);

const config = makeDemoConfig();
const { root } = loadProto();
const rankType = root.lookupType('adrank.v1.RankRequest');
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const turn = () => new Promise((r) => setImmediate(r));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function case_(n: number, k: number) {
  let s = 12345;
  const ids = Array.from({ length: n }, () => String(BigInt((s = (s * 1103515245 + 12345) % 2 ** 31)) * 4099n + 1n));
  const bytes = Buffer.from(rankType.encode(rankType.fromObject(sampleRank(modelShape(config), ids, k)) as protobuf.Message).finish());
  const er = rank.validate(rank.decode(bytes), config, { maxCandidates: 100_000 });
  const result: NativeResult = emptyResult();
  const m = Math.min(k, n);
  const cands = er.candidates as BigInt64Array;
  result.adIds = cands.slice(0, m);
  result.advertisers = cands.slice(0, m).map((x) => x % 1000n);
  result.rows = new Int32Array(m);
  result.scores = Float32Array.from({ length: m }, (_, i) => 1 - i / m);
  result.probs = Float32Array.from({ length: m * config.tasks.length }, (_, i) => (i % 97) / 100);
  result.prices = Float32Array.from({ length: m }, (_, i) => 0.5 + i / 1000);
  return { bytes, result };
}

async function main(): Promise<void> {
  const out: string[] = [];
  const say = (s: string) => {
    out.push(s);
    console.log(s);
  };
  say(`machine: ${cpus()[0]?.model ?? 'unknown cpu'}, ${cpus().length} cores, ${platform()} ${release()}, node ${process.version}`);
  say(`date: ${new Date().toISOString()}; command: npm run bench:feature-log (ROUNDS=${ROUNDS}, PER_ROUND=${PER_ROUND}, PACE_MS=${PACE_MS}); median over rounds of µs per request`);
  say('');
  say('| offered load | candidates | K | serving thread, off | serving thread, 1.0 | ratio | of which record() + batch posts | records written | dropped (queue full) |');
  say('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const pace of [0, PACE_MS])
    for (const [n, k] of [
      [1000, 10],
      [1000, 100],
    ] as const) {
      const { bytes, result } = case_(n, k);
      const dir = mkdtempSync(join(tmpdir(), 'adrank-bench-fl-'));
      const fl = new FeatureLog({ dir, sample: 1, log: silentLogger });
      let recording = 0; // time inside FeatureLog.record
      const once = (log: boolean) => {
        const r = rank.decode(bytes);
        const q = rank.validate(r, config, { maxCandidates: 100_000 });
        packFeatureBundle(config, q);
        const res = rank.encode(responseOf(r.requestId, result, config), {}, performance.now());
        if (log) {
          const t = performance.now();
          fl.record('Rank', r.requestId, r[WIRE], res);
          recording += performance.now() - t;
        }
      };
      // the serving thread's time: the requests, plus the batch posts made in the event-loop turns
      let posting = 0;
      const self = fl as unknown as { post(): void };
      const post = self.post.bind(fl);
      self.post = () => {
        const t = performance.now();
        post();
        posting += performance.now() - t;
      };
      const round = async (log: boolean) => {
        let busy = 0;
        posting = 0;
        recording = 0;
        for (let i = 0; i < PER_ROUND; i += BURST) {
          const t0 = performance.now();
          for (let j = 0; j < BURST; j++) once(log);
          busy += performance.now() - t0;
          await turn();
          if (pace > 0) await sleep(pace);
        }
        return { thread: ((busy + posting) * 1000) / PER_ROUND, logging: ((recording + posting) * 1000) / PER_ROUND };
      };
      await round(false); // warm-up
      await round(true);
      type Round = Awaited<ReturnType<typeof round>>;
      const off: Round[] = [];
      const on: Round[] = [];
      for (let i = 0; i < ROUNDS; i++) {
        off.push(await round(false));
        on.push(await round(true));
      }
      await fl.close();
      const a = median(off.map((x) => x.thread));
      const b = median(on.map((x) => x.thread));
      const own = median(on.map((x) => x.logging));
      const load = pace > 0 ? `${BURST} requests every ${pace} ms` : 'back to back';
      say(`| ${load} | ${n.toLocaleString('en-US')} | ${k} | ${a.toFixed(1)} | ${b.toFixed(1)} | ${(b / a).toFixed(3)} | ${own.toFixed(2)} (${((100 * own) / a).toFixed(1)}%) | ${fl.written} | ${fl.droppedBy.get('queue_full')} |`);
      rmSync(dir, { recursive: true, force: true });
    }
}

void main();
