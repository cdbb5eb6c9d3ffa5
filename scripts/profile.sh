#!/usr/bin/env bash
# Profiles the server under load with Nsight Systems, where nsys exists; the NVTX ranges (decode,
# bundle, h2d, user, gather, masknet, dcn, mlp, select, d2h) make the timeline read like the
# request path. Needs a built addon and dist/ (npm run build) on a GPU machine.
#
#   scripts/profile.sh [requests=300] [device=cuda]   (each request is one `adrank client` run: 4 RPCs)
# Writes $OUT/adrank.nsys-rep (or $TMPDIR/adrank-profile/) and an nsys stats summary.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${OUT:-${TMPDIR:-/tmp}/adrank-profile}"
requests="${1:-300}"
device="${2:-cuda}"
port="${ADRANK_PROFILE_PORT:-50571}"
mkdir -p "$out"
if ! command -v nsys >/dev/null; then
  echo "nsys (Nsight Systems) not found: install it or run on a machine that has it; nothing profiled." | tee "$out/profile.txt"
  exit 0
fi
if [[ ! -f "$root/dist/src/cli/main.js" ]]; then
  echo "dist/src/cli/main.js missing: run npm run build first" | tee "$out/profile.txt"
  exit 1
fi
cd "$root"
# --cuda-graph-trace=node shows the kernels inside the replayed CUDA graphs.
nsys profile --trace=cuda,nvtx,osrt --cuda-graph-trace=node --force-overwrite=true -o "$out/adrank" \
  node dist/src/cli/main.js serve --demo --device "$device" --port "$port" --log-level warn &
server=$!
for _ in $(seq 1 120); do
  (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 1
done
for i in $(seq 1 "$requests"); do
  node dist/src/cli/main.js client --address "localhost:$port" --rpc all --k 100 >/dev/null || true
  (( i % 50 == 0 )) && echo "$i requests"
done
kill -TERM "$server"  # graceful shutdown; nsys writes the report when the process exits
wait "$server" || true
nsys stats --report nvtx_sum,cuda_gpu_kern_sum "$out/adrank.nsys-rep" | tee "$out/profile.txt" || true
echo "report: $out/adrank.nsys-rep"
