#!/usr/bin/env bash
# Prepares, on a machine without a GPU, the ignored folder .gpu-kit/ that a GPU machine without
# Node.js runs scripts/gpu-check.sh from (docs/cuda.md "Running the checks"):
#   node.xz          this machine's node binary, xz-compressed (the GPU machine may have none)
#   adrank.node.xz   the addon as built here, with the CUDA backend (cudart is linked statically)
#   adrank-hooks.node.xz  the same with the test hooks (npm run build:cuda-test-hooks: sm_80 and
#                    sm_90a), for test/22's injected capture failures and hung streams
#   harness.xz       the kernel harness (native/kernels/cuda/harness), for sm_80 and sm_90a
#   dist.tar.xz      the compiled TypeScript (src, tests, benches) and the demo-bundle writer
#   modules.tar.xz   node_modules without what only building needs (typescript, esbuild, node-gyp,
#                    cmake-js, types) and without onnxruntime-node (bench:cpu's peer, installed
#                    beside a checkout with --no-save, 290 MB: it put the kit at 115 MiB)
# Everything else gpu-check needs (sources, proto/, scripts/reference) is in the working tree.
#
#   bash scripts/gpu-kit.sh [DIR]        (default DIR: .gpu-kit; must stay under 64 MiB)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
kit="${1:-$root/.gpu-kit}"
cd "$root"

addon=build/Release/adrank.node
[[ -f "$addon" ]] || { echo "gpu-kit: $addon missing: run npm install (with nvcc on PATH)"; exit 1; }
node -e "const c=require('./$addon').capabilities(); if(!c.cuda.compiled){console.error('gpu-kit: the addon was built without CUDA (no nvcc?)');process.exit(1)} console.log('addon: CUDA targets', c.cuda.targets || '(unknown)')"
npx tsc -p tsconfig.json
npm run --silent build:cuda-test-hooks
hooks=build-cuda-test/Release/adrank.node

rm -rf "$kit"
mkdir -p "$kit"
xz -T2 -6 -c "$(command -v node)" > "$kit/node.xz"
xz -T2 -6 -c "$addon" > "$kit/adrank.node.xz"
xz -T2 -6 -c "$hooks" > "$kit/adrank-hooks.node.xz"
# the kernel harness, prebuilt for A100 and Hopper so the GPU machine spends no time compiling it
nvcc -std=c++17 -O3 --expt-relaxed-constexpr -lineinfo -I native \
  -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90a,code=sm_90a \
  native/kernels/cuda/harness/harness.cu native/kernels/cuda/*.cu -o "$kit/harness"
xz -T2 -6 "$kit/harness"
tar -C "$root" -cf - dist | xz -T2 -6 > "$kit/dist.tar.xz"
# node_modules may be a link to a shared install (a worktree): archive what it points to, as node_modules/
nm="$(readlink -f "$root/node_modules")"
[[ "$(basename "$nm")" == node_modules ]] || { echo "gpu-kit: $root/node_modules resolves to $nm, not a node_modules folder"; exit 1; }
tar -C "$(dirname "$nm")" -cf - \
  --exclude='node_modules/typescript' --exclude='node_modules/@esbuild' --exclude='node_modules/esbuild' \
  --exclude='node_modules/node-gyp' --exclude='node_modules/cmake-js' --exclude='node_modules/@types' \
  --exclude='node_modules/node-api-headers' --exclude='node_modules/.cache' \
  --exclude='node_modules/onnxruntime-node' --exclude='node_modules/onnxruntime-common' \
  node_modules | xz -T2 -6 > "$kit/modules.tar.xz"
{
  echo "made $(date -u +%FT%TZ) on $(uname -m), node $(node --version), commit $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (with uncommitted changes)')"
} > "$kit/MANIFEST"
du -b "$kit"/* | awk '{printf "%-40s %6.1f MiB\n", $2, $1/1048576}'
total=$(du -sb "$kit" | awk '{print $1}')
printf 'total %.1f MiB (limit 64)\n' "$(echo "$total / 1048576" | bc -l)"
(( total < 64 * 1024 * 1024 )) || { echo "gpu-kit: over 64 MiB"; exit 1; }
