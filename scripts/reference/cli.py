"""Command line of the PyTorch reference (run from the repository root):

  python3 -m scripts.reference.cli make-case --seed S --config demo|random --out DIR
      fresh module + random ad tables → DIR/bundle.safetensors and DIR/cases.json
  python3 -m scripts.reference.cli score --bundle B --request R.json [--op rank|retrieve|retrieveAndRank]
      runs the reference funnel on a bundle for one EngineRequest JSON; prints the result JSON
  python3 -m scripts.reference.cli self-check --bundle B
      export → import round trip and float32 vs float64 agreement of the reference itself
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile

import torch

from . import score
from .bundle import export_bundle, import_bundle
from .cases import make_case
from .model import Request


def cmd_make_case(a: argparse.Namespace) -> int:
    doc = make_case(a.seed, a.config, a.out, a.ads, a.requests)
    print(json.dumps({"out": a.out, "numAds": doc["numAds"], "cases": len(doc["cases"]),
                      "config": doc["config"]["name"]}))
    return 0


def cmd_score(a: argparse.Namespace) -> int:
    model, _, ads = import_bundle(a.bundle)
    if a.float64:
        model = model.double()
    with open(a.request) as f:
        req = Request.from_json(json.load(f))
    run = {"rank": score.rank, "retrieve": score.retrieve, "retrieveAndRank": score.retrieve_and_rank}[a.op]
    print(json.dumps(run(model, ads, req).winners_json(), indent=1))
    return 0


def cmd_self_check(a: argparse.Namespace) -> int:
    model, config, ads = import_bundle(a.bundle)
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "again.safetensors")
        export_bundle(p, model, config, ads)
        same = open(p, "rb").read() == open(a.bundle, "rb").read()
    req = Request(request_id="self-check", surface=0, k=10,
                  user_dense=[0.5] * config["user_dense"], user_embedding=[1.0] * config["user_embedding_dim"],
                  targeting=[64] * len(config["targeting_dims"]),
                  user_sparse=[[1, 2, 3] for _ in config["user_sparse"]], seq_items=[5, 6, 7], seq_actions=[0, 0, 0],
                  candidates=ads.id[:200].tolist())
    p32 = model(ads, req)["probs"]
    p64 = copy.deepcopy(model).double()(ads, req)["probs"]
    err = float((p32.double() - p64).abs().max())
    print(json.dumps({"roundTripBytesIdentical": same, "maxAbsProbF32vsF64": err}))
    return 0 if same and err < 1e-4 else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m scripts.reference.cli", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make-case", help="write a random bundle and parity cases")
    m.add_argument("--seed", type=int, required=True)
    m.add_argument("--config", choices=["demo", "random"], default="random")
    m.add_argument("--out", required=True)
    m.add_argument("--ads", type=int, default=None, help="ad count N (default: demo 1000, random 300–800)")
    m.add_argument("--requests", type=int, default=None, help="requests per case file")
    m.set_defaults(fn=cmd_make_case)
    s = sub.add_parser("score", help="reference funnel for one request")
    s.add_argument("--bundle", required=True)
    s.add_argument("--request", required=True, help="EngineRequest JSON (int64 ids as strings)")
    s.add_argument("--op", choices=["rank", "retrieve", "retrieveAndRank"], default="rank")
    s.add_argument("--float64", action="store_true", help="compute in float64")
    s.set_defaults(fn=cmd_score)
    c = sub.add_parser("self-check", help="round trip and precision check of the reference")
    c.add_argument("--bundle", required=True)
    c.set_defaults(fn=cmd_self_check)
    a = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("ADRANK_TORCH_THREADS", "1")))
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
