"""Command line of the PyTorch reference (run from the repository root):

  python3 -m scripts.reference.cli make-case --seed S --config demo|random --out DIR
      fresh module + random ad tables → DIR/bundle.safetensors and DIR/cases.json
  python3 -m scripts.reference.cli score --bundle B --request R.json [--op rank|retrieve|retrieveAndRank]
      runs the reference funnel on a bundle for one EngineRequest JSON; prints the result JSON
  python3 -m scripts.reference.cli example --out DIR [--seed S]
      the docs/export.md walk-through: DIR/bundle.safetensors (demo config, fresh weights),
      DIR/rank-request.json (a gRPC RankRequest as proto-loader JSON) and DIR/expected.json
      (PyTorch's Rank answer for it)
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
from .model import AdRankModel, Request


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


def grpc_rank_request(req: Request, config: dict) -> dict:
    """A Request as the gRPC RankRequest JSON that proto-loader takes (int64 as strings)."""
    return {
        "requestId": req.request_id,
        "surface": config["surfaces"][req.surface],
        "user": {"dense": req.user_dense, "embedding": req.user_embedding,
                 "sparse": {f["name"]: {"ids": [str(i) for i in ids]}
                            for f, ids in zip(config["user_sparse"], req.user_sparse)},
                 "sequence": {"itemIds": [str(i) for i in req.seq_items], "actions": req.seq_actions}},
        "targeting": req.targeting,
        "exclusions": {"advertiserIds": [str(i) for i in req.excluded_advertisers],
                       "adIds": [str(i) for i in req.excluded_ads]},
        "k": req.k,
        "perAdvertiserCap": req.cap,
        **({"taskWeights": dict(zip(config["tasks"], req.task_weights))} if req.task_weights else {}),
        "ranking": {"mode": "LOCAL" if req.mode == 1 else "GLOBAL",
                    "partitions": req.partitions if req.mode == 1 else 0},
        "reserve": req.reserve,
        "candidateAdIds": [str(i) for i in req.candidates],
        "price": req.price,
    }


def cmd_example(a: argparse.Namespace) -> int:
    from .cases import DEMO_CONFIG, Rand, init_weights, random_ads, random_request, spread_heads
    r = Rand(a.seed)
    config = copy.deepcopy(DEMO_CONFIG)
    model = AdRankModel(config)          # in real use: your trained module
    init_weights(model, r)
    ads = random_ads(config, r, a.ads, bf16_retrieval=False)
    req = random_request(config, r, ads, 0, "plain")
    req.seq_items, req.seq_actions = req.seq_items[:8], req.seq_actions[:8]
    req.excluded_ads, req.excluded_advertisers, req.mode, req.partitions = [], [], 0, 1
    req.k, req.price = 10, True
    spread_heads(model, ads, [req], r)
    os.makedirs(a.out, exist_ok=True)
    bundle = os.path.join(a.out, "bundle.safetensors")
    export_bundle(bundle, model, config, ads)
    model, _, ads = import_bundle(bundle)  # score what was written, as the server will
    expected = score.rank(model, ads, req).winners_json()
    with open(os.path.join(a.out, "rank-request.json"), "w") as f:
        json.dump(grpc_rank_request(req, config), f, indent=1)
    with open(os.path.join(a.out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
    print(json.dumps({"bundle": bundle, "request": os.path.join(a.out, "rank-request.json"),
                      "expected": os.path.join(a.out, "expected.json"), "winners": len(expected["adIds"])}))
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
    e = sub.add_parser("example", help="bundle + gRPC Rank request + PyTorch answer (docs/export.md)")
    e.add_argument("--out", required=True)
    e.add_argument("--seed", type=int, default=1)
    e.add_argument("--ads", type=int, default=2000)
    e.set_defaults(fn=cmd_example)
    c = sub.add_parser("self-check", help="round trip and precision check of the reference")
    c.add_argument("--bundle", required=True)
    c.set_defaults(fn=cmd_self_check)
    a = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("ADRANK_TORCH_THREADS", "1")))
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
