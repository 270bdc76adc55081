"""parity.metrics against a brute-force per-user ranking, ties included (a tie counts against the held-out item)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.sparse as sp

from parity import data as D
from parity import metrics as M
from parity import stats as S
from parity.data import protocols


def _random_seed_heldout(rng, n_users=40, n_items=30):
    seen = sp.csr_matrix((rng.random((n_users, n_items)) < 0.3).astype(np.float32))
    free = (seen.toarray() == 0) & (rng.random((n_users, n_items)) < 0.15)
    free[:, -2:] = False  # two items without a training entry are never candidates
    seen = sp.csr_matrix(seen.toarray() * (np.arange(n_items) < n_items - 2))
    truth = sp.csr_matrix(free.astype(np.float32))
    users = np.flatnonzero(np.diff(truth.indptr) > 0)
    return protocols._heldout("seed", truth, seen, users)


def _brute_seed(scores, heldout, k):
    """Sort each user's candidates by (score descending, held-out last) and read off the positions."""
    seen, truth = heldout.seen.toarray() != 0, heldout.truth.toarray() != 0
    hits, ndcgs = [], []
    for row, u in enumerate(heldout.users):
        cands = [i for i in range(truth.shape[1]) if heldout.eligible[i] and not seen[u, i]]
        ranked = sorted(cands, key=lambda i: (-scores[row, i], truth[u, i]))
        positions = [p for p, i in enumerate(ranked) if truth[u, i]]
        dcg = sum(1 / math.log2(p + 2) for p in positions if p < k)
        idcg = sum(1 / math.log2(p + 2) for p in range(min(k, len(positions))))
        hits.append(any(p < k for p in positions))
        ndcgs.append(dcg / idcg)
    return np.array(hits), np.array(ndcgs)


def _brute_neumf(cand_scores, cands, k):
    """NeuMF's evaluate.py semantics: one score per distinct item; ties count against the held-out."""
    hits, ndcgs = [], []
    for s, c in zip(cand_scores, cands):
        distinct, above = {c[0]}, 0
        for item, score in zip(c[1:], s[1:]):
            if item in distinct:
                continue
            distinct.add(item)
            above += score >= s[0]
        hits.append(above < k)
        ndcgs.append(1 / math.log2(above + 2) if above < k else 0.0)
    return np.array(hits), np.array(ndcgs)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [1, 3, 10])
def test_seed_protocol_matches_brute_force_with_ties(seed, k):
    rng = np.random.default_rng(seed)
    heldout = _random_seed_heldout(rng)
    # integer scores in 0..3: most comparisons are ties
    scores = rng.integers(0, 4, size=(len(heldout.users), heldout.truth.shape[1])).astype(np.float64)
    hit, ndcg = M.per_user(scores, heldout, k)
    want_hit, want_ndcg = _brute_seed(scores, heldout, k)
    assert np.array_equal(hit, want_hit)
    np.testing.assert_allclose(ndcg, want_ndcg, rtol=0, atol=1e-12)
    # the same scores given as full (n_users, n_items) rows give the same answer
    full = np.full((heldout.truth.shape[0], heldout.truth.shape[1]), np.nan)
    full[heldout.users] = scores
    full = np.nan_to_num(full, nan=-5.0)
    assert np.array_equal(M.per_user(full, heldout, k)[0], hit)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [1, 5, 10])
def test_neumf_protocol_matches_brute_force_with_ties_and_repeats(seed, k):
    rng = np.random.default_rng(seed)
    n, n_items = 50, 60
    cands = np.stack([rng.choice(n_items, 21, replace=False) for _ in range(n)])
    cands[::7, 3] = cands[::7, 0]  # the held-out item repeated among its negatives
    cands[::5, 9] = cands[::5, 8]  # a negative repeated
    item_scores = rng.integers(0, 3, size=(n, n_items)).astype(np.float32)
    heldout = D.HeldOut("neumf", np.arange(n), sp.csr_matrix((n, n_items), dtype=np.float32),
                        sp.csr_matrix((n, n_items), dtype=np.float32), np.ones(n_items, bool), cands)
    cand_scores = np.take_along_axis(item_scores, cands, axis=1)
    hit, ndcg = M.per_user(cand_scores, heldout, k)
    want_hit, want_ndcg = _brute_neumf(cand_scores, cands, k)
    assert np.array_equal(hit, want_hit)
    np.testing.assert_allclose(ndcg, want_ndcg, rtol=0, atol=1e-12)
    full_hit, full_ndcg = M.per_user(item_scores, heldout, k, candidate_scores=False)
    assert np.array_equal(full_hit, hit) and np.array_equal(full_ndcg, ndcg)


def test_a_tie_counts_against_the_held_out_item():
    heldout = D.HeldOut("neumf", np.arange(2), sp.csr_matrix((2, 5), dtype=np.float32),
                        sp.csr_matrix((2, 5), dtype=np.float32), np.ones(5, bool),
                        np.array([[0, 1, 2, 3, 4], [0, 1, 2, 3, 4]]))
    # user 0: one negative ties the held-out item; user 1: all scores equal
    scores = np.array([[1.0, 1.0, 0.0, 0.0, 0.0], [2.0, 2.0, 2.0, 2.0, 2.0]])
    hit, ndcg = M.per_user(scores, heldout, k=1, candidate_scores=True)
    assert hit.tolist() == [False, False]  # the tie puts the held-out item second: no hit at k=1
    hit, ndcg = M.per_user(scores, heldout, k=2, candidate_scores=True)
    assert hit.tolist() == [True, False] and ndcg[0] == pytest.approx(1 / math.log2(3))
    # constant scores never hit while k is below the candidate count (4 negatives tie: position 4)
    assert M.per_user(scores, heldout, k=4, candidate_scores=True)[0].tolist() == [True, False]
    with pytest.raises(ValueError, match="candidate_scores"):  # 5 items and 5 candidates: ambiguous
        M.per_user(scores, heldout, k=1)


def test_seed_ranking_excludes_training_items_and_items_without_training():
    seen = sp.csr_matrix(np.array([[1, 1, 0, 0, 0, 0]], np.float32))
    truth = sp.csr_matrix(np.array([[0, 0, 0, 1, 0, 0]], np.float32))
    heldout = D.HeldOut("seed", np.array([0]), truth, seen, np.array([True, True, True, True, True, False]))
    # items 0, 1 (rated in training) and 5 (no training entry) outscore the held-out item 3; only
    # item 2 and 4 compete, and item 2 ties it: position 1
    scores = np.array([[9.0, 9.0, 5.0, 5.0, 1.0, 9.0]])
    hit, ndcg = M.per_user(scores, heldout, k=1)
    assert not hit[0]
    hit, ndcg = M.per_user(scores, heldout, k=2)
    assert hit[0] and ndcg[0] == pytest.approx(1 / math.log2(3))


def test_held_out_items_do_not_push_each_other_down():
    seen = sp.csr_matrix((1, 6), dtype=np.float32)
    truth = sp.csr_matrix(np.array([[1, 1, 1, 0, 0, 0]], np.float32))
    heldout = D.HeldOut("seed", np.array([0]), truth, seen, np.ones(6, bool))
    scores = np.array([[3.0, 3.0, 3.0, 1.0, 1.0, 1.0]])
    hit, ndcg = M.per_user(scores, heldout, k=3)
    assert hit[0] and ndcg[0] == pytest.approx(1.0)  # the three held-out items fill the top 3


def test_nan_scores_are_refused_and_shapes_checked():
    heldout = D.HeldOut("seed", np.array([0]), sp.csr_matrix(np.array([[1, 0, 0]], np.float32)),
                        sp.csr_matrix((1, 3), dtype=np.float32), np.ones(3, bool))
    with pytest.raises(ValueError, match="NaN"):
        M.per_user(np.array([[np.nan, 0.0, 0.0]]), heldout)
    with pytest.raises(ValueError, match="one column per item"):
        M.per_user(np.zeros((1, 4)), heldout)
    with pytest.raises(ValueError, match="rows"):
        M.per_user(np.zeros((2, 3)), heldout)
    # infinities are legitimate (masking): -inf on the held-out item is simply a miss
    assert not M.per_user(np.array([[-np.inf, 0.0, 0.0]]), heldout, k=1)[0][0]


def test_wilson_interval_known_values():
    # textbook values: 5 of 10 -> (0.2366, 0.7634); 0 of 10 -> (0, 0.2775); 10 of 10 -> (0.7225, 1)
    assert S.wilson_interval(5, 10) == pytest.approx((0.23659, 0.76341), abs=1e-5)
    assert S.wilson_interval(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-5)
    assert S.wilson_interval(10, 10) == pytest.approx((0.72247, 1.0), abs=1e-5)
    low, high = S.wilson_interval(2742, 6040)
    assert low < 2742 / 6040 < high
    assert high - low == pytest.approx(2 * 1.96 * math.sqrt(0.454 * 0.546 / 6040), rel=0.01)


def test_bootstrap_interval():
    values = np.random.default_rng(0).random(500)
    low, high = S.bootstrap_interval(values, seed=1)
    assert low < values.mean() < high
    assert (low, high) == S.bootstrap_interval(values, seed=1)
    # the half-width is about 1.96 standard errors
    assert (high - low) / 2 == pytest.approx(1.96 * values.std() / math.sqrt(values.size), rel=0.15)
    assert S.bootstrap_interval(np.full(20, 0.5)) == (0.5, 0.5)


def test_evaluate_returns_json_able_metrics_with_user_count():
    rng = np.random.default_rng(3)
    heldout = _random_seed_heldout(rng)
    scores = rng.random((len(heldout.users), heldout.truth.shape[1]))
    m = M.evaluate(scores, heldout, k=10)
    hit, ndcg = M.per_user(scores, heldout, 10)
    assert m.n_users == len(heldout.users) and m.hr == hit.mean() and m.ndcg == pytest.approx(ndcg.mean())
    assert m.hr_low <= m.hr <= m.hr_high and m.ndcg_low <= m.ndcg <= m.ndcg_high
    assert json.loads(json.dumps(m.to_dict()))["n_users"] == m.n_users
    assert "HR@10" in str(m)
