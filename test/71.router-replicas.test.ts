/**
 * Replicas behind one shard target keep serving while each one in turn restarts (SIGTERM,
 * drain, a new process on the same port that loads and warms up): zero failed calls, zero
 * partial answers. Two forms of target, both replicas the router health-checks (it watches each
 * replica's grpc.health.v1 and balances round robin over the SERVING ones): a static list
 * `host:port,...` and an `ipv4:` address list (not grpc-js's round_robin, which has no health
 * checking and so sends calls to a restarted replica while it loads: src/router/shard-client.ts).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { call, connect } from '../src/cli/client.js';
import { loadBundle } from '../src/model/bundle.js';
import { Rng } from '../src/model/random.js';
import { writeShards } from '../src/model/shard.js';
import { RouterServer } from '../src/router/router.js';
import { replicaTargets } from '../src/router/shard-client.js';
import { silentLogger } from '../src/log.js';
import { addonBuilt } from './support/index.js';
import { smallConfig, writeSmallBundle } from './50.server.helpers.js';
import { randomRequest, ServeProcess } from './70.router.helpers.js';

describe('71 router: the replicas of a --shard target', () => {
  it('a static list and an ipv4:/ipv6: address list are replicas; one name is one channel', () => {
    expect(replicaTargets('a:1, b:2')).to.deep.equal(['a:1', 'b:2']);
    expect(replicaTargets('ipv4:127.0.0.1:1,127.0.0.1:2')).to.deep.equal(['ipv4:127.0.0.1:1', 'ipv4:127.0.0.1:2']);
    expect(replicaTargets('ipv6:[::1]:1,[::1]:2')).to.deep.equal(['ipv6:[::1]:1', 'ipv6:[::1]:2']);
    expect(replicaTargets('ipv4:///10.0.0.1:1,10.0.0.2')).to.deep.equal(['ipv4:///10.0.0.1:1', 'ipv4:///10.0.0.2']);
    expect(replicaTargets('ipv4:127.0.0.1:1')).to.deep.equal(['ipv4:127.0.0.1:1']);
    expect(replicaTargets('dns:///adrank-shard-0.adrank:50051')).to.deep.equal(['dns:///adrank-shard-0.adrank:50051']);
    expect(replicaTargets('ipv4:127.0.0.1:1,')).to.include('');
  });
});

describe('71 router: replicas restart with zero failed calls', function () {
  this.timeout(240_000);
  if (!addonBuilt()) return;

  let dir: string;
  let shard: string;
  let ids: string[];
  const procs: ServeProcess[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'adrank-replicas-'));
    const path = join(dir, 'corpus.safetensors');
    await writeSmallBundle(path, 1000);
    const b = await loadBundle(path);
    ids = Array.from(b.tensors['ads.id'] as BigInt64Array, String);
    shard = (await writeShards(b, 1, join(dir, 'shards')))[0].path;
  });

  afterEach(() => {
    for (const p of procs.splice(0)) p.kill();
  });

  after(() => rmSync(dir, { recursive: true, force: true }));

  const forms: [string, (ports: number[]) => string][] = [
    ['static list host:port,host:port (router health checking)', (ports) => ports.map((p) => `localhost:${p}`).join(',')],
    ['ipv4: address list ipv4:a:p,b:p (router health checking)', (ports) => `ipv4:${ports.map((p) => `127.0.0.1:${p}`).join(',')}`],
  ];

  for (const [name, target] of forms) {
    it(name, async () => {
      const replicas = [new ServeProcess(shard, 0, ['--shutdown-grace-ms', '3000']), new ServeProcess(shard, 0, ['--shutdown-grace-ms', '3000'])];
      procs.push(...replicas);
      const ports = await Promise.all(replicas.map((r) => r.ready()));
      const router = await RouterServer.start({ shards: [target(ports)], port: 0, log: silentLogger, refreshMs: 500 });
      const client = connect(`localhost:${router.port}`);
      try {
        await router.ready;
        const rng = new Rng(11);
        const c = smallConfig();
        let ok = 0;
        let partial = 0;
        const failures: string[] = [];
        let stop = false;
        // 3 callers in parallel, bounded by count and time
        const until = Date.now() + 120_000;
        const caller = async () => {
          for (let n = 0; !stop && n < 5000 && Date.now() < until; n++) {
            const req = randomRequest(rng, c, ids, ['1'], 'Rank', n);
            try {
              const a = await call<object, { partial: boolean }>(client, 'Rank', req, 5000);
              if (a.partial) partial++;
              else ok++;
            } catch (e) {
              failures.push((e as Error).message);
            }
          }
        };
        const callers = [caller(), caller(), caller()];
        // restart each replica in turn: SIGTERM (graceful drain), then a new process on its port
        for (let i = 0; i < replicas.length; i++) {
          await new Promise((r) => setTimeout(r, 700));
          const before = ok;
          replicas[i].kill('SIGTERM');
          expect(await replicas[i].exited).to.equal(0);
          const fresh = new ServeProcess(shard, ports[i], ['--shutdown-grace-ms', '3000']);
          procs.push(fresh);
          await fresh.ready();
          await new Promise((r) => setTimeout(r, 700));
          expect(ok, 'calls answered while the replica restarted').to.be.greaterThan(before);
        }
        stop = true;
        await Promise.all(callers);
        expect(failures, 'failed calls').to.deep.equal([]);
        expect(partial, 'partial answers').to.equal(0);
        expect(ok).to.be.greaterThan(20);
      } finally {
        client.close();
        await router.shutdown('test end');
      }
    });
  }
});
