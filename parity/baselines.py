"""Non-neural baselines: item popularity and EASE (numpy; the yardsticks the autoencoders must beat).

    popularity_scores(train) -> (n_items,) float64: users per item in the training matrix
    ease_weights(train, lam) -> (n_items, n_items) float64 B, zero diagonal (Steck 2019)
    ease_scorer(train, lam) -> users -> (len(users), n_items) scores (primal or dual form)
    score_heldout(item_scores_fn, heldout) -> scores in the form parity.metrics.evaluate takes
    tune_ease(split, lambdas, k=10) -> (best lambda, [(lambda, RankingMetrics on validation)])
    run_baselines(split, lambdas=LAMBDAS, fixed_lambda=None, k=10) -> dict (JSON-able)

EASE: B = I - P diag(1 / diag(P)), P = (X^T X + lam I)^-1, with X the binarised training matrix
(implicit feedback, for both protocols); the score of user u is X_u B. lam is chosen on the
validation split (fit on `split.fit`, score `split.validation`), then refit on `split.train` for the
test: the test never chooses anything.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from parity.metrics import RankingMetrics, evaluate

__all__ = ["LAMBDAS", "popularity_scores", "ease_weights", "ease_scorer", "score_heldout", "tune_ease", "run_baselines"]

# Grid for tuning. Validation optimum measured here: 1000 on ml-1m-neumf, 20 to 100 on ML-100K and
# ml-latest-small (seed protocol), so the grid spans both ends.
LAMBDAS = (10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0)


def popularity_scores(train: sp.csr_matrix) -> np.ndarray:
    """Number of users with an entry for each item (the same ranking for every user)."""
    return np.bincount(train.indices, minlength=train.shape[1]).astype(np.float64)


def ease_weights(train: sp.csr_matrix, lam: float) -> np.ndarray:
    """EASE item-item weights B (float64) from the binarised training matrix.

    B = I - P diag(1 / diag(P)) with P = (X^T X + lam I)^-1, i.e. B_ij = -P_ij / P_jj off the
    diagonal and B_jj = 0.
    """
    if lam <= 0:
        raise ValueError(f"EASE needs lam > 0, got {lam}")
    x = train.copy()
    x.data = np.ones_like(x.data, dtype=np.float64)
    gram = (x.T @ x).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += lam
    # LU inverse: 2.7 s at 3706 items on this project's 2-core machine, against 6.3 s for LAPACK's
    # Cholesky potrf + potri (one measurement each, shared cores)
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)[None, :]
    b[np.diag_indices_from(b)] = 0.0
    return b


def score_heldout(user_scores: Callable[[np.ndarray], np.ndarray], heldout: Any, batch: int = 1024) -> np.ndarray:
    """Scores for `metrics.evaluate`: one row per evaluated user; neumf keeps only its candidates.

    `user_scores(users) -> (len(users), n_items)` scores all items for a batch of users.
    """
    users = heldout.users
    if heldout.protocol == "neumf":
        out = np.empty(heldout.candidates.shape)
        for s in range(0, len(users), batch):
            full = user_scores(users[s : s + batch])
            out[s : s + batch] = np.take_along_axis(full, heldout.candidates[s : s + batch], axis=1)
        return out
    return np.concatenate([user_scores(users[s : s + batch]) for s in range(0, len(users), batch)])


def _popularity_fn(train: sp.csr_matrix) -> Callable[[np.ndarray], np.ndarray]:
    pop = popularity_scores(train)
    return lambda users: np.broadcast_to(pop, (len(users), pop.size))


def ease_scorer(train: sp.csr_matrix, lam: float) -> Callable[[np.ndarray], np.ndarray]:
    """users -> EASE scores X_u B over all items (float64), in whichever form is cheaper.

    Primal (n_items <= n_users): B from `ease_weights`, an n_items^2 inverse. Dual (more items than
    users, e.g. ml-latest-small: 610 users, 9,724 items): Woodbury,
    P = (X^T X + lam I)^-1 = (I - X^T K X) / lam with K = (X X^T + lam I)^-1 (n_users^2), so
    X_u P = (X_u - (X_u X^T) K X) / lam, diag(P) = (1 - sum_rows(X * (K X))) / lam, and
    X_u B = X_u - X_u P diag(1 / diag(P)).
    """
    if lam <= 0:
        raise ValueError(f"EASE needs lam > 0, got {lam}")
    x = train.copy()
    x.data = np.ones_like(x.data, dtype=np.float64)
    n_users, n_items = x.shape
    if n_items <= n_users:
        b = ease_weights(train, lam)
        return lambda users: np.asarray(x[users] @ b)
    user_gram = (x @ x.T).toarray()
    user_gram[np.diag_indices_from(user_gram)] += lam
    kx = np.linalg.solve(user_gram, x.toarray())  # K X, (n_users, n_items)
    diag_p = (1.0 - np.asarray(x.multiply(kx).sum(axis=0)).ravel()) / lam
    user_gram[np.diag_indices_from(user_gram)] -= lam  # back to X X^T

    def scores(users: np.ndarray) -> np.ndarray:
        xu = x[users].toarray()
        xu_p = (xu - user_gram[users] @ kx) / lam
        return xu - xu_p / diag_p[None, :]  # X_u (I - P diag(1 / diag P)); B_ii = 0 by construction

    return scores


def _popularity(heldout: Any, train: sp.csr_matrix, k: int) -> RankingMetrics:
    scores = score_heldout(_popularity_fn(train), heldout)
    return evaluate(scores, heldout, k, candidate_scores=heldout.protocol == "neumf")


def _ease(heldout: Any, train: sp.csr_matrix, lam: float, k: int) -> RankingMetrics:
    scores = score_heldout(ease_scorer(train, lam), heldout)
    return evaluate(scores, heldout, k, candidate_scores=heldout.protocol == "neumf")


def tune_ease(split: Any, lambdas: Sequence[float] = LAMBDAS, k: int = 10,
              progress: bool = False) -> tuple[float, list[tuple[float, RankingMetrics]]]:
    """EASE fitted on `split.fit` for each lam, scored on `split.validation`; best by HR@k, then NDCG@k."""
    from tqdm import tqdm

    table = []
    for lam in tqdm(list(lambdas), desc="EASE lambda on validation", disable=not progress, file=sys.stderr):
        table.append((float(lam), _ease(split.validation, split.fit, float(lam), k)))
    best = max(table, key=lambda row: (row[1].hr, row[1].ndcg, -row[0]))[0]
    return best, table


def run_baselines(split: Any, lambdas: Sequence[float] = LAMBDAS, fixed_lambda: float | None = None,
                  k: int = 10, progress: bool = False) -> dict[str, Any]:
    """Popularity, EASE(fixed_lambda) if given, and EASE(lam tuned on validation), on the test."""
    results: dict[str, Any] = {"protocol": split.protocol, "dataset": split.dataset, "k": k, "split": split.info}
    results["popularity"] = _popularity(split.test, split.train, k).to_dict()
    if fixed_lambda is not None:
        results["ease_fixed"] = {"lambda": fixed_lambda, **_ease(split.test, split.train, fixed_lambda, k).to_dict()}
    if lambdas:
        best, table = tune_ease(split, lambdas, k, progress)
        results["ease_validation"] = [{"lambda": lam, **m.to_dict()} for lam, m in table]
        results["ease_tuned"] = {"lambda": best, **_ease(split.test, split.train, best, k).to_dict()}
    return results
