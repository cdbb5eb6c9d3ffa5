/**
 * The CUDA path's host logic, on the CPU (no GPU, no CUDA toolkit): native/kernels/cuda/harness/
 * plan_check.cc, built with the host C++ compiler. It checks the GEMM tile choice by shape
 * (ADRANK_CUDA_TILE), the graph's copy size (ADRANK_CUDA_GRAPH_IO), when the selection's fallback
 * round can act (ADRANK_CUDA_SKIP_IDLE_ROUND), the order keys, and runs the single-CTA epilogue's
 * selection (ADRANK_CUDA_EPILOGUE: select_logic.h epilogue_select, the steps the device block runs)
 * on the host against the CPU funnel (engine/funnel.cc select_global and gsp_prices): winners in
 * order, runner-up, `capped` and GSP prices, over ties, NaN, ±0, heavy caps and up to 16,384
 * candidates; and runs the one-pass retrieval's top-L (ADRANK_CUDA_RETRIEVE_ONEPASS: the blocks'
 * buffers with select_logic.h topl_compact, their own and the global thresholds, the merge by the
 * last block) on the host against the CPU funnel's uncapped selection, over random, best-first,
 * worst-first and tied scores, 1 to 264 blocks, L up to 2,047 and fewer eligible ads than L; and
 * the fp8 retrieval (ADRANK_CUDA_RETRIEVE_FP8, fp8_logic.h): the e4m3 codec (every code, and
 * nearest-even rounding against a search), the interval that must hold every bf16 score (the
 * device's summation order and two others, over adversarial tables: one huge value, near ties,
 * cancellation, tiny values, zero rows), and the whole selection with exact rescoring against the
 * bf16 scan's top L.
 *
 * Skipped, saying why, where no C++ compiler is found.
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

// the repository root: test/.. from the sources, dist/test/../.. from the compiled tests
let root = join(dirname(fileURLToPath(import.meta.url)), '..');
if (!existsSync(join(root, 'native'))) root = join(root, '..');

function compiler(): string | undefined {
  for (const c of [process.env.CXX, 'c++', 'g++', 'clang++'].filter(Boolean) as string[])
    if (spawnSync(c, ['--version'], { stdio: 'ignore' }).status === 0) return c;
  return undefined;
}

describe('23 CUDA path host logic (plan_check.cc, no GPU)', function () {
  this.timeout(180000);
  const cxx = compiler();
  let dir = '';
  let bin = '';
  before(function () {
    if (!cxx) {
      console.log('      [23.cuda-plan] skipped: no C++ compiler (CXX, c++, g++, clang++) on PATH');
      this.skip();
    }
    dir = mkdtempSync(join(tmpdir(), 'adrank-plan-'));
    bin = join(dir, 'plan_check');
    const r = spawnSync(cxx!, ['-std=c++17', '-O2', '-I', join(root, 'native'), join(root, 'native/kernels/cuda/harness/plan_check.cc'),
      join(root, 'native/engine/funnel.cc'), '-o', bin], { encoding: 'utf8' });
    expect(r.status, `compile failed:\n${r.stderr}`).to.equal(0);
  });
  after(() => dir && rmSync(dir, { recursive: true, force: true }));

  it('tile choice, graph keys, order keys, the epilogue selection, the one-pass top-L and the fp8 retrieval equal to their references', function () {
    const r = spawnSync(bin, ['2'], { encoding: 'utf8' });
    const out = `${r.stdout}${r.stderr}`;
    expect(out).to.match(/tile choice: ok/);
    expect(out).to.match(/graph keys and plans: ok/);
    const m = /epilogue selection vs CPU funnel: (\d+) cases, ok/.exec(out);
    expect(m, out).to.not.equal(null);
    expect(Number(m![1]), 'epilogue cases run').to.be.at.least(300);
    const o = /one-pass retrieval top-L vs CPU funnel: (\d+) cases, ok/.exec(out);
    expect(o, out).to.not.equal(null);
    expect(Number(o![1]), 'one-pass cases run').to.be.at.least(400);
    expect(out).to.match(/fp8 e4m3 codec: ok/);
    expect(out).to.match(/fp8 interval holds the bf16 score: \d+ tables × queries, ok/);
    const f = /fp8 retrieval with exact rescoring vs the bf16 scan: (\d+) cases, ok/.exec(out);
    expect(f, out).to.not.equal(null);
    expect(Number(f![1]), 'fp8 selection cases run').to.be.at.least(70);
    expect(out).to.match(/plan_check: 0 failures/);
    expect(r.status, out).to.equal(0);
  });
});
