#!/usr/bin/env bash
# Builds the standalone CPU kernel harness (native/kernels/cpu/harness) with g++ -O3 into a
# temporary directory (never into build/) and runs it. Arguments go to the harness:
#   scripts/kernel-check.sh            validate every ISA path + pool, time m=1000 shapes and the stream
#   scripts/kernel-check.sh --quick    validation only
#   scripts/kernel-check.sh --bench --all --threads 2   time every demo shape and batch size
#   scripts/kernel-check.sh --stream --threads 2        only read bandwidth vs the small-m weight stream
#   scripts/kernel-check.sh --bench --stream --threads 2   both timings, no validation
#   (--cputime: one-thread timings in thread CPU time, for a loaded machine)
# No -march flag: like the addon, the binary runs on any x86-64 and picks AVX-512/AVX2 at run time
# (ADRANK_CPU_ISA=avx2|scalar forces a lower path for gemm(), and avx2 the AVX2 bf16 kernel).
#   KERNEL_CHECK_CPU=EPYC-Milan scripts/kernel-check.sh --quick
# runs it under qemu-user with that CPU model's CPUID (`qemu-x86_64 -cpu help` lists them;
# Debian: apt-get install qemu-user): EPYC-Milan is a Zen 3, AVX2 and FMA without AVX-512, so the
# dispatch takes the paths an AVX2-only CPU takes, and an AVX-512 instruction reached there would
# stop it with SIGILL (qemu 7.2 does not emulate AVX-512). Correctness only: emulated timings mean
# nothing.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${KERNEL_CHECK_DIR:-${TMPDIR:-/tmp}/adrank-kernel-check}"
mkdir -p "$out"
"${CXX:-g++}" -std=c++17 -O3 -fno-math-errno -ffp-contract=off -Wall -Wextra -Wno-unused-parameter -pthread \
  -I"$root/native" \
  "$root/native/kernels/cpu/harness/kernel_check.cc" \
  "$root/native/kernels/cpu/gemm.cc" \
  "$root/native/kernels/cpu/gemm_bf16.cc" \
  "$root/native/kernels/cpu/parallel.cc" \
  -o "$out/kernel_check"
if [[ -n "${KERNEL_CHECK_CPU:-}" ]]; then
  command -v qemu-x86_64 >/dev/null || { echo "KERNEL_CHECK_CPU needs qemu-x86_64 (Debian: apt-get install qemu-user)" >&2; exit 2; }
  # (qemu warns about every CPUID feature its TCG lacks; those lines are noise)
  exec qemu-x86_64 -cpu "$KERNEL_CHECK_CPU" "$out/kernel_check" "$@" 2> >(grep -v "TCG doesn't support requested feature" >&2)
fi
exec "$out/kernel_check" "$@"
