/**
 * The router's cost (docs/deploy.md "What the router costs"): the same requests sent, in the
 * same run and interleaved, to one `adrank serve` on the whole bundle and to `adrank route` over
 * 3 `adrank serve` shard processes on the same machine. Reports median and p90 latency at
 * concurrency 1 and the throughput at concurrency 8, per RPC, and the router's own CPU time per
 * request (the router runs in this process; the client's CPU is measured on the direct path and
 * subtracted).
 *
 *   npm run bench:router       (ADS=20000 REQUESTS=200; results: bench/RESULTS.md)
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, platform, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { call, connect } from '../src/cli/client.js';
import { loadBundle } from '../src/model/bundle.js';
import { writeDemoBundle } from '../src/model/demo.js';
import { Rng } from '../src/model/random.js';
import { writeShards } from '../src/model/shard.js';
import { RouterServer } from '../src/router/router.js';
import { silentLogger } from '../src/log.js';
import type { AdRankerClient } from '../src/generated/adrank/v1/AdRanker.js';
import { randomRequest, ServeProcess, type Rpc } from '../test/70.router.helpers.js';
import { smallConfig } from '../test/50.server.helpers.js';

const ADS = Number(process.env.ADS ?? 20_000);
const REQUESTS = Number(process.env.REQUESTS ?? 200);
const S = 3;

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))];

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'adrank-bench-router-'));
  const procs: ServeProcess[] = [];
  let router: RouterServer | undefined;
  try {
    const path = join(dir, 'corpus.safetensors');
    const config = smallConfig();
    await writeDemoBundle({ ads: ADS, seed: 5, out: path, config });
    const b = await loadBundle(path);
    const shardPaths = (await writeShards(b, S, join(dir, 'shards'))).map((s) => s.path);
    const single = new ServeProcess(path, 0, ['--threads', '2']);
    const shards = shardPaths.map((p) => new ServeProcess(p));
    procs.push(single, ...shards);
    const shardPorts = await Promise.all(shards.map((s) => s.ready()));
    const singlePort = await single.ready();
    router = await RouterServer.start({ shards: shardPorts.map((p) => `localhost:${p}`), port: 0, log: silentLogger });
    await router.ready;
    const direct = connect(`localhost:${singlePort}`);
    const routed = connect(`localhost:${router.port}`);

    const ids = Array.from(b.tensors['ads.id'] as BigInt64Array, String);
    const advertisers = [...new Set(Array.from(b.tensors['ads.advertiser'] as BigInt64Array, String))];
    console.log(`# router vs one server: ${ADS} ads, ${S} shards, ${REQUESTS} requests per RPC`);
    console.log(`machine: ${cpus()[0]?.model} x${cpus().length}, ${platform()} ${release()}, node ${process.version}; load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
    console.log(`date: ${new Date().toISOString()}; command: npm run bench:router (ADS=${ADS} REQUESTS=${REQUESTS})`);
    console.log('');
    console.log('| RPC | path | p50 ms | p90 ms | calls/s at concurrency 8 | router CPU µs/call |');
    console.log('| --- | --- | ---: | ---: | ---: | ---: |');
    for (const rpc of ['Retrieve', 'Rank', 'RetrieveAndRank'] as Rpc[]) {
      const rng = new Rng(rpc.length);
      const reqs = Array.from({ length: REQUESTS }, (_, n) => {
        const r = randomRequest(rng, config, ids, advertisers, rpc, n);
        if (rpc === 'Rank') r.candidateAdIds = Array.from({ length: 500 }, () => rng.pick(ids));
        if (rpc === 'RetrieveAndRank') r.retrieveCount = Math.max(r.k!, 300);
        return r;
      });
      // warm both paths
      for (const r of reqs.slice(0, 10)) await Promise.all([call(direct, rpc, r), call(routed, rpc, r)]);
      const lat: Record<string, number[]> = { direct: [], routed: [] };
      const cpu: Record<string, number> = { direct: 0, routed: 0 };
      for (const r of reqs) {
        for (const [name, client] of [['direct', direct], ['routed', routed]] as [string, AdRankerClient][]) {
          const c0 = process.cpuUsage();
          const t0 = performance.now();
          await call(client, rpc, r);
          lat[name].push(performance.now() - t0);
          const c = process.cpuUsage(c0);
          cpu[name] += c.user + c.system;
        }
      }
      const throughput = async (client: AdRankerClient) => {
        let next = 0;
        const t0 = performance.now();
        await Promise.all(Array.from({ length: 8 }, async () => {
          while (next < reqs.length) await call(client, rpc, reqs[next++]);
        }));
        return reqs.length / ((performance.now() - t0) / 1000);
      };
      const qps = { direct: await throughput(direct), routed: await throughput(routed) };
      const routerCpu = (cpu.routed - cpu.direct) / REQUESTS;
      for (const name of ['direct', 'routed']) {
        console.log(
          `| ${rpc} | ${name === 'direct' ? '1 server' : `router + ${S} shards`} | ${pct(lat[name], 0.5).toFixed(2)} | ${pct(lat[name], 0.9).toFixed(2)} | ${qps[name as 'direct'].toFixed(0)} | ${name === 'routed' ? routerCpu.toFixed(0) : ''} |`,
        );
      }
    }
    direct.close();
    routed.close();
  } finally {
    await router?.shutdown('bench end');
    for (const p of procs) p.kill();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
