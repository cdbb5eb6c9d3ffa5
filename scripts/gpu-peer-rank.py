"""Like-for-like PyTorch peer for scripts/gpu-check.sh: the WHOLE Rank model of scripts/reference on
the GPU in bf16, on the bundle and the requests that scripts/gpu-bench.mjs wrote (the engine's own
inputs), eager and torch.compile (mode="reduce-overhead": CUDA graphs).

One Rank = the request's ids H2D (pinned, async), the request side (sequence encoder, u, the
surface's calibration and task weights), the candidate gather, target attention, MaskNet, DCNv2, the
MLP, the heads, calibration, utility, a top-(K+1) and the GSP prices, and the winners D2H. The
per-ad parts that the engine precomputes at load (the ad vector a_c, L2n(e_c) and the target
attention query W_ta L2n(e_c) + b) are precomputed here too. Not done here and done by the engine:
id → row lookup, eligibility, the per-advertiser cap (the uncapped requests are timed), ties by ad id.

Also: torch.topk(E @ q) over each retrieve-N bundle (bf16), and torch.matmul at the demo layer shapes
on real data: the activations of the Rank(1,000) request, layer by layer, so no GEMM is timed on
zeros. Prints one "RESULT {json}" line per measurement (median µs over CUDA events).

  python3 scripts/gpu-peer-rank.py DIR        (DIR as gpu-bench.mjs --dir)
"""
import glob, json, os, sys, traceback

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from scripts.reference.bundle import import_bundle  # noqa: E402
from scripts.reference.model import Request, l2n, mlp_forward  # noqa: E402

dev, dt = "cuda", torch.bfloat16
torch.backends.cuda.matmul.allow_tf32 = True


def med_us(fn, runs=50):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    t = []
    for _ in range(runs):
        s.record(); fn(); e.record(); e.synchronize(); t.append(s.elapsed_time(e) * 1000)
    t.sort()
    return t[len(t) // 2]


def res(name, us, **kw):
    print("RESULT " + json.dumps(dict(name=name, us=round(us, 2), **kw)), flush=True)


class RankPeer(torch.nn.Module):
    def __init__(self, model, ads, config):
        super().__init__()
        self.m = model.to(dev, dt).eval()
        self.cfg = config
        with torch.no_grad():
            emb = ads.embedding.to(dev, dt)
            self.a_all = self.m.ad_vector(ads.dense.to(dev, dt), ads.sparse.to(dev), emb)  # [N, da]
            self.q_all = self.m.target_attention.query(l2n(emb))                           # [N, d_s]
            self.bid = ads.bid.to(dev, dt)
            self.ad_id = ads.id.to(dev)

    def forward(self, rows, user_dense, user_emb, items, actions, sparse_rows, surface, k: int, reserve: float):
        m = self.m
        # request side
        h = m.sequence(items, actions)
        parts = [m.features.user_dense(user_dense)]
        for f, r in zip(self.cfg["user_sparse"], sparse_rows):
            table = m.features.user_sparse[f["name"]]
            parts.append(l2n(table[r].mean(dim=0)) if r.numel() else torch.zeros(f["dim"], device=dev, dtype=dt))
        parts.append(l2n(user_emb))
        parts.append(l2n(h.mean(dim=0)))
        parts.append(m.features.surface[surface])
        u = torch.cat(parts)
        scale, bias, w = m.calibration.scale[surface], m.calibration.bias[surface], m.utility.task_weights[surface]
        # candidates
        a = self.a_all[rows]
        q = self.q_all[rows]
        att = torch.softmax(q @ h.t() / (h.shape[1] ** 0.5), dim=-1) @ h
        x = torch.cat([u.unsqueeze(0).expand(a.shape[0], -1), a, att], dim=-1)
        hid = mlp_forward(m.mlp, m.dcn(m.masknet(x)), relu_last=True)
        probs = torch.sigmoid(scale * m.heads(hid) + bias)
        value = (probs @ w).float()
        util = self.bid[rows].float() * value
        top = torch.topk(util, min(k + 1, util.shape[0]))
        win = top.indices[:k]
        nxt = top.values[1:k + 1]
        if nxt.shape[0] < win.shape[0]:
            nxt = torch.cat([nxt, torch.full((win.shape[0] - nxt.shape[0],), float("nan"), device=dev)])
        bid_w = self.bid[rows][win].float()
        price = torch.where(torch.isnan(nxt), torch.minimum(bid_w, torch.full_like(bid_w, reserve)),
                            torch.minimum(bid_w, torch.clamp_min(nxt / value[win], reserve)))
        return torch.stack([self.ad_id[rows][win].float(), top.values[:k], price])


def rank_inputs(peer, ads, req, config):
    index = {int(a): i for i, a in enumerate(ads.id.tolist())}
    rows = [index[c] for c in req.candidates if c in index]
    rows = list(dict.fromkeys(rows))
    n = min(len(req.seq_items), config["sequence"]["max_len"])
    sparse = [torch.tensor([i % f["cardinality"] for i in ids], dtype=torch.int64, device=dev)
              for f, ids in zip(config["user_sparse"], req.user_sparse)]
    host_rows = torch.tensor(rows, dtype=torch.int64).pin_memory()
    return host_rows, dict(
        user_dense=torch.tensor(req.user_dense, device=dev, dtype=dt),
        user_emb=torch.tensor(req.user_embedding, device=dev, dtype=dt),
        items=torch.tensor(req.seq_items[:n], dtype=torch.int64, device=dev),
        actions=torch.tensor(req.seq_actions[:n], dtype=torch.int64, device=dev),
        sparse_rows=sparse, surface=req.surface, k=req.k, reserve=float(req.reserve))


def main(d):
    reqs = json.load(open(os.path.join(d, "requests.json")))
    model, config, ads = import_bundle(os.path.join(d, "rank.safetensors"))
    peer = RankPeer(model, ads, config)
    gemm_inputs = {}
    # Rank(1,000) first, then 10,000 (the two sizes with targets), then 100: each size compiles anew
    order = {"rank-1000": 0, "rank-10000": 1, "rank-100": 2}
    for name in sorted((k for k in reqs if k in order), key=order.get):
        req = Request.from_json(reqs[name])
        host_rows, kw = rank_inputs(peer, ads, req, config)
        rows = torch.empty_like(host_rows, device=dev)
        out_host = torch.empty((3, min(req.k, len(host_rows))), dtype=torch.float32).pin_memory()

        def call(f):
            def run():
                rows.copy_(host_rows, non_blocking=True)
                out_host.copy_(f(rows, **kw), non_blocking=True)
            return run
        n = int(name.split("-")[1])
        with torch.no_grad():
            eager = med_us(call(peer.forward))
            res("peer_rank_eager", eager, n=n, k=req.k, rows=len(host_rows))  # kept if the compile below runs out of time
            compiled = float("nan")
            try:
                comp = torch.compile(peer.forward, mode="reduce-overhead", dynamic=False)
                for _ in range(3):
                    call(comp)()
                compiled = med_us(call(comp))
            except Exception as ex:  # no triton, or a compile failure: say so, keep the eager figure
                print(f"torch.compile failed for {name}: {type(ex).__name__}: {ex}", flush=True)
        res("peer_rank", compiled, n=n, k=req.k, eager_us=round(eager, 2), rows=len(host_rows))
        if n == 1000:
            gemm_inputs = layer_inputs(peer, rows, kw)
    gemm_real(peer, gemm_inputs)
    for f in sorted(glob.glob(os.path.join(d, "retrieve-*.safetensors"))):
        try:
            _, _, rads = import_bundle(f)
            E = rads.retrieval.to(dev, dt)
            q = torch.nn.functional.normalize(torch.randn(E.shape[1], device=dev), dim=0).to(dt)
            del rads
            for K in (1000, 100):
                res("peer_retrieve", med_us(lambda: torch.topk((E @ q).float(), K), runs=20), N=E.shape[0], dim=E.shape[1], K=K)
            del E
            torch.cuda.empty_cache()
        except Exception as ex:
            print(f"retrieval peer skipped for {f}: {type(ex).__name__}: {ex}", flush=True)


def layer_inputs(peer, rows, kw):
    """The real activations entering each candidate layer for Rank(1,000), bf16."""
    m = peer.m
    acts = {}
    with torch.no_grad():
        hooks = []
        for name, mod in m.named_modules():
            if isinstance(mod, torch.nn.Linear) and (name.startswith(("masknet", "dcn", "mlp", "heads"))):
                hooks.append(mod.register_forward_hook(lambda mod, i, o, name=name: acts.setdefault(name, (mod, i[0].detach().clone()))))
        peer.forward(rows, **kw)
        for h in hooks:
            h.remove()
    return acts


def gemm_real(peer, acts):
    """torch.matmul per candidate layer on its real input (rows of Rank(1,000), tiled to 10,000 too)."""
    for name, (mod, x) in sorted(acts.items()):
        if x.dim() != 2:
            continue
        W = mod.weight.t().contiguous()
        for m_rows in (x.shape[0], 10000):
            a = x.repeat((m_rows + x.shape[0] - 1) // x.shape[0], 1)[:m_rows].contiguous()
            us = med_us(lambda: torch.matmul(a, W))
            res("peer_gemm", us, layer=name, m=m_rows, n=W.shape[1], k=W.shape[0],
                tflops=round(2 * m_rows * W.shape[0] * W.shape[1] / us / 1e6, 2), nonzero=round(float((a != 0).float().mean()), 3))


if __name__ == "__main__":
    try:
        main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/adrank-gpu-bench")
    except Exception:
        traceback.print_exc()
        sys.exit(1)
