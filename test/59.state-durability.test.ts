/**
 * Durable live ad state (src/state): the state file's framing (torn tails dropped and reported,
 * corruption refused), compaction (ads no loaded version has are dropped and reported), and the
 * CLI server killed with SIGKILL right after acknowledged batches: after a restart the state is
 * in effect before health says SERVING. A corrupt state file refuses to start.
 */
import type { ChildProcess } from 'node:child_process';
import { appendFileSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { Engine } from '../src/engine/index.js';
import { frame, MAGIC, readLog, StateFileError, StateLog } from '../src/state/log.js';
import { AdStateStore, type AdStateChange } from '../src/state/store.js';
import { Rng } from '../src/model/random.js';
import { randomRequest } from '../src/features/random-request.js';
import type { EngineRequest } from '../src/engine/index.js';
import { call, connect } from '../src/cli/client.js';
import { loadBundle } from '../src/model/bundle.js';
import type { RankResponse__Output } from '../src/generated/adrank/v1/RankResponse.js';
import { addonBuilt } from './support/index.js';
import { randomBundle, adId } from './support/tiny-model.js';
import { adminClient, getAdStates, updateAdStates } from './support/admin.js';
import { protoRequest, smallConfig, writeSmallBundle } from './50.server.helpers.js';
import { recordingLogger } from './support/server.js';
import { portOf, serveCli } from './support/cli-server.js';

const DEVICE = process.env.ADRANK_TEST_DEVICE ?? 'cpu';

describe('59 durable live ad state', function () {
  this.timeout(180_000);
  let dir: string;
  before(function () {
    if (!addonBuilt()) this.skip();
    dir = mkdtempSync(join(tmpdir(), 'adrank-55-'));
  });
  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
  let n = 0;
  const fresh = () => join(dir, `s${n++}.adstate`);

  describe('state file', () => {
    const records = [{ t: 'batch', u: [{ ad: '1', active: false }] }, { t: 'batch', u: [{ advertiser: '2', bid: 1.5 }] }, { t: 'batch', u: [{ ad: '3', pacingRate: 0.25 }] }];
    const write = (path: string, ...parts: Buffer[]) => writeFileSync(path, Buffer.concat([MAGIC, ...parts]));

    it('reads back what was appended, across a reopen', async () => {
      const path = fresh();
      const { log } = await StateLog.open(path);
      for (const r of records) await log.append(r);
      await log.close();
      const read = readLog(path);
      expect(read.records).to.deep.equal(records);
      expect(read.tornTail).to.equal(undefined);
      expect(read.validBytes).to.equal(statSync(path).size);
    });

    it('a torn last record (header, payload or crc cut short) is reported and dropped, never half read', () => {
      const whole = records.map(frame);
      const cases: [string, Buffer][] = [
        ['header cut short', whole[2].subarray(0, 5)],
        ['payload of', whole[2].subarray(0, whole[2].length - 3)],
        ['crc32 mismatch', Buffer.concat([whole[2].subarray(0, whole[2].length - 1), Buffer.from([0])])],
      ];
      for (const [why, tail] of cases) {
        const path = fresh();
        write(path, whole[0], whole[1], tail);
        const read = readLog(path);
        expect(read.records, why).to.deep.equal(records.slice(0, 2));
        expect(read.tornTail?.why, why).to.include(why);
        expect(read.tornTail?.offset).to.equal(MAGIC.length + whole[0].length + whole[1].length);
        expect(read.validBytes).to.equal(read.tornTail!.offset);
      }
    });

    it('opening cuts the torn tail off, so later appends follow the last whole record', async () => {
      const path = fresh();
      const whole = records.map(frame);
      write(path, whole[0], whole[1].subarray(0, 7));
      const { log, read } = await StateLog.open(path);
      expect(read.tornTail).to.not.equal(undefined);
      await log.append(records[2]);
      await log.close();
      expect(readLog(path).records).to.deep.equal([records[0], records[2]]);
    });

    it('a damaged record with data after it is corruption: refused with the record and the offset', () => {
      const whole = records.map(frame);
      const bad = Buffer.from(whole[1]);
      bad[bad.length - 2] ^= 0xff;
      const path = fresh();
      write(path, whole[0], bad, whole[2]);
      expect(() => readLog(path)).to.throw(StateFileError, new RegExp(`is corrupt: record 2 at byte ${MAGIC.length + whole[0].length}: crc32 mismatch, and ${whole[2].length} bytes follow it`));
      const notOurs = fresh();
      writeFileSync(notOurs, 'hello world, not a state file');
      expect(() => readLog(notOurs)).to.throw(StateFileError, /not an adrank state file/);
    });
  });

  describe('store', () => {
    const open = (b = randomBundle(3)) => Engine.fromBundle(b, { device: 'cpu', threads: 1 });

    it('replays to the same effective state; compaction keeps it and drops ads no loaded version has', async () => {
      const path = fresh();
      const log = recordingLogger();
      const a = open();
      const other = randomBundle(4);
      (other.tensors['ads.id'] as BigInt64Array).forEach((_, i, ids) => (ids[i] = 50_000n + BigInt(i)));
      other.adIndex = undefined;
      const b = open(other);
      try {
        const s1 = await AdStateStore.open(path, { log });
        s1.attach(a);
        s1.attach(b);
        const r = await s1.update([{ target: 'ad', id: adId(1), active: false }, { target: 'advertiser', id: 3n, bid: 0.5, pacingRate: 0.5 }, { target: 'ad', id: 50_001n, inBudget: false }, { target: 'ad', id: 7n, active: false }]);
        expect(r).to.include({ applied: 3, unknown: 1 });
        // timed apart: the append with its fsync, and the apply to the live state and the engine
        expect(r.writeMs).to.be.greaterThan(0);
        expect(r.applyMs).to.be.greaterThan(0);
        // the advertiser's later bid beats nothing; an ad-level pacing later beats the advertiser's
        await s1.update([{ target: 'ad', id: adId(3), pacingRate: 0.75 }]);
        const want = [adId(1), adId(3), adId(10), 50_001n].map((id) => s1.effective(id < 50_000n ? a : b, id));
        expect(want[0]).to.deep.equal({ active: false, inBudget: true, pacingRate: 1, bidOverride: undefined });
        expect(want[1]).to.deep.equal({ active: true, inBudget: true, pacingRate: 0.75, bidOverride: 0.5 }); // ad 3 is advertiser 3's
        expect(want[2]).to.deep.equal({ active: true, inBudget: true, pacingRate: 0.5, bidOverride: 0.5 }); // ad 10 too (10 % 7 = 3)
        await s1.close();

        const s2 = await AdStateStore.open(path, { log });
        expect([adId(1), adId(3), adId(10)].map((id) => s2.effective(a, id))).to.deep.equal(want.slice(0, 3));
        expect(s2.effective(b, 50_001n)).to.deep.equal(want[3]);
        // compaction with only `a` loaded: the ad of `b` is dropped and reported
        s2.attach(a);
        const before = statSync(path).size;
        await s2.compact('test');
        expect(log.events.find((e) => e.event === 'ad_states_dropped')).to.deep.include({ ads: 1, advertisers: 0, sampleAdIds: ['50001'] });
        expect(readLog(path).records).to.have.length(1);
        expect(statSync(path).size).to.be.lessThan(before);
        await s2.close();

        const s3 = await AdStateStore.open(path, { log });
        expect([adId(1), adId(3), adId(10)].map((id) => s3.effective(a, id))).to.deep.equal(want.slice(0, 3));
        expect(s3.size).to.deep.equal({ ads: 2, advertisers: 1 });
        await s3.close();
      } finally {
        a.dispose();
        b.dispose();
      }
    });
    it('incremental batches leave an engine as a fresh attach does: random ad- and advertiser-level batches, ids repeated within a batch', async () => {
      const bundle = randomBundle(5);
      const ids = bundle.tensors['ads.id'] as BigInt64Array;
      const rng = new Rng(59);
      const live = open(bundle);
      let later: Engine | undefined;
      const store = await AdStateStore.open(fresh(), {});
      try {
        store.attach(live);
        const change = (): AdStateChange => {
          const c: AdStateChange = rng.uniform() < 0.75 ? { target: 'ad', id: ids[rng.int(0, ids.length - 1)] } : { target: 'advertiser', id: BigInt(rng.int(0, 7)) };
          if (rng.uniform() < 0.4) c.active = rng.uniform() < 0.5;
          if (rng.uniform() < 0.4) c.inBudget = rng.uniform() < 0.5;
          if (rng.uniform() < 0.4) c.pacingRate = rng.uniform();
          if (rng.uniform() < 0.4 || (c.active === undefined && c.inBudget === undefined && c.pacingRate === undefined)) c.bid = rng.uniform() < 0.2 ? 0 : 2 * rng.uniform();
          return c;
        };
        // the reference: each field's last write, ad-level or advertiser-level, in the order given
        type Field = 'active' | 'inBudget' | 'pacingRate' | 'bid';
        const last = new Map<string, [unknown, number]>();
        let seq = 0;
        for (let k = 0; k < 40; k++) {
          const batch = Array.from({ length: rng.int(1, 12) }, change);
          if (rng.uniform() < 0.3) batch.push({ ...batch[0], active: !batch[0].active }); // the same target twice
          await store.update(batch);
          for (const c of batch) {
            seq++;
            for (const f of ['active', 'inBudget', 'pacingRate', 'bid'] as Field[]) if (c[f] !== undefined) last.set(`${c.target} ${c.id} ${f}`, [c[f], seq]);
          }
        }
        const advertiser = bundle.tensors['ads.advertiser'] as BigInt64Array;
        const expected = (row: number) => {
          const pick = (f: Field) => {
            const a = last.get(`ad ${ids[row]} ${f}`);
            const v = last.get(`advertiser ${advertiser[row]} ${f}`);
            return (a && v ? (a[1] > v[1] ? a : v) : (a ?? v))?.[0];
          };
          return { active: pick('active') ?? true, inBudget: pick('inBudget') ?? true, pacingRate: Math.fround((pick('pacingRate') as number) ?? 1), bidOverride: pick('bid') };
        };
        ids.forEach((id, row) => {
          const got = store.effective(live, id)!;
          expect({ ...got, pacingRate: Math.fround(got.pacingRate) }, `ad ${id}`).to.deep.equal(expected(row));
        });
        // a second engine of the same bundle attached now gets every ad's state in one push
        later = open(bundle);
        store.attach(later);
        const req = { ...randomRequest(new Rng(3), bundle, { candidates: ids.length, k: ids.length, cap: 0 }), candidates: BigInt64Array.from(ids), targeting: Uint32Array.from(bundle.config.targeting_dims, () => 0), price: true } as EngineRequest;
        const [x, y] = [await live.rank(req), await later.rank(req)];
        expect(x.counts, 'counts').to.deep.equal(y.counts);
        expect(Array.from(x.adIds), 'winners').to.deep.equal(Array.from(y.adIds));
        expect(Array.from(x.scores), 'scores').to.deep.equal(Array.from(y.scores));
        expect(Array.from(x.prices), 'prices').to.deep.equal(Array.from(y.prices));
        // and the state is in effect: ads dropped for it, bids moved
        expect(x.counts.inactive + x.counts.outOfBudget + x.counts.paced, 'ads the state took out').to.be.greaterThan(0);
        for (const id of ids) expect(store.effective(live, id), `ad ${id}`).to.deep.equal(store.effective(later, id));
      } finally {
        await store.close();
        live.dispose();
        later?.dispose();
      }
    });
  });

  describe('CLI server killed with SIGKILL', () => {
    let bundlePath: string;
    let child: ChildProcess | undefined;
    before(async () => {
      bundlePath = join(dir, 'small.safetensors');
      await writeSmallBundle(bundlePath, 1000);
    });
    afterEach(() => {
      if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      child = undefined;
    });

    /** Starts `adrank serve` and collects its JSON log lines. */
    function serve(stateFile: string) {
      const s = serveCli(['--bundle', bundlePath, '--port', '0', '--device', DEVICE, '--threads', '1', '--state-file', stateFile, '--admin-insecure', '--metrics-port', '0']);
      child = s.proc;
      return s;
    }

    it('acknowledged batches are in effect after kill -9 and a restart, before health says SERVING', async () => {
      const stateFile = join(dir, 'kill.adstate');
      const ids = Array.from((await loadBundle(bundlePath)).tensors['ads.id'] as BigInt64Array, String);
      const s1 = serve(stateFile);
      const port1 = portOf(await s1.event('listening'));
      await s1.event('serving');
      const admin1 = adminClient(`localhost:${port1}`);
      // five batches, each acknowledged before the next; SIGKILL right after the last OK
      for (let i = 0; i < 5; i++) expect(await updateAdStates(admin1, [{ adId: ids[i], active: false }, { adId: ids[10 + i], bid: 2 + i }])).to.deep.equal({ applied: 2, unknown: 0 });
      s1.proc.kill('SIGKILL');
      admin1.close();
      expect(await s1.exited).to.equal(null);

      const s2 = serve(stateFile);
      const port2 = portOf(await s2.event('listening'));
      await s2.event('serving');
      const order = s2.events.map((e) => e.event);
      expect(order.indexOf('state_file_replayed')).to.be.lessThan(order.indexOf('ad_state_applied'));
      expect(order.indexOf('ad_state_applied')).to.be.lessThan(order.indexOf('serving'));
      // the start-up compaction's snapshot (empty), then the five batches
      expect(s2.events.find((e) => e.event === 'state_file_replayed')).to.deep.include({ records: 6, ads: 10 });
      expect(s2.events.find((e) => e.event === 'ad_state_applied')?.ads).to.equal(10);
      const admin2 = adminClient(`localhost:${port2}`);
      const client = connect(`localhost:${port2}`);
      try {
        const got = (await getAdStates(admin2, ids.slice(0, 15))).states;
        for (let i = 0; i < 5; i++) {
          expect(got[i].active, `ad ${i}`).to.equal(false);
          expect(got[10 + i].bidOverride, `bid ${i}`).to.equal(2 + i);
        }
        expect(got[5].active).to.equal(true);
        const c = smallConfig();
        const r = await call<object, RankResponse__Output>(client, 'Rank', protoRequest(c, { candidateAdIds: ids.slice(0, 5), targeting: c.targeting_dims.map(() => 0) }));
        expect(r.counts?.inactive).to.equal(5);
      } finally {
        admin2.close();
        client.close();
      }
      s2.proc.kill('SIGTERM');
      expect(await s2.exited).to.equal(0);

      // a torn append (a crash in the middle of writing a batch) is reported, dropped, cut off
      const size = statSync(stateFile).size;
      appendFileSync(stateFile, frame({ t: 'batch', u: [{ ad: ids[20], active: false }] }).subarray(0, 12));
      const s3 = serve(stateFile);
      await s3.event('serving');
      expect(s3.events.find((e) => e.event === 'state_file_torn_tail')).to.deep.include({ level: 'warn', offset: size, bytes: 12 });
      expect(statSync(stateFile).size).to.equal(size);
      s3.proc.kill('SIGTERM');
      expect(await s3.exited).to.equal(0);

      // corruption in the middle refuses to start, saying where
      const buf = readFileSync(stateFile);
      buf[MAGIC.length + 10] ^= 0xff;
      writeFileSync(stateFile, Buffer.concat([buf, frame({ t: 'batch', u: [{ ad: ids[21], active: false }] })]));
      const s4 = serve(stateFile);
      expect(await s4.exited).to.equal(1);
      const refused = s4.events.find((e) => e.event === 'state_file_refused');
      expect(refused?.level).to.equal('error');
      expect(JSON.stringify(refused?.error)).to.match(/state file .*kill\.adstate is corrupt: record 1 at byte 8: crc32 mismatch, and \d+ bytes follow it; refusing to start/);
      expect(s4.events.some((e) => e.event === 'listening')).to.equal(false);
    });
  });
});
