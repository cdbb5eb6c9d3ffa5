#!/usr/bin/env bash
# Builds the addon (CPU backend) with AddressSanitizer + UndefinedBehaviorSanitizer into
# build-asan/ and runs the suites that drive native code through it. Any memory error or UB stops
# the run with a report. Takes a few minutes on 2 cores.
#   bash scripts/asan-check.sh [test files...]
set -euo pipefail
cd "$(dirname "$0")/.."
npx cmake-js compile --CDADRANK_CUDA=OFF -O build-asan --CDCMAKE_BUILD_TYPE=RelWithDebInfo \
  "--CDCMAKE_CXX_FLAGS=-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
  "--CDCMAKE_SHARED_LINKER_FLAGS=-fsanitize=address,undefined" --log-level error
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(test/20.kernels-cpu.test.ts test/25.addon.test.ts test/30.engine.test.ts test/31.funnel.test.ts test/33.engine-bf16.test.ts test/40.parity.test.ts test/50.server.test.ts)
# node itself is not instrumented: preload the runtimes; leaks are node's business, not checked.
LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)" \
ASAN_OPTIONS=detect_leaks=0:halt_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
ADRANK_ADDON="$PWD/build-asan/Release/adrank.node" \
  npx mocha --no-config -n import=tsx --timeout 600000 "${tests[@]}"
