"""The two evaluation protocols (`seed`, `neumf`): a dataset cut into train / validation / test."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from parity.data.dataset import Dataset, to_csr
from parity.data.errors import DataError
from parity.data.formats import load_dataset


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """Held-out data of one evaluation, and what the scores it is compared with were fitted on."""

    protocol: str  # "seed" | "neumf"
    users: np.ndarray  # (n_eval,) int64 ascending: the users this evaluation counts
    truth: sp.csr_matrix  # (n_users, n_items): held-out entries (seed: rating; neumf: 1.0)
    seen: sp.csr_matrix  # the training matrix of this evaluation: seed excludes its items per user
    eligible: np.ndarray  # (n_items,) bool: seed ranks only items with a training entry
    candidates: np.ndarray | None = None  # neumf: (n_eval, 1 + n_neg), column 0 the held-out item

    @property
    def n_users(self) -> int:
        return len(self.users)


@dataclasses.dataclass(frozen=True)
class Split:
    """One protocol applied to one dataset: train/test for the result, fit/validation for tuning."""

    protocol: str
    dataset: str
    train: sp.csr_matrix
    test: HeldOut
    fit: sp.csr_matrix
    validation: HeldOut
    info: dict[str, Any]

    @property
    def n_users(self) -> int:
        return self.train.shape[0]

    @property
    def n_items(self) -> int:
        return self.train.shape[1]

    def train_users(self) -> np.ndarray:
        """Rows of `train` with at least one entry (the rows an autoencoder trains on)."""
        return np.flatnonzero(np.diff(self.train.indptr) > 0)

    def fit_users(self) -> np.ndarray:
        return np.flatnonzero(np.diff(self.fit.indptr) > 0)


def _time_holdout(users: np.ndarray, items: np.ndarray, timestamps: np.ndarray, rows: np.ndarray,
                  quantile: float, n_items: int) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Global time split of `rows` (indices): -> (train rows, held-out rows, counts).

    Held-out rows are those at or after the `quantile` timepoint whose user and item both have a
    training row; the others at or after it are dropped and counted.
    """
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must lie in (0, 1), got {quantile}")
    ts = timestamps[rows]
    timepoint = int(np.quantile(ts, quantile, method="nearest"))
    late = ts >= timepoint
    train_rows, late_rows = rows[~late], rows[late]
    if train_rows.size == 0 or late_rows.size == 0:
        raise DataError(f"the {quantile} time quantile leaves an empty side ({train_rows.size} training rows, "
                        f"{late_rows.size} held-out rows)")
    user_seen = np.zeros(int(users.max()) + 1, bool)
    user_seen[users[train_rows]] = True
    item_seen = np.zeros(n_items, bool)
    item_seen[items[train_rows]] = True
    ok_user = user_seen[users[late_rows]]
    ok_item = item_seen[items[late_rows]]
    held = late_rows[ok_user & ok_item]
    counts = {
        "timepoint": timepoint,
        "late_rows": int(late_rows.size),
        "dropped_rows_unseen_user": int((~ok_user).sum()),
        "dropped_rows_unseen_item": int((ok_user & ~ok_item).sum()),
        "dropped_users": int(np.unique(users[late_rows[~ok_user]]).size),
    }
    return train_rows, held, counts


def _heldout(protocol: str, truth: sp.csr_matrix, seen: sp.csr_matrix, users: np.ndarray,
             candidates: np.ndarray | None = None) -> HeldOut:
    eligible = np.zeros(seen.shape[1], bool)
    eligible[seen.indices] = True
    return HeldOut(protocol=protocol, users=np.asarray(users, np.int64), truth=truth, seen=seen,
                   eligible=eligible, candidates=candidates)


def split_seed(data: Dataset, quantile: float = 0.98, validation_quantile: float | None = None) -> Split:
    """The `seed` protocol: explicit ratings, one global time split (see the module docstring)."""
    if data.timestamps is None:
        raise DataError(f"{data.name}: the seed protocol splits by time, and this dataset has no timestamps")
    if data.implicit:
        raise DataError(f"{data.name}: the seed protocol needs explicit ratings; use --protocol neumf")
    vq = quantile if validation_quantile is None else validation_quantile
    shape = (data.n_users, data.n_items)
    all_rows = np.arange(data.n_ratings)
    train_rows, test_rows, test_counts = _time_holdout(data.users, data.items, data.timestamps, all_rows,
                                                       quantile, data.n_items)
    fit_rows, val_rows, val_counts = _time_holdout(data.users, data.items, data.timestamps, train_rows,
                                                   vq, data.n_items)

    def mat(rows: np.ndarray) -> sp.csr_matrix:
        return to_csr(data.users[rows], data.items[rows], data.ratings[rows], shape)

    train, fit = mat(train_rows), mat(fit_rows)
    test = _heldout("seed", mat(test_rows), train, np.unique(data.users[test_rows]))
    validation = _heldout("seed", mat(val_rows), fit, np.unique(data.users[val_rows]))
    info = {
        "protocol": "seed", "dataset": data.name, "quantile": quantile, "validation_quantile": vq,
        "n_users": data.n_users, "n_items": data.n_items, "n_ratings": data.n_ratings,
        "duplicates_dropped": data.duplicates_dropped, "unknown_items_dropped": data.unknown_items_dropped,
        "train_rows": int(train_rows.size), "test_rows": int(test_rows.size), "test_users": int(test.n_users),
        **{f"test_{k}": v for k, v in test_counts.items()},
        "fit_rows": int(fit_rows.size), "validation_rows": int(val_rows.size),
        "validation_users": int(validation.n_users),
        **{f"validation_{k}": v for k, v in val_counts.items()},
    }
    return Split("seed", data.name, train, test, fit, validation, info)


def _sample_negatives(touched: sp.csr_matrix, users: np.ndarray, n_negatives: int,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """For each user, `n_negatives` distinct items it never touched -> (kept users, (n, n_neg))."""
    n_items = touched.shape[1]
    all_items = np.arange(n_items)
    kept, rows = [], []
    for u in users:  # one draw per user, in user order: deterministic for a given rng
        row = touched.indices[touched.indptr[u] : touched.indptr[u + 1]]
        free = np.setdiff1d(all_items, row, assume_unique=True)
        if free.size < n_negatives:
            continue
        kept.append(u)
        rows.append(rng.choice(free, size=n_negatives, replace=False))
    negatives = np.asarray(rows, np.int64).reshape(len(rows), n_negatives)
    return np.asarray(kept, np.int64), negatives


def _leave_one_out(matrix: sp.csr_matrix, pick: np.ndarray, users: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
    """Remove entry offset `pick[j]` of row `users[j]` -> (matrix without them, removed items)."""
    positions = matrix.indptr[users] + pick
    items = matrix.indices[positions].astype(np.int64)
    keep = np.ones(matrix.nnz, bool)
    keep[positions] = False
    coo = matrix.tocoo()
    rest = to_csr(coo.row[keep], coo.col[keep], coo.data[keep], matrix.shape)
    return rest, items


def _latest_rows(users: np.ndarray, timestamps: np.ndarray | None, rows: np.ndarray) -> np.ndarray:
    """Of `rows` (indices), the latest per user (on equal or missing times, the later line)."""
    t = np.zeros(rows.size, np.int64) if timestamps is None else timestamps[rows]
    order = np.lexsort((rows, t, users[rows]))
    u = users[rows][order]
    last = np.ones(order.size, bool)
    last[:-1] = u[1:] != u[:-1]
    return rows[order[last]]


def split_neumf(data: Dataset, validation_seed: int = 0, n_negatives: int = 99, negatives_seed: int = 0) -> Split:
    """The `neumf` protocol: implicit feedback, one held-out item + fixed negatives per user.

    Test: the NeuMF files' held-out item and negatives, or (other datasets) each user's latest
    interaction with `n_negatives` drawn from the items it never touched. Validation, carved from
    training: each user's latest training item when timestamps exist (as the test is), else one
    drawn at random (the shared 2-column NeuMF file has no timestamps, so there validation items are
    random and validation HR runs higher than test HR; use it to compare settings, not as a result).
    """
    shape = (data.n_users, data.n_items)
    all_rows = np.arange(data.n_ratings)
    per_user = np.bincount(data.users, minlength=data.n_users)
    if data.neumf_test is not None:
        nt = data.neumf_test
        order = np.argsort(nt.users, kind="stable")
        test_users, test_items, test_negs = nt.users[order], nt.items[order], nt.negatives[order]
        if np.unique(test_users).size != test_users.size:
            raise DataError(f"{data.name}: a user has more than one NeuMF test line")
        train_rows = all_rows
        source = "NeuMF files"
    else:
        latest = _latest_rows(data.users, data.timestamps, all_rows)
        latest = latest[per_user[data.users[latest]] >= 2]  # a user needs something left to train on
        train_rows = np.setdiff1d(all_rows, latest, assume_unique=True)
        test_users, test_negs = _sample_negatives(data.matrix(binary=True), data.users[latest], n_negatives,
                                                  np.random.default_rng(negatives_seed))
        test_items = data.items[latest][np.isin(data.users[latest], test_users)]
        if test_users.size == 0:
            raise DataError(f"{data.name}: no user has {n_negatives} untouched items to draw negatives from")
        source = f"leave-latest-out, negatives drawn with seed {negatives_seed}"
    train = data.matrix(rows=train_rows, binary=True)
    test_truth = to_csr(test_users, test_items, np.ones(len(test_users)), shape)
    test = _heldout("neumf", test_truth, train, test_users, np.column_stack([test_items, test_negs]))

    # validation: one training item per user with >= 2, negatives from items never touched
    rng = np.random.default_rng(validation_seed)
    counts = np.diff(train.indptr)
    if data.timestamps is not None:
        chosen = _latest_rows(data.users, data.timestamps, train_rows)
        chosen = chosen[counts[data.users[chosen]] >= 2]
        val_users = data.users[chosen]
        flat_keys = np.repeat(np.arange(data.n_users, dtype=np.int64), counts) * data.n_items + train.indices
        pick = np.searchsorted(flat_keys, val_users * data.n_items + data.items[chosen]) - train.indptr[val_users]
        rule = "latest training item"
    else:
        val_users = np.flatnonzero(counts >= 2)
        pick = np.floor(rng.random(val_users.size) * counts[val_users]).astype(np.int64)
        rule = f"random training item (seed {validation_seed}; no timestamps)"
    fit, val_items = _leave_one_out(train, pick, val_users)
    touched = (train + test_truth).tocsr()
    touched.sort_indices()
    kept, val_negs = _sample_negatives(touched, val_users, n_negatives, rng)
    val_items = val_items[np.isin(val_users, kept)]
    val_truth = to_csr(kept, val_items, np.ones(len(kept)), shape)
    validation = _heldout("neumf", val_truth, fit, kept, np.column_stack([val_items, val_negs]))
    info = {
        "protocol": "neumf", "dataset": data.name, "test_source": source, "validation_item": rule,
        "validation_seed": validation_seed,
        "n_users": data.n_users, "n_items": data.n_items, "n_ratings": data.n_ratings,
        "duplicates_dropped": data.duplicates_dropped,
        "train_rows": int(train.nnz), "test_users": int(test.n_users), "n_negatives": int(test_negs.shape[1]),
        # NeuMF's file draws negatives from items outside the user's training set only, so the
        # held-out item itself appears among them for some users; the metrics ignore that repeat
        "test_negatives_repeating_heldout": int((test_negs == test_items[:, None]).any(axis=1).sum()),
        "fit_rows": int(fit.nnz), "validation_users": int(validation.n_users),
    }
    return Split("neumf", data.name, train, test, fit, validation, info)


def make_split(data: Dataset, config: Any) -> Split:
    """Apply the protocol named in a `parity.config.DataConfig` (fields protocol, quantile, validation_seed)."""
    if config.protocol == "seed":
        return split_seed(data, quantile=config.quantile)
    if config.protocol == "neumf":
        return split_neumf(data, validation_seed=config.validation_seed)
    raise ValueError(f"unknown protocol {config.protocol!r}: expected 'seed' or 'neumf'")


def load_split(config: Any, data_dir: str | os.PathLike | None = None) -> Split:
    """`make_split(load_dataset(config.dataset, data_dir), config)`."""
    return make_split(load_dataset(config.dataset, data_dir), config)


# datasets whose default protocol is `neumf`: implicit feedback, and the synthetic stand-in for ML-1M
# in the NeuMF split (its ratings are explicit, but it is there to run the neumf jobs offline)
NEUMF_DATASETS = ("ml-1m-neumf", "synthetic")


def default_protocol(dataset: str | os.PathLike | Dataset) -> str:
    """The protocol a dataset is evaluated under when none is named: `neumf` for the NeuMF files (by
    name, or a folder or file of the NeuMF layout, *.train.rating), implicit feedback and the synthetic
    data; `seed` for explicit ratings. Decided without reading the ratings, from a name or a path."""
    if isinstance(dataset, Dataset):
        return "neumf" if dataset.implicit or dataset.name in NEUMF_DATASETS else "seed"
    text = str(dataset)
    if text in NEUMF_DATASETS:
        return "neumf"
    path = Path(text).expanduser()
    if path.name.endswith(".train.rating") or (path.is_dir() and any(path.glob("*.train.rating"))):
        return "neumf"
    return "seed"
