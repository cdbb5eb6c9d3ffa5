/**
 * Finds and runs a Python that has PyTorch, for the tests that compare against the PyTorch
 * reference (scripts/reference). Candidates in order: $ADRANK_PYTHON, /usr/bin/python3 (Debian's
 * python3-torch installs there), python3 on PATH. Tests skip, saying why, when none has torch.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (scripts.reference is imported from there): the nearest folder above this
 *  file with a package.json, so that the compiled tests (dist/test, run on a GPU machine) find it too. */
export const repoRoot = ((): string => {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  return dir;
})();

export type TorchPython = { ok: true; python: string; torch: string } | { ok: false; reason: string };

let found: TorchPython | undefined;

/** The first candidate interpreter that imports torch (memoised). */
export function findTorchPython(): TorchPython {
  if (found) return found;
  const env = process.env.ADRANK_PYTHON;
  const candidates = env ? [env] : ['/usr/bin/python3', 'python3'];
  const tried: string[] = [];
  for (const python of candidates) {
    if (python.includes('/') && !existsSync(python)) {
      tried.push(`${python}: not found`);
      continue;
    }
    const r = spawnSync(python, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8', timeout: 60_000 });
    if (r.status === 0) return (found = { ok: true, python, torch: r.stdout.trim() });
    const why = r.error ? r.error.message : (r.stderr.trim().split('\n').pop() ?? `exit ${r.status}`);
    tried.push(`${python}: ${why}`);
  }
  return (found = {
    ok: false,
    reason: `no python with torch (${tried.join('; ')}); install it with \`apt-get install python3-torch\` or set ADRANK_PYTHON`,
  });
}

/** Runs `python -m <module> ...args` in the repository root; returns stdout, throws with stderr. */
export function runPythonModule(python: string, module: string, args: string[], timeoutMs = 300_000): string {
  const r = spawnSync(python, ['-m', module, ...args], {
    cwd: repoRoot,
    encoding: 'utf8',
    timeout: timeoutMs,
    env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1' },
    maxBuffer: 64 * 1024 * 1024,
  });
  if (r.status !== 0) {
    const why = r.error ? r.error.message : `exit ${r.status ?? r.signal}`;
    throw new Error(`${python} -m ${module} ${args.join(' ')} failed (${why}):\n${r.stderr}`);
  }
  return r.stdout;
}
