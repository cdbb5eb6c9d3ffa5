/**
 * Observability: the Prometheus metrics after known traffic (read from GET /metrics and, when
 * Debian's prometheus is installed, through a real Prometheus server that scrapes the server),
 * the pino JSON logs, the sampled access log and the W3C traceparent in the log lines.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import { Engine } from '../src/engine/index.js';
import { AdrankServer } from '../src/server/server.js';
import { jsonLogger, silentLogger } from '../src/log.js';
import { connect } from '../src/cli/client.js';
import { loadBundle } from '../src/model/bundle.js';
import { TokenFile } from '../src/auth/tokens.js';
import { FastHistogram } from '../src/metrics/collectors.js';
import { Metrics, OUTCOMES, PREDICTION_BUCKETS, STAGES } from '../src/metrics/index.js';
import { makeDemoConfig } from '../src/model/demo.js';
import { engineCallObserver } from '../src/metrics/observe.js';
import { emptyResult, type CallState } from '../src/handlers/engine-rpc.js';
import type { AdRankerClient } from '../src/generated/adrank/v1/AdRanker.js';
import type { RankResponse__Output } from '../src/generated/adrank/v1/RankResponse.js';
import { addonBuilt } from './support/index.js';
import { findPrometheus, Prometheus } from './support/prometheus.js';
import { repoRoot } from './support/python.js';
import { adIds, protoRequest, smallConfig, writeSmallBundle } from './50.server.helpers.js';

type Answer = { code: string; res?: RankResponse__Output; ms: number };

/** One unary call with metadata; resolves to the status name, the response and the client-side ms. */
function unary(client: AdRankerClient, method: string, req: object, md: Record<string, string> = {}): Promise<Answer> {
  const metadata = new grpc.Metadata();
  for (const [k, v] of Object.entries(md)) metadata.set(k, v);
  const t0 = performance.now();
  const fn = (client as unknown as Record<string, (r: object, m: grpc.Metadata, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r?: RankResponse__Output) => void) => void>)[method].bind(client);
  return new Promise((resolve) => fn(req, metadata, { deadline: Date.now() + 30_000 }, (e, r) => resolve({ code: e ? grpc.status[e.code] : 'OK', res: r, ms: performance.now() - t0 })));
}

interface Line {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The samples of a Prometheus text exposition. */
function parseExposition(text: string): Line[] {
  const out: Line[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not an exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

function value(lines: Line[], name: string, labels: Record<string, string> = {}): number | undefined {
  return lines.find((l) => l.name === name && Object.entries(labels).every(([k, v]) => l.labels[k] === v))?.value;
}

describe('56 observability', function () {
  this.timeout(120_000);
  let dir: string;
  let bundlePath: string;
  let ids: string[];

  before(async function () {
    if (!addonBuilt()) this.skip();
    dir = mkdtempSync(join(tmpdir(), 'adrank-53-'));
    bundlePath = join(dir, 'small.safetensors');
    await writeSmallBundle(bundlePath, 2000);
    ids = adIds(await loadBundle(bundlePath));
  });
  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  describe('metrics after known traffic', () => {
    let server: AdrankServer;
    let client: AdRankerClient;
    const answers: Record<string, Answer[]> = { rankOk: [], rankBad: [], rankUnauth: [], retrieve: [], getModel: [] };
    const c = smallConfig();

    before(async function () {
      if (!addonBuilt()) this.skip();
      const tokens = join(dir, 'tokens');
      writeFileSync(tokens, 'metrics-test-token\n');
      server = await AdrankServer.start({
        port: 0,
        engine: () => Engine.load(bundlePath, { device: 'cpu', threads: 1 }),
        log: silentLogger,
        metrics: { port: 0 },
        auth: { dataTokens: new TokenFile(tokens) },
      });
      await server.ready; // the warm-up requests are not traffic: they are not counted
      client = connect(`localhost:${server.port}`);
      const auth = { authorization: 'Bearer metrics-test-token' };
      for (let i = 0; i < 5; i++) answers.rankOk.push(await unary(client, 'Rank', protoRequest(c, { requestId: `ok${i}`, surface: c.surfaces[i % 2], candidateAdIds: ids.slice(i * 300, i * 300 + 200 + 50 * i) }), auth));
      for (let i = 0; i < 2; i++) answers.rankBad.push(await unary(client, 'Rank', protoRequest(c, { requestId: `bad${i}`, k: 0, candidateAdIds: ids.slice(0, 10) }), auth));
      answers.rankUnauth.push(await unary(client, 'Rank', protoRequest(c, { candidateAdIds: ids.slice(0, 10) })));
      for (let i = 0; i < 3; i++) answers.retrieve.push(await unary(client, 'Retrieve', protoRequest(c, { requestId: `rt${i}`, k: 30 + i }), auth));
      answers.getModel.push(await unary(client, 'GetModel', {}, auth));
    });
    after(async () => {
      client?.close();
      await server?.shutdown();
    });

    it('the traffic went as planned', () => {
      expect(Object.fromEntries(Object.entries(answers).map(([k, v]) => [k, v.map((a) => a.code)]))).to.deep.equal({
        rankOk: ['OK', 'OK', 'OK', 'OK', 'OK'],
        rankBad: ['INVALID_ARGUMENT', 'INVALID_ARGUMENT'],
        rankUnauth: ['UNAUTHENTICATED'],
        retrieve: ['OK', 'OK', 'OK'],
        getModel: ['OK'],
      });
    });

    /** What the traffic implies, from the responses themselves. */
    function expected() {
      const ok = answers.rankOk.map((a) => a.res!);
      const sum = (f: (r: RankResponse__Output) => number) => ok.reduce((s, r) => s + f(r), 0);
      const outcomes: Record<string, number> = {};
      for (const [outcome, field] of OUTCOMES) outcomes[outcome] = sum((r) => Number((r.counts as unknown as Record<string, number>)[field]));
      outcomes.won = sum((r) => r.winners.length);
      // served probabilities by task and surface
      const prediction: Record<string, { sum: number; count: number }> = {};
      answers.rankOk.forEach((a, i) => {
        const surface = c.surfaces[i % 2];
        for (const w of a.res!.winners)
          c.tasks.forEach((task, t) => {
            const p = (prediction[`${task}/${surface}`] ??= { sum: 0, count: 0 });
            p.sum += w.taskProbabilities[t];
            p.count++;
          });
      });
      const serverUs = sum((r) => Number(r.timings!.totalUs));
      const clientMs = [...answers.rankOk, ...answers.rankBad, ...answers.rankUnauth].reduce((s, a) => s + a.ms, 0);
      return { outcomes, prediction, serverUs, clientMs };
    }

    it('GET /metrics: requests by rpc and code, durations, funnel outcomes, predictions, stages, model info', async () => {
      const res = await fetch(`http://localhost:${server.metricsPort}/metrics`);
      expect(res.status).to.equal(200);
      expect(res.headers.get('content-type')).to.match(/^text\/plain; version=0\.0\.4/);
      const lines = parseExposition(await res.text());
      const requests = lines.filter((l) => l.name === 'adrank_requests_total').map((l) => `${l.labels.rpc} ${l.labels.code} ${l.value}`);
      expect(requests.sort()).to.deep.equal(['GetModel OK 1', 'Rank INVALID_ARGUMENT 2', 'Rank OK 5', 'Rank UNAUTHENTICATED 1', 'Retrieve OK 3'].sort());
      expect(value(lines, 'adrank_request_duration_seconds_count', { rpc: 'Rank' })).to.equal(8);
      expect(value(lines, 'adrank_request_duration_seconds_bucket', { rpc: 'Rank', le: '+Inf' })).to.equal(8);
      expect(value(lines, 'adrank_request_duration_seconds_bucket', { rpc: 'Rank', le: '0.0001' })).to.be.at.most(8);
      const e = expected();
      // the server's own clock: at least the OK responses' total µs, at most what the client waited
      const durationSum = value(lines, 'adrank_request_duration_seconds_sum', { rpc: 'Rank' })!;
      expect(durationSum).to.be.above(e.serverUs * 1e-6).and.below(e.clientMs * 1e-3);
      for (const [outcome, n] of Object.entries(e.outcomes)) expect(value(lines, 'adrank_candidates_total', { rpc: 'Rank', outcome }), outcome).to.equal(n);
      expect(e.outcomes.won).to.be.above(0);
      for (const [key, p] of Object.entries(e.prediction)) {
        const [task, surface] = key.split('/');
        expect(value(lines, 'adrank_prediction_count', { task, surface }), key).to.equal(p.count);
        expect(value(lines, 'adrank_prediction_sum', { task, surface }), key).to.be.closeTo(p.sum, 1e-6 * p.count);
      }
      // stages: every OK engine call records decode; Retrieve runs no MaskNet
      expect(value(lines, 'adrank_stage_duration_seconds_count', { stage: 'decode' })).to.equal(8);
      expect(value(lines, 'adrank_stage_duration_seconds_count', { stage: 'masknet' })).to.equal(5);
      expect(value(lines, 'adrank_stage_duration_seconds_count', { stage: 'encode' })).to.equal(8);
      expect(value(lines, 'adrank_inflight_requests')).to.equal(0);
      expect(value(lines, 'adrank_queue_depth')).to.equal(0);
      // the device counters of the serving engine (CPU backend: no graphs, nothing lost)
      for (const m of ['adrank_device_graphs', 'adrank_device_graph_capture_failures', 'adrank_device_lost_streams']) expect(value(lines, m), m).to.equal(0);
      expect(value(lines, 'adrank_model_info', { version: '7', backend: 'cpu' })).to.equal(1);
      expect(value(lines, 'adrank_model_load_failures_total')).to.equal(0);
      expect(value(lines, 'adrank_ad_state_updates_total')).to.equal(0);
      for (const m of ['adrank_ad_state_write_seconds_count', 'adrank_ad_state_apply_seconds_count']) expect(value(lines, m), m).to.equal(0);
      expect(lines.some((l) => l.name === 'process_cpu_seconds_total')).to.equal(true);
      expect(lines.some((l) => l.name === 'nodejs_eventloop_lag_seconds')).to.equal(true);
      expect((await fetch(`http://localhost:${server.metricsPort}/other`)).status).to.equal(404);
    });

    it('a real Prometheus server scrapes them: its query API returns the counts and sums the traffic implies', async function () {
      const found = findPrometheus();
      if ('reason' in found) {
        console.log(`      skipped: ${found.reason}`);
        this.skip();
      }
      const prom = await Prometheus.start(found.path, join(dir, 'prometheus'), [`localhost:${server.metricsPort}`]);
      try {
        const up = await prom.waitFor('adrank_requests_total{rpc="Rank",code="OK"}', (s) => s.length === 1);
        expect(up.map((s) => s.value)).to.deep.equal([5]);
        expect(up[0].metric.job).to.equal('adrank');
        const byCode = await prom.query('sum by (code) (adrank_requests_total{rpc="Rank"})');
        expect(Object.fromEntries(byCode.map((s) => [s.metric.code, s.value]))).to.deep.equal({ OK: 5, INVALID_ARGUMENT: 2, UNAUTHENTICATED: 1 });
        expect((await prom.query('adrank_request_duration_seconds_count{rpc="Rank"}'))[0].value).to.equal(8);
        const ours = parseExposition(await (await fetch(`http://localhost:${server.metricsPort}/metrics`)).text());
        const durationSum = (await prom.query('adrank_request_duration_seconds_sum{rpc="Rank"}'))[0].value;
        expect(durationSum).to.be.closeTo(value(ours, 'adrank_request_duration_seconds_sum', { rpc: 'Rank' })!, 1e-9);
        const e = expected();
        expect((await prom.query('adrank_candidates_total{rpc="Rank",outcome="won"}'))[0].value).to.equal(e.outcomes.won);
        const predSums = await prom.query('sum by (task) (adrank_prediction_sum)');
        for (const task of c.tasks) {
          const want = Object.entries(e.prediction).filter(([k]) => k.startsWith(`${task}/`)).reduce((s, [, p]) => s + p.sum, 0);
          expect(predSums.find((s) => s.metric.task === task)?.value, task).to.be.closeTo(want, 1e-5);
        }
        // the mean served probability, as the prediction-shift alert in docs/observability.md computes it
        const mean = await prom.query('sum by (task) (adrank_prediction_sum) / sum by (task) (adrank_prediction_count)');
        expect(mean.length).to.equal(c.tasks.length);
        for (const s of mean) expect(s.value).to.be.within(0, 1);
        // every PromQL expression in docs/observability.md is valid and runs
        const doc = readFileSync(join(repoRoot, 'docs', 'observability.md'), 'utf8');
        const exprs = [...doc.matchAll(/```promql\n([\s\S]*?)```/g)].map((m) => m[1].trim());
        expect(exprs.length).to.be.at.least(8);
        for (const expr of exprs) await prom.query(expr);
      } finally {
        prom.stop();
      }
    });
  });

  describe('collectors', () => {
    it('a histogram writes cumulative buckets, +Inf, sum and count', async () => {
      const m = new Metrics({ defaults: false });
      const h = new FastHistogram('t_seconds', 'test', ['x'], [0.1, 1, 10]).register(m.registry);
      const child = h.child({ x: 'a"b' });
      for (const v of [0.05, 0.1, 0.5, 2, 20]) child.observe(v);
      const lines = parseExposition(await m.text()).filter((l) => l.name.startsWith('t_seconds'));
      expect(lines.map((l) => `${l.name}{${l.labels.le ?? ''}} ${l.value}`)).to.deep.equal([
        't_seconds_bucket{0.1} 2', // le is inclusive
        't_seconds_bucket{1} 3',
        't_seconds_bucket{10} 4',
        't_seconds_bucket{+Inf} 5',
        't_seconds_sum{} 22.65',
        't_seconds_count{} 5',
      ]);
      expect(lines[0].labels.x).to.equal('a\\"b'); // label values escaped
    });

    it('engineResult: each stage histogram reads its own timings field; zero stages are not observed; outcomes and winners counted', async () => {
      const m = new Metrics({ defaults: false });
      const timings: Record<string, number> = {};
      STAGES.forEach(([, field], i) => (timings[field] = (i + 1) * 1000)); // stage i took (i+1) ms
      timings.retrieveUs = 0; // a stage the RPC did not run
      const r = emptyResult();
      r.adIds = new BigInt64Array(3);
      r.probs = Float32Array.from([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.01, 0.02, 0.03]); // 3 winners × 4 tasks
      r.counts = { ...r.counts, received: 10, unknown: 1, duplicate: 2, inactive: 3, outOfBudget: 4, paced: 5, targeting: 6, excludedAd: 7, excludedAdvertiser: 8, capped: 9, eligible: 11 };
      const config = makeDemoConfig();
      m.engineResult('Rank', r, timings, config, 1);
      const lines = parseExposition(await m.text());
      STAGES.forEach(([stage], i) => {
        const sum = value(lines, 'adrank_stage_duration_seconds_sum', { stage });
        if (stage === 'retrieve') expect([sum, value(lines, 'adrank_stage_duration_seconds_count', { stage })], stage).to.deep.equal([0, 0]);
        else expect(sum, stage).to.be.closeTo((i + 1) * 1e-3, 1e-12);
      });
      expect(OUTCOMES.map(([outcome]) => value(lines, 'adrank_candidates_total', { rpc: 'Rank', outcome }))).to.deep.equal([10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11]);
      expect(value(lines, 'adrank_candidates_total', { rpc: 'Rank', outcome: 'won' })).to.equal(3);
      // task t of winner i is probs[i * 4 + t]; surface index 1
      const surface = config.surfaces[1];
      expect(config.tasks.map((task) => value(lines, 'adrank_prediction_sum', { task, surface })!.toFixed(4))).to.deep.equal(['1.5000', '0.8100', '1.0200', '1.2300']);
    });

    it('the O(1) bucket lookup agrees with a linear search, on the bounds and next to them', () => {
      const bounds = PREDICTION_BUCKETS;
      const values: number[] = [0, -1, 2, NaN, 1e-9, 1 - 1e-12];
      for (const b of bounds) values.push(b, b * (1 - 1e-12), b * (1 + 1e-12), Math.fround(b));
      let s = 12345;
      for (let i = 0; i < 20_000; i++) values.push((s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
      const h = new FastHistogram('p', 'p', [], bounds).child({});
      const strided = new FastHistogram('q', 'q', [], bounds).child({});
      for (const v of values) h.observe(v);
      strided.observeStrided(Float64Array.from(values), 0, 1, values.length);
      const want = new Float64Array(bounds.length + 1);
      for (const v of values) {
        let i = 0;
        while (i < bounds.length && v > bounds[i]) i++;
        want[i]++;
      }
      expect(Array.from(h.counts)).to.deep.equal(Array.from(want));
      expect(Array.from(strided.counts)).to.deep.equal(Array.from(want));
    });
  });

  describe('logs', () => {
    it('pino JSON lines: level, ts, event and fields; below --log-level dropped; ids as strings; errors with message', () => {
      const out: string[] = [];
      const log = jsonLogger('info', (l) => out.push(l));
      log.debug('hidden', { a: 1 });
      log.info('listening', { address: 'localhost:1', id: 2n ** 63n - 1n });
      log.error('dispose_failed', { error: new Error('boom') });
      const lines = out.map((l) => JSON.parse(l));
      expect(lines.map((l) => [l.level, l.event])).to.deep.equal([
        ['info', 'listening'],
        ['error', 'dispose_failed'],
      ]);
      expect(lines[0]).to.include({ address: 'localhost:1', id: '9223372036854775807' });
      expect(Date.parse(lines[0].ts)).to.be.closeTo(Date.now(), 60_000);
      expect(lines[1].error).to.include({ type: 'Error', message: 'boom' });
      expect(out.every((l) => l.endsWith('\n') && !l.slice(0, -1).includes('\n'))).to.equal(true);
    });

    it('--access-log-sample 1: one access line per engine call with id, rpc, status, candidates, winners, µs and traceparent', async () => {
      const out: string[] = [];
      const server = await AdrankServer.start({ port: 0, engine: () => Engine.load(bundlePath, { device: 'cpu', threads: 1 }), log: jsonLogger('debug', (l) => out.push(l)), accessLogSample: 1 });
      const client = connect(`localhost:${server.port}`);
      try {
        await server.ready;
        const c = smallConfig();
        const tp = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
        const ok = await unary(client, 'Rank', protoRequest(c, { requestId: 'traced', candidateAdIds: ids.slice(0, 300) }), { traceparent: tp });
        const bad = await unary(client, 'Rank', protoRequest(c, { requestId: 'bad', k: 0, candidateAdIds: ids.slice(0, 3) }), { traceparent: tp });
        await unary(client, 'Rank', protoRequest(c, { requestId: 'untraced', candidateAdIds: ids.slice(0, 3) }), { traceparent: 'not-a-traceparent' });
        expect([ok.code, bad.code]).to.deep.equal(['OK', 'INVALID_ARGUMENT']);
        const events = out.map((l) => JSON.parse(l));
        const access = events.filter((e) => e.event === 'access');
        expect(access.map((e) => [e.requestId, e.rpc, e.code])).to.deep.equal([
          ['traced', 'Rank', 'OK'],
          ['bad', 'Rank', 'INVALID_ARGUMENT'],
          ['untraced', 'Rank', 'OK'],
        ]);
        const a = access[0];
        expect(a).to.include({ candidates: 300, winners: ok.res!.winners.length, traceparent: tp });
        expect(a.totalUs).to.equal(Math.round(Number(ok.res!.timings!.totalUs)));
        expect(a.engineUs).to.equal(Math.round(Number(ok.res!.timings!.engineTotalUs)));
        expect(a.engineUs).to.be.above(0);
        expect(access[2].traceparent, 'a malformed traceparent is not logged').to.equal(undefined);
        // the refusal's own log line carries the trace too
        expect(events.find((e) => e.event === 'rpc_refused')).to.include({ requestId: 'bad', traceparent: tp, code: 'INVALID_ARGUMENT' });
      } finally {
        client.close();
        await server.shutdown();
      }
    });

    it('sampling: a call is logged when random() < sample; 0 logs nothing', () => {
      const lines: string[] = [];
      const log = jsonLogger('info', (l) => lines.push(l));
      const draws = [0.2, 0.7, 0.49, 0.5];
      const observe = engineCallObserver(undefined, { sample: 0.5, log }, () => draws.shift()!)!;
      const call = { request: { requestId: 'x' }, metadata: new grpc.Metadata(), getPeer: () => 'peer' } as unknown as Parameters<typeof observe>[2];
      const state: CallState = { deadline: Infinity, cancelled: () => false, done: { result: emptyResult(), timings: { totalUs: 5 }, config: smallConfig(), surface: 0 } };
      for (let i = 0; i < 4; i++) observe('Rank', grpc.status.OK, call, state);
      expect(lines.length).to.equal(2); // 0.2 and 0.49
      expect(engineCallObserver(undefined, { sample: 0, log })).to.equal(undefined); // nothing to record: no per-call work
      expect(() => engineCallObserver(undefined, { sample: 1.5, log })).to.throw('expected a fraction in 0..1 for access log sample, got 1.5');
    });

    it('the CLI refuses a bad --access-log-sample and an unusable --metrics-port with a clear message', async () => {
      const cli = join(repoRoot, 'src', 'cli', 'main.ts');
      const bad = spawnSync(process.execPath, ['--import', 'tsx', cli, 'serve', '--bundle', bundlePath, '--access-log-sample', '2'], { encoding: 'utf8', timeout: 60_000 });
      expect(bad.status).to.equal(1);
      expect(bad.stderr).to.include('expected a fraction in 0..1, got "2"');
      // a metrics port in use: the server does not start half-configured
      const holder = createServer().listen(0, 'localhost');
      await new Promise((r) => holder.once('listening', r));
      try {
        const port = (holder.address() as AddressInfo).port;
        const busy = spawnSync(process.execPath, ['--import', 'tsx', cli, 'serve', '--bundle', bundlePath, '--port', '0', '--metrics-port', String(port)], { encoding: 'utf8', timeout: 60_000 });
        expect(busy.status).to.equal(1);
        expect(busy.stderr).to.include(`cannot listen for metrics on localhost:${port}: EADDRINUSE`);
      } finally {
        holder.close();
      }
    });
  });
});
