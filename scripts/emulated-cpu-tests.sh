#!/usr/bin/env bash
# The CPU backend's kernel and bf16 suites on an emulated CPU: node itself runs under qemu-user
# with another CPU model's CPUID, so the addon's dispatch (gemm_isa, the bf16 kernel, precision
# auto) decides as it would on that CPU, not as ADRANK_CPU_ISA forces it. Default EPYC-Milan, a Zen
# 3: AVX2 and FMA without AVX-512 (qemu 7.2 emulates no AVX-512, so an AVX-512 instruction reached on
# that path stops the run with SIGILL). Correctness only: emulated timings mean nothing.
#
#   bash scripts/emulated-cpu-tests.sh [CPU_MODEL] [--served]   (needs qemu-x86_64: apt-get install qemu-user)
#
# Runs, from the compiled tests (tsc into dist/):
#   test/20 (kernels), without the steps that start processes (its child processes, the kernel
#     check, kernel-spills.py): qemu-user crashes when the emulated node spawns (the kernel check
#     runs emulated on its own in test/20);
#   test/33 (bf16 parity against the float64 reference), without its child processes;
#   test/33's AVX2 child, started here directly (ADRANK_CPU_ISA=avx2, as the parent would).
# With --served also: `adrank serve --demo` under emulation and `adrank client` (native) against it,
# whose answers must equal a native server's with ADRANK_CPU_ISA=avx2 (the same kernels), the
# device_reason line aside (about 3 minutes more: the emulated load takes about 70 s).
# About 4 minutes on 2 cores. Prints each suite's summary; exits non-zero if one fails.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cpu=EPYC-Milan
served=0
for arg in "$@"; do
  if [[ "$arg" == --served ]]; then served=1; else cpu="$arg"; fi
done
cd "$root"
command -v qemu-x86_64 >/dev/null || { echo "needs qemu-x86_64 (Debian: apt-get install qemu-user)" >&2; exit 2; }
npx tsc -p tsconfig.json
node_bin="$(command -v node)"
mocha=(node_modules/mocha/lib/cli/cli.js --no-config --timeout 900000)
# qemu warns about every CPUID feature its TCG lacks; io_uring off (libuv's, under emulation)
emulated() { UV_USE_IO_URING=0 qemu-x86_64 -cpu "$cpu" "$node_bin" "$@" 2>&1 | grep -v "TCG doesn't support requested feature"; return "${PIPESTATUS[0]}"; }

echo "::: capabilities on $cpu"
emulated -e "console.log(JSON.stringify(require('./build/Release/adrank.node').capabilities().cpu))"
status=0
echo "::: test/20 on $cpu"
emulated "${mocha[@]}" --grep "child process|other ISA paths|kernel check|kernel-spills" --invert dist/test/20.kernels-cpu.test.js || status=1
echo "::: test/33 on $cpu"
emulated "${mocha[@]}" --grep "in a child process" --invert dist/test/33.engine-bf16.test.js || status=1
echo "::: test/33's AVX2 child on $cpu"
ADRANK_BF16_TEST_CHILD=avx2 ADRANK_CPU_ISA=avx2 emulated "${mocha[@]}" dist/test/33.engine-bf16.test.js || status=1
if [[ $served == 1 ]]; then
  echo "::: adrank serve --demo on $cpu, adrank client against it and against a native ADRANK_CPU_ISA=avx2 server"
  work="$(mktemp -d)"
  serve() {  # $1: port; the rest: how to run node
    local port="$1"; shift
    "$@" dist/src/cli/main.js serve --demo --port "$port" --metrics-port 0 --front-end-threads 1 >"$work/serve-$port.log" 2>&1 &
    echo $! >"$work/pid-$port"
    for _ in $(seq 1 120); do grep -q '"event":"serving"' "$work/serve-$port.log" && return 0; sleep 2; done
    echo "the server on $port did not start:"; tail -5 "$work/serve-$port.log"; return 1
  }
  answers() { node dist/src/cli/main.js client --address "localhost:$1" | grep -v '^server µs' | tail -n +2; }
  if serve 50091 env UV_USE_IO_URING=0 qemu-x86_64 -cpu "$cpu" "$node_bin" && answers 50091 >"$work/emulated.txt" &&
     serve 50092 env ADRANK_CPU_ISA=avx2 node && answers 50092 >"$work/native.txt"; then
    if diff "$work/emulated.txt" "$work/native.txt" >/dev/null; then echo "served answers identical ($(wc -l <"$work/native.txt") lines)"
    else echo "served answers differ:"; diff "$work/emulated.txt" "$work/native.txt" | head -20; status=1; fi
  else
    status=1
  fi
  for f in "$work"/pid-*; do kill "$(cat "$f")" 2>/dev/null || true; done
  rm -rf "$work"
fi
exit $status
