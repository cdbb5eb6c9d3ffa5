#!/usr/bin/env bash
# GPU check, for a machine with an NVIDIA GPU (sm_80 or newer; the harness is compiled for the GPU
# present). Nothing under native/kernels/cuda has run before this script runs it (docs/cuda.md).
# On a machine without Node.js, carry .gpu-kit/ (bash scripts/gpu-kit.sh, on the build machine):
# this script unpacks node, the CUDA addon, dist/ and node_modules from it first.
#
#   scripts/gpu-check.sh            harness (validation + timings), addon GPU tests when node and
#                                   the built addon are present, PyTorch peer, comparison table
#   scripts/gpu-check.sh --quick    harness validation only (no 10M-ad retrieval, no peer)
#
# Outputs go to $OUT when set (else $TMPDIR/adrank-gpu-check): harness.log, mocha.log, peer.log,
# nvidia-smi.txt, summary.txt. Builds into that directory, never into build/.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${OUT:-${TMPDIR:-/tmp}/adrank-gpu-check}"
mkdir -p "$out"
quick=0
[[ "${1:-}" == "--quick" ]] && quick=1
status=0

echo "== machine" | tee "$out/summary.txt"
{ date -u; uname -a; nvidia-smi || echo "nvidia-smi not found"; nvcc --version | tail -1; } > "$out/nvidia-smi.txt" 2>&1
head -20 "$out/nvidia-smi.txt"

if ! command -v node >/dev/null && [[ -d "$root/.gpu-kit" ]]; then
  echo "== unpacking .gpu-kit (node, CUDA addon, dist/, node_modules/)"
  mkdir -p "$out/kit-bin"
  python3 - "$root/.gpu-kit" "$out/kit-bin" "$root" <<'PY'
import lzma, os, shutil, sys, tarfile
kit, bindir, root = sys.argv[1:4]
def unxz(src, dst, mode):
    with lzma.open(os.path.join(kit, src)) as f, open(dst, "wb") as o:
        shutil.copyfileobj(f, o)
    os.chmod(dst, mode)
unxz("node.xz", os.path.join(bindir, "node"), 0o755)
os.makedirs(os.path.join(root, "build", "Release"), exist_ok=True)
unxz("adrank.node.xz", os.path.join(root, "build", "Release", "adrank.node"), 0o755)
for t in ("dist.tar.xz", "modules.tar.xz"):
    with tarfile.open(os.path.join(kit, t)) as tf:
        tf.extractall(root)
print(open(os.path.join(kit, "MANIFEST")).read().strip())
PY
  export PATH="$out/kit-bin:$PATH"
fi

echo "== build harness (nvcc, for the GPU present)"
nvcc -std=c++17 -O3 -arch=native --expt-relaxed-constexpr -lineinfo -I "$root/native" \
  "$root/native/kernels/cuda/harness/harness.cu" "$root/native/kernels/cuda/gemm_bf16.cu" \
  "$root/native/kernels/cuda/forward.cu" "$root/native/kernels/cuda/funnel.cu" \
  -o "$out/harness" 2>&1 | tee "$out/build.log"
if [[ ! -x "$out/harness" ]]; then echo "harness build FAILED"; exit 1; fi

echo "== harness"
if (( quick )); then "$out/harness" --quick 2>&1 | tee "$out/harness.log"; else "$out/harness" 2>&1 | tee "$out/harness.log"; fi
[[ ${PIPESTATUS[0]} -eq 0 ]] || status=1

echo "== addon GPU tests"
if command -v node >/dev/null && [[ -f "$root/build/Release/adrank.node" ]]; then
  node -e "console.log(JSON.stringify(require('$root/build/Release/adrank.node').capabilities()))" 2>&1 | tee "$out/capabilities.json"
  # the compiled tests (dist/test, from tsc or the kit): no TypeScript loader needed on the device
  [[ -d "$root/dist/test" ]] || (cd "$root" && npx tsc -p tsconfig.json)
  tests=()
  for t in dist/test/21.kernels-gpu.test.js dist/test/40.parity.test.js; do [[ -f "$root/$t" ]] && tests+=("$t"); done
  if (( ${#tests[@]} )); then
    (cd "$root" && ADRANK_PARITY_DEVICE=cuda node node_modules/mocha/bin/mocha.js --no-config --timeout 300000 "${tests[@]}") 2>&1 | tee "$out/mocha.log"
    [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
  else
    echo "no GPU test files found" | tee "$out/mocha.log"
  fi
else
  echo "skipped: node or build/Release/adrank.node missing (build with npm run build:native on this machine)" | tee "$out/mocha.log"
fi

if (( ! quick )); then
  echo "== PyTorch peer (same layer shapes, bf16)"
  if python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    python3 - <<'PY' 2>&1 | tee "$out/peer.log"
import json, torch
torch.backends.cuda.matmul.allow_tf32 = True
dev = "cuda"

def med_us(fn, runs=20):
    fn(); torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    t = []
    for _ in range(runs):
        s.record(); fn(); e.record(); e.synchronize(); t.append(s.elapsed_time(e) * 1000)
    t.sort(); return t[len(t) // 2]

def res(name, us, **kw):
    print("RESULT " + json.dumps(dict(name=name, us=round(us, 2), **kw)))

# Per-shape GEMM (unpadded demo shapes; the harness runs K/N padded as the backend does).
for m in (1000, 10000):
    for n, k in ((2136, 164), (356, 712), (512, 356), (1536, 1536), (256, 1536)):
        a = torch.randn(m, k, device=dev, dtype=torch.bfloat16); w = torch.randn(n, k, device=dev, dtype=torch.bfloat16)
        us = med_us(lambda: a @ w.t())
        res("gemm", us, m=m, n=n, k=k, tflops=round(2 * m * n * k / us / 1e6, 2))

# The candidate layer chain: MaskNet (3 blocks), 4 cross layers, MLP [256, 128], heads.
class Chain(torch.nn.Module):
    def __init__(s, d=356, da=164, h=712, o=512, B=3, D=1536):
        super().__init__()
        s.B, s.h = B, h
        s.m1 = torch.nn.Linear(da, B * h); s.m2 = torch.nn.ModuleList(torch.nn.Linear(h, d) for _ in range(B))
        s.proj = torch.nn.ModuleList(torch.nn.Linear(d, o, bias=False) for _ in range(B))
        s.norm = torch.nn.ModuleList(torch.nn.LayerNorm(o) for _ in range(B))
        s.cross = torch.nn.ModuleList(torch.nn.Linear(D, D) for _ in range(4))
        s.mlp = torch.nn.Sequential(torch.nn.Linear(D, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128), torch.nn.ReLU())
        s.heads = torch.nn.Linear(128, 4)
    def forward(s, xa, xhat):
        hid = torch.relu(s.m1(xa)).split(s.h, dim=1)
        x0 = torch.cat([torch.relu(s.norm[i](s.proj[i](xhat * s.m2[i](hid[i])))) for i in range(s.B)], dim=1)
        x = x0
        for c in s.cross: x = x0 * c(x) + x
        return torch.sigmoid(s.heads(s.mlp(x)))

for m in (1000, 10000):
    net = Chain().to(dev, torch.bfloat16).eval()
    xa = torch.randn(m, 164, device=dev, dtype=torch.bfloat16); xh = torch.randn(m, 356, device=dev, dtype=torch.bfloat16)
    with torch.no_grad():
        eager = med_us(lambda: net(xa, xh))
        try:
            comp = torch.compile(net, mode="reduce-overhead")
            for _ in range(3): comp(xa, xh)
            compiled = med_us(lambda: comp(xa, xh))
        except Exception as ex:  # no triton / compile failure: CUDA graph of the eager module
            print("torch.compile unavailable:", ex)
            g = torch.cuda.CUDAGraph(); s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s): net(xa, xh)
            torch.cuda.current_stream().wait_stream(s)
            with torch.cuda.graph(g): net(xa, xh)
            compiled = med_us(g.replay)
    res("demo_chain", compiled, m=m, eager_us=round(eager, 2))

# Retrieval: torch.topk(E @ q) over 10M x 128 bf16, K = 1000.
try:
    E = torch.randn(10_000_000, 128, device=dev, dtype=torch.bfloat16); q = torch.randn(128, device=dev, dtype=torch.bfloat16)
    res("retrieve", med_us(lambda: torch.topk((E @ q).float(), 1000)), N=10_000_000, dim=128, K=1000)
except RuntimeError as ex:
    print("retrieval peer skipped:", ex)
PY
  else
    echo "skipped: python3 with CUDA-enabled torch not found" | tee "$out/peer.log"
  fi

  echo "== engine vs peer (median µs; same run, same device)" | tee -a "$out/summary.txt"
  python3 - "$out/harness.log" "$out/peer.log" <<'PY' | tee -a "$out/summary.txt"
import json, sys
def load(p):
    r = {}
    try:
        for line in open(p):
            if line.startswith("RESULT "):
                d = json.loads(line[7:])
                key = (d["name"], d.get("m"), d.get("n"), d.get("N"))
                r[key] = d
    except FileNotFoundError: pass
    return r
eng, peer = load(sys.argv[1]), load(sys.argv[2])
# Harness GEMMs run padded N/K; match them to the peer's unpadded shape by (m, row order).
pad = {2136: 2136, 360: 356, 512: 512, 1536: 1536, 256: 256}
print(f"{'what':34} {'engine us':>10} {'peer us':>10} {'peer/engine':>12}")
for (name, m, n, N), d in sorted(eng.items(), key=lambda kv: str(kv[0])):
    pk = (name, m, pad.get(n, n) if n else None, N)
    p = peer.get(pk)
    label = f"{name} m={m}" + (f" n={n} k={d.get('k')}" if n else "") + (f" N={N}" if N else "")
    pu = p["us"] if p else float("nan")
    print(f"{label:34} {d['us']:10.1f} {pu:10.1f} {pu / d['us'] if p else float('nan'):12.2f}")
PY
fi
echo "== done: status $status, outputs in $out"
exit $status
