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
# one step and not the run; the whole script ends inside 9 minutes (about 4 when all is well):
#   1. harness: the kernels against CPU references, then their timings, alone on the GPU
#   2. the PyTorch peer (scripts/gpu-peer.py), same shapes, same GPU, alone on it
#   3. test/21 and test/40 through the addon on cuda, and test/22 (injected capture failures and
#      hung streams) through its test-hooks build, beside compute-sanitizer (memcheck and
#      racecheck on the harness --small, memcheck on one addon request: scripts/gpu-one-request.mjs)
#   4. Rank(1,000) served over gRPC to a separate client process, concurrency 1 and 16
# Outputs go to $OUT when set (else $TMPDIR/adrank-gpu-check), seven files at most: summary.txt
# (the machine, the step table and the comparison, printed last), harness.log, peer.log,
# mocha.log, sanitizer.log, e2e.json, e2e.log. Binaries go to a work folder, never to $OUT or build/.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${OUT:-${TMPDIR:-/tmp}/adrank-gpu-check}"
work="${TMPDIR:-/tmp}/adrank-gpu-work"
mkdir -p "$out" "$work"
quick=0
[[ "${1:-}" == "--quick" ]] && quick=1
scale="${GPU_CHECK_SCALE:-1}"
status=0
rows=()
skip() { [[ " ${GPU_CHECK_SKIP:-} " == *" $1 "* ]]; }

# step NAME SECONDS LOG CMD...: CMD under a time limit, its output appended to LOG; one table row
step() {
  local name=$1 limit=$(($2 * scale)) log=$3
  shift 3
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
for t in ("dist.tar.xz", "modules.tar.xz"):
    with tarfile.open(os.path.join(kit, t)) as tf:
        tf.extractall(root)
print(open(os.path.join(kit, "MANIFEST")).read().strip())
PY
  export PATH="$work:$PATH"
fi

harness="$work/harness"
if [[ ! -x "$harness" ]]; then
  echo "== build harness (nvcc, for the GPU present)"
  nvcc -std=c++17 -O3 -arch=native --expt-relaxed-constexpr -lineinfo -I "$root/native" \
    "$root/native/kernels/cuda/harness/harness.cu" "$root/native/kernels/cuda/"*.cu -o "$harness" 2>&1 | tail -20
  [[ -x "$harness" ]] || { echo "harness build FAILED"; exit 1; }
fi

# 1. the kernels alone
if ((quick)); then step "harness --quick" 100 "$out/harness.log" "$harness" --quick
else step "harness (validation + timings)" 120 "$out/harness.log" "$harness"; fi

# 2. the peer, alone on the GPU
((quick)) || skip peer || step "PyTorch peer" 120 "$out/peer.log" env PYTHONUNBUFFERED=1 python3 "$root/scripts/gpu-peer.py"

# 3. correctness through the addon, beside the sanitizers (no timings are read in this step)
have_node=0
command -v node >/dev/null && [[ -f "$root/build/Release/adrank.node" && -d "$root/dist/test" ]] && have_node=1
if ((have_node)); then
  node -e "console.log(JSON.stringify(require('$root/build/Release/adrank.node').capabilities()))" >>"$out/summary.txt" 2>&1
  (step "mocha test/21, 22, 40 on cuda" 220 "$out/mocha.log" bash -c "cd '$root' && ADRANK_PARITY_DEVICE=cuda \
      node node_modules/mocha/bin/mocha.js --no-config --timeout 300000 dist/test/21.kernels-gpu.test.js \
      dist/test/22.cuda-faults.test.js dist/test/40.parity.test.js"
   rc=$?
   echo "${rows[-1]}" >"$work/mocha.row"
   exit $rc) &
  mocha_pid=$!
else
  echo "skipped: node, build/Release/adrank.node or dist/test missing" | tee "$out/mocha.log"
  rows+=("mocha test/21, 22, 40 on cuda          SKIPPED (no node, addon or dist)")
fi
if command -v compute-sanitizer >/dev/null; then
  step "sanitizer memcheck: harness --small" 80 "$out/sanitizer.log" compute-sanitizer --tool memcheck --error-exitcode 9 "$harness" --small
  step "sanitizer racecheck: harness --small" 80 "$out/sanitizer.log" compute-sanitizer --tool racecheck --error-exitcode 9 "$harness" --small
  ((have_node)) && step "sanitizer memcheck: one addon request" 45 "$out/sanitizer.log" \
    compute-sanitizer --tool memcheck --error-exitcode 9 node "$root/scripts/gpu-one-request.mjs"
else
  echo "compute-sanitizer not found" >>"$out/sanitizer.log"
  rows+=("sanitizers                             SKIPPED (not installed)")
fi
if ((have_node)); then
  wait "$mocha_pid" || status=1
  rows+=("$(cat "$work/mocha.row" 2>/dev/null || echo 'mocha: no result')")
fi

# 4. what a user sees: served Rank(1,000) from a separate client process
if ((have_node && !quick)) && ! skip e2e; then
  step "gRPC Rank(1000) c=1,16" 75 "$out/e2e.log" bash -c "cd '$root' && node dist/src/cli/main.js bench \
    --server gpu='--device cuda' --server-flags '--demo --demo-ads 100000 --metrics-port 0' \
    --candidates 1000 --k 100 -c 1,16 --duration 8 --warmup 3 --json >'$out/e2e.json'"
fi

{
  echo "== steps (${SECONDS}s in all)"
  printf '%s\n' "${rows[@]}"
  grep -h -E "FAIL|mismatch|ERROR SUMMARY|RACECHECK SUMMARY|passing|failing|pending" \
    "$out/harness.log" "$out/mocha.log" "$out/sanitizer.log" 2>/dev/null | head -40
  if ((!quick)); then
    echo "== engine vs peer (median µs; same run, same device)"
    python3 "$root/scripts/gpu-compare.py" "$out/harness.log" "$out/peer.log" "$out/e2e.json"
  fi
  echo "== done: status $status, outputs in $out"
} 2>&1 | tee -a "$out/summary.txt"
exit $status
