"""Parity cases: a freshly initialised module, random ad tables and random requests, written as a
bundle plus `cases.json` with the reference's expected outputs (computed in float64 from the
float32 weights that the bundle holds).

cases.json:
  {"seed", "kind", "config", "numAds",
   "adState": {"ids": [str], "active": [0|1], "inBudget": [0|1], "pacingRate": [float]},
   "cases": [{"name", "request": <EngineRequest as JSON, int64 as strings>,
              "explain": {"rows", "bid", "probs" [C·T], "logits" [C·T], "utility", "value", "retrievalScores",
              "weights" (task weights used) [T], "user" [du], "sequence" H [n·d_s], "query" [D_r]},
              "rank" | "retrieve" | "retrieveAndRank": {"adIds", "advertisers", "rows", "scores",
                                                       "probs", "prices", "counts", "retrieved"},
              "retrieveAndRank" also "scored": {"rows", "utility", "value", "probs" [R·T]}}]}
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from typing import List, Optional

import torch

from .bundle import export_bundle
from .model import AdRankModel, AdTable, Request, l2n, model_dims
from . import score

DEMO_CONFIG = {  # = makeDemoConfig() in src/model/demo.ts (docs/design.md §4 reference shape)
    "name": "adrank-demo",
    "version": "1",
    "tasks": ["click", "long_click", "save", "conversion"],
    "surfaces": ["home_feed", "search", "related"],
    "targeting_dims": ["country", "device", "age_band"],
    "user_dense": 16,
    "ad_dense": 12,
    "dense_clip": 5,
    "user_sparse": [{"name": "interests", "cardinality": 10000, "dim": 16},
                    {"name": "topics", "cardinality": 2000, "dim": 16},
                    {"name": "locale", "cardinality": 200, "dim": 8}],
    "ad_sparse": [{"name": "category", "cardinality": 1000, "dim": 16},
                  {"name": "creative_type", "cardinality": 16, "dim": 8}],
    "user_embedding_dim": 64,
    "ad_embedding_dim": 64,
    "surface_dim": 8,
    "sequence": {"max_len": 32, "item_buckets": 50000, "actions": 4, "dim": 64, "heads": 4,
                 "ffn_dim": 128, "layers": 1},
    "masknet": {"blocks": 3, "projection_ratio": 2.0, "output_dim": 512},
    "dcn": {"layers": 4, "rank": 0},
    "mlp": [256, 128],
    "retrieval": {"dim": 64, "hidden": [128]},
}


class Rand:
    """Seeded draws (torch.Generator): a seed gives the same case for a given torch version."""

    def __init__(self, seed: int):
        self.g = torch.Generator().manual_seed(seed)

    def int(self, lo: int, hi: int) -> int:
        """Uniform integer in [lo, hi]."""
        return int(torch.randint(lo, hi + 1, (1,), generator=self.g))

    def uniform(self, lo: float, hi: float, *shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=self.g) * (hi - lo) + lo

    def normal(self, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=self.g)

    def chance(self, p: float) -> bool:
        return float(torch.rand(1, generator=self.g)) < p

    def choice(self, xs: list):
        return xs[self.int(0, len(xs) - 1)]

    def sample(self, xs: list, k: int) -> list:
        perm = torch.randperm(len(xs), generator=self.g)[:k].tolist()
        return [xs[i] for i in perm]

    def int64(self) -> int:
        """A random id spread over int64: small, large, negative."""
        kind = self.int(0, 3)
        if kind == 0:
            return self.int(0, 10_000)
        if kind == 1:
            return self.int(0, 2**31) * self.int(1, 2**31)
        if kind == 2:
            return -self.int(1, 2**40)
        return self.int(2**61, 2**62) * self.choice([1, -1])


def random_config(r: Rand, seed: int) -> dict:
    """A small config. The seed picks the structural options so consecutive seeds cover them:
    sequence layers = seed mod 3 (0/1/2), low-rank DCN when (seed div 3) is odd, user/ad sparse
    field counts seed mod 4 / (seed + 2) mod 4 (0 = no fields); sizes are random (some 0-wide
    dense parts, no MLP, no user-tower hidden layer, 1-4 surfaces, 1-5 tasks)."""
    heads = r.choice([1, 2, 4])
    d_s = heads * r.choice([4, 8])
    sparse = lambda prefix, count: [{"name": f"{prefix}{i}", "cardinality": r.int(3, 500), "dim": r.int(2, 12)}
                                    for i in range(count)]
    return {
        "name": f"random_{seed}",
        "version": str(seed),
        "tasks": [f"task{i}" for i in range(r.int(1, 5))],
        "surfaces": [f"surface{i}" for i in range(r.int(1, 4))],
        "targeting_dims": [f"dim{i}" for i in range(r.int(0, 3))],
        "user_dense": r.int(0, 12),
        "ad_dense": r.int(0, 12),
        "dense_clip": r.choice([3.0, 5.0]),
        "user_sparse": sparse("u", seed % 4),
        "ad_sparse": sparse("a", (seed + 2) % 4),
        "user_embedding_dim": r.int(2, 16),
        "ad_embedding_dim": r.int(2, 16),
        "surface_dim": r.int(1, 6),
        "sequence": {"max_len": r.int(2, 12), "item_buckets": r.int(5, 300), "actions": r.int(1, 5),
                     "dim": d_s, "heads": heads, "ffn_dim": r.int(4, 48), "layers": seed % 3},
        "masknet": {"blocks": r.int(1, 3), "projection_ratio": r.choice([0.5, 1.0, 1.5, 2.0]),
                    "output_dim": r.int(4, 40)},
        "dcn": {"layers": r.int(1, 3), "rank": r.int(1, 8) if (seed // 3) % 2 == 1 else 0},
        "mlp": r.choice([[], [r.int(4, 32)], [r.int(8, 48), r.int(4, 24)]]),
        "retrieval": {"dim": r.int(4, 24), "hidden": r.choice([[], [r.int(8, 32)]])},
    }


@torch.no_grad()
def init_weights(model: AdRankModel, r: Rand) -> None:
    """Random, non-trivial values for everything the default init leaves at 0/1 (norm affines,
    dense statistics, embedding tables, DCN weights), scaled so activations stay O(1)."""
    for name, p in model.named_parameters():
        leaf = name.split(".")[-1]
        if name.startswith(("features.", "sequence.item", "sequence.action", "sequence.position")):
            p.copy_(r.normal(*p.shape) * 0.5)
        elif ".norm" in name or "norm." in name:  # LayerNorm affines: γ ≈ 1, β ≈ 0, not exactly
            p.copy_((1.0 if leaf == "weight" else 0.0) + 0.1 * r.normal(*p.shape))
        elif name.startswith("dcn."):
            width = model.dims["cross"]
            if leaf == "weight":
                p.copy_(r.normal(*p.shape) * (0.5 / math.sqrt(width)))
            elif leaf in ("u", "v"):
                p.copy_(r.normal(*p.shape) * (0.5 / math.sqrt(p.shape[1])))
            else:
                p.copy_(r.normal(*p.shape) * 0.1)
        elif leaf in ("bias", "in_proj_bias"):
            p.copy_(r.normal(*p.shape) * 0.05)
        elif p.dim() == 2:
            p.copy_(r.normal(*p.shape) / math.sqrt(p.shape[1]))
    f = model.features
    for dense in (f.user_dense, f.ad_dense):
        dense.mean.copy_(r.normal(*dense.mean.shape) * 0.5)
        dense.std.copy_(r.uniform(0.5, 2.0, *dense.std.shape))
    s, t = model.calibration.scale.shape
    model.calibration.scale.copy_(r.uniform(0.6, 1.4, s, t))
    model.calibration.bias.copy_(r.uniform(-0.5, 0.5, s, t))
    model.utility.task_weights.copy_(r.uniform(0.1, 1.0, s, t))


def random_ads(config: dict, r: Rand, n: int, bf16_retrieval: bool) -> AdTable:
    ids: List[int] = []
    seen = set()
    while len(ids) < n:
        a = r.int64()
        if a not in seen:
            seen.add(a)
            ids.append(a)
    advertisers = [r.int64() for _ in range(max(2, n // 6))]
    adv = [r.choice(advertisers) for _ in range(n)]
    targeting = []
    for _ in range(n):
        row = []
        for _ in config["targeting_dims"]:
            if r.chance(0.65):
                row.append(-1)  # all ones: untargeted
            else:
                bits = 0
                for v in r.sample(list(range(8)), r.int(1, 5)):
                    bits |= 1 << v
                if r.chance(0.1):
                    bits |= 1 << 63  # a high bit, to exercise the uint64 path
                row.append(bits - (1 << 64) if bits >= 1 << 63 else bits)
        targeting.append(row)
    retrieval = l2n(r.normal(n, config["retrieval"]["dim"]))
    return AdTable(
        id=torch.tensor(ids, dtype=torch.int64),
        advertiser=torch.tensor(adv, dtype=torch.int64),
        bid=torch.exp(r.normal(n) * 0.7).to(torch.float32),
        dense=r.normal(n, config["ad_dense"]) * 1.5,
        sparse=torch.tensor([[r.int64() for _ in config["ad_sparse"]] for _ in range(n)],
                            dtype=torch.int64).reshape(n, len(config["ad_sparse"])),
        embedding=r.normal(n, config["ad_embedding_dim"]),
        retrieval=retrieval.to(torch.bfloat16) if bf16_retrieval else retrieval,
        targeting=torch.tensor(targeting, dtype=torch.int64).reshape(n, len(config["targeting_dims"])),
    )


def f32(x: float) -> float:
    return float(torch.tensor(x, dtype=torch.float32))


def random_request(config: dict, r: Rand, ads: AdTable, i: int, variant: str) -> Request:
    """One request; `variant` forces an edge: "empty" (no sequence, empty sparse lists),
    "long" (sequence longer than max_len), "override" (task weights), "local" (local mode)."""
    c = config
    ids = ads.id.tolist()
    n_cand = r.int(20, min(400, len(ids)))
    cands = r.sample(ids, n_cand)
    cands += [r.int64() for _ in range(r.int(0, 5))]               # (almost surely) unknown
    cands += r.sample(cands, r.int(0, 5))                          # duplicates
    cands = r.sample(cands, len(cands))
    seq_n = 0 if variant == "empty" else (c["sequence"]["max_len"] + r.int(1, 5) if variant == "long"
                                          else r.int(0, c["sequence"]["max_len"]))
    mode = 1 if variant == "local" else (1 if r.chance(0.25) else 0)
    t = len(c["tasks"])
    weights = None
    if variant == "override" or r.chance(0.15):
        weights = [f32(float(w)) for w in r.uniform(0.0, 2.0, t)]
        weights[r.int(0, t - 1)] = f32(0.25 + float(r.uniform(0, 1, 1)))  # not all ~0
    return Request(
        request_id=f"req-{i}-{r.int(0, 10**9)}",
        surface=r.int(0, len(c["surfaces"]) - 1),
        k=r.int(1, 40),
        cap=r.choice([0, 0, 1, 2, 3]),
        mode=mode,
        partitions=r.int(2, 4) if mode == 1 else 1,
        task_weights=weights,
        price=r.chance(0.8),
        reserve=0.0 if r.chance(0.5) else f32(float(r.uniform(0.01, 0.5, 1))),
        retrieve_count=r.int(10, 150),
        user_dense=(r.normal(c["user_dense"]) * 2.0).tolist(),
        user_embedding=r.normal(c["user_embedding_dim"]).tolist(),
        targeting=[r.choice([0, 1, 2, 3, 4, 5, 6, 7, 64, 100]) for _ in c["targeting_dims"]],
        user_sparse=[[] if variant == "empty" or r.chance(0.15) else [r.int64() for _ in range(r.int(1, 8))]
                     for _ in c["user_sparse"]],
        seq_items=[r.int64() for _ in range(seq_n)],
        seq_actions=[r.int(0, c["sequence"]["actions"] - 1) for _ in range(seq_n)],
        candidates=cands,
        excluded_advertisers=r.sample(ads.advertiser.tolist(), r.int(0, 3)),
        excluded_ads=r.sample(cands, r.int(0, 4)),
    )


def random_ad_state(r: Rand, ads: AdTable) -> tuple:
    """Changes a few ads' live state; returns (AdState by row, JSON for Engine.setAdState)."""
    n = len(ads)
    st = score.AdState.default(n)
    rows = r.sample(list(range(n)), max(1, n // 10))
    out = {"ids": [], "active": [], "inBudget": [], "pacingRate": []}
    for row in rows:
        st.active[row] = 0 if r.chance(0.2) else 1
        st.in_budget[row] = 0 if r.chance(0.2) else 1
        st.pacing_rate[row] = f32(r.choice([0.0, 0.3, 0.5, 0.9, 1.0]))
        out["ids"].append(str(int(ads.id[row])))
        out["active"].append(st.active[row])
        out["inBudget"].append(st.in_budget[row])
        out["pacingRate"].append(st.pacing_rate[row])
    return st, out


@torch.no_grad()
def spread_heads(model: AdRankModel, ads: AdTable, reqs: List[Request], r: Rand) -> None:
    """Rescales each head so its logits over sample candidates have std ≈ 1.5 and a random mean:
    probabilities then spread over (0, 1) instead of collapsing at one value."""
    logits = torch.cat([model(ads, q)["logits"] for q in reqs if q.candidates])
    mean, std = logits.mean(0), logits.std(0).clamp_min(1e-3)
    g = 1.5 / std
    target = r.uniform(-1.0, 0.5, logits.shape[1])
    model.heads.weight.mul_(g.unsqueeze(1))
    model.heads.bias.copy_((model.heads.bias - mean) * g + target)


def _tolist_f(t: torch.Tensor) -> list:
    return t.reshape(-1).tolist()


def rar_json(res: score.FunnelResult) -> dict:
    """RetrieveAndRank winners plus the ranked (retrieved) rows' values, so a funnel
    implementation can be checked on these scores without re-running the model."""
    out = res.winners_json()
    sc = res.scored
    out["scored"] = {"rows": res.scored_rows,
                     "utility": _tolist_f(sc["utility"]) if sc else [],
                     "value": _tolist_f(sc["value"]) if sc else [],
                     "probs": _tolist_f(sc["probs"]) if sc else []}
    return out


def make_case(seed: int, kind: str, out_dir: str, n_ads: Optional[int] = None,
              n_requests: Optional[int] = None) -> dict:
    """Builds the bundle and cases.json in `out_dir`; returns the cases document."""
    r = Rand(seed)
    config = copy.deepcopy(DEMO_CONFIG) if kind == "demo" else random_config(r, seed)
    n_ads = n_ads or (1000 if kind == "demo" else r.int(300, 800))
    n_requests = n_requests or (4 if kind == "demo" else 6)
    torch.manual_seed(seed)
    model = AdRankModel(config)
    init_weights(model, r)
    ads = random_ads(config, r, n_ads, bf16_retrieval=(kind != "demo" and seed % 2 == 1))
    variants = ["empty", "long", "override", "local"]
    reqs = [random_request(config, r, ads, i, variants[i] if i < len(variants) else "plain")
            for i in range(n_requests)]
    spread_heads(model, ads, reqs, r)
    state, state_json = random_ad_state(r, ads)

    os.makedirs(out_dir, exist_ok=True)
    export_bundle(os.path.join(out_dir, "bundle.safetensors"), model, config, ads)

    ref = copy.deepcopy(model).double()  # float64 from the very float32 values in the bundle
    cases = []
    for i, q in enumerate(reqs):
        rk = score.rank(ref, ads, q, state)
        st = ref.request_state(q)
        sc = rk.scored
        explain = {"rows": rk.scored_rows,
                   "bid": [float(ads.bid[row]) for row in rk.scored_rows],
                   "probs": _tolist_f(sc["probs"]) if sc else [],
                   "logits": _tolist_f(sc["logits"]) if sc else [],
                   "utility": _tolist_f(sc["utility"]) if sc else [],
                   "value": _tolist_f(sc["value"]) if sc else [],
                   "retrievalScores": _tolist_f(sc["retrievalScores"]) if sc else [],
                   "weights": _tolist_f(st.weights),
                   "user": _tolist_f(st.user),
                   "sequence": _tolist_f(st.sequence),
                   "query": _tolist_f(st.query)}
        # RetrieveAndRank takes no caller ids here (retrieval alone); the blended variant below
        # adds the case's candidate list (unknown ids and repeats included) and a few retrieved ids
        # (credited to retrieval), with a quota drawn from its own stream (the other draws stay put).
        alone = score.retrieve_and_rank(ref, ads, dataclasses.replace(q, candidates=[]), state)
        rb = Rand(seed * 1000 + i)
        caller = q.candidates[: rb.int(5, 60)] + alone.ad_ids[: rb.int(0, 3)]
        caller = rb.sample(caller, len(caller))
        blended_req = dataclasses.replace(q, candidates=caller, candidate_quota=rb.choice([0, 0, 3, 8]),
                                          retrieve_count=rb.int(1, max(1, q.retrieve_count)))
        blended = rar_json(score.retrieve_and_rank(ref, ads, blended_req, state))
        blended.update({"candidates": [str(a) for a in caller], "candidateQuota": blended_req.candidate_quota,
                        "retrieveCount": blended_req.retrieve_count})
        cases.append({
            "name": f"request {i} ({variants[i] if i < len(variants) else 'plain'})",
            "request": q.to_json(),
            "explain": explain,
            "rank": rk.winners_json(),
            "retrieve": score.retrieve(ref, ads, q, state).winners_json(),
            "retrieveAndRank": rar_json(alone),
            "retrieveAndRankBlended": blended,
        })
    doc = {"seed": seed, "kind": kind, "config": model.config, "numAds": n_ads,
           "dims": model_dims(config), "adState": state_json, "cases": cases}
    with open(os.path.join(out_dir, "cases.json"), "w") as f:
        json.dump(doc, f)
    return doc
