/**
 * Helpers of the server tests: waiting for a condition, a logger that keeps its events, and
 * shipping a version into a model repository the way an exporter should.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../../src/log.js';
import { writeBundle, type LoadedBundle } from '../../src/model/bundle.js';
import type { ModelConfig } from '../../src/model/config.js';
import type { Tensor } from '../../src/model/safetensors.js';

/** Polls `f` until it returns something other than undefined or false; throws after `ms`. */
export async function until<T>(what: string, f: () => Promise<T | undefined | false> | T | undefined | false, ms = 30_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export type RecordingLogger = Logger & { events: { level: string; event: string; [k: string]: unknown }[] };

/** A logger that keeps the events (and stays quiet). */
export function recordingLogger(): RecordingLogger {
  const events: RecordingLogger['events'] = [];
  const at = (level: string) => (event: string, fields: Record<string, unknown> = {}) => void events.push({ level, event, ...fields });
  return { events, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

/** Moves `bundle` in as `repo`/`version` atomically: written beside, then renamed into place. */
export function shipVersion(repo: string, version: number, bundle: string): void {
  const tmp = join(repo, `.incoming-${version}`);
  mkdirSync(tmp);
  writeFileSync(join(tmp, 'model.safetensors'), readFileSync(bundle));
  renameSync(tmp, join(repo, String(version)));
}

/** Writes a variant of bundle `b` to `out` under `config`: every tensor copied, then `change`
 *  edits the copies in place (another head bias for a version that answers differently, a NaN
 *  weight, a negative bid). */
export async function writeVariant(b: LoadedBundle, out: string, config: ModelConfig, change: (t: Record<string, Tensor>) => void): Promise<void> {
  const tensors: Record<string, Tensor> = {};
  for (const [name, data] of Object.entries(b.tensors)) tensors[name] = { dtype: b.dtypes[name], shape: b.shapes[name], data: data.slice() } as Tensor;
  change(tensors);
  await writeBundle(out, config, tensors);
}

/** Another head bias per task: the same ads, other probabilities (and rankings). */
export function shiftHeadBias(t: Record<string, Tensor>): void {
  const bias = t['heads.bias'].data as Float32Array;
  for (let i = 0; i < bias.length; i++) bias[i] += 0.3 * (i + 1);
}
