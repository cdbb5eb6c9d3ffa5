/**
 * `adrank shard`: splits a bundle's ad corpus into S bundles (docs/deploy.md). Each is a
 * complete, valid bundle holding the whole model and the ads of its shard (src/model/shard-meta.ts
 * has the rule), with `adrank.shard` metadata naming its index, the count and the sha256 of the
 * source bundle.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { TensorArray } from '../engine/binding.js';
import { loadBundle, type LoadedBundle } from './bundle.js';
import { MAX_SHARDS, SHARD_METADATA_KEY, shardMeta, shardOf, type ShardMeta } from './shard-meta.js';
import { writeSafetensors, type Tensor } from './safetensors.js';

export { MAX_SHARDS, SHARD_METADATA_KEY, shardMeta, shardOf, shardOfWords, splitmix64, type ShardMeta } from './shard-meta.js';

export interface ShardFile {
  path: string;
  index: number;
  ads: number;
  sha256: string;
  size: number;
}

/** Rows `rows` of a row-major [N, ...] ad table. */
function takeRows(data: TensorArray, shape: number[], rows: Int32Array): TensorArray {
  const width = shape.slice(1).reduce((a, b) => a * b, 1);
  const Ctor = data.constructor as new (n: number) => TensorArray;
  const out = new Ctor(rows.length * width);
  for (let i = 0; i < rows.length; i++) (out as Float32Array).set((data as Float32Array).subarray(rows[i] * width, (rows[i] + 1) * width), i * width);
  return out;
}

/** Splits bundle `b` into `count` shard bundles `dir/shard-<i>.safetensors`. */
export async function writeShards(b: LoadedBundle, count: number, dir: string): Promise<ShardFile[]> {
  if (!Number.isInteger(count) || count < 1 || count > MAX_SHARDS) throw new Error(`expected an integer in 1..${MAX_SHARDS} for --shards, got ${count}`);
  if (shardMeta(b)) throw new Error(`${b.path} is already a shard (${b.metadata![SHARD_METADATA_KEY]}); shard the source bundle`);
  const ids = b.tensors['ads.id'] as BigInt64Array;
  const members: number[][] = Array.from({ length: count }, () => []);
  for (let r = 0; r < ids.length; r++) members[shardOf(ids[r], count)].push(r);
  const empty = members.findIndex((m) => m.length === 0);
  if (empty >= 0) throw new Error(`shard ${empty} of ${count} would hold no ads (the bundle has ${ids.length}); use fewer shards`);
  await mkdir(dir, { recursive: true });
  const out: ShardFile[] = [];
  for (let i = 0; i < count; i++) {
    const rows = Int32Array.from(members[i]);
    const tensors = new Map<string, Tensor>();
    for (const name of Object.keys(b.tensors)) {
      const shape = b.shapes[name];
      if (name.startsWith('ads.')) tensors.set(name, { dtype: b.dtypes[name], shape: [rows.length, ...shape.slice(1)], data: takeRows(b.tensors[name], shape, rows) });
      else tensors.set(name, { dtype: b.dtypes[name], shape, data: b.tensors[name] });
    }
    const meta: ShardMeta = { index: i, count, source_sha256: b.sha256 };
    const metadata = { ...b.metadata, [SHARD_METADATA_KEY]: JSON.stringify(meta) };
    const path = join(dir, `shard-${i}.safetensors`);
    const w = await writeSafetensors(path, tensors, metadata);
    out.push({ path, index: i, ads: rows.length, ...w });
  }
  return out;
}

/** `adrank shard BUNDLE --shards S --out DIR`. */
export async function shardBundleFile(path: string, count: number, dir: string): Promise<ShardFile[]> {
  return writeShards(await loadBundle(path), count, dir);
}
