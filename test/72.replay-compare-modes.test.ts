/**
 * adrank replay and adrank compare-modes against real servers: a feature log replays with zero
 * divergence against the same model and shows divergence against another one (the CLI's exit
 * status gates on it); compare-modes reports GLOBAL vs LOCAL(P) and writes its plot.
 */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Engine } from '../src/engine/index.js';
import { AdrankServer } from '../src/server/server.js';
import { silentLogger } from '../src/log.js';
import { writeDemoBundle } from '../src/model/demo.js';
import { loadBundle, writeBundle } from '../src/model/bundle.js';
import { call, connect } from '../src/cli/client.js';
import { replay } from '../src/cli/replay.js';
import { compareModes, printCompareModes } from '../src/cli/compare-modes.js';
import { kendallTau, overlapAtK } from '../src/cli/compare.js';
import { readFeatureLog } from '../src/featurelog/reader.js';
import { addonBuilt } from './support/index.js';
import { protoRequest, smallConfig } from './50.server.helpers.js';

describe('72 replay and compare-modes', function () {
  this.timeout(120_000);
  let dir: string;
  let bundleA: string;
  let bundleB: string;
  const servers: AdrankServer[] = [];
  before(async function () {
    if (!addonBuilt()) this.skip();
    dir = mkdtempSync(join(tmpdir(), 'adrank-replay-'));
    bundleA = join(dir, 'a.safetensors');
    bundleB = join(dir, 'b.safetensors');
    await writeDemoBundle({ ads: 500, seed: 5, out: bundleA, config: smallConfig() });
    // the same ads, config and version, with the heads' biases moved: a retrained model
    const a = await loadBundle(bundleA);
    const tensors = new Map(Object.keys(a.tensors).map((n) => [n, { dtype: a.dtypes[n], shape: a.shapes[n], data: a.tensors[n] }]));
    const bias = (a.tensors['heads.bias'] as Float32Array).map((x, i) => x + 0.8 * Math.sin(7 * i + 1));
    tensors.set('heads.bias', { ...tensors.get('heads.bias')!, data: bias });
    await writeBundle(bundleB, a.config, tensors);
  });
  after(() => dir && rmSync(dir, { recursive: true, force: true }));
  afterEach(async () => {
    for (const s of servers.splice(0)) await s.shutdown('test');
  });
  const serve = async (bundle: string, featureLog?: { dir: string; sample: number }) => {
    const s = await AdrankServer.start({ host: 'localhost', port: 0, engine: await Engine.load(bundle, { device: 'cpu' }), warmup: false, log: silentLogger, featureLog });
    await s.ready;
    servers.push(s);
    return s;
  };

  it('metrics: overlap@K and Kendall tau', () => {
    expect(overlapAtK(['a', 'b', 'c'], ['c', 'b', 'a'])).to.equal(1);
    expect(overlapAtK(['a', 'b', 'c', 'd'], ['a', 'x', 'b', 'y'])).to.equal(0.5);
    expect(overlapAtK(['a', 'b'], ['b', 'a', 'z'], 1)).to.equal(0);
    expect(overlapAtK([], [])).to.equal(1);
    expect(kendallTau(['a', 'b', 'c'], ['a', 'b', 'c'])).to.equal(1);
    expect(kendallTau(['a', 'b', 'c'], ['c', 'b', 'a'])).to.equal(-1);
    expect(kendallTau(['a', 'b', 'c'], ['a', 'c', 'b', 'x'])).to.be.closeTo(1 / 3, 1e-12);
    expect(kendallTau(['a'], ['a'])).to.equal(undefined);
  });

  it('feature log → replay: zero divergence against the same model, divergence against another; the CLI exits 1 past --max-divergence', async () => {
    const logDir = join(dir, 'log');
    const a = await serve(bundleA, { dir: logDir, sample: 1 });
    const c = smallConfig();
    const ids = Array.from((await loadBundle(bundleA)).tensors['ads.id'] as BigInt64Array, String);
    const client = connect(`localhost:${a.port}`);
    const sent: string[] = [];
    for (let i = 0; i < 12; i++) {
      const base = protoRequest(c, { requestId: `pv-${i}`, surface: c.surfaces[i % c.surfaces.length], k: 5 + (i % 4), perAdvertiserCap: i % 3 });
      const local = i % 4 === 3 ? { ranking: { mode: 'LOCAL', partitions: 2 } } : {};
      if (i % 3 === 0) await call(client, 'Rank', { ...base, ...local, candidateAdIds: ids.slice(i * 30, i * 30 + 120), price: true });
      // half the RetrieveAndRank calls are blended, with R below K: the caller's ids must replay too
      else if (i % 3 === 1) await call(client, 'RetrieveAndRank', { ...base, ...local, ...(i % 2 ? { candidateAdIds: ids.slice(i * 20, i * 20 + 80), retrieveCount: 3 } : { retrieveCount: 60 }) });
      else await call(client, 'Retrieve', base);
      sent.push(`pv-${i}`);
    }
    client.close();
    await a.shutdown('test'); // flushes the log
    const logged = await readFeatureLog(logDir);
    expect(logged.records.map((r) => r.requestId)).to.deep.equal(sent);

    const same = await serve(bundleA);
    const s = await replay(logDir, { address: `localhost:${same.port}`, rate: 0, maxDivergence: 0, advertisers: 10 });
    expect([s.records, s.failed, s.divergence, s.overlapAtK.mean, s.overlapAtK.min, s.rankCorrelation, s.pass]).to.deep.equal([12, 0, 0, 1, 1, 1, true]);
    expect(s.byRpc).to.deep.equal({ Rank: 4, RetrieveAndRank: 4, Retrieve: 4 });
    expect(s.deltaP.map((x) => [x.task, x.max, x.mean])).to.deep.equal(c.tasks.map((t) => [t, 0, 0]));
    expect(s.commonWinners).to.be.greaterThan(40);
    expect(s.advertisers).to.deep.equal([]);

    const other = await serve(bundleB);
    const d = await replay(logDir, { address: `localhost:${other.port}`, rate: 0, maxDivergence: 0.01, advertisers: 10 });
    expect(d.failed).to.equal(0);
    expect(d.divergence).to.be.greaterThan(0.01);
    expect(d.pass).to.equal(false);
    expect(d.advertisers.reduce((n, x) => n + x.entered, 0)).to.be.greaterThan(0);
    expect(d.advertisers.reduce((n, x) => n + x.left, 0)).to.be.greaterThan(0);
    expect(d.deltaP.some((x) => x.max > 0)).to.equal(true);

    // a pin to a version that is not loaded: every request fails, divergence 1
    const pinned = await replay(logDir, { address: `localhost:${same.port}`, rate: 0, modelVersion: 'nope', advertisers: 10 });
    expect([pinned.failed, pinned.errors, pinned.divergence]).to.deep.equal([12, { NOT_FOUND: 12 }, 1]);

    // the CLI (asynchronously: this process serves the calls): exit status 0 against the same
    // model, 1 against the other
    const cli = (port: number) =>
      new Promise<{ status: number; stdout: string; stderr: string }>((resolve) =>
        execFile(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'replay', logDir, '--address', `localhost:${port}`, '--max-divergence', '0'], { encoding: 'utf8', timeout: 60_000 }, (e, stdout, stderr) =>
          resolve({ status: e ? ((e as { code?: number }).code ?? -1) : 0, stdout, stderr }),
        ),
      );
    const ok = await cli(same.port);
    expect(ok.status, ok.stderr).to.equal(0);
    expect(ok.stdout).to.match(/overlap@K \(mean\)\s+1\.0000/);
    expect(ok.stdout).to.match(/PASS/);
    const bad = await cli(other.port);
    expect(bad.status, bad.stderr).to.equal(1);
    expect(bad.stdout).to.match(/FAIL: divergence/);
  });

  it('compare-modes: GLOBAL vs LOCAL(P) on generated requests, with the plot', async () => {
    const s = await serve(bundleA);
    const plot = join(dir, 'modes.svg');
    const r = await compareModes({ address: `localhost:${s.port}`, generate: 8, partitions: [1, 3], k: 5, retrieveCount: 60, cap: 1, bundle: bundleA, plot });
    expect(r.modes.map((m) => m.mode)).to.deep.equal(['GLOBAL', 'LOCAL(1)', 'LOCAL(3)']);
    const [g, l1, l3] = r.modes;
    expect([g.requests, g.failed, g.winners]).to.deep.equal([8, 0, 40]);
    // LOCAL(1) is one partition: the same selection as GLOBAL
    expect(l1.overlapWithGlobal).to.equal(1);
    // (prices differ: LOCAL's runner-up is the (K+1)-th merged partition winner, and one
    // partition of K' = K has none, so the last winner pays the reserve; docs/funnel.md)
    expect([l1.hhi, l1.meanUtility, l1.totalExpectedValue]).to.deep.equal([g.hhi, g.meanUtility, g.totalExpectedValue]);
    expect(g.overlapWithGlobal).to.equal(1);
    expect(l3.overlapWithGlobal).to.be.within(0, 1);
    for (const m of r.modes) {
      expect(Object.values(m.bySize).reduce((x, y) => x + y, 0)).to.be.closeTo(1, 1e-9);
      expect(m.hhi).to.be.within(10_000 / m.advertisers - 1e-6, 10_000);
      expect(m.totalExpectedValue).to.be.closeTo(m.meanUtility * m.winners, 1e-6 * m.totalExpectedValue);
      expect(r.histogram.counts[m.mode].reduce((x, y) => x + y, 0)).to.equal(m.winners);
    }
    const printed: string[] = [];
    printCompareModes(r, (s) => printed.push(s));
    expect(printed.join('\n')).to.match(/^LOCAL\(3\)\s+8\s+0\s+40\s/m);
    expect(printed.join('\n')).to.match(/share of winner slots by advertiser size/);
    const svg = readFileSync(plot, 'utf8');
    expect(svg.startsWith('<svg')).to.equal(true);
    expect(svg.match(/class="panel"/g)?.length).to.equal(3);
    expect(svg).to.contain('data-mode="LOCAL(3)"');
    expect(svg.trim().endsWith('</svg>')).to.equal(true);
  });
});
