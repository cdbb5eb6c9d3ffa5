"""Engine vs PyTorch peer table for scripts/gpu-check.sh: python3 gpu-compare.py harness.log peer.log [e2e.json]."""
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
if len(sys.argv) > 3:
    try:
        doc = json.load(open(sys.argv[3]))
        cells = doc["cells"] if isinstance(doc, dict) else doc
    except Exception as ex:
        print("gRPC: no result:", ex)
        sys.exit(0)
    print("gRPC Rank, K=100, served, from a separate client process (µs)")
    for c in cells:
        l = c["latency"]
        print(f"  {c.get('label', 'c=' + str(c['concurrency'])):<28} {c['throughput']:8.0f} req/s  p50 {l['p50']:8.0f}  p99 {l['p99']:8.0f}  errors {c.get('errors')}")
