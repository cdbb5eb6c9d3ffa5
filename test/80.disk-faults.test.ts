/**
 * Disk faults without a restart (docs/operations.md "When a disk fills"), on small tmpfs mounts
 * that a filler file fills:
 * - the state file: a failed append is cut back to the last whole record and the log replays; a
 *   compaction that finds no space leaves the old file; the store refuses updates while the disk
 *   is full and accepts them again once it is freed (by the next batch or by the background
 *   retry); the CLI server does the same, answers every Rank throughout, and after kill -9 has
 *   every acknowledged update and none of the refused ones;
 * - the feature log: the complete files stay under --feature-log-max-total-bytes across
 *   rotations (the oldest go first), and writing stops at --feature-log-min-free-bytes and
 *   resumes when space returns.
 * Mounting needs root (CAP_SYS_ADMIN): where it is refused, the tests skip and say why.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, ftruncateSync, fstatSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statfsSync, statSync, unlinkSync, utimesSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import protobuf from 'protobufjs';
import { Engine } from '../src/engine/index.js';
import { readLog, StateLog } from '../src/state/log.js';
import { AdStateStore, StateUnavailableError } from '../src/state/store.js';
import { FeatureLog } from '../src/featurelog/writer.js';
import { readFeatureLog } from '../src/featurelog/reader.js';
import { loadProto } from '../src/wire/proto.js';
import { loadBundle } from '../src/model/bundle.js';
import { call, connect } from '../src/cli/client.js';
import type { RankResponse__Output } from '../src/generated/adrank/v1/RankResponse.js';
import { addonBuilt } from './support/index.js';
import { adId, randomBundle } from './support/tiny-model.js';
import { adminClient, getAdStates, updateAdStates } from './support/admin.js';
import { recordingLogger, until } from './support/server.js';
import { portOf, serveCli, type CliServer } from './support/cli-server.js';
import { freePort } from './support/prometheus.js';
import { expectStatus, protoRequest, smallConfig, writeSmallBundle } from './50.server.helpers.js';

const DEVICE = process.env.ADRANK_TEST_DEVICE ?? 'cpu';
const PAGE = 4096;

/** Mounts a tmpfs of `size` on a fresh directory; the reason when that is refused. */
function mountTmpfs(size: string): { dir: string } | { reason: string } {
  const dir = mkdtempSync(join(tmpdir(), 'adrank-57-mnt-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { stdio: 'pipe' });
    return { dir };
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    const err = e as { stderr?: Buffer; message: string };
    return { reason: `cannot mount a tmpfs (needs root or CAP_SYS_ADMIN): ${(err.stderr?.toString() || err.message).trim()}` };
  }
}

function unmount(dir: string): void {
  try {
    execFileSync('umount', [dir], { stdio: 'pipe' });
  } catch {
    execFileSync('umount', ['-l', dir], { stdio: 'pipe' }); // something still holds it open
  }
  rmSync(dir, { recursive: true, force: true });
}

/** Fills the file system of `dir` with one file until ENOSPC, then gives back `leave` bytes. */
function fill(dir: string, leave = 0): string {
  const path = join(dir, 'filler');
  const fd = openSync(path, 'w');
  const chunk = Buffer.alloc(64 * 1024, 0x5a);
  try {
    for (;;) writeSync(fd, chunk);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
  }
  if (leave > 0) ftruncateSync(fd, Math.max(0, fstatSync(fd).size - leave));
  closeSync(fd);
  return path;
}

const freeBytes = (dir: string) => {
  const s = statfsSync(dir);
  return s.bavail * s.bsize;
};

describe('80 disk faults', function () {
  this.timeout(180_000);
  let mnt: string | undefined;
  let skipReason: string | undefined;
  before(function () {
    if (!addonBuilt()) this.skip();
    const m = mountTmpfs('3m');
    if ('reason' in m) {
      skipReason = m.reason;
      console.log(`      skipped: ${skipReason}`);
    } else mnt = m.dir;
  });
  after(() => {
    if (mnt) unmount(mnt);
  });
  beforeEach(function () {
    if (skipReason) this.skip();
  });
  afterEach(() => {
    // every test starts with an empty file system
    if (mnt) for (const f of readdirSync(mnt)) rmSync(join(mnt, f), { recursive: true, force: true });
  });

  describe('state file', () => {
    /** logs a failed assertion would leave open (an open file keeps its space on the tmpfs) */
    const closeAfter: StateLog[] = [];
    afterEach(async () => {
      for (const log of closeAfter.splice(0)) await log.close().catch(() => {});
    });
    const records = [1, 2, 3].map((i) => ({ t: 'batch', u: [{ ad: String(i), active: false }] }));

    it('an append that finds the disk full is cut back to the last whole record; once freed, appends follow it and the log replays', async () => {
      const path = join(mnt!, 'torn.adstate');
      const { log } = await StateLog.open(path);
      closeAfter.push(log);
      for (const r of records) await log.append(r);
      const good = statSync(path).size;
      // room for two pages of a record of 64 KiB: a partial write, then ENOSPC
      const filler = fill(mnt!, 2 * PAGE);
      const big = { t: 'batch', u: [{ ad: '9', active: false, note: 'x'.repeat(64 * 1024) }] };
      let err: NodeJS.ErrnoException | undefined;
      await log.append(big).catch((e) => (err = e));
      expect(err?.code).to.equal('ENOSPC');
      expect(statSync(path).size, 'the partial record is cut off').to.equal(good);
      expect(log.bytes).to.equal(good);
      const read = readLog(path);
      expect(read.records).to.deep.equal(records);
      expect(read.tornTail).to.equal(undefined);
      unlinkSync(filler);
      const later = { t: 'batch', u: [{ ad: '4', bid: 2 }] };
      await log.append(later);
      await log.close();
      expect(readLog(path)).to.deep.equal({ records: [...records, later], validBytes: statSync(path).size });
    });

    it('a compaction that finds no space leaves the old file as it was, with no temporary file', async () => {
      const path = join(mnt!, 'compact.adstate');
      const { log } = await StateLog.open(path);
      closeAfter.push(log);
      for (const r of records) await log.append(r);
      const before = readFileSync(path);
      const filler = fill(mnt!);
      const snapshot = { t: 'snapshot', seq: 3, ads: [['1', { active: [false, 1] }]], advertisers: [], note: 'x'.repeat(2 * PAGE) };
      let err: NodeJS.ErrnoException | undefined;
      await log.compact([snapshot]).catch((e) => (err = e));
      expect(err?.code).to.equal('ENOSPC');
      expect(readFileSync(path).equals(before)).to.equal(true);
      expect(readdirSync(mnt!).sort()).to.deep.equal(['compact.adstate', 'filler']);
      unlinkSync(filler);
      await log.compact([snapshot]);
      await log.append(records[0]);
      await log.close();
      expect(readLog(path).records).to.deep.equal([snapshot, records[0]]);
    });
  });

  describe('store', () => {
    /** One batch of more than a page of JSON (a few bytes could still fit in the file's last
     *  page on a full disk): 150 changes cycling through the bundle's 40 ads, the last one
     *  setting `ad`'s pacing rate to `rate`. */
    const batch = (ad: number, rate: number) => [
      ...Array.from({ length: 149 }, (_, i) => ({ target: 'ad' as const, id: adId((ad + 1 + i) % 40), bid: 1 + i / 1000 })),
      { target: 'ad' as const, id: adId(ad), pacingRate: rate },
    ];

    it('refuses updates while the disk is full (state unchanged), and accepts them again once freed: by the next batch, or by the background retry', async () => {
      const path = join(mnt!, 'store.adstate');
      const log = recordingLogger();
      const engine = Engine.fromBundle(randomBundle(3), { device: 'cpu', threads: 1 });
      try {
        const store = await AdStateStore.open(path, { log, retryMinMs: 50, retryMaxMs: 200 });
        store.attach(engine);
        expect(await store.update(batch(1, 0.5))).to.include({ applied: 150, unknown: 0 });
        expect(store.writable).to.equal(true);

        let filler = fill(mnt!);
        for (const rate of [0.25, 0.125]) {
          let err: Error | undefined;
          await store.update(batch(1, rate)).catch((e) => (err = e));
          expect(err).to.be.instanceOf(StateUnavailableError);
          expect(err!.message).to.match(/^cannot write the state file: ENOSPC.*read-only until a write succeeds/);
          expect(store.writable).to.equal(false);
          expect(store.effective(engine, adId(1))?.pacingRate, 'the in-memory state stays at the last acknowledged batch').to.equal(0.5);
        }
        expect(store.writeFailures.get('enospc')).to.be.at.least(2);
        expect(log.events.filter((e) => e.event === 'state_file_read_only')).to.have.length(1);
        // a little room (less than a batch) is not enough for the background retry either
        await new Promise((r) => setTimeout(r, 300));
        expect(store.writable).to.equal(false);

        // freed: the next batch goes through
        unlinkSync(filler);
        expect(await store.update(batch(2, 0.75))).to.include({ applied: 150, unknown: 0 });
        expect(store.writable).to.equal(true);
        expect(store.effective(engine, adId(2))?.pacingRate).to.equal(0.75);

        // full again, then freed with no batch coming: the background retry makes it writable
        filler = fill(mnt!);
        await store.update(batch(3, 0.9)).catch(() => {});
        expect(store.writable).to.equal(false);
        unlinkSync(filler);
        await until('the background retry to recover', () => store.writable, 10_000);
        const recovered = log.events.filter((e) => e.event === 'state_file_recovered');
        expect(recovered.map((e) => e.by)).to.deep.equal(['batch', 'retry']);
        expect(await store.update(batch(4, 0.6))).to.include({ applied: 150, unknown: 0 });
        await store.close();

        // every acknowledged batch replays; the refused ones and the retries' records leave no trace
        const again = await AdStateStore.open(path, { log });
        expect([1, 2, 3, 4].map((i) => again.effective(engine, adId(i))?.pacingRate)).to.deep.equal([0.5, 0.75, 1, 0.6]);
        await again.close();
      } finally {
        engine.dispose();
      }
    });

    it('a compaction that finds no space is reported and retried later; updates go on meanwhile', async () => {
      const path = join(mnt!, 'compact-store.adstate');
      const log = recordingLogger();
      const engine = Engine.fromBundle(randomBundle(3), { device: 'cpu', threads: 1 });
      try {
        // compacts once the file passes both compactBytes (1 byte) and twice the last snapshot
        const store = await AdStateStore.open(path, { log, compactBytes: 1, retryMinMs: 100, retryMaxMs: 100 });
        store.attach(engine);
        await store.update([{ target: 'ad', id: adId(1), pacingRate: 0.5 }]);
        expect(log.events.filter((e) => e.event === 'state_file_compacted')).to.have.length(1);
        // the one-ad snapshot leaves room in the file's last page for small batches, so on a full
        // disk they are written, and the compaction they bring on (a new file) is not
        expect(PAGE - (statSync(path).size % PAGE)).to.be.greaterThan(1000);
        const filler = fill(mnt!);
        for (let i = 0; i < 8 && !log.events.some((e) => e.event === 'state_file_compaction_failed'); i++)
          expect(await store.update([{ target: 'ad', id: adId(2), pacingRate: 0.25 }])).to.include({ applied: 1, unknown: 0 });
        const failed = log.events.filter((e) => e.event === 'state_file_compaction_failed');
        expect(failed).to.have.length(1);
        expect(failed[0]).to.deep.include({ level: 'warn', reason: 'enospc' });
        expect(store.writable, 'a failed compaction does not stop updates').to.equal(true);
        expect(readdirSync(mnt!).filter((f) => f.includes('.tmp-'))).to.deep.equal([]);
        unlinkSync(filler);
        await new Promise((r) => setTimeout(r, 150));
        await store.update(batch(3, 0.125));
        expect(log.events.filter((e) => e.event === 'state_file_compacted')).to.have.length(2);
        await store.close();
        const read = readLog(path);
        expect(read.records.map((r) => (r as { t: string }).t)).to.deep.equal(['snapshot']);
        const again = await AdStateStore.open(path, { log });
        expect([1, 2, 3].map((i) => again.effective(engine, adId(i))?.pacingRate)).to.deep.equal([0.5, 0.25, 0.125]);
        await again.close();
      } finally {
        engine.dispose();
      }
    });
  });

  describe('feature log', () => {
    const { root } = loadProto();
    const rankReq = root.lookupType('adrank.v1.RankRequest');
    const rankRes = root.lookupType('adrank.v1.RankResponse');
    const c = smallConfig();
    /** A request with `ids` random candidate ids: a few KiB of gzip each, so that a flush of a
     *  handful takes many pages. */
    const reqBytes = (id: string, ids: number) =>
      rankReq.encode(rankReq.fromObject(protoRequest(c, { requestId: id, candidateAdIds: Array.from({ length: ids }, () => String(Math.floor(Math.random() * 2 ** 52))) })) as protobuf.Message).finish();
    const resBytes = rankRes.encode(rankRes.fromObject({ requestId: 'x', winners: [{ adId: '1', advertiserId: '9', score: 2, taskProbabilities: [0.5], price: 1 }], model: { name: 'm', version: '7' } }) as protobuf.Message).finish();
    const complete = (dir: string) => readdirSync(dir).filter((f) => f.endsWith('.jsonl.gz'));
    const total = (dir: string, files: string[]) => files.reduce((s, f) => s + statSync(join(dir, f)).size, 0);

    it('keeps the complete files under maxTotalBytes across rotations, deleting the oldest (an earlier run\'s first)', async () => {
      const dir = join(mnt!, 'fl-budget');
      mkdirSync(dir);
      // an earlier run's complete file and one it left open, older than anything written now
      const old = ['features-20200101T000000Z-1-0000.jsonl.gz', 'features-20200101T000000Z-1-0001.jsonl.gz.open'];
      for (const f of old) {
        writeFileSync(join(dir, f), Buffer.alloc(3000, 1));
        utimesSync(join(dir, f), new Date('2020-01-01'), new Date('2020-01-01'));
      }
      // and one another server sharing the directory is writing now: counted, never deleted
      const live = 'features-20200101T000000Z-2-0000.jsonl.gz.open';
      writeFileSync(join(dir, live), Buffer.alloc(3000, 1));
      const log = recordingLogger();
      const budget = 40_000;
      const fl = new FeatureLog({ dir, sample: 1, maxBytes: 1, maxTotalBytes: budget, minFreeBytes: 0, log });
      try {
        for (let i = 0; i < 14; i++) {
          // maxBytes 1: every flush rotates; between rotations no file is open
          for (let j = 0; j < 3; j++) fl.record('Rank', `b${i}-${j}`, reqBytes(`b${i}-${j}`, 400), resBytes);
          await until(`rotation ${i + 1}`, () => fl.rotatedFiles.length >= i + 1 && fl.written === 3 * (i + 1));
          expect(total(dir, readdirSync(dir)), `after rotation ${i + 1}`).to.be.at.most(budget);
        }
        expect(fl.filesDeleted).to.be.greaterThan(2);
        const all = readdirSync(dir);
        expect(all).to.include(live);
        const left = all.filter((f) => f !== live).sort();
        expect(left.some((f) => old.includes(f)), "an earlier run's files go first").to.equal(false);
        // what is left is the newest rotations, in order, and nothing else
        const newest = fl.rotatedFiles.slice(-left.length).map((f) => f.slice(dir.length + 1));
        expect(left).to.deep.equal([...newest].sort());
        expect(fl.rotatedFiles.length - left.length + old.length).to.equal(fl.filesDeleted);
        expect(fl.diskBytes).to.equal(total(dir, all));
        expect(log.events.some((e) => e.event === 'feature_log_deleted')).to.equal(true);
        expect(fl.dropped).to.equal(0);
      } finally {
        await fl.close();
      }
      rmSync(join(dir, live)); // not gzip: the reader would skip it, but count it
      const { records } = await readFeatureLog(dir);
      expect(records.map((r) => r.requestId).slice(-3)).to.deep.equal(['b13-0', 'b13-1', 'b13-2']);
      expect(records.length).to.equal(3 * complete(dir).length);
    });

    it('stops writing before the free-space floor (records dropped and counted), and resumes when space returns', async () => {
      const dir = join(mnt!, 'fl-floor');
      mkdirSync(dir);
      const floor = 1024 * 1024;
      const filler = fill(mnt!, floor + 96 * 1024);
      const log = recordingLogger();
      const fl = new FeatureLog({ dir, sample: 1, minFreeBytes: floor, log });
      let sent = 0;
      const step = async () => {
        for (let j = 0; j < 4; j++) fl.record('Rank', `f${sent}`, reqBytes(`f${sent++}`, 600), resBytes);
        await until('the writer to take the records', () => fl.written + fl.dropped === sent);
        expect(freeBytes(mnt!), 'never below the floor').to.be.at.least(floor);
      };
      try {
        for (let i = 0; i < 60 && (fl.droppedBy.get('low_disk') ?? 0) === 0; i++) await step();
        const writtenAtFloor = fl.written;
        expect(writtenAtFloor, 'it wrote up to the floor').to.be.greaterThan(0);
        expect(fl.droppedBy.get('low_disk')).to.be.greaterThan(0);
        await step();
        expect(fl.written, 'nothing written below the floor').to.equal(writtenAtFloor);
        expect(log.events.filter((e) => e.event === 'feature_log_paused')).to.have.length(1);
        expect(log.events.find((e) => e.event === 'feature_log_paused')).to.deep.include({ level: 'warn', reason: 'low_disk' });

        unlinkSync(filler);
        await step();
        expect(fl.written, 'writing resumed').to.equal(writtenAtFloor + 4);
        expect(log.events.some((e) => e.event === 'feature_log_resumed')).to.equal(true);
        expect(fl.dropped).to.equal(fl.droppedBy.get('low_disk'));
      } finally {
        await fl.close();
      }
      const { records } = await readFeatureLog(dir);
      expect(records.length).to.equal(fl.written);
    });
  });

  describe('CLI server with its state file on a full disk', () => {
    let bundlePath: string;
    let work: string;
    const servers: CliServer[] = [];
    before(async function () {
      if (skipReason) return;
      work = mkdtempSync(join(tmpdir(), 'adrank-57-'));
      bundlePath = join(work, 'small.safetensors');
      await writeSmallBundle(bundlePath, 2000);
    });
    after(() => {
      for (const s of servers) if (s.proc.exitCode === null && s.proc.signalCode === null) s.proc.kill('SIGKILL');
      if (work) rmSync(work, { recursive: true, force: true });
    });
    const serve = async (stateFile: string, ...more: string[]) => {
      const s = serveCli(['--bundle', bundlePath, '--port', '0', '--device', DEVICE, '--threads', '1', '--state-file', stateFile, '--admin-insecure', '--metrics-port', String(await freePort()), ...more]);
      servers.push(s);
      return s;
    };
    const metric = async (port: number, line: RegExp) => {
      const text = await (await fetch(`http://localhost:${port}/metrics`)).text();
      const m = text.split('\n').map((l) => line.exec(l)).find((x) => x);
      return m ? Number(m[1]) : undefined;
    };

    it('refuses updates with UNAVAILABLE while full, accepts them again once freed (no restart), answers every Rank; after kill -9 every acknowledged update is in effect', async () => {
      const stateFile = join(mnt!, 'cli.adstate');
      const ids = Array.from((await loadBundle(bundlePath)).tensors['ads.id'] as BigInt64Array, String);
      // one batch: 150 ads (several KiB, more than a page), all set inactive with bid 1 + i
      const batch = (i: number) => ids.slice(150 * i, 150 * (i + 1)).map((adId) => ({ adId, active: false, bid: 1 + i }));
      const s1 = await serve(stateFile, '--feature-log', join(work, 'fl'), '--feature-log-max-bytes', '65536', '--feature-log-max-total-bytes', '262144', '--feature-log-min-free-bytes', '0');
      const listening = await s1.event('listening');
      await s1.event('serving');
      const port = portOf(listening);
      const metricsPort = Number(listening.metricsPort);
      const admin = adminClient(`localhost:${port}`);
      const client = connect(`localhost:${port}`);
      const c = smallConfig();
      // Rank calls back to back for the whole test
      const ranks = { ok: 0, failed: [] as string[], stop: false };
      const rankLoop = (async () => {
        for (let i = 0; !ranks.stop; i++) {
          try {
            await call<object, RankResponse__Output>(client, 'Rank', protoRequest(c, { requestId: `r${i}`, candidateAdIds: ids.slice(i % 1500, (i % 1500) + 50), targeting: c.targeting_dims.map(() => 0) }));
            ranks.ok++;
          } catch (e) {
            ranks.failed.push((e as Error).message);
          }
        }
      })();
      const acknowledged: number[] = [];
      const refused: number[] = [];
      try {
        for (let i = 0; i < 4; i++) {
          expect(await updateAdStates(admin, batch(i))).to.deep.equal({ applied: 150, unknown: 0 });
          acknowledged.push(i);
        }
        expect(await metric(metricsPort, /^adrank_ad_state_writable (\S+)$/)).to.equal(1);

        const filler = fill(mnt!);
        for (let i = 4; i < 7; i++) {
          await expectStatus(updateAdStates(admin, batch(i)), grpc.status.UNAVAILABLE, /cannot write the state file: ENOSPC/);
          refused.push(i);
        }
        expect(await metric(metricsPort, /^adrank_ad_state_writable (\S+)$/)).to.equal(0);
        expect(await metric(metricsPort, /^adrank_ad_state_write_failures_total\{reason="enospc"\} (\S+)$/)).to.be.at.least(3);
        expect((await s1.event('state_file_read_only')).level).to.equal('error');
        const during = (await getAdStates(admin, [ids[150 * 4], ids[150 * 3]])).states;
        expect([during[0].active, during[1].active], 'a refused batch is not in effect').to.deep.equal([true, false]);

        unlinkSync(filler);
        // the first batch after freeing goes through
        for (let i = 7; i < 10; i++) {
          expect(await updateAdStates(admin, batch(i))).to.deep.equal({ applied: 150, unknown: 0 });
          acknowledged.push(i);
        }
        expect(await metric(metricsPort, /^adrank_ad_state_writable (\S+)$/)).to.equal(1);
        expect(await s1.event('state_file_recovered')).to.deep.include({ level: 'info', by: 'batch' });

        ranks.stop = true;
        await rankLoop;
        expect(ranks.failed, 'every Rank answered').to.deep.equal([]);
        expect(ranks.ok).to.be.greaterThan(10);
        // the feature log's series (its files are on another disk, which did not fill)
        await until('a feature log write', async () => ((await metric(metricsPort, /^adrank_feature_log_bytes (\S+)$/)) ?? 0) > 0);
        expect(await metric(metricsPort, /^adrank_feature_log_dropped_total\{reason="low_disk"\} (\S+)$/)).to.equal(0);
        expect(await metric(metricsPort, /^adrank_feature_log_files_deleted_total (\S+)$/)).to.be.at.least(0);
      } finally {
        ranks.stop = true;
        await rankLoop;
        admin.close();
        client.close();
      }
      s1.proc.kill('SIGKILL');
      expect(await s1.exited).to.equal(null);

      const s2 = await serve(stateFile);
      const port2 = portOf(await s2.event('listening'));
      await s2.event('serving');
      // the refused batches' partial records were cut when they failed: nothing torn to drop
      expect(s2.events.filter((e) => e.event === 'state_file_torn_tail')).to.deep.equal([]);
      expect(s2.events.find((e) => e.event === 'state_file_replayed')?.ads).to.equal(150 * acknowledged.length);
      const admin2 = adminClient(`localhost:${port2}`);
      try {
        const probe = [...acknowledged, ...refused].map((i) => ids[150 * i + 7]);
        const got = (await getAdStates(admin2, probe)).states;
        const want = [...acknowledged.map((i) => ({ active: false, bid: 1 + i })), ...refused.map(() => ({ active: true, bid: undefined }))];
        expect(got.map((s) => ({ active: s.active, bid: s.bidOverride ?? undefined }))).to.deep.equal(want);
      } finally {
        admin2.close();
      }
      s2.proc.kill('SIGTERM');
      expect(await s2.exited).to.equal(0);
    });
  });
});
