#!/usr/bin/env bash
# GPU check, for a machine with an NVIDIA GPU (sm_80 or newer). docs/cuda.md "Running the checks".
# On a machine without Node.js, carry .gpu-kit/ (bash scripts/gpu-kit.sh, on the build machine):
# this script unpacks node, the CUDA addon, the prebuilt harness, dist/ and node_modules from it.
#
#   scripts/gpu-check.sh            everything below
#   scripts/gpu-check.sh --quick    harness validation, addon tests and sanitizers only (no 10M-ad
#                                   retrieval, no peer, no gRPC run)
#
# GPU_CHECK_SKIP="peer e2e" leaves those steps out (a rerun after a fix, when the peer and the
# gRPC figures of an earlier run on the same machine still stand).
# Steps, each under its own time limit (GPU_CHECK_SCALE multiplies them), so a hung kernel costs
# one step and not the run; and all of them inside GPU_CHECK_BUDGET seconds (default 450: a step
# that would start past it is skipped, one that would run past it gets what is left), so the run
# fits one 8-minute device call:
#   1. harness: the kernels against CPU references, then their timings (the GEMM tile policies and
#      the wgmma kernel side by side on real data, every GEMM case on both kernels; Retrieve over 10M ads at K = 1,000 and 100: scan + selection, the
#      one-pass and the fp8 retrieval, each result block compared byte for byte), alone on the GPU
#   2. before/after: whole requests through the addon (scripts/gpu-bench.mjs), Rank 100 / 1,000 /
#      10,000 (and 1,000 with cap 2) and Retrieve over GPU_CHECK_RETRIEVE_ADS ads (default 1M; the
#      10M figure is the harness's), once with every switch off (old) and once on (new, GPU_CHECK_NEW)
#   3. the like-for-like peer (scripts/gpu-peer-rank.py): the whole Rank model of scripts/reference
#      in PyTorch on the same bundle and requests, eager and torch.compile (CUDA graphs);
#      torch.matmul on real layer inputs; torch.topk(E @ q) on the same retrieval corpus
#   4. test/21, test/40 through the addon on cuda and test/22 through its test-hooks build, beside
#      compute-sanitizer (memcheck and racecheck on the harness --small, memcheck on one addon
#      request: scripts/gpu-one-request.mjs) and the harness's GEMM cases again as programmatic
#      dependents (ADRANK_CUDA_PDL=1, validation only). test/21 compares each switch of the new
#      path with the old path itself (one engine per switch); GPU_CHECK_MOCHA_NEW=1 also reruns
#      test/21 with every switch on (ADRANK_CUDA_TILE and ADRANK_CUDA_PDL are process-wide)
#   5. Rank(100) and Rank(1,000) served over gRPC to a separate client process, concurrency 1, 16, 64
#   6. front-end threads: calls/s of a tiny model on the CPU backend at 1 and 8 JS threads (bench/
#      frontend-threads.ts), on hosts with >= 8 cores
#   7. an nsys summary of the served path (scripts/profile.sh) where nsys is on the PATH: nsys.txt
#   8. ten million ads on the device: bench/scale.ts --device cuda --load-only (time to SERVING, the
#      upload's time, resident memory against the file, Retrieve p50 / p99)
# Outputs go to $OUT when set (else $TMPDIR/adrank-gpu-check), nine files at most: summary.txt
# (the machine, the step table, the before/after table, printed last), harness.log,
# harness-pdl.log (the GEMM cases again with ADRANK_CUDA_PDL=1), bench.log, peer.log, mocha.log,
# sanitizer.log, e2e.json, e2e.log. Binaries and bundles go to a work folder,
# never to $OUT or build/.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${OUT:-${TMPDIR:-/tmp}/adrank-gpu-check}"
work="${TMPDIR:-/tmp}/adrank-gpu-work"
mkdir -p "$out" "$work"
quick=0
[[ "${1:-}" == "--quick" ]] && quick=1
scale="${GPU_CHECK_SCALE:-1}"
budget="${GPU_CHECK_BUDGET:-460}"
# The new path: every switch of docs/cuda.md "Settings" that is off by default.
new_env="${GPU_CHECK_NEW:-ADRANK_CUDA_GRAPH_IO=1 ADRANK_CUDA_SKIP_IDLE_ROUND=1 ADRANK_CUDA_TILE=shape ADRANK_CUDA_EPILOGUE=1 ADRANK_CUDA_RETRIEVE_ONEPASS=1 ADRANK_CUDA_RETRIEVE_FP8=1 ADRANK_CUDA_PDL=1 ADRANK_CUDA_LINEAR_T=1 ADRANK_CUDA_WGMMA=1}"
status=0
rows=()
skip() { [[ " ${GPU_CHECK_SKIP:-} " == *" $1 "* ]]; }

# step NAME SECONDS LOG CMD...: CMD under a time limit, its output appended to LOG; one table row
step() {
  local name=$1 limit=$(($2 * scale)) log=$3
  shift 3
  local left=$((budget - SECONDS))
  if ((left < 15)); then
    rows+=("$(printf '%-38s %-14s' "$name" "SKIPPED (budget)")")
    echo "== $name: skipped, ${SECONDS}s of ${budget}s spent" | tee -a "$log"
    return 0
  fi
  ((limit > left)) && limit=$left
  local s=$SECONDS what=ok
  echo "== $name (limit ${limit}s)" | tee -a "$log"
  timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
  local rc=$?
  if ((rc == 124 || rc == 137)); then what="TIMED OUT"; elif ((rc != 0)); then what="FAILED rc=$rc"; fi
  ((rc == 0)) || status=1
  local row
  row=$(printf '%-38s %-14s %4ss' "$name" "$what" $((SECONDS - s)))
  rows+=("$row")
  echo "$row" | tee -a "$log"
  return $rc
}

{ echo "== machine"; date -u; uname -a; nvidia-smi || echo "nvidia-smi not found"; nvcc --version | tail -1
  python3 -c 'import torch; print("torch", torch.__version__)' 2>&1; } >"$out/summary.txt" 2>&1
head -20 "$out/summary.txt"

if ! command -v node >/dev/null && [[ -d "$root/.gpu-kit" ]]; then
  echo "== unpacking .gpu-kit (node, CUDA addon, harness, dist/, node_modules/)"
  python3 - "$root/.gpu-kit" "$work" "$root" <<'PY'
import lzma, os, shutil, sys, tarfile
kit, work, root = sys.argv[1:4]
def unxz(src, dst):
    if os.path.exists(os.path.join(kit, src)):
        with lzma.open(os.path.join(kit, src)) as f, open(dst, "wb") as o:
            shutil.copyfileobj(f, o)
        os.chmod(dst, 0o755)
unxz("node.xz", os.path.join(work, "node"))
unxz("harness.xz", os.path.join(work, "harness"))
os.makedirs(os.path.join(root, "build", "Release"), exist_ok=True)
unxz("adrank.node.xz", os.path.join(root, "build", "Release", "adrank.node"))
os.makedirs(os.path.join(root, "build-cuda-test", "Release"), exist_ok=True)
unxz("adrank-hooks.node.xz", os.path.join(root, "build-cuda-test", "Release", "adrank.node"))
link = os.path.join(root, "node_modules")
if os.path.islink(link) and not os.path.exists(link):  # a link to a shared install that did not travel
    os.remove(link)
for t in ("dist.tar.xz", "modules.tar.xz"):
    with tarfile.open(os.path.join(kit, t)) as tf:
        tf.extractall(root)
print(open(os.path.join(kit, "MANIFEST")).read().strip())
PY
  export PATH="$work:$PATH"
fi

harness="$work/harness"
if [[ ! -x "$harness" ]]; then
  # An explicit target, never -arch=native: on a Hopper GPU that is sm_90 without the "a", and a
  # path under __CUDA_ARCH_FEAT_SM90_ALL (wgmma, setmaxnreg) would silently compile out.
  cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
  case "$cc" in
    90) gencode="-gencode=arch=compute_90a,code=sm_90a" ;;
    [0-9][0-9]) gencode="-gencode=arch=compute_$cc,code=sm_$cc" ;;
    *) gencode="-gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_80,code=sm_80" ;;
  esac
  echo "== build harness (nvcc $gencode)"
  nvcc -std=c++17 -O3 $gencode --expt-relaxed-constexpr -lineinfo -I "$root/native" \
    "$root/native/kernels/cuda/harness/harness.cu" "$root/native/kernels/cuda/"*.cu -o "$harness" 2>&1 | tail -20
  [[ -x "$harness" ]] || { echo "harness build FAILED"; exit 1; }
fi
cuobjdump --list-elf "$harness" 2>/dev/null | sed 's/^/harness carries: /' | head -4 >>"$out/summary.txt"
# the wgmma kernel is on the tensor cores' Hopper path only if its SASS has HGMMA (a matrix kernel
# whose SASS shows only HMMA is on the older, slower path)
if command -v cuobjdump >/dev/null; then
  echo "harness SASS: $(cuobjdump -sass "$harness" 2>/dev/null | grep -c HGMMA) HGMMA, $(cuobjdump -sass "$harness" 2>/dev/null | grep -c ' HMMA') HMMA instructions" >>"$out/summary.txt"
fi

# 1. the kernels alone, one process per phase: a kernel that faults poisons its CUDA context, and
# then only its own phase is lost
if ((quick)); then
  step "harness --quick" 100 "$out/harness.log" "$harness" --quick
else
  step "harness: gemm (mma.sync, tile policies)" 50 "$out/harness.log" "$harness" --phase gemm
  step "harness: wgmma" 40 "$out/harness.log" "$harness" --phase wgmma
  step "harness: wgmma with bulk tensor copies" 40 "$out/harness.log" "$harness" --phase wgmma-tma
  step "harness: selection, epilogue" 40 "$out/harness.log" "$harness" --phase select
  step "harness: Retrieve 10M (scan, one-pass, fp8)" 60 "$out/harness.log" "$harness" --phase retrieve
fi

have_node=0
command -v node >/dev/null && [[ -f "$root/build/Release/adrank.node" && -d "$root/dist/test" ]] && have_node=1
bench="$work/bench"

# 2. before/after through the addon, alone on the GPU: the old path writes the bundles and requests
if ((have_node && !quick)) && ! skip bench; then
  ads="${GPU_CHECK_RETRIEVE_ADS:-1000000}"
  # ADRANK_CUDA_GRAPH_NODES: each captured graph's nodes by type, per path, into bench.log
  step "before/after: old path" 110 "$out/bench.log" bash -c "cd '$root' && ADRANK_CUDA_STREAMS=1 ADRANK_CUDA_GRAPH_NODES=1 \
      node scripts/gpu-bench.mjs --path old --dir '$bench' --write --retrieve-ads $ads"
  if ! step "before/after: new path" 70 "$out/bench.log" bash -c "cd '$root' && env ADRANK_CUDA_STREAMS=1 ADRANK_CUDA_GRAPH_NODES=1 $new_env \
      node scripts/gpu-bench.mjs --path new --dir '$bench' --retrieve-ads $ads"; then
    # a switch faulted (none has run on a GPU yet): the first four alone, to narrow it down
    step "before/after: new path, first four switches" 70 "$out/bench.log" bash -c "cd '$root' && env ADRANK_CUDA_STREAMS=1 \
      ADRANK_CUDA_GRAPH_IO=1 ADRANK_CUDA_SKIP_IDLE_ROUND=1 ADRANK_CUDA_TILE=shape ADRANK_CUDA_EPILOGUE=1 \
      node scripts/gpu-bench.mjs --path new4 --dir '$bench' --retrieve-ads $ads"
  fi
fi

# 3. the like-for-like peer, alone on the GPU, on the bundle and requests step 2 wrote
if ((!quick)) && ! skip peer; then
  if [[ -f "$bench/requests.json" ]]; then
    step "PyTorch peer: whole Rank, same inputs" 150 "$out/peer.log" env PYTHONUNBUFFERED=1 python3 "$root/scripts/gpu-peer-rank.py" "$bench"
  else
    echo "no bundle from step 2: the whole-Rank peer needs scripts/gpu-bench.mjs --write" | tee -a "$out/peer.log"
  fi
  [[ -n "${GPU_CHECK_LAYER_PEER:-}" ]] && step "PyTorch peer: layer shapes" 90 "$out/peer.log" env PYTHONUNBUFFERED=1 python3 "$root/scripts/gpu-peer.py"
fi

# 4. correctness through the addon, beside the sanitizers (no timings are read in this step)
if ((have_node)); then
  node -e "console.log(JSON.stringify(require('$root/build/Release/adrank.node').capabilities()))" >>"$out/summary.txt" 2>&1
  (step "mocha test/21, 22, 40 on cuda" 200 "$out/mocha.log" bash -c "cd '$root' && ADRANK_PARITY_DEVICE=cuda \
      node node_modules/mocha/bin/mocha.js --no-config --timeout 300000 dist/test/21.kernels-gpu.test.js \
      dist/test/22.cuda-faults.test.js dist/test/40.parity.test.js"
   rc=$?
   echo "${rows[-1]}" >"$work/mocha.row"
   rc2=0
   if [[ -n "${GPU_CHECK_MOCHA_NEW:-}" ]]; then
     step "mocha test/21 on cuda, new path" 90 "$out/mocha.log" bash -c "cd '$root' && env $new_env \
       node node_modules/mocha/bin/mocha.js --no-config --timeout 300000 dist/test/21.kernels-gpu.test.js"
     rc2=$?
     echo "${rows[-1]}" >>"$work/mocha.row"
   fi
   exit $((rc || rc2))) &
  mocha_pid=$!
else
  echo "skipped: node, build/Release/adrank.node or dist/test missing" | tee "$out/mocha.log"
  rows+=("mocha test/21, 22, 40 on cuda          SKIPPED (no node, addon or dist)")
fi
if command -v compute-sanitizer >/dev/null; then
  step "sanitizer memcheck: harness --small" 80 "$out/sanitizer.log" compute-sanitizer --tool memcheck --error-exitcode 9 "$harness" --small
  # racecheck follows barriers and cp.async, not the bulk tensor copies' mbarriers: the TMA phase
  # runs under memcheck only
  step "sanitizer racecheck: harness --small" 80 "$out/sanitizer.log" compute-sanitizer --tool racecheck --error-exitcode 9 "$harness" --small \
    --phase gemm --phase wgmma --phase select --phase retrieve
  ((have_node)) && step "sanitizer memcheck: one addon request" 45 "$out/sanitizer.log" \
    compute-sanitizer --tool memcheck --error-exitcode 9 node "$root/scripts/gpu-one-request.mjs"
else
  echo "compute-sanitizer not found" >>"$out/sanitizer.log"
  rows+=("sanitizers                             SKIPPED (not installed)")
fi
# the GEMMs launched as programmatic dependents (ADRANK_CUDA_PDL, process-wide): every GEMM case
# again, validation only (beside the mocha step, like the sanitizers)
step "harness --quick, ADRANK_CUDA_PDL=1" 60 "$out/harness-pdl.log" env ADRANK_CUDA_PDL=1 "$harness" --quick
if ((have_node)); then
  wait "$mocha_pid" || status=1
  while IFS= read -r row; do rows+=("$row"); done <"$work/mocha.row" 2>/dev/null || rows+=("mocha: no result")
fi

# 5. what a user sees: served Rank(100) and Rank(1,000) from a separate client process
if ((have_node && !quick)) && ! skip e2e; then
  # Rank(100) and Rank(1,000) at c = 1, 16 and 64: 6 cells of 4 + 1 s (#22's GPU targets: served
  # Rank(1,000) p50 <= 0.5 ms at c = 1, Rank(100) >= 20,000 req/s at c = 64)
  step "gRPC Rank(100,1000) c=1,16,64" 75 "$out/e2e.log" bash -c "cd '$root' && node dist/src/cli/main.js bench \
    --server gpu='--device cuda' --server-flags '--demo --demo-ads 100000 --metrics-port 0' \
    --candidates 100,1000 --k 100 -c 1,16,64 --duration 4 --warmup 1 --json >'$out/e2e.json'"
fi

# 6. front-end threads on this host's cores (#22's target: 8 threads >= 5x the calls/s of 1 on
# >= 8 cores): a tiny model on the CPU backend, no GPU; last, alone, so nothing else loads the host
if ((have_node && !quick)) && ! skip frontend && (($(nproc) >= 8)); then
  step "front-end threads 1, 8 (CPU, tiny model)" 45 "$out/e2e.log" bash -c "cd '$root' && node dist/bench/frontend.js \
    --threads 1,8 --clients 8 --connections 4 --concurrency 32 --duration 6 --warmup 2"
fi

# 7. an Nsight Systems summary (NVTX ranges, kernels) of the served path, where nsys is on the PATH
# (scripts/profile.sh; the report stays in the work folder, its text summary goes to $OUT)
if ((have_node && !quick)) && ! skip nsys; then
  if command -v nsys >/dev/null; then
    step "nsys summary (scripts/profile.sh 40)" 60 "$out/e2e.log" bash -c "cd '$root' && OUT='$work/profile' bash scripts/profile.sh 40 cuda \
      && cp '$work/profile/profile.txt' '$out/nsys.txt'"
  else
    rows+=("$(printf '%-38s %-14s' "nsys summary" "SKIPPED (no nsys on the PATH)")")
  fi
fi

# 8. ten million ads on the device (#24): the demo bundle written here, served with --device cuda
# (the mapped bundle uploaded without a second host copy), then Retrieve calls: time to SERVING,
# the server's load time and device line (how long the upload took), resident memory against the
# file. Last: it needs the most time, and a run short of budget skips it
if ((have_node && !quick)) && ! skip 10m; then
  step "10M ads on the device (bench:scale)" 170 "$out/e2e.log" bash -c "cd '$root' && node dist/bench/scale.js \
    --ads 10000000 --device cuda --load-only --retrieves 50 --dir '$work/scale' --delete"
fi

{
  echo "== steps (${SECONDS}s in all)"
  printf '%s\n' "${rows[@]}"
  grep -h -E "FAIL|mismatch|ERROR SUMMARY|RACECHECK SUMMARY|passing|failing|pending" \
    "$out/harness.log" "$out/harness-pdl.log" "$out/mocha.log" "$out/sanitizer.log" 2>/dev/null | head -40
  if ((!quick)); then
    grep -h -E "^path |scan .* us|one-pass .* us|fp8 with exact|rescored|one-pass = |^adrank cuda graph: " "$out/bench.log" "$out/harness.log" 2>/dev/null
    echo "== new path switches: $new_env"
    python3 "$root/scripts/gpu-table.py" "$out/bench.log" "$out/peer.log" "$out/harness.log"
    echo "== served (gRPC)"
    python3 "$root/scripts/gpu-compare.py" /dev/null /dev/null "$out/e2e.json" | sed -n '/gRPC/,$p'
    echo "== 10M ads on the device (bench:scale --load-only)"
    grep -E '^\| [0-9,]+ \||^bench:scale' "$out/e2e.log" 2>/dev/null | tail -3
    echo "== front-end threads (CPU backend, tiny model, this host)"
    grep -E '^\| [0-9]+ \||^front-end threads|client processes' "$out/e2e.log" 2>/dev/null | tail -5
  fi
  echo "== done: status $status, outputs in $out"
} 2>&1 | tee -a "$out/summary.txt"
exit $status
