#!/usr/bin/env python3
"""Exports the ranking model of a bundle to ONNX, for the CPU benchmark against ONNX Runtime
(docs/design.md §8: "CPU fallback, Rank of 1,000, 2 cores: at least the throughput of ONNX Runtime").

The ONNX graph is the per-candidate part of docs/design.md §4 (the part whose cost grows with the
candidate count); the request side (user features, sequence encoder, user tower) runs once per
request and is fed in as vectors, like the engine broadcasts it:

  inputs   user            float32 [du]          u = [z_ud ; user sparse ; L2n(e_u) ; seq ; surface]
           sequence        float32 [L, d_s]      H after sequence.norm, padded to L rows
           sequence_valid  float32 [L]           1 for real rows, 0 for padding (all 0 = empty)
           ad_dense        float32 [C, n_ad]     ads.dense rows of the candidates
           ad_sparse       int64   [C, F]        ads.sparse rows (raw ids; bucketed in the graph)
           ad_embedding    float32 [C, d_ae]     ads.embedding rows
           bid             float32 [C]
           cal_scale, cal_bias, task_weights  float32 [T]   the request's surface row / override
  outputs  probs           float32 [C, T]
           utility         float32 [C]
  C (candidates) and L (sequence rows) are dynamic axes.

Usage (from the repository root):
  python3 scripts/export_onnx.py --bundle demo/bundle.safetensors --out rank.onnx \\
      [--opset 17] [--example-out rank-example.json --candidates 1000]

`--example-out` writes one request's inputs (the first N ads as candidates) and PyTorch's outputs
as JSON, so a benchmark can feed ONNX Runtime the same tensors and check its outputs.
Needs torch; `onnx` (Debian: python3-onnx) is used, when present, to check the exported model.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from scripts.reference.bundle import import_bundle  # noqa: E402
from scripts.reference.model import AdRankModel, Request  # noqa: E402

INPUTS = ["user", "sequence", "sequence_valid", "ad_dense", "ad_sparse", "ad_embedding", "bid",
          "cal_scale", "cal_bias", "task_weights"]
OUTPUTS = ["probs", "utility"]


class RankGraph(nn.Module):
    """The per-candidate model with the request-side vectors as inputs (see the module doc)."""

    def __init__(self, model: AdRankModel):
        super().__init__()
        self.model = model

    def forward(self, user, sequence, sequence_valid, ad_dense, ad_sparse, ad_embedding, bid,
                cal_scale, cal_bias, task_weights):
        out = self.model.score_candidates(user, sequence, sequence_valid, ad_dense, ad_sparse,
                                          ad_embedding, bid, cal_scale, cal_bias, task_weights)
        return out["probs"], out["utility"]


def example_inputs(model: AdRankModel, ads, candidates: int, seed: int = 0):
    """One random request over the first `candidates` ads, as the graph's input tensors."""
    c = model.config
    g = torch.Generator().manual_seed(seed)
    req = Request(request_id="onnx-example", surface=0, k=10,
                  user_dense=torch.randn(c["user_dense"], generator=g).tolist(),
                  user_embedding=torch.randn(c["user_embedding_dim"], generator=g).tolist(),
                  targeting=[64] * len(c["targeting_dims"]),
                  user_sparse=[[1, 2, 3] for _ in c["user_sparse"]],
                  seq_items=torch.randint(0, 1 << 40, (c["sequence"]["max_len"] // 2,), generator=g).tolist(),
                  seq_actions=[0] * (c["sequence"]["max_len"] // 2))
    st = model.request_state(req)
    L = c["sequence"]["max_len"]
    n = st.sequence.shape[0]
    seq = torch.zeros(L, c["sequence"]["dim"])
    seq[:n] = st.sequence
    valid = torch.zeros(L)
    valid[:n] = 1.0
    r = torch.arange(min(candidates, len(ads)))
    return (st.user, seq, valid, ads.dense[r].float(), ads.sparse[r], ads.embedding[r].float(),
            ads.bid[r].float(), st.scale, st.bias, st.weights)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", required=True)
    p.add_argument("--out", required=True, help="ONNX file to write")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (17 has LayerNormalization)")
    p.add_argument("--candidates", type=int, default=1000, help="candidates in the example request")
    p.add_argument("--example-out", help="write the example inputs and PyTorch outputs as JSON")
    a = p.parse_args(argv)

    model, _, ads = import_bundle(a.bundle)
    model.eval()
    graph = RankGraph(model).eval()
    inputs = example_inputs(model, ads, a.candidates)
    with torch.no_grad():
        want = graph(*inputs)
        torch.onnx.export(
            graph, inputs, a.out, input_names=INPUTS, output_names=OUTPUTS, opset_version=a.opset,
            dynamic_axes={"sequence": {0: "L"}, "sequence_valid": {0: "L"}, "ad_dense": {0: "C"},
                          "ad_sparse": {0: "C"}, "ad_embedding": {0: "C"}, "bid": {0: "C"},
                          "probs": {0: "C"}, "utility": {0: "C"}},
            do_constant_folding=True)
    report = {"onnx": a.out, "bytes": os.path.getsize(a.out), "opset": a.opset, "torch": torch.__version__}
    try:
        import onnx  # Debian: python3-onnx
        m = onnx.load(a.out)
        onnx.checker.check_model(m)
        report["onnx_checker"] = f"ok (onnx {onnx.__version__})"
        report["graph_inputs"] = [i.name for i in m.graph.input]
        report["ops"] = sorted({n.op_type for n in m.graph.node})
    except ImportError:
        report["onnx_checker"] = "skipped: python package onnx not installed"
    if a.example_out:
        with open(a.example_out, "w") as f:
            json.dump({"inputs": {n: {"dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape),
                                      "data": [str(v) for v in t.reshape(-1).tolist()] if t.dtype == torch.int64
                                      else t.reshape(-1).tolist()}
                                  for n, t in zip(INPUTS, inputs)},
                       "outputs": {n: {"shape": list(t.shape), "data": t.reshape(-1).tolist()}
                                   for n, t in zip(OUTPUTS, want)}}, f)
        report["example"] = a.example_out
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
