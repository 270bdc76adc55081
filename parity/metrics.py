"""HR@k and NDCG@k from score arrays (numpy), one implementation for both frameworks and both protocols.

    evaluate(scores, heldout, k=10, *, n_bootstrap=1000, seed=0, candidate_scores=None) -> RankingMetrics
    per_user(scores, heldout, k=10, *, candidate_scores=None) -> (hit: bool[n], ndcg: float[n])

HR@k carries a Wilson interval, NDCG@k a percentile bootstrap over users (`parity.stats`).

`scores` is either full-catalogue, (n_users, n_items) or one row per evaluated user
(len(heldout.users), n_items), or, for `neumf`, one score per candidate, (len(heldout.users), C) in
the column order of `heldout.candidates` (held-out item first).

Ranking rules
-------------
- Ties count against the held-out item: an item ranks above it when its score is greater than OR
  EQUAL to the held-out item's score. So a model that scores everything alike gets HR 0, never a
  lucky hit, and results do not depend on sort stability, which differs between frameworks.
- `seed`: the ranking runs over the items with a training entry (`heldout.eligible`) that the user
  did not rate in training (`heldout.seen`). A user's held-out items do not push each other down:
  the position of held-out item h is (#other candidates scoring >= h) + (#held-out items scoring
  above h, ties between them in any order). HR@k = 1 if any held-out item is in the top k;
  NDCG@k = DCG@k / IDCG@k with binary relevance, IDCG over min(k, n_heldout) items.
- `neumf`: the held-out item against its negatives; a negative equal to the held-out item, or
  repeating an earlier negative, is ignored (NeuMF's evaluate.py keys scores by item id, so such
  repeats collapse; the published ml-1m.test.negative has 156 users whose held-out item is also
  among their negatives). NDCG@k = 1 / log2(position + 2) for a hit (position 0-based).
- NaN scores are an error (a NaN compares false both ways and would silently count as a hit).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from parity.stats import bootstrap_interval, wilson_interval

__all__ = ["RankingMetrics", "evaluate", "per_user"]

@dataclasses.dataclass(frozen=True)
class RankingMetrics:
    """HR@k and NDCG@k over `n_users` users, each with a 95% confidence interval."""

    k: int
    hr: float
    hr_low: float  # Wilson score interval
    hr_high: float
    ndcg: float
    ndcg_low: float  # percentile bootstrap over users
    ndcg_high: float
    n_users: int
    protocol: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        return (f"HR@{self.k} {self.hr:.4f} [{self.hr_low:.4f}, {self.hr_high:.4f}]  "
                f"NDCG@{self.k} {self.ndcg:.4f} [{self.ndcg_low:.4f}, {self.ndcg_high:.4f}]  (n={self.n_users})")


def _check_finite(scores: np.ndarray) -> None:
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN: a NaN compares false both ways and would count as a hit")


def _rows_for_users(scores: np.ndarray, heldout: Any) -> np.ndarray:
    """Row index into `scores` of each evaluated user (full n_users rows, or one per user)."""
    n_users = heldout.truth.shape[0]
    if scores.shape[0] == n_users:
        return heldout.users
    if scores.shape[0] == len(heldout.users):
        return np.arange(len(heldout.users))
    raise ValueError(f"scores have {scores.shape[0]} rows: expected {n_users} (all users) or "
                     f"{len(heldout.users)} (the evaluated users, in heldout.users order)")


def per_user(scores: np.ndarray, heldout: Any, k: int = 10, *,
             candidate_scores: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per evaluated user (heldout.users order): hit in the top k (bool) and NDCG@k (float64)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D, got shape {scores.shape}")
    _check_finite(scores)
    if heldout.protocol == "neumf":
        return _neumf_per_user(scores, heldout, k, candidate_scores)
    if heldout.protocol == "seed":
        if scores.shape[1] != heldout.truth.shape[1]:
            raise ValueError(f"seed scores need one column per item ({heldout.truth.shape[1]}), got {scores.shape[1]}")
        return _seed_per_user(scores, heldout, k)
    raise ValueError(f"unknown protocol {heldout.protocol!r}")


def _neumf_per_user(scores: np.ndarray, heldout: Any, k: int,
                    candidate_scores: bool | None) -> tuple[np.ndarray, np.ndarray]:
    cands = heldout.candidates
    n_items = heldout.truth.shape[1]
    fits_candidates = scores.shape == cands.shape
    fits_items = scores.shape[1] == n_items and scores.shape[0] in (len(heldout.users), heldout.truth.shape[0])
    if candidate_scores is None:
        if fits_candidates and fits_items:
            raise ValueError("scores fit both the candidates and the item catalogue; pass candidate_scores=True/False")
        candidate_scores = fits_candidates
    if candidate_scores:
        if not fits_candidates:
            raise ValueError(f"candidate scores must have the candidates' shape {cands.shape}, got {scores.shape}")
        cand_scores = scores
    else:
        if not fits_items:
            raise ValueError(f"neumf scores: expected {cands.shape} (candidates) or (n_users or "
                             f"{len(heldout.users)}, {n_items}) (all items), got {scores.shape}")
        rows = _rows_for_users(scores, heldout)
        cand_scores = scores[rows[:, None], cands]
    target = cand_scores[:, :1]
    counts = _distinct_negatives(cands) & (cand_scores[:, 1:] >= target)
    position = counts.sum(axis=1)  # 0-based: how many candidates rank at or above the held-out item
    hit = position < k
    ndcg = np.where(hit, 1.0 / np.log2(position + 2.0), 0.0)
    return hit, ndcg


def _distinct_negatives(cands: np.ndarray) -> np.ndarray:
    """(n, C-1) mask: negative differs from the held-out item and from every earlier negative."""
    negs = cands[:, 1:]
    order = np.argsort(negs, axis=1, kind="stable")
    sorted_negs = np.take_along_axis(negs, order, axis=1)
    first = np.ones_like(sorted_negs, dtype=bool)
    first[:, 1:] = sorted_negs[:, 1:] != sorted_negs[:, :-1]
    keep = np.empty_like(first)
    np.put_along_axis(keep, order, first, axis=1)
    return keep & (negs != cands[:, :1])


def _seed_per_user(scores: np.ndarray, heldout: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    rows = _rows_for_users(scores, heldout)
    users = heldout.users
    truth, seen = heldout.truth, heldout.seen
    n_items = truth.shape[1]
    hit = np.zeros(len(users), bool)
    ndcg = np.zeros(len(users))
    discounts = 1.0 / np.log2(np.arange(k) + 2.0)
    ideal = np.cumsum(discounts)
    chunk = max(1, 8_000_000 // max(1, n_items))  # ~64 MB of float64 per chunk
    for start in range(0, len(users), chunk):
        u = users[start : start + chunk]
        block = np.asarray(scores[rows[start : start + chunk]], np.float64)
        b = len(u)
        # candidates other than the held-out items: eligible, not rated in training, not held out
        other = np.broadcast_to(heldout.eligible, (b, n_items)).copy()
        t_sub, s_sub = truth[u], seen[u]
        other[np.repeat(np.arange(b), np.diff(s_sub.indptr)), s_sub.indices] = False
        t_rows = np.repeat(np.arange(b), np.diff(t_sub.indptr))
        other[t_rows, t_sub.indices] = False
        # the k best other scores per user, descending; slots past the user's count are padding
        kk = min(k, n_items)
        masked = np.where(other, block, -np.inf)
        top = -np.partition(-masked, kk - 1, axis=1)[:, :kk] if kk < n_items else masked
        top = -np.sort(-top, axis=1)[:, :kk]
        real = np.arange(kk)[None, :] < other.sum(axis=1)[:, None]
        # each held-out item: #others >= its score (exact whenever it is < k), then its order among
        # the user's held-out items by descending score
        h_scores = block[t_rows, t_sub.indices]
        above = ((top[t_rows] >= h_scores[:, None]) & real[t_rows]).sum(axis=1)
        order = np.lexsort((-h_scores, t_rows))
        rank_in_user = np.empty(len(order), np.int64)
        group_start = np.searchsorted(t_rows[order], t_rows[order], side="left")
        rank_in_user[order] = np.arange(len(order)) - group_start
        position = above + rank_in_user
        in_top = position < k
        gain = np.where(in_top, 1.0 / np.log2(position + 2.0), 0.0)
        dcg = np.bincount(t_rows, weights=gain, minlength=b)
        n_held = np.diff(t_sub.indptr)
        hit[start : start + b] = np.bincount(t_rows, weights=in_top, minlength=b) > 0
        ndcg[start : start + b] = dcg / ideal[np.minimum(n_held, k) - 1]
    return hit, ndcg


def evaluate(scores: np.ndarray, heldout: Any, k: int = 10, *, n_bootstrap: int = 1000, seed: int = 0,
             candidate_scores: bool | None = None) -> RankingMetrics:
    """HR@k and NDCG@k with 95% intervals (Wilson for HR, bootstrap for NDCG) over heldout.users."""
    hit, ndcg = per_user(scores, heldout, k, candidate_scores=candidate_scores)
    n = len(hit)
    if n == 0:
        raise ValueError("no users to evaluate")
    hits = int(hit.sum())
    hr_low, hr_high = wilson_interval(hits, n)
    nd_low, nd_high = bootstrap_interval(ndcg, n_bootstrap, seed)
    return RankingMetrics(k=k, hr=hits / n, hr_low=hr_low, hr_high=hr_high, ndcg=float(ndcg.mean()),
                          ndcg_low=nd_low, ndcg_high=nd_high, n_users=n, protocol=heldout.protocol)
