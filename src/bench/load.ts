/**
 * The load generator's engine: sends pre-encoded requests over one or more gRPC channels in a
 * closed loop (C callers, each sending its next request when the last one answers) or an open
 * loop (a fixed rate; latency is measured from each request's *intended* send time, so a
 * stalled server is charged for the requests it delayed — coordinated omission corrected).
 *
 * Recorded per run: an HDR histogram of latency (µs), throughput, errors by gRPC status, the
 * server's per-stage timings from each response (medians), and the generator's own CPU use.
 */
import * as grpc from '@grpc/grpc-js';
import { createRequire } from 'node:module';
import protobuf from 'protobufjs';
import { METHOD, picker, type EncodedRequest, type MixEntry } from './requests.js';

// CommonJS package: required, so that its exports are the same under node's ESM loader and tsx's
const hdr = createRequire(import.meta.url)('hdr-histogram-js') as typeof import('hdr-histogram-js');

export interface LoadOptions {
  /** open loop: requests per second; undefined = closed loop */
  rate?: number;
  /** closed loop: concurrent callers (also the open loop's cap on outstanding calls, default 10,000) */
  concurrency: number;
  /** measured seconds */
  durationS: number;
  /** seconds sent and discarded before measuring */
  warmupS: number;
  /** per-call deadline, ms */
  deadlineMs: number;
  /** progress line on stderr (only when it is a TTY) */
  progress?: boolean;
  label?: string;
}

/** Server stages reported in ServerTimings, in request-path order. */
export const STAGES = [
  'decodeUs',
  'validateUs',
  'bundleUs',
  'queueUs',
  'batchWaitUs',
  'userUs',
  'retrieveUs',
  'gatherUs',
  'masknetUs',
  'dcnUs',
  'mlpUs',
  'selectUs',
  'engineTotalUs',
  'encodeUs',
  'totalUs',
] as const;
export type Stage = (typeof STAGES)[number];

export interface LoadResult {
  label: string;
  mode: 'closed' | 'open';
  concurrency: number;
  /** open loop's target rate */
  rate?: number;
  durationS: number;
  requests: number;
  ok: number;
  /** requests per second that finished OK */
  throughput: number;
  /** errors by gRPC status name */
  errors: Record<string, number>;
  /** µs, OK calls only */
  latency: { p50: number; p90: number; p99: number; p999: number; max: number; mean: number };
  /** medians (µs) of the server's ServerTimings over OK calls, plus the client-side rest */
  stages: Record<Stage, number> & { outsideServerUs: number };
  /** the generator's CPU use over the measured window: percent of one core */
  generatorCpuPct: number;
  /** per mix entry: OK count and p50/p99 µs */
  perEntry: { entry: number; ok: number; p50: number; p99: number }[];
}

function newHistogram() {
  return hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: 3 });
}

/** Reads only the ServerTimings sub-message (field 5 in every engine response) of a response. */
function timingsReader(root: protobuf.Root) {
  const t = root.lookupType('adrank.v1.ServerTimings');
  const fieldId = root.lookupType('adrank.v1.RankResponse').fields.timings.id;
  return (buf: Buffer): Record<string, number> | undefined => {
    const r = protobuf.Reader.create(buf);
    let out: Record<string, number> | undefined;
    while (r.pos < r.len) {
      const tag = r.uint32();
      if (tag >>> 3 === fieldId && (tag & 7) === 2) {
        const len = r.uint32();
        out = t.toObject(t.decode(buf.subarray(r.pos, r.pos + len))) as Record<string, number>;
        r.pos += len;
      } else r.skipType(tag & 7);
    }
    return out;
  };
}

const identity = (b: Buffer) => b;

/** A growable Float64Array for stage samples. */
class Samples {
  private a = new Float64Array(1024);
  n = 0;
  push(x: number) {
    if (this.n === this.a.length) {
      const b = new Float64Array(this.a.length * 2);
      b.set(this.a);
      this.a = b;
    }
    this.a[this.n++] = x;
  }
  median(): number {
    if (this.n === 0) return 0;
    const s = this.a.slice(0, this.n).sort();
    return s[this.n >> 1];
  }
}

/**
 * Runs one load: `pool[e]` holds the encoded requests of mix entry e. `clients` are raw gRPC
 * clients (one per channel); calls spread over them round-robin.
 */
export async function runLoad(clients: grpc.Client[], root: protobuf.Root, mix: MixEntry[], pool: EncodedRequest[][], o: LoadOptions): Promise<LoadResult> {
  const readTimings = timingsReader(root);
  const pick = picker(mix);
  const next = new Array(pool.length).fill(0);
  const hist = newHistogram();
  const perHist = mix.map(() => newHistogram());
  const stageSamples = Object.fromEntries(STAGES.map((s) => [s, new Samples()])) as Record<Stage, Samples>;
  const outside = new Samples();
  const errors: Record<string, number> = {};
  let requests = 0;
  let ok = 0;
  let rr = 0;

  const t0 = performance.now();
  const measureFrom = t0 + o.warmupS * 1000;
  const endAt = measureFrom + o.durationS * 1000;
  let cpu0: NodeJS.CpuUsage | undefined;
  let measuring = false;

  /** Sends one request; `intended` is the performance.now() the latency is measured from. */
  const send = (intended: number): Promise<void> => {
    const entry = pick();
    const p = pool[entry];
    const req = p[next[entry]++ % p.length];
    const client = clients[rr++ % clients.length];
    return new Promise((resolve) => {
      client.makeUnaryRequest(METHOD[req.rpc].path, identity, identity, req.bytes, { deadline: Date.now() + o.deadlineMs }, (err, res) => {
        const done = performance.now();
        if (intended >= measureFrom && intended < endAt) {
          requests++;
          if (err) {
            const name = grpc.status[err.code] ?? String(err.code);
            errors[name] = (errors[name] ?? 0) + 1;
          } else {
            ok++;
            const lat = Math.max(1, Math.round((done - intended) * 1000));
            hist.recordValue(lat);
            perHist[entry].recordValue(lat);
            const t = res ? readTimings(res) : undefined;
            if (t) {
              for (const s of STAGES) stageSamples[s].push(t[s] ?? 0);
              outside.push(lat - (t.totalUs ?? 0));
            }
          }
        }
        resolve();
      });
    });
  };

  const startMeasuring = () => {
    if (!measuring && performance.now() >= measureFrom) {
      measuring = true;
      cpu0 = process.cpuUsage();
    }
  };

  let progress: NodeJS.Timeout | undefined;
  if (o.progress && process.stderr.isTTY) {
    progress = setInterval(() => {
      const now = performance.now();
      const phase = now < measureFrom ? 'warm-up' : `${Math.min(o.durationS, (now - measureFrom) / 1000).toFixed(1)}/${o.durationS}s`;
      const rps = now > measureFrom ? ok / ((now - measureFrom) / 1000) : 0;
      const p99 = ok ? hist.getValueAtPercentile(99) / 1000 : 0;
      process.stderr.write(`\r\x1b[K${o.label ?? ''} ${phase}  ${ok} ok  ${rps.toFixed(0)} req/s  p99 ${p99.toFixed(2)} ms`);
    }, 250);
  }

  if (o.rate === undefined) {
    // closed loop: C callers, back to back
    const caller = async () => {
      while (performance.now() < endAt) {
        startMeasuring();
        await send(performance.now());
      }
    };
    await Promise.all(Array.from({ length: o.concurrency }, caller));
  } else {
    // open loop: request i is due at t0 + i / rate; every due request is sent even when late
    const interval = 1000 / o.rate;
    const outstanding = new Set<Promise<void>>();
    let i = 0;
    await new Promise<void>((resolve) => {
      const tick = () => {
        const now = performance.now();
        startMeasuring();
        while (t0 + i * interval <= now && t0 + i * interval < endAt) {
          if (outstanding.size >= Math.max(o.concurrency, 10_000)) break; // a guard against a dead server
          const p = send(t0 + i * interval);
          outstanding.add(p);
          p.then(() => outstanding.delete(p));
          i++;
        }
        if (t0 + i * interval >= endAt) return resolve();
        const wait = t0 + i * interval - performance.now();
        if (wait > 1) setTimeout(tick, Math.min(wait - 0.5, 50));
        else setImmediate(tick);
      };
      tick();
    });
    await Promise.all(outstanding);
  }
  const cpu = process.cpuUsage(cpu0);
  const wallUs = (performance.now() - measureFrom) * 1000;
  if (progress) {
    clearInterval(progress);
    process.stderr.write('\r\x1b[K');
  }
  const stages = Object.fromEntries(STAGES.map((s) => [s, stageSamples[s].median()])) as LoadResult['stages'];
  stages.outsideServerUs = outside.median();
  return {
    label: o.label ?? '',
    mode: o.rate === undefined ? 'closed' : 'open',
    concurrency: o.concurrency,
    rate: o.rate,
    durationS: o.durationS,
    requests,
    ok,
    throughput: ok / o.durationS,
    errors,
    latency: {
      p50: hist.getValueAtPercentile(50),
      p90: hist.getValueAtPercentile(90),
      p99: hist.getValueAtPercentile(99),
      p999: hist.getValueAtPercentile(99.9),
      max: hist.maxValue,
      mean: hist.mean,
    },
    stages,
    generatorCpuPct: wallUs > 0 ? (100 * (cpu.user + cpu.system)) / wallUs : 0,
    perEntry: perHist.map((h, entry) => ({ entry, ok: h.totalCount, p50: h.getValueAtPercentile(50), p99: h.getValueAtPercentile(99) })),
  };
}
