"""The adrank ranking and retrieval model (docs/design.md §4) as a PyTorch module.

`AdRankModel(config).state_dict()` keys are exactly the bundle tensor names of
`expectedTensors` (src/model/config.ts) minus the `ads.*` tables, which live in an `AdTable`
next to the module: they are data about the ad corpus, not parameters.

Notation (docs/design.md §4): `L2n(v) = v / max(‖v‖₂, 1e-12)`; LayerNorm eps 1e-5 with affine
parameters; `z(x) = clamp((x − mean) / std, −clip, clip)`; bucket of an id = `id mod
cardinality` (mathematical modulo, as Python's `%` and `torch.remainder` compute it).

Shapes below: C candidates, n sequence length (≤ max_len), T tasks, S surfaces.
The module computes in the dtype of its parameters: float32 as served, or float64 after
`.double()` for the parity references.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

LAYER_NORM_EPS = 1e-5
L2N_EPS = 1e-12


def l2n(v: torch.Tensor) -> torch.Tensor:
    """`L2n(v) = v / max(‖v‖₂, 1e-12)` over the last axis (zeros stay zeros)."""
    return v / v.norm(dim=-1, keepdim=True).clamp_min(L2N_EPS)


def model_dims(config: dict) -> Dict[str, int]:
    """Derived widths, the Python twin of `modelDims` in src/model/config.ts."""
    c = config
    user = (c["user_dense"] + sum(f["dim"] for f in c["user_sparse"]) + c["user_embedding_dim"]
            + c["sequence"]["dim"] + c["surface_dim"])
    ad = c["ad_dense"] + sum(f["dim"] for f in c["ad_sparse"]) + c["ad_embedding_dim"]
    ta = c["sequence"]["dim"]
    inp = user + ad + ta
    cross = c["masknet"]["blocks"] * c["masknet"]["output_dim"]
    return {
        "user": user,
        "ad": ad,
        "target_attention": ta,
        "input": inp,
        # masknet.hidden wins; else h = floor(ratio * d + 0.5): half rounds up. Python's round() is
        # banker's rounding (round(1.5 * 311) == 466, the rule gives 467), so it must not be used.
        "mask_hidden": int(c["masknet"]["hidden"]) if "hidden" in c["masknet"]
        else int(math.floor(c["masknet"]["projection_ratio"] * inp + 0.5)),
        "cross": cross,
        "last": c["mlp"][-1] if c["mlp"] else cross,
        "tasks": len(c["tasks"]),
        "surfaces": len(c["surfaces"]),
    }


def with_defaults(config: dict) -> dict:
    """The config with docs/design.md §3 defaults filled in (`dense_clip` 5)."""
    c = dict(config)
    c.setdefault("dense_clip", 5.0)
    return c


# --------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------

class DenseNormalizer(nn.Module):
    """`z(x) = clamp((x − mean) / std, −clip, clip)`; `mean`, `std`: [in_features] buffers."""

    def __init__(self, in_features: int, clip: float):
        super().__init__()
        self.clip = float(clip)
        self.register_buffer("mean", torch.zeros(in_features))
        self.register_buffer("std", torch.ones(in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [..., in_features] → [..., in_features]."""
        return ((x - self.mean) / self.std).clamp(-self.clip, self.clip)


class FeatureTables(nn.Module):
    """Dense normalisers, sparse embedding tables (`[cardinality, dim]` each, one
    `features.<side>_sparse.<field>` per config field) and the surface table `[S, surface_dim]`."""

    def __init__(self, config: dict):
        super().__init__()
        c = config
        self.user_dense = DenseNormalizer(c["user_dense"], c["dense_clip"])
        self.ad_dense = DenseNormalizer(c["ad_dense"], c["dense_clip"])
        self.user_sparse = nn.ParameterDict(
            {f["name"]: nn.Parameter(torch.zeros(f["cardinality"], f["dim"])) for f in c["user_sparse"]})
        self.ad_sparse = nn.ParameterDict(
            {f["name"]: nn.Parameter(torch.zeros(f["cardinality"], f["dim"])) for f in c["ad_sparse"]})
        self.surface = nn.Parameter(torch.zeros(len(c["surfaces"]), c["surface_dim"]))


class SequenceEncoder(nn.Module):
    """Recent-engagement encoder.

    token_j = item[item_id mod item_buckets] + action[action] + position[j]   `[n, d_s]`
    H = norm(layers(tokens)), each layer `nn.TransformerEncoderLayer(d_s, heads, ffn_dim,
    dropout=0, activation="relu", batch_first=True, norm_first=True)`          `[n, d_s]`
    """

    def __init__(self, max_len: int, item_buckets: int, actions: int, dim: int, heads: int,
                 ffn_dim: int, num_layers: int):
        super().__init__()
        self.max_len = max_len
        self.item = nn.Parameter(torch.zeros(item_buckets, dim))
        self.action = nn.Parameter(torch.zeros(actions, dim))
        self.position = nn.Parameter(torch.zeros(max_len, dim))
        self.layers = nn.ModuleList([
            nn.TransformerEncoderLayer(dim, heads, ffn_dim, dropout=0.0, activation="relu",
                                       batch_first=True, norm_first=True)
            for _ in range(num_layers)])
        self.norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)

    def forward(self, items: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """items: int64 [n], actions: int64 [n], most recent first, n ≤ max_len → H [n, d_s]."""
        n = items.shape[0]
        tokens = (self.item[torch.remainder(items, self.item.shape[0])] + self.action[actions]
                  + self.position[:n])
        h = tokens.unsqueeze(0)
        for layer in self.layers:
            h = layer(h)
        return self.norm(h).squeeze(0)


class TargetAttention(nn.Module):
    """Candidate-aware attention over the encoded sequence.

    q = W_ta L2n(e_c) + b_ta   `[C, d_s]`;  α = softmax_j(q·H_j / √d_s);  ta_c = Σ_j α_j H_j;
    zeros when the sequence is empty (all of `valid` is 0).
    """

    def __init__(self, ad_embedding_dim: int, dim: int):
        super().__init__()
        self.query = nn.Linear(ad_embedding_dim, dim)

    def forward(self, ad_embedding_n: torch.Tensor, h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """ad_embedding_n: L2n(ads.embedding) [C, d_ae]; h: [L, d_s]; valid: [L] 1/0 → [C, d_s].

        Padded positions (valid 0) get weight exactly 0, so a padded H gives the same result as
        the unpadded one."""
        q = self.query(ad_embedding_n)
        scores = q @ h.transpose(0, 1) / math.sqrt(self.query.out_features)
        scores = scores + (valid - 1.0) * 1e30
        alpha = torch.softmax(scores, dim=-1) * valid
        return alpha @ h


class MaskBlock(nn.Module):
    """One parallel MaskNet block.

    m = W_2 · ReLU(W_1 · x + b_1) + b_2   (`mask` = Sequential(Linear(d, h), ReLU, Linear(h, d)))
    o = ReLU(norm(proj(x̂ ⊙ m)))          (`proj` Linear(d, o) without bias, `norm` LayerNorm(o))
    x, x̂: [C, d] → o: [C, o]
    """

    def __init__(self, in_features: int, hidden_features: int, out_features: int):
        super().__init__()
        self.mask = nn.Sequential(nn.Linear(in_features, hidden_features), nn.ReLU(),
                                  nn.Linear(hidden_features, in_features))
        self.proj = nn.Linear(in_features, out_features, bias=False)
        self.norm = nn.LayerNorm(out_features, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.proj(x_hat * self.mask(x))))


class MaskNet(nn.Module):
    """Parallel MaskNet: x̂ = input_norm(x); x0 = [o_1 ; … ; o_B]; `[C, d] → [C, B·o]`."""

    def __init__(self, in_features: int, num_blocks: int, hidden_features: int, out_features: int):
        super().__init__()
        self.input_norm = nn.LayerNorm(in_features, eps=LAYER_NORM_EPS)
        self.blocks = nn.ModuleList([MaskBlock(in_features, hidden_features, out_features)
                                     for _ in range(num_blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_hat = self.input_norm(x)
        return torch.cat([b(x, x_hat) for b in self.blocks], dim=-1)


class CrossLayer(nn.Module):
    """DCNv2 cross layer: `x_{l+1} = x0 ⊙ (W_l x_l + b_l) + x_l`, `[C, D]`.

    Full rank: `weight` [D, D]. Low rank r: `W_l x_l = U_l (V_l x_l)` with `u` [D, r], `v` [r, D].
    """

    def __init__(self, in_features: int, low_rank: int):
        super().__init__()
        self.low_rank = low_rank
        if low_rank > 0:
            self.u = nn.Parameter(torch.zeros(in_features, low_rank))
            self.v = nn.Parameter(torch.zeros(low_rank, in_features))
        else:
            self.weight = nn.Parameter(torch.zeros(in_features, in_features))
        self.bias = nn.Parameter(torch.zeros(in_features))

    def forward(self, x0: torch.Tensor, xl: torch.Tensor) -> torch.Tensor:
        if self.low_rank > 0:
            wx = (xl @ self.v.transpose(0, 1)) @ self.u.transpose(0, 1)
        else:
            wx = xl @ self.weight.transpose(0, 1)
        return x0 * (wx + self.bias) + xl


class CrossNet(nn.Module):
    """`num_layers` DCNv2 cross layers on x0 `[C, D]` → x_L `[C, D]`."""

    def __init__(self, in_features: int, num_layers: int, low_rank: int):
        super().__init__()
        self.layers = nn.ModuleList([CrossLayer(in_features, low_rank) for _ in range(num_layers)])

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = layer(x0, x)
        return x


class Calibration(nn.Module):
    """Per-surface calibration: `p_t = sigmoid(scale[s,t] · logit_t + bias[s,t])`, scale/bias [S, T]."""

    def __init__(self, surfaces: int, tasks: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(surfaces, tasks))
        self.bias = nn.Parameter(torch.zeros(surfaces, tasks))


class Utility(nn.Module):
    """Default task weights per surface, `task_weights` [S, T]:
    `utility_c = bid_c · Σ_t w_t p_t`."""

    def __init__(self, surfaces: int, tasks: int):
        super().__init__()
        self.task_weights = nn.Parameter(torch.ones(surfaces, tasks))


def mlp_forward(layers: nn.ModuleList, h: torch.Tensor, relu_last: bool) -> torch.Tensor:
    """`h_{k+1} = ReLU(W_k h_k + b_k)`; the last layer without ReLU when `relu_last` is False."""
    for k, layer in enumerate(layers):
        h = layer(h)
        if relu_last or k < len(layers) - 1:
            h = F.relu(h)
    return h


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------

@dataclass
class AdTable:
    """The `ads.*` tables of a bundle (N ads). Targeting bitmasks are uint64 in the bundle; torch
    has no uint64, so `targeting` holds the same 64 bits as int64 (two's complement)."""

    id: torch.Tensor          # int64 [N], unique
    advertiser: torch.Tensor  # int64 [N]
    bid: torch.Tensor         # float32 [N]
    dense: torch.Tensor       # float32 [N, n_ad]
    sparse: torch.Tensor      # int64 [N, n_ad_sparse_fields] (raw ids; bucket = id mod cardinality)
    embedding: torch.Tensor   # float32 [N, d_ae]
    retrieval: torch.Tensor   # float32 or bfloat16 [N, D_r]
    targeting: torch.Tensor   # int64 bits of uint64 [N, n_targeting_dims]
    _index: Optional[Dict[int, int]] = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.id.shape[0])

    def row_of(self, ad_id: int) -> Optional[int]:
        """Row of an ad id, None when not in the table."""
        if self._index is None:
            self._index = {int(a): i for i, a in enumerate(self.id.tolist())}
        return self._index.get(ad_id)

    def tensors(self) -> Dict[str, torch.Tensor]:
        """The tables under their bundle names."""
        return {f"ads.{k}": getattr(self, k) for k in
                ("id", "advertiser", "bid", "dense", "sparse", "embedding", "retrieval", "targeting")}


@dataclass
class Request:
    """A request in the model's terms: the Python twin of `EngineRequest`
    (src/features/feature-bundle.ts). Ids are Python ints (int64 range)."""

    request_id: str
    surface: int
    k: int
    cap: int = 0
    mode: int = 0  # 0 global, 1 local
    partitions: int = 1
    task_weights: Optional[List[float]] = None
    price: bool = False
    reserve: float = 0.0
    retrieve_count: int = 0
    user_dense: List[float] = field(default_factory=list)
    user_embedding: List[float] = field(default_factory=list)
    targeting: List[int] = field(default_factory=list)
    user_sparse: List[List[int]] = field(default_factory=list)
    seq_items: List[int] = field(default_factory=list)
    seq_actions: List[int] = field(default_factory=list)
    # Rank: the candidates. RetrieveAndRank: the caller's candidates, blended with retrieval
    # (docs/funnel.md "Blended retrieval sources"); at most candidate_quota of them ranked (0 = all).
    candidates: List[int] = field(default_factory=list)
    excluded_advertisers: List[int] = field(default_factory=list)
    excluded_ads: List[int] = field(default_factory=list)
    candidate_quota: int = 0

    _JSON = {  # python field → JSON (EngineRequest) key
        "request_id": "requestId", "surface": "surface", "k": "k", "cap": "cap", "mode": "mode",
        "partitions": "partitions", "task_weights": "taskWeights", "price": "price",
        "reserve": "reserve", "retrieve_count": "retrieveCount", "user_dense": "userDense",
        "user_embedding": "userEmbedding", "targeting": "targeting", "user_sparse": "userSparse",
        "seq_items": "seqItems", "seq_actions": "seqActions", "candidates": "candidates",
        "excluded_advertisers": "excludedAdvertisers", "excluded_ads": "excludedAds",
        "candidate_quota": "candidateQuota",
    }
    _INT64 = {"seq_items", "candidates", "excluded_advertisers", "excluded_ads"}

    def to_json(self) -> dict:
        """EngineRequest as JSON: int64 ids as decimal strings, everything else as numbers."""
        out = {}
        for py, js in self._JSON.items():
            v = getattr(self, py)
            if py in self._INT64:
                v = [str(x) for x in v]
            elif py == "user_sparse":
                v = [[str(x) for x in ids] for ids in v]
            out[js] = v
        return out

    @classmethod
    def from_json(cls, d: dict) -> "Request":
        kw = {}
        for py, js in cls._JSON.items():
            if js not in d:
                continue
            v = d[js]
            if py in cls._INT64:
                v = [int(x) for x in v]
            elif py == "user_sparse":
                v = [[int(x) for x in ids] for ids in v]
            kw[py] = v
        return cls(**kw)


@dataclass
class RequestState:
    """What the request side computes once and broadcasts to every candidate."""

    user: torch.Tensor      # u [du]
    sequence: torch.Tensor  # H [n, d_s] (after sequence.norm)
    query: torch.Tensor     # retrieval query q = L2n(user_tower(u)) [D_r]
    scale: torch.Tensor     # calibration.scale[s] [T]
    bias: torch.Tensor      # calibration.bias[s] [T]
    weights: torch.Tensor   # task weights w (override or utility.task_weights[s]) [T]


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------

class AdRankModel(nn.Module):
    """MaskNet + DCNv2 multi-task ranking model with target attention, and the user tower of the
    two-tower retrieval (docs/design.md §4). See the module docstring for notation."""

    def __init__(self, config: dict):
        super().__init__()
        c = with_defaults(config)
        self.config = c
        d = model_dims(c)
        self.dims = d
        s = c["sequence"]
        self.features = FeatureTables(c)
        self.sequence = SequenceEncoder(s["max_len"], s["item_buckets"], s["actions"], s["dim"],
                                        s["heads"], s["ffn_dim"], s["layers"])
        self.target_attention = TargetAttention(c["ad_embedding_dim"], s["dim"])
        self.masknet = MaskNet(d["input"], c["masknet"]["blocks"], d["mask_hidden"],
                               c["masknet"]["output_dim"])
        self.dcn = CrossNet(d["cross"], c["dcn"]["layers"], c["dcn"]["rank"])
        widths = [d["cross"]] + list(c["mlp"])
        self.mlp = nn.ModuleList([nn.Linear(i, o) for i, o in zip(widths[:-1], widths[1:])])
        self.heads = nn.Linear(d["last"], d["tasks"])
        self.calibration = Calibration(d["surfaces"], d["tasks"])
        self.utility = Utility(d["surfaces"], d["tasks"])
        widths = [d["user"]] + list(c["retrieval"]["hidden"]) + [c["retrieval"]["dim"]]
        self.user_tower = nn.ModuleList([nn.Linear(i, o) for i, o in zip(widths[:-1], widths[1:])])
        self.eval()

    @property
    def dtype(self) -> torch.dtype:
        return self.heads.weight.dtype

    # ---- request side, once per request ----------------------------------------------------

    def encode_sequence(self, items: Sequence[int], actions: Sequence[int]) -> torch.Tensor:
        """H [n, d_s] for the first max_len engagements (most recent first); [0, d_s] if none."""
        n = min(len(items), self.sequence.max_len)
        if n == 0:
            return torch.zeros(0, self.config["sequence"]["dim"], dtype=self.dtype)
        it = torch.tensor(list(items[:n]), dtype=torch.int64)
        ac = torch.tensor(list(actions[:n]), dtype=torch.int64)
        return self.sequence(it, ac)

    def user_vector(self, req: Request, h: torch.Tensor) -> torch.Tensor:
        """u = [z_ud ; user sparse vectors (mean of rows, L2n) ; L2n(user_embedding) ; seq ; surface]."""
        dt = self.dtype
        parts = [self.features.user_dense(torch.tensor(req.user_dense, dtype=dt))]
        for f, ids in zip(self.config["user_sparse"], req.user_sparse):
            table = self.features.user_sparse[f["name"]]
            if len(ids) == 0:
                parts.append(torch.zeros(f["dim"], dtype=dt))
            else:
                rows = torch.tensor([i % f["cardinality"] for i in ids], dtype=torch.int64)
                parts.append(l2n(table[rows].mean(dim=0)))
        parts.append(l2n(torch.tensor(req.user_embedding, dtype=dt)))
        parts.append(l2n(h.mean(dim=0)) if h.shape[0] > 0 else torch.zeros(h.shape[1], dtype=dt))
        parts.append(self.features.surface[req.surface])
        return torch.cat(parts)

    def retrieval_query(self, u: torch.Tensor) -> torch.Tensor:
        """q = L2n(user_tower(u)): hidden layers ReLU(W r + b), last layer linear. [du] → [D_r]."""
        return l2n(mlp_forward(self.user_tower, u, relu_last=False))

    @torch.no_grad()
    def request_state(self, req: Request) -> RequestState:
        h = self.encode_sequence(req.seq_items, req.seq_actions)
        u = self.user_vector(req, h)
        s = req.surface
        w = (torch.tensor(req.task_weights, dtype=self.dtype) if req.task_weights is not None
             else self.utility.task_weights[s])
        return RequestState(u, h, self.retrieval_query(u), self.calibration.scale[s],
                            self.calibration.bias[s], w)

    # ---- ad side and the per-candidate model -----------------------------------------------

    def ad_vector(self, dense: torch.Tensor, sparse: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """a_c = [z(dense) ; each ad sparse field's row (id mod cardinality), L2n ; L2n(embedding)].

        dense [C, n_ad], sparse int64 [C, F] raw ids, embedding [C, d_ae] → [C, da]."""
        parts = [self.features.ad_dense(dense)]
        for j, f in enumerate(self.config["ad_sparse"]):
            table = self.features.ad_sparse[f["name"]]
            parts.append(l2n(table[torch.remainder(sparse[:, j], f["cardinality"])]))
        parts.append(l2n(embedding))
        return torch.cat(parts, dim=-1)

    def score_candidates(self, user: torch.Tensor, sequence: torch.Tensor, sequence_valid: torch.Tensor,
                         ad_dense: torch.Tensor, ad_sparse: torch.Tensor, ad_embedding: torch.Tensor,
                         bid: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor,
                         weights: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The per-candidate model, C candidates of one request.

        user u [du]; sequence H [L, d_s] with `sequence_valid` [L] (1 = real, 0 = padding);
        ad_dense [C, n_ad]; ad_sparse int64 [C, F]; ad_embedding [C, d_ae]; bid [C];
        scale, bias, weights [T] (the request's surface row / override).
        Returns every intermediate of NativeExplain: ad, targetAttention, input, masknet,
        cross, hidden, logits, probs [C, T], value [C] (Σ_t w_t p_t), utility [C].
        """
        a = self.ad_vector(ad_dense, ad_sparse, ad_embedding)
        ta = self.target_attention(l2n(ad_embedding), sequence, sequence_valid)
        x = torch.cat([user.unsqueeze(0).expand(a.shape[0], -1), a, ta], dim=-1)
        x0 = self.masknet(x)
        xl = self.dcn(x0)
        h = mlp_forward(self.mlp, xl, relu_last=True)
        logits = self.heads(h)
        probs = torch.sigmoid(scale * logits + bias)
        value = probs @ weights
        return {"ad": a, "targetAttention": ta, "input": x, "masknet": x0, "cross": xl,
                "hidden": h, "logits": logits, "probs": probs, "value": value, "utility": bid * value}

    @torch.no_grad()
    def forward_rows(self, ads: AdTable, rows: Sequence[int], state: RequestState,
                     chunk: int = 1024) -> Dict[str, torch.Tensor]:
        """Runs the per-candidate model for ad-table rows (in the given order) and adds the
        retrieval score `q · ads.retrieval[c]`. Chunked to bound memory."""
        dt = self.dtype
        h = state.sequence
        valid = torch.ones(h.shape[0], dtype=dt)
        outs: List[Dict[str, torch.Tensor]] = []
        r_all = torch.tensor(list(rows), dtype=torch.int64)
        for i in range(0, max(len(rows), 1), chunk):
            r = r_all[i:i + chunk]
            o = self.score_candidates(state.user, h, valid, ads.dense[r].to(dt), ads.sparse[r],
                                      ads.embedding[r].to(dt), ads.bid[r].to(dt), state.scale,
                                      state.bias, state.weights)
            o["retrievalScores"] = ads.retrieval[r].to(dt) @ state.query
            outs.append(o)
        return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}

    @torch.no_grad()
    def retrieval_scores(self, ads: AdTable, state: RequestState) -> torch.Tensor:
        """score_c = q · ads.retrieval[c] for the whole corpus [N]."""
        return ads.retrieval.to(self.dtype) @ state.query

    def forward(self, ads: AdTable, req: Request) -> Dict[str, torch.Tensor]:
        """Scores the request's candidates that are in `ads`, unique, in first-appearance order
        (no eligibility; see score.py for the funnel)."""
        seen, rows = set(), []
        for a in req.candidates:
            r = ads.row_of(a)
            if r is not None and a not in seen:
                seen.add(a)
                rows.append(r)
        return self.forward_rows(ads, rows, self.request_state(req))
