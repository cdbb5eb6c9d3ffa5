/**
 * A bundle is mapped, not copied (docs/bundle-format.md "Mapped, not copied"): its tensors are views
 * of a read-only mapping, the engine reads the ad tables in place, and a file that changes under
 * the mapping (truncated, written in place) is refused rather than served; a file replaced by
 * rename leaves the loaded version as it was.
 */
import { expect } from 'chai';
import { mkdtempSync, openSync, readFileSync, renameSync, rmSync, truncateSync, writeSync, closeSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Engine } from '../src/engine/index.js';
import { binding, type NativeResult } from '../src/engine/binding.js';
import { AdvertiserIndex, BundleError, loadBundle, parseBundle, writeBundle } from '../src/model/bundle.js';
import { makeDemoBundle, makeRandomConfig } from '../src/model/demo.js';
import { addonBuilt, randomRequest, Rng } from './support/index.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function rejects(p: Promise<unknown>, re: RegExp, type?: new (...a: never[]) => Error): Promise<void> {
  let err: unknown;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  expect(err, `expected a rejection matching ${re}`).to.be.instanceOf(type ?? Error);
  expect((err as Error).message).to.match(re);
}

describe('12 mapped bundles', function () {
  let dir: string;
  before(function () {
    if (!addonBuilt()) this.skip();
    dir = mkdtempSync(join(tmpdir(), 'adrank-mapped-'));
  });
  after(() => dir && rmSync(dir, { recursive: true, force: true }));

  async function write(name: string, seed: number, ads = 3000): Promise<string> {
    const config = makeRandomConfig(new Rng(11), { seqLayers: 1 });
    const b = makeDemoBundle({ ads, seed, config });
    const path = join(dir, name);
    await writeBundle(path, config, b.tensors);
    return path;
  }

  const answer = (r: NativeResult) => ({ ids: Array.from(r.adIds), scores: Array.from(r.scores), probs: Array.from(r.probs), prices: Array.from(r.prices) });

  it('views the mapping: no tensor is a copy, and the id index answers like the ids', async () => {
    const path = await write('views.safetensors', 1);
    const b = await loadBundle(path);
    expect(b.mapping, 'mapping').to.not.equal(undefined);
    expect(b.mapping!.size).to.equal(statSync(path).size);
    // views, not copies: a tensor read through the bundle and the same bytes viewed in the mapping agree,
    // and truncating the file zeroes what the tensor shows (the truncation test below)
    const emb = b.tensors['ads.embedding'] as Float32Array;
    expect(emb.buffer.byteLength, 'one view per tensor').to.equal(emb.byteLength);
    const ids = b.tensors['ads.id'] as BigInt64Array;
    const rows = b.adIndex!.rows(BigInt64Array.from([ids[5], ids[2999], -7n]));
    expect(Array.from(rows)).to.deep.equal([5, 2999, -1]);
    // advertiser → rows, as a scan of ads.advertiser finds them
    const adv = b.tensors['ads.advertiser'] as BigInt64Array;
    const index = new AdvertiserIndex(adv);
    for (const a of [adv[0], adv[1234], adv[2999]]) expect(Array.from(index.rows(a)), `advertiser ${a}`).to.deep.equal([...adv.keys()].filter((r) => adv[r] === a));
    expect(index.has(-99n)).to.equal(false);
    expect(index.rows(-99n).length).to.equal(0);
  });

  it("hashes the file on a worker thread with hash: 'background', to the same sha256", async () => {
    const path = await write('hashed.safetensors', 4);
    const now = await loadBundle(path);
    const later = await loadBundle(path, { hash: 'background' });
    expect(later.hashed, 'a promise of the hash').to.not.equal(undefined);
    await later.hashed;
    expect(later.sha256).to.match(/^[0-9a-f]{64}$/);
    expect(later.sha256).to.equal(now.sha256);
    // Engine.load: known when it resolves, unless asked to resolve first
    const e1 = await Engine.load(path, { threads: 1 });
    const e2 = await Engine.load(path, { threads: 1, hashLater: true });
    try {
      expect(e1.bundle.sha256).to.equal(now.sha256);
      await e2.bundle.hashed;
      expect(e2.bundle.sha256).to.equal(now.sha256);
      // a shared engine's bundle carries the hash, not the promise (it is sent to other threads)
      expect(e2.share().bundle).to.include({ sha256: now.sha256, hashed: undefined });
    } finally {
      e1.dispose();
      e2.dispose();
    }
  });

  it('a thread that attaches to a shared engine views its large ad tables in the same mapping (no copy)', async () => {
    const path = await write('shared.safetensors', 3, 200_000);
    const engine = await Engine.load(path, { threads: 1 });
    try {
      const shared = engine.share();
      const big = Object.keys(shared.mapped ?? {});
      expect(big, 'tables over 1 MiB handed over as places in the mapping').to.include.members(['ads.id', 'ads.advertiser']);
      for (const name of big) expect(shared.bundle.tensors[name], `${name} not copied`).to.equal(undefined);
      const other = Engine.attach(shared);
      try {
        const handle = binding().mapFile(path).handle;
        for (const name of big) {
          const mine = engine.bundle.tensors[name];
          const theirs = other.bundle.tensors[name];
          expect(theirs.buffer instanceof SharedArrayBuffer, `${name} is not a shared-memory copy`).to.equal(false);
          expect(theirs.constructor).to.equal(mine.constructor);
          expect(Buffer.from(theirs.buffer, theirs.byteOffset, theirs.byteLength).equals(Buffer.from(mine.buffer, mine.byteOffset, mine.byteLength)), name).to.equal(true);
          // the same bytes of the file: at the offset the loader's own view has in its mapping
          expect(binding().mapOffset(other.bundle.mapping!.handle, theirs)).to.equal(binding().mapOffset(engine.bundle.mapping!.handle, mine));
          expect(binding().mapOffset(handle, theirs), 'another mapping of the file does not hold it').to.equal(-1);
        }
        const r = await other.rank(randomRequest(new Rng(5), other.bundle, { candidates: 50 }));
        expect(r.adIds.length).to.be.greaterThan(0);
      } finally {
        other.dispose();
      }
    } finally {
      engine.dispose();
    }
  });

  it('answers exactly as the same bundle read into memory (Rank, Retrieve, RetrieveAndRank)', async () => {
    const path = await write('parity.safetensors', 2);
    const mapped = await Engine.load(path, { device: 'cpu', threads: 2 });
    const copied = Engine.fromBundle(parseBundle(readFileSync(path), path), { device: 'cpu', threads: 2 });
    try {
      const rng = new Rng(5);
      for (let i = 0; i < 12; i++) {
        const req = { ...randomRequest(rng, mapped.bundle, { candidates: 200, k: 20, cap: i % 3 }), retrieveCount: 50 };
        expect(answer(await mapped.rank(req)), `rank ${i}`).to.deep.equal(answer(await copied.rank(req)));
        const ret = { ...req, candidates: [] };
        expect(answer(await mapped.retrieve(ret)), `retrieve ${i}`).to.deep.equal(answer(await copied.retrieve(ret)));
        expect(answer(await mapped.retrieveAndRank(req)), `retrieveAndRank ${i}`).to.deep.equal(answer(await copied.retrieveAndRank(req)));
      }
    } finally {
      mapped.dispose();
      copied.dispose();
    }
  });

  it('truncated while mapped: a read past the new end gives zeros instead of a crash, and the engine refuses to answer', async () => {
    const path = await write('truncated.safetensors', 3);
    const engine = await Engine.load(path, { device: 'cpu', threads: 1 });
    try {
      const req = randomRequest(new Rng(1), engine.bundle, { candidates: 50 });
      await engine.rank(req);
      const size = engine.bundle.mapping!.size;
      truncateSync(path, Math.floor(size / 2));
      // the last page is gone from the file: without the guard this read would kill the process (SIGBUS)
      // ads.targeting is the last 8-byte tensor in the file, far from its end: read the last page
      // through a view of the mapping, and the end of the last F32 tensor through the bundle's own view
      const tail = new Uint8Array(binding().mapView(engine.bundle.mapping!.handle, size - 16, 16));
      expect(Array.from(tail)).to.deep.equal(new Array(16).fill(0));
      const ret = engine.bundle.tensors['ads.retrieval'] as Float32Array; // F32 tensors sort after 8-byte ones: in the cut half
      expect(Array.from(ret.subarray(ret.length - 4)), 'the tensor view reads the zero page').to.deep.equal([0, 0, 0, 0]);
      expect(binding().mappedFileChanged(engine.bundle.mapping!.handle)).to.match(/truncated while mapped/);
      for (const call of [() => engine.rank(req), () => engine.retrieve({ ...req, candidates: [] }), () => engine.retrieveAndRank(req)])
        await rejects(call(), /truncated while mapped.*refuses to answer/);
      // and the file as it now is stays refused
      await rejects(loadBundle(path), /truncated\?/, BundleError);
    } finally {
      engine.dispose();
    }
  });

  it('written in place while mapped: refused', async () => {
    const path = await write('in-place.safetensors', 4);
    const engine = await Engine.load(path, { device: 'cpu', threads: 1 });
    try {
      const req = randomRequest(new Rng(2), engine.bundle, { candidates: 50 });
      await engine.rank(req);
      await sleep(20); // past the file system's timestamp granularity
      const fd = openSync(path, 'r+');
      writeSync(fd, Buffer.alloc(64, 0xff), 0, 64, engine.bundle.mapping!.size - 64);
      closeSync(fd);
      await rejects(engine.rank(req), /written in place while mapped/);
      await rejects(loadBundle(path), /NaN/, BundleError);
    } finally {
      engine.dispose();
    }
  });

  it('replaced by rename under a running engine: the loaded version answers as before; loading again reads the new file', async () => {
    const path = await write('renamed.safetensors', 5);
    const other = await write('other.safetensors', 6);
    const engine = await Engine.load(path, { device: 'cpu', threads: 1 });
    try {
      const req = randomRequest(new Rng(3), engine.bundle, { candidates: 80, k: 10 });
      const before = answer(await engine.rank(req));
      const sha = engine.bundle.sha256;
      renameSync(other, path);
      expect(answer(await engine.rank(req))).to.deep.equal(before);
      const again = await loadBundle(path);
      expect(again.sha256).to.not.equal(sha);
    } finally {
      engine.dispose();
    }
  });

  it('refuses handles that are not the addon\'s own', () => {
    expect(() => binding().mappedFileChanged({} as never)).to.throw(TypeError, /handle/);
    expect(() => binding().idIndexRows({} as never, new BigInt64Array(1))).to.throw(TypeError, /handle/);
  });

  it('finds the first non-finite value of a large table, fp32 and bf16, scanning in parallel', () => {
    const f = new Float32Array(3_000_000);
    expect(binding().firstNonFinite(f)).to.equal(-1);
    f[2_999_999] = Infinity;
    f[1_777_777] = NaN;
    expect(binding().firstNonFinite(f)).to.equal(1_777_777);
    const h = new Uint16Array(2_000_000);
    h[1_500_000] = 0xff80; // bf16 -Infinity
    h[1_600_000] = 0x7fc1; // NaN
    expect(binding().firstNonFinite(h)).to.equal(1_500_000);
  });

  it('reports duplicate ids with both rows', () => {
    const r = binding().buildIdIndex(BigInt64Array.from([5n, 9n, -3n, 9n, 11n]));
    expect(r).to.deep.equal({ duplicate: 9n, rows: [1, 3] });
  });
});
