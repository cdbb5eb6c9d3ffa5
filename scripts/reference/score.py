"""The funnel of docs/funnel.md on top of the reference model: intake, eligibility (with its
counts), pacing hash, order, greedy per-advertiser cap, top K, local(P), GSP prices.

`rank`, `retrieve` and `retrieve_and_rank` return a `FunnelResult` shaped like NativeResult
(src/engine/binding.ts), with Python ints for ids and floats in the model's dtype.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch

from .model import AdRankModel, AdTable, Request

MASK64 = (1 << 64) - 1
FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
ALL_ONES = MASK64

COUNT_KEYS = ("received", "unknown", "duplicate", "inactive", "outOfBudget", "paced", "targeting",
              "excludedAd", "excludedAdvertiser", "capped", "eligible")


def request_key(request_id: str) -> int:
    """FNV-1a 64 of the request id's UTF-8 bytes (same as `requestKey` in feature-bundle.ts)."""
    h = FNV_OFFSET
    for b in request_id.encode("utf-8"):
        h = ((h ^ b) * FNV_PRIME) & MASK64
    return h


def splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def pacing_uniform(key: int, ad_id: int) -> float:
    """u = (splitmix64(key XOR ad_id as uint64) >> 11) · 2^-53 ∈ [0, 1)."""
    return (splitmix64(key ^ (ad_id & MASK64)) >> 11) * 2.0 ** -53


@dataclass
class AdState:
    """Live ad state by row: `active`, `in_budget` (0/1), `pacing_rate` (float32 values)."""

    active: List[int]
    in_budget: List[int]
    pacing_rate: List[float]

    @classmethod
    def default(cls, n: int) -> "AdState":
        return cls([1] * n, [1] * n, [1.0] * n)


def ineligible_reason(ads: AdTable, row: int, req: Request, key: int, state: AdState,
                      excluded_ads: set, excluded_advertisers: set) -> Optional[str]:
    """The first reason (docs/funnel.md order) that drops ad-table row `row`, or None."""
    ad_id = int(ads.id[row])
    if ad_id in excluded_ads:
        return "excludedAd"
    if int(ads.advertiser[row]) in excluded_advertisers:
        return "excludedAdvertiser"
    if not state.active[row]:
        return "inactive"
    if not state.in_budget[row]:
        return "outOfBudget"
    masks = ads.targeting[row].tolist()
    for v, m in zip(req.targeting, masks):
        m &= MASK64
        if (v < 64 and not (m >> v) & 1) or (v >= 64 and m != ALL_ONES):
            return "targeting"
    if not pacing_uniform(key, ad_id) < state.pacing_rate[row]:
        return "paced"
    return None


@dataclass
class Walk:
    taken: List[int]           # indices into the candidate list, in order
    capped: int
    runner_up: Optional[int]   # the ad the walk would take next (K+1-th), if any


def order(idx: Sequence[int], scores: Sequence[float], ids: Sequence[int]) -> List[int]:
    """Score descending, ties by ad id ascending."""
    return sorted(idx, key=lambda i: (-scores[i], ids[i]))


def walk(ordered: Sequence[int], k: int, cap: int, advertisers: Sequence[int]) -> Walk:
    """Greedy selection: take an ad while its advertiser has fewer than `cap` taken (0 = no cap),
    stop at k. `capped` counts ads passed over before the walk stopped; the runner-up is the ad
    the walk would take next."""
    taken: List[int] = []
    per: Dict[int, int] = {}
    capped = 0
    runner = None
    for i in ordered:
        a = advertisers[i]
        if cap > 0 and per.get(a, 0) >= cap:
            if len(taken) < k:
                capped += 1
            continue
        if len(taken) == k:
            runner = i
            break
        taken.append(i)
        per[a] = per.get(a, 0) + 1
    return Walk(taken, capped, runner)


def select(idx: Sequence[int], scores: Sequence[float], ids: Sequence[int], advertisers: Sequence[int],
           k: int, cap: int, mode: int, partitions: int) -> Walk:
    """global: one walk; local(P): walk per partition `id mod P` with ⌈K/P⌉, merge, cut to K,
    runner-up = (K+1)-th of the merged partition winners."""
    if mode == 0:
        return walk(order(idx, scores, ids), k, cap, advertisers)
    p = partitions
    kp = -(-k // p)
    merged: List[int] = []
    capped = 0
    for part in range(p):
        w = walk(order([i for i in idx if ids[i] % p == part], scores, ids), kp, cap, advertisers)
        merged += w.taken
        capped += w.capped
    merged = order(merged, scores, ids)
    return Walk(merged[:k], capped, merged[k] if len(merged) > k else None)


def gsp_prices(taken: Sequence[int], runner_up: Optional[int], utility: Sequence[float],
               value: Sequence[float], bid: Sequence[float], reserve: float) -> List[float]:
    """Winner i pays min(bid_i, max(reserve, utility_{i+1} / value_i)); the last winner with no
    runner-up pays min(bid_i, reserve)."""
    nxt = list(taken[1:]) + [runner_up]
    out = []
    for i, j in zip(taken, nxt):
        if j is None:
            out.append(min(bid[i], reserve))
        else:
            out.append(min(bid[i], max(reserve, utility[j] / value[i])))
    return out


@dataclass
class FunnelResult:
    ad_ids: List[int]
    advertisers: List[int]
    rows: List[int]
    scores: List[float]
    probs: List[List[float]]
    prices: List[float]
    counts: Dict[str, int]
    retrieved: int = 0
    # RetrieveAndRank: per winner 1 (retrieval) or 2 (caller), and one dict per source
    sources: List[int] = field(default_factory=list)
    source_counts: List[Dict[str, int]] = field(default_factory=list)
    # explain-like values for the candidates that were scored, in scoring order
    scored_rows: List[int] = field(default_factory=list)
    scored: Dict[str, torch.Tensor] = field(default_factory=dict)

    def winners_json(self) -> dict:
        return {"adIds": [str(a) for a in self.ad_ids], "advertisers": [str(a) for a in self.advertisers],
                "rows": self.rows, "scores": self.scores, "probs": self.probs, "prices": self.prices,
                "counts": self.counts, "retrieved": self.retrieved,
                "sources": self.sources, "sourceCounts": self.source_counts}


def _zero_counts() -> Dict[str, int]:
    return {k: 0 for k in COUNT_KEYS}


def _filter(ads: AdTable, rows: Sequence[int], req: Request, state: AdState, counts: Dict[str, int]) -> List[int]:
    key = request_key(req.request_id)
    ex_ads, ex_adv = set(req.excluded_ads), set(req.excluded_advertisers)
    keep = []
    for r in rows:
        why = ineligible_reason(ads, r, req, key, state, ex_ads, ex_adv)
        if why is None:
            keep.append(r)
        else:
            counts[why] += 1
    counts["eligible"] = len(keep)
    return keep


def known_unique_rows(ads: AdTable, candidates: Sequence[int], counts: Dict[str, int]) -> List[int]:
    """Intake: unknown ids and repeats are skipped and counted; first appearance order."""
    seen, rows = set(), []
    for a in candidates:
        r = ads.row_of(a)
        if r is None:
            counts["unknown"] += 1
        elif a in seen:
            counts["duplicate"] += 1
        else:
            seen.add(a)
            rows.append(r)
    return rows


def _rank_rows(model: AdRankModel, ads: AdTable, rows: List[int], req: Request,
               eligible: List[int], counts: Dict[str, int], price: bool) -> FunnelResult:
    st = model.request_state(req)
    scored = model.forward_rows(ads, rows, st) if rows else {}
    pos = {r: i for i, r in enumerate(rows)}
    utility = scored["utility"].tolist() if rows else []
    value = scored["value"].tolist() if rows else []
    ids = [int(ads.id[r]) for r in rows]
    adv = [int(ads.advertiser[r]) for r in rows]
    bid = [float(ads.bid[r]) for r in rows]
    idx = [pos[r] for r in eligible]
    w = select(idx, utility, ids, adv, req.k, req.cap, req.mode, max(req.partitions, 1))
    counts["capped"] = w.capped
    probs = scored["probs"].tolist() if rows else []
    prices = gsp_prices(w.taken, w.runner_up, utility, value, bid, req.reserve) if price else []
    return FunnelResult([ids[i] for i in w.taken], [adv[i] for i in w.taken], [rows[i] for i in w.taken],
                        [utility[i] for i in w.taken], [probs[i] for i in w.taken], prices, counts,
                        scored_rows=list(rows), scored=scored)


def rank(model: AdRankModel, ads: AdTable, req: Request, state: Optional[AdState] = None) -> FunnelResult:
    """Rank: intake → model on the known unique candidates → eligibility → select → GSP if asked."""
    state = state or AdState.default(len(ads))
    counts = _zero_counts()
    counts["received"] = len(req.candidates)
    rows = known_unique_rows(ads, req.candidates, counts)
    eligible = _filter(ads, rows, req, state, counts)
    return _rank_rows(model, ads, rows, req, eligible, counts, req.price)


def _retrieval_pass(model: AdRankModel, ads: AdTable, req: Request, state: Optional[AdState]):
    """Retrieval's first half, shared by retrieve and retrieve_and_rank: every ad scored and
    tested for eligibility. Returns (scores, eligible rows, counts)."""
    state = state or AdState.default(len(ads))
    counts = _zero_counts()
    counts["received"] = len(ads)
    scores = model.retrieval_scores(ads, model.request_state(req)).tolist()
    eligible = _filter(ads, range(len(ads)), req, state, counts)
    return scores, eligible, counts


def retrieve(model: AdRankModel, ads: AdTable, req: Request, state: Optional[AdState] = None) -> FunnelResult:
    """Retrieve: score the whole corpus, eligibility, top K with the cap (mode does not apply)."""
    scores, eligible, counts = _retrieval_pass(model, ads, req, state)
    ids = ads.id.tolist()
    adv = ads.advertiser.tolist()
    w = walk(order(eligible, scores, ids), req.k, req.cap, adv)
    counts["capped"] = w.capped
    return FunnelResult([ids[i] for i in w.taken], [adv[i] for i in w.taken], list(w.taken),
                        [scores[i] for i in w.taken], [], [], counts)


def retrieve_and_rank(model: AdRankModel, ads: AdTable, req: Request,
                      state: Optional[AdState] = None) -> FunnelResult:
    """RetrieveAndRank: the top R eligible ads by retrieval score (no cap), ranked, K selected with
    the request's cap and mode, always priced."""
    scores, eligible, counts = _retrieval_pass(model, ads, req, state)
    state = state or AdState.default(len(ads))
    ids = ads.id.tolist()
    top = order(eligible, scores, ids)[:req.retrieve_count]
    # Blended retrieval sources (docs/funnel.md): the caller's ids in request order — unknown,
    # repeated, already retrieved (credited to retrieval), ineligible, over the quota — the rest
    # ranked together with the retrieved top R.
    ret = {**{k: counts[k] for k in COUNT_KEYS if k != "capped"}, "source": 1, "earlierSource": 0,
           "overQuota": 0, "ranked": len(top), "winners": 0}
    caller = {**{k: 0 for k in COUNT_KEYS if k != "capped"}, "source": 2, "earlierSource": 0,
              "overQuota": 0, "ranked": 0, "winners": 0}
    caller["received"] = len(req.candidates)
    in_top = set(top)
    key = request_key(req.request_id)
    ex_ads, ex_adv = set(req.excluded_ads), set(req.excluded_advertisers)
    extra = []
    for row in known_unique_rows(ads, req.candidates, caller):
        if row in in_top:
            caller["earlierSource"] += 1
            continue
        why = ineligible_reason(ads, row, req, key, state, ex_ads, ex_adv)
        if why is not None:
            caller[why] += 1
            continue
        caller["eligible"] += 1
        if req.candidate_quota and caller["ranked"] >= req.candidate_quota:
            caller["overQuota"] += 1
            continue
        caller["ranked"] += 1
        extra.append(row)
    rows = top + extra
    res = _rank_rows(model, ads, rows, req, rows, counts, True)
    res.retrieved = len(top)
    from_caller = set(extra)
    res.sources = [2 if row in from_caller else 1 for row in res.rows]
    ret["winners"] = res.sources.count(1)
    caller["winners"] = res.sources.count(2)
    res.source_counts = [ret, caller]
    return res
