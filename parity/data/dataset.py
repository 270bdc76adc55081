"""A dataset in memory: parallel arrays over its rows (users, items, ratings, timestamps) and the id maps."""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp


@dataclasses.dataclass(frozen=True)
class NeuMFTest:
    """The NeuMF held-out data: one item per user and its fixed negatives (NeuMF numbering)."""

    users: np.ndarray  # (n,) int64
    items: np.ndarray  # (n,) int64
    negatives: np.ndarray  # (n, n_negatives) int64


@dataclasses.dataclass(frozen=True)
class Dataset:
    """All interactions of one dataset, as parallel arrays over rows, with the id maps.

    users / items are contiguous indices; `user_ids[u]` / `item_ids[i]` give the dataset's own ids.
    For ml-1m-neumf the rows are the training pairs and `neumf_test` holds the held-out data.
    """

    name: str
    users: np.ndarray  # (n,) int64
    items: np.ndarray  # (n,) int64
    ratings: np.ndarray  # (n,) float32; 1.0 where the file has no rating
    timestamps: np.ndarray | None  # (n,) int64 unix seconds, or None
    user_ids: np.ndarray
    item_ids: np.ndarray
    implicit: bool = False
    duplicates_dropped: int = 0
    source: str = ""
    neumf_test: NeuMFTest | None = None
    unknown_items_dropped: int = 0  # ratings of movies absent from the catalogue beside the file

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_ratings(self) -> int:
        return len(self.users)

    def matrix(self, rows: np.ndarray | None = None, binary: bool | None = None) -> sp.csr_matrix:
        """Users x items CSR (float32) of the selected rows (boolean mask or indices; default all).

        `binary` (default: `implicit`) stores 1.0 instead of the rating.
        """
        binary = self.implicit if binary is None else binary
        sel = slice(None) if rows is None else rows
        values = np.ones(len(self.users[sel]), np.float32) if binary else self.ratings[sel]
        return to_csr(self.users[sel], self.items[sel], values, (self.n_users, self.n_items))


def to_csr(users: np.ndarray, items: np.ndarray, values: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """CSR with sorted indices; (user, item) pairs are unique by construction, so nothing sums."""
    m = sp.csr_matrix((np.asarray(values, np.float32), (users, items)), shape=shape, dtype=np.float32)
    m.sort_indices()
    return m
