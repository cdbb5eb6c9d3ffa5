#!/usr/bin/env node
// The install step: builds the native addon with cmake-js, quietly. On success it prints one line
// (what was built); on failure, everything the build printed. To watch the build as it runs:
//   npm install --foreground-scripts --loglevel verbose     (or ADRANK_BUILD_VERBOSE=1 npm install)
// Extra arguments go to `cmake-js compile` (e.g. --CDADRANK_CUDA=OFF).
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { resolve } from 'node:path';

const verbose = process.env.ADRANK_BUILD_VERBOSE === '1' || ['verbose', 'silly'].includes(process.env.npm_config_loglevel ?? '');
const cmakeJs = createRequire(import.meta.url).resolve('cmake-js/bin/cmake-js');
const args = [cmakeJs, 'compile', ...(verbose ? [] : ['--log-level', 'error']), ...process.argv.slice(2)];

const child = spawn(process.execPath, args, { stdio: verbose ? 'inherit' : ['ignore', 'pipe', 'pipe'] });
let output = '';
child.stdout?.on('data', (d) => (output += d));
child.stderr?.on('data', (d) => (output += d));
child.on('error', (e) => {
  console.error(`adrank: cannot run cmake-js: ${e.message}`);
  process.exit(1);
});
child.on('exit', (code, signal) => {
  if (code === 0) {
    if (!verbose) {
      const args = process.argv.slice(2);
      const at = args.findIndex((a) => a === '--out' || a === '-O');
      const out = at >= 0 && args[at + 1] ? args[at + 1] : 'build';
      // ask the addon itself: an incremental build does not configure again, so cmake's own
      // "CUDA backend enabled" line is not always in the output
      let compiled = /adrank: CUDA backend enabled/.test(output);
      try {
        compiled = createRequire(import.meta.url)(resolve(out, 'Release', 'adrank.node')).capabilities().cuda.compiled === true;
      } catch {
        // not loadable here (another platform's build): keep what cmake said
      }
      const cuda = compiled ? 'CPU + CUDA backends' : 'CPU backend (no nvcc found, or CUDA turned off)';
      console.log(`adrank: native addon built: ${out}/Release/adrank.node, ${cuda}`);
    }
    return;
  }
  if (!verbose) process.stderr.write(output);
  console.error(`adrank: the native build failed (${signal ?? `exit ${code}`}); prerequisites: a C++17 compiler and cmake >= 3.18 (README "Prerequisites")`);
  process.exit(code ?? 1);
});
