"""Before/after table for scripts/gpu-check.sh:

  python3 gpu-table.py bench.log peer-rank.log [harness.log]

bench.log holds the RESULT lines of scripts/gpu-bench.mjs for both paths (old: every switch off, new:
every switch on), peer-rank.log those of scripts/gpu-peer-rank.py. Per size: the engine's GPU time
(start to end event of the request, median µs) on each path, new/old, whether both paths gave the
same answers, and the PyTorch peer (eager and torch.compile with CUDA graphs) against the new path.
harness.log adds the GEMM tile comparison at 1,024 rows (fill vs shape policy) and the harness's
GEMMs on real data against torch.matmul on the same shapes."""
import json, sys


def results(path):
    out = []
    try:
        for line in open(path):
            if line.startswith("RESULT "):
                out.append(json.loads(line[7:]))
    except FileNotFoundError:
        pass
    return out


bench = results(sys.argv[1])
peer = results(sys.argv[2]) if len(sys.argv) > 2 else []
harness = results(sys.argv[3]) if len(sys.argv) > 3 else []


def size_key(r):
    return (r["name"], r.get("n"), r.get("N"), r.get("cap", 0))


paths = {}
for r in bench:
    paths.setdefault(size_key(r), {})[r["path"]] = r
nan = float("nan")


def f(v, w=9, p=1):
    return f"{v:{w}.{p}f}" if isinstance(v, (int, float)) and v == v else f"{'-':>{w}}"


print("== whole request on the GPU: start to end event, median µs (old = switches off, new = on)")
print(f"{'what':22} {'old':>9} {'new':>9} {'new/old':>8} {'same':>5} {'wall old':>9} {'wall new':>9} "
      f"{'eager':>9} {'compiled':>9} {'comp/new':>9}")
for key in sorted(paths, key=lambda k: (k[0], k[1] or 0, k[2] or 0, k[3])):
    p = paths[key]
    o, n = p.get("old", {}), p.get("new", {})
    name, cnt, N, cap = key
    label = f"{name} {cnt or N}" + (f" cap {cap}" if cap else "")
    old_us, new_us = o.get("device_us", nan), n.get("device_us", nan)
    same = "yes" if o.get("digest") and o.get("digest") == n.get("digest") else ("NO" if o and n else "-")
    def peer_us(what, **match):
        r = next((r for r in peer if r["name"] == what and all(r.get(k) == v for k, v in match.items())), None)
        return r["us"] if r else nan
    if name.startswith("rank") and not cap:
        eager, comp = peer_us("peer_rank_eager", n=cnt), peer_us("peer_rank", n=cnt)
    elif name == "retrieve":
        eager = comp = peer_us("peer_retrieve", N=N, K=1000)
    else:
        eager = comp = nan
    print(f"{label:22} {f(old_us)} {f(new_us)} {f(new_us / old_us if old_us else nan, 8, 2)} {same:>5} "
          f"{f(o.get('wall_us', nan))} {f(n.get('wall_us', nan))} {f(eager)} {f(comp)} {f(comp / new_us if new_us else nan, 9, 2)}")
print("  comp/new > 1: the engine's new path is faster than torch.compile on the same bundle and inputs")


def target(label, key, limit_us, ratio):
    n = paths.get(key, {}).get("new", {})
    us = n.get("device_us", nan)
    comp = next((r["us"] for r in peer if r["name"] == "peer_rank" and r.get("n") == key[1]), nan)
    r = comp / us if us == us and us else nan
    met = [f"{'met' if 0 < us <= limit_us else 'SHORT'} (≤ {limit_us} µs: {f(us, 1)})" if limit_us else "",
           f"{'met' if r >= ratio else 'SHORT'} (≥ {ratio}× torch.compile: {f(r, 1, 2)}×)" if r == r else "no peer figure"]
    print(f"  target {label}: " + "; ".join(x for x in met if x))


print("== design targets (new path, this GPU)")
target("Rank(1,000)", ("rank", 1000, None, 0), 60, 2.0)
target("Rank(10,000)", ("rank", 10000, None, 0), 0, 1.3)
for key, p in sorted(paths.items(), key=lambda kv: str(kv[0])):
    for path, r in sorted(p.items()):
        print(f"  stages {key[0]} {key[1] or key[2]} {path}: {json.dumps(r.get('stages', {}))}")

def section(rows, title, line):
    """A titled block of one line per RESULT row, printed only when there are rows."""
    if rows:
        print(title)
        for r in rows:
            print(line(r))


def shape(r):
    return (r["m"], r["n"], r["k"], r.get("batch", 1))


wg = {shape(r): r for r in harness if r["name"] == "gemm_wgmma"}
wgt = {shape(r): r for r in harness if r["name"] == "gemm_wgmma_tma"}
section([r for r in harness if r["name"] == "gemm_tile"],
        "== GEMM tile policy at the harness's shapes (median µs on random non-zero data)\n"
        f"{'m':>6} {'n':>6} {'k':>6} {'batch':>5} {'fill':>9} {'shape':>9} {'big':>9} {'small':>9} {'wgmma':>9} {'+tma':>9} {'chosen':>7}",
        lambda r: f"{r['m']:6} {r['n']:6} {r['k']:6} {r.get('batch', 1):5} {f(r.get('fill_us'))} {f(r.get('shape_us'))} "
                  f"{f(r.get('big_us'))} {f(r.get('small_us'))} {f(wg.get(shape(r), {}).get('us', nan))} "
                  f"{f(wgt.get(shape(r), {}).get('us', nan))} "
                  f"{r.get('shape_choice', '-'):>7}")
section([r for r in harness if r["name"] == "demo_chain"],
        "== the demo model's GEMM chain in the harness (random activations): mma.sync vs wgmma",
        lambda r: f"  m={r['m']:<6} {r.get('kernel', 'mma.sync'):9} {f(r['us'])} µs {f(r['tflops'], 7)} TFLOP/s")
section([r for r in harness if r["name"] == "epilogue"],
        "== selection + result block: old path (order keys, radix rounds, results kernel) vs the single-CTA epilogue (µs)",
        lambda r: f"  n={r['n']:<6} K={r['K']:<5} cap={r['cap']}  old {f(r['old_us'])}  epilogue {f(r['new_us'])}  "
                  f"old/epilogue {f(r['old_us'] / r['new_us'] if r['new_us'] else nan, 5, 2)}")
section([r for r in peer if r["name"] == "peer_gemm"],
        "== torch.matmul on the Rank(1,000) request's real layer inputs",
        lambda r: f"  {r['layer']:28} m={r['m']:<6} n={r['n']:<5} k={r['k']:<5} {f(r['us'])} µs {f(r['tflops'], 7)} TFLOP/s "
                  f"(nonzero {r.get('nonzero')})")
one = {(r["N"], r["K"]): r for r in harness if r["name"] == "retrieve_onepass"}
fp8 = {(r["N"], r["K"]): r for r in harness if r["name"] == "retrieve_fp8"}
section([r for r in harness if r["name"] == "retrieve"],
        "== Retrieve in the harness (median µs): scan + selection vs the one-pass retrieval (ADRANK_CUDA_RETRIEVE_ONEPASS), "
        "torch.topk(E @ q) on the same GPU",
        lambda r: f"  N={r['N']:<9} K={r['K']:<5} cap={r['cap']}  scan+select {f(r['us'])}  one-pass {f(one.get((r['N'], r['K']), {}).get('us', nan))}  "
                  f"torch.topk {f(next((p['us'] for p in peer if p['name'] == 'peer_retrieve' and p.get('N') == r['N'] and p.get('K') == r['K']), nan))}  "
                  f"one-pass at {f(2.0 * r['N'] * r['dim'] / (one[(r['N'], r['K'])]['us'] * 1e-6) / 1e9 / r['bw_gbs'] * 100 if (r['N'], r['K']) in one else nan, 4, 0)}% "
                  f"of the measured copy bandwidth; fp8 + rescoring {f(fp8.get((r['N'], r['K']), {}).get('us', nan))} "
                  f"({fp8.get((r['N'], r['K']), {}).get('rescored', '-')} rescored)")
