/**
 * kill -9 while UpdateAdStates batches are in flight (several at once, some acknowledged, some
 * not yet): after a restart every acknowledged update is in effect, and nothing is half applied
 * (docs/operations.md "Live ad state": acknowledged = fsync'd).
 */
import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, type ServerProc } from '../src/bench/server-proc.js';
import { loadBundle } from '../src/model/bundle.js';
import { addonBuilt } from './support/index.js';
import { adminClient, getAdStates, updateAdStates } from './support/admin.js';
import { writeSmallBundle } from './50.server.helpers.js';

const DEVICE = process.env.ADRANK_TEST_DEVICE ?? 'cpu';

describe('82 kill -9 during UpdateAdStates batches', function () {
  this.timeout(180_000);
  let dir: string;
  let srv: ServerProc | undefined;
  before(function () {
    if (!addonBuilt()) this.skip();
    dir = mkdtempSync(join(tmpdir(), 'adrank-kill-'));
  });
  afterEach(() => {
    if (srv && srv.child.exitCode === null && srv.child.signalCode === null) srv.child.kill('SIGKILL');
    srv = undefined;
  });
  after(() => dir && rmSync(dir, { recursive: true, force: true }));

  it('every acknowledged batch is in effect after the restart; a batch is there whole or not at all', async () => {
    const bundle = join(dir, 'b.safetensors');
    await writeSmallBundle(bundle, 3000);
    const ids = Array.from((await loadBundle(bundle)).tensors['ads.id'] as BigInt64Array, String);
    const stateFile = join(dir, 'kill.adstate');
    const flags = ['--bundle', bundle, '--device', DEVICE, '--threads', '1', '--state-file', stateFile, '--admin-insecure'];
    srv = await startServer('kill', flags, []);
    const admin = adminClient(srv.address);
    // batch b sets pacing rate (b + 1) / 1000 on its own 20 ads; 6 batches in flight at any time
    const BATCH = 20;
    const acked = new Set<number>();
    let next = 0;
    let killed = false;
    const worker = async () => {
      while (!killed && (next + 1) * BATCH <= ids.length) {
        const b = next++;
        const updates = ids.slice(b * BATCH, (b + 1) * BATCH).map((adId) => ({ adId, pacingRate: (b + 1) / 1000 }));
        try {
          await updateAdStates(admin, updates);
          if (!killed) acked.add(b);
        } catch {
          return; // the server is gone
        }
      }
    };
    const workers = Array.from({ length: 6 }, worker);
    while (acked.size < 30) await new Promise((r) => setTimeout(r, 5));
    killed = true; // what is acknowledged from here on is not counted: the kill races with it
    srv.child.kill('SIGKILL');
    await Promise.all(workers);
    admin.close();
    const sent = next;
    expect(acked.size).to.be.at.least(30);

    srv = await startServer('kill-restart', flags, []);
    const admin2 = adminClient(srv.address);
    try {
      const states = (await getAdStates(admin2, ids.slice(0, sent * BATCH))).states;
      for (let b = 0; b < sent; b++) {
        const rates = states.slice(b * BATCH, (b + 1) * BATCH).map((s) => s.pacingRate);
        const whole = rates.every((r) => Math.abs(r - (b + 1) / 1000) < 1e-6);
        const none = rates.every((r) => r === 1);
        if (acked.has(b)) expect(whole, `acknowledged batch ${b}: ${rates.join(',')}`).to.equal(true);
        else expect(whole || none, `unacknowledged batch ${b} half applied: ${rates.join(',')}`).to.equal(true);
      }
    } finally {
      admin2.close();
      await srv.stop();
    }
  });
});
