/**
 * Shared test helpers: in-memory bundles, random requests, addon detection, comparisons.
 */
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { bundleMetadata, parseBundle, type LoadedBundle } from '../../src/model/bundle.js';
import { makeDemoBundle, type DemoBundleOptions } from '../../src/model/demo.js';
import { encodeSafetensors, type Tensor } from '../../src/model/safetensors.js';
import type { ModelConfig } from '../../src/model/config.js';
import { Rng } from '../../src/model/random.js';

/** Encodes and re-parses: the same path a file takes through loadBundle. */
export function toLoaded(config: ModelConfig, tensors: Map<string, Tensor>, path = '<test>'): LoadedBundle {
  return parseBundle(encodeSafetensors(tensors, bundleMetadata(config)), path);
}

export function demoLoaded(opts: DemoBundleOptions): LoadedBundle {
  const b = makeDemoBundle(opts);
  return toLoaded(b.config, b.tensors);
}

/** Whether the native addon has been built (tests that need it skip otherwise). */
export function addonBuilt(): boolean {
  return existsSync(process.env.ADRANK_ADDON ?? join(process.cwd(), 'build', 'Release', 'adrank.node'));
}

export { randomRequest, type RequestOptions } from '../../src/features/random-request.js';

/**
 * |got − want| ≤ atol + rtol·|want| elementwise, with a message naming the field and index.
 */
export function expectClose(field: string, got: ArrayLike<number>, want: ArrayLike<number>, rtol = 1e-4, atol = 1e-5): void {
  expect(got.length, `${field}: length`).to.equal(want.length);
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < want.length; i++) {
    const excess = Math.abs(got[i] - want[i]) - (atol + rtol * Math.abs(want[i]));
    if (!(excess <= worstExcess)) {
      worst = i;
      worstExcess = Number.isNaN(excess) ? Infinity : excess;
    }
  }
  if (worst >= 0) expect.fail(`${field}[${worst}]: got ${got[worst]}, want ${want[worst]} (rtol ${rtol}, atol ${atol})`);
}

export { Rng };

/**
 * Runs one mocha test file again in a child process (this node, tsx, mocha without the project's
 * config, from the repository root) with `env` added to this process's environment: how a suite
 * checks a path chosen once per process, e.g. ADRANK_CPU_ISA=avx2.
 */
export function mochaChild(file: string, env: Record<string, string>, timeoutMs: number, reporter = 'dot'): SpawnSyncReturns<string> {
  const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
  const mocha = join(root, 'node_modules', 'mocha', 'bin', 'mocha.js');
  return spawnSync(process.execPath, ['--import', 'tsx', mocha, '--no-config', '--timeout', String(timeoutMs), '--reporter', reporter, file], {
    cwd: root,
    encoding: 'utf8',
    env: { ...process.env, ...env },
  });
}

